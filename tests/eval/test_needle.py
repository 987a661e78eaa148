"""`vist2.eval.needle`: prompts of the asked length with the key at the asked depth; the
ground-truth anchor (100 %) and a random-init model (chance)."""

import eval_helpers
import pytest
from eval_helpers import single_thread  # noqa: F401 -- autouse: one torch thread

from vist2.errors import Vist2Error
from vist2.eval.needle import (
    FILLER,
    NEEDLE,
    QUESTION,
    NeedleRun,
    PromptBuilder,
    is_correct,
    oracle_answerer,
    run_needle,
    sentences_of,
)
from vist2.loading import load_tokenizer, tiny_tokenizer_path

model_dir = eval_helpers.model_dir  # fixture


def test_prompt_length_and_depth():
    tokenizer = load_tokenizer(tiny_tokenizer_path())
    builder = PromptBuilder(tokenizer, sentences_of(FILLER))
    for depth in (0.0, 0.5, 1.0):
        prompt = builder.build(300, depth, "12345")
        n = len(tokenizer(prompt, add_special_tokens=False)["input_ids"])
        assert 280 <= n <= 300
        assert prompt.endswith(QUESTION)
        needle = NEEDLE.format(key="12345")
        before = prompt.index(needle)
        after = len(prompt) - len(QUESTION) - before - len(needle)  # filler after the needle
        assert abs(before / (before + after) - depth) < 0.05


def test_answers_are_scored_by_their_first_number():
    assert is_correct("12345", " 12345. Remember it.")
    assert not is_correct("12345", " 1234 5")
    assert not is_correct("12345", " the key")


def test_ground_truth_answers_score_one_hundred_percent(model_dir, tmp_path):
    run = NeedleRun(
        str(model_dir),
        str(tmp_path),
        lengths=(64, 128),
        depths=(0.0, 0.5, 1.0),
        trials=3,
        progress=False,
    )
    report = run_needle(run, answerer=oracle_answerer)
    for policy, grid in report["accuracy"].items():
        assert grid == [[1.0] * 3] * 2, policy
    assert (tmp_path / "needle.png").stat().st_size > 0


def test_random_init_model_is_at_chance(model_dir, tmp_path):
    run = NeedleRun(
        str(model_dir),
        str(tmp_path),
        lengths=(48,),
        depths=(0.0, 1.0),
        trials=2,
        batch_size=2,
        progress=False,
    )
    report = run_needle(run)
    assert report["mean_accuracy"] == {"global": 0.0, "prompt": 0.0, "none": 0.0}
    assert "## global" in (tmp_path / "needle.md").read_text()


def test_a_length_beyond_the_position_budget_is_an_error(model_dir, tmp_path):
    run = NeedleRun(
        str(model_dir),
        str(tmp_path),
        lengths=(5000,),
        depths=(0.5,),
        trials=1,
        policies=("none",),
        progress=False,
    )
    with pytest.raises(Vist2Error, match="max_position_embeddings"):
        run_needle(run)
