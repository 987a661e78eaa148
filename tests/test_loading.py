"""Loading the shipped model by name (vist2-small): offline, from inside the package, under every
policy; an existing directory of the same name wins; a missing shipped model is a clear error."""

import json

import pytest
from conftest import CORPORA

from vist2.cli import main
from vist2.engine import Engine
from vist2.errors import Vist2Error
from vist2.loading import load_model, resolve_model_dir, shipped_model_path


@pytest.fixture(scope="module")
def engine():
    return Engine.from_pretrained("vist2-small")


def test_the_shipped_model_resolves_inside_the_package():
    path = resolve_model_dir("vist2-small")
    assert path == shipped_model_path("vist2-small")
    assert path.parts[-3:] == ("assets", "models", "vist2-small")
    assert (path / "model.safetensors").stat().st_size <= 50e6
    info = json.loads((path / "training.json").read_text())
    chain = []  # the runs that trained it, last first (training.json: started_from)
    while info:
        chain.append((info["stage"], info["step"]))
        info = info["started_from"]
    assert chain[-1][0] == "ocr" and all(step >= 1 for _, step in chain)  # from scratch, OCR first
    model, tokenizer = load_model("vist2-small")
    cfg = model.config
    assert (cfg.chunk_tokens, cfg.visual_tokens_per_page, cfg.compression_ratio) == (64, 16, 4.0)
    assert len(tokenizer) <= cfg.text_config.vocab_size


@pytest.mark.parametrize("policy", ["global", "prompt", "none"])
def test_generates_under_every_policy(engine, policy):
    path = CORPORA / "en" / "pride_and_prejudice.txt"
    text = path.read_text(encoding="utf-8")[2_000:2_600] if path.is_file() else "a b c " * 100
    new = engine.config.chunk_tokens + 6  # past one chunk boundary: `global` compresses output
    result = engine.generate(text, policy=policy, max_new_tokens=new, stop_on_eos=False)
    assert len(result.token_ids) == new and result.finish_reason == "length"
    k, beta = engine.config.chunk_tokens, engine.config.visual_tokens_per_page
    full, tail = divmod(result.stats.prompt_tokens, k)
    prompt_pages = full + (tail > beta)  # a tail longer than β is compressed too (DESIGN.md)
    expected_pages = {"none": 0, "prompt": prompt_pages, "global": prompt_pages + 1}[policy]
    assert result.stats.pages == expected_pages


def test_cli_generate_by_name(capsys):
    code = main(["generate", "--model", "vist2-small", "--prompt", "It is a truth universally "
                 "acknowledged", "--max-new-tokens", "4", "--json"])  # fmt: skip
    assert code == 0
    assert json.loads(capsys.readouterr().out)["stats"]["generated_tokens"] >= 1


def test_a_directory_of_the_same_name_wins(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "vist2-small").mkdir()
    with pytest.raises(Vist2Error, match="has no config.json"):
        resolve_model_dir("vist2-small")


def test_unknown_and_missing_shipped_models(monkeypatch, tmp_path):
    with pytest.raises(Vist2Error, match="no shipped model 'vist2-huge'"):
        shipped_model_path("vist2-huge")
    monkeypatch.setattr("vist2.loading.shipped_model_path", lambda name: tmp_path / name)
    with pytest.raises(Vist2Error, match="missing from this install"):
        resolve_model_dir("vist2-small")


def test_the_shipped_model_draws_on_its_pages(engine):
    """vist2-small reads down its pages: on held-out English pages the real page lowers the loss
    on its own text below a blank page's, on every line, and given the page's text before each
    token it names most of them (run 67b: 3.483 nats/token on these 16 pages, 7.55 / 4.35 / 3.68
    on lines 1 / 2 / 3 and 2.32 on lines 4-8 on average, teacher-forced token accuracy 77.9 % from
    the real page and 26.7 % from a blank one; run 65, shipped before it: 3.070, 6.61 / 3.53 /
    3.22, 2.12, 74.5 / 28.7 %; the earlier shipped models' figures are in the model card).
    Guards the render -> windowed encode -> read path end to end."""
    from vist2.eval.data import read_eval_documents
    from vist2.eval.ocr import ocr_pages
    from vist2.eval.page_loss import page_gain

    docs = read_eval_documents(str(CORPORA / "en"), "heldout")
    config = engine.model.config
    pages = ocr_pages(
        docs, engine.tokenizer, config.chunk_tokens, config.visual_tokens_per_page, 16
    )
    gain = page_gain(engine.model, engine, pages)["en"]
    assert gain["tokens"] == 16 * config.chunk_tokens
    assert gain["gain_nats"] > 2.7, gain
    lines = [row["gain_nats"] for row in gain["by_line"]]
    assert lines[1] > 3.0 and lines[2] > 2.5, lines  # reads below line 1
    assert sum(lines[3:]) / len(lines[3:]) > 1.75, lines  # and down to the bottom of the page
    real, blank = gain["real_teacher_forced_accuracy"], gain["blank_teacher_forced_accuracy"]
    assert real > 0.7 and real - blank > 0.35, (real, blank)  # the page, not the prior
