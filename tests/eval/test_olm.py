"""`vist2.eval.olm`: continuation-only labels on both layouts, chance perplexity for a random-init
model, perplexity 1 for perfect logits, and the text-only baseline path."""

import math

import eval_helpers
import pytest
import torch
from eval_helpers import single_thread  # noqa: F401 -- autouse: one torch thread

from vist2.errors import Vist2Error
from vist2.eval.data import read_eval_documents
from vist2.eval.olm import (
    OLMRun,
    Window,
    check_olm_budget,
    nll_from_logits,
    olm_windows,
    run_olm,
    score_batch,
    window_layout,
)
from vist2.layout import IGNORE_INDEX
from vist2.loading import load_model, load_tokenizer, tiny_tokenizer_path
from vist2.render import PageRenderer

data_dir = eval_helpers.data_dir  # fixture
model_dir = eval_helpers.model_dir  # fixture


@pytest.mark.parametrize("policy", ["global", "none"])
def test_only_continuation_tokens_are_scored(policy):
    tokenizer = load_tokenizer(tiny_tokenizer_path())
    ids = tuple(
        tokenizer("It is a truth universally acknowledged, that a single man " * 3)["input_ids"][
            :30
        ]
    )
    layout, texts = window_layout(Window("x", ids), 20, policy, tokenizer, k=8, beta=4)
    scored = layout.labels[layout.labels != IGNORE_INDEX].tolist()
    assert scored == list(ids[20:])  # each continuation token once, in order, nothing else
    assert len(texts) == (3 if policy == "global" else 0)  # chunks 1-3 as pages, chunk 4 as text


def test_perfect_logits_give_perplexity_one():
    labels = torch.tensor([3, 1, 4])
    logits = torch.full((3, 8), -1e4).scatter(1, labels[:, None], 1e4)  # [3, V]
    sums = nll_from_logits(logits, labels, torch.tensor([0, 0, 1]), batch=2)
    assert sums == pytest.approx([0.0, 0.0], abs=1e-6)


def test_random_init_model_is_near_chance(model_dir, data_dir, tmp_path):
    run = OLMRun(
        str(model_dir),
        str(data_dir),
        str(tmp_path),
        split="all",
        prefix=24,
        cont=16,
        max_windows=4,
        baseline=str(model_dir),
        batch_size=2,
        progress=False,
    )
    report = run_olm(run)
    vocab = report["vocab_size"]
    for name in ("global", "none", "baseline"):
        r = report["results"][name]
        assert r["scored_tokens"] == 4 * 16
        assert 0.5 * vocab < r["perplexity"] < 2 * vocab, (name, r["perplexity"])
    # the baseline given the model's own LLM reads the same tokens as `none`: the same numbers
    assert report["results"]["baseline"]["perplexity"] == pytest.approx(
        report["results"]["none"]["perplexity"], rel=1e-4
    )
    assert math.isfinite(report["ratio_global_over_none"])
    assert (tmp_path / "olm.md").read_text().count("| global |") == 1


def test_blank_page_control_measures_what_the_pages_carry(model_dir, data_dir, tmp_path):
    model, tokenizer = load_model(model_dir)
    with torch.no_grad():  # visual tokens that do not depend on the page: nothing to carry
        for p in model.aligner.parameters():
            p.zero_()
    blind = tmp_path / "blind"
    model.save_pretrained(blind)
    tokenizer.save_pretrained(blind)
    reports = {}
    for name, path in (("model", model_dir), ("blind", blind)):
        run = OLMRun(
            str(path),
            str(data_dir),
            str(tmp_path / name),
            split="all",
            prefix=24,
            cont=16,
            max_windows=4,
            batch_size=2,
            progress=False,
            control=True,
        )
        reports[name] = run_olm(run)
    for report in reports.values():
        blank, real = report["results"]["blank"], report["results"]["global"]
        assert blank["scored_tokens"] == real["scored_tokens"] == 4 * 16
    assert reports["blind"]["gain_from_pages_nats_per_token"] == pytest.approx(0.0, abs=1e-5)
    assert abs(reports["model"]["gain_from_pages_nats_per_token"]) > 1e-4  # pages differ
    assert "Gain from the pages" in (tmp_path / "model" / "olm.md").read_text()


def test_windows_alternate_between_documents(model_dir, data_dir):
    _, tokenizer = load_model(model_dir)
    windows = olm_windows(read_eval_documents(data_dir, "all"), tokenizer, 40, max_windows=4)
    assert len(windows) == 4 and all(len(w.token_ids) == 40 for w in windows)
    assert windows[0].source != windows[1].source


def test_budget_and_too_short_data_are_errors(model_dir, data_dir, tmp_path):
    model, _ = load_model(model_dir)
    with pytest.raises(Vist2Error, match="max_position_embeddings"):
        check_olm_budget(model.config, 4000, 200)
    run = OLMRun(str(model_dir), str(data_dir), str(tmp_path), split="all", prefix=3000, cont=1000)
    with pytest.raises(Vist2Error, match="holds --prefix 3000"):
        run_olm(run)


def test_a_window_within_one_chunk_reads_the_same_under_both_policies(model_dir):
    """With prefix + continue <= K there is no page: the OLM layout is the plain text."""
    model, tokenizer = load_model(model_dir)
    window = Window("x", tuple(tokenizer("Call me Ishmael. Some years ago")["input_ids"][:8]))
    renderer = PageRenderer(model.config.render_config)
    sums = {}
    for policy in ("global", "none"):
        layout, texts = window_layout(window, 5, policy, tokenizer, k=8, beta=4)
        assert texts == []
        sums[policy] = score_batch(model, renderer, [layout], texts)[0]
    assert sums["global"] == pytest.approx(sums["none"], rel=1e-6)
