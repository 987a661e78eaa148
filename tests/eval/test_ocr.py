"""`vist2.eval.ocr`: the two anchors (ground truth -> 100 %, random init -> ~0) and a reader that
agrees with one uncached forward of the stage-2 layout."""

import json

import eval_helpers
import pytest
import torch
from conftest import tiny_config
from eval_helpers import single_thread  # noqa: F401 -- autouse: one torch thread

from vist2.engine import Engine
from vist2.errors import Vist2Error
from vist2.eval.data import read_eval_documents
from vist2.eval.ocr import (
    GreedyReader,
    OCRPage,
    OCRRun,
    check_ocr_budget,
    ocr_pages,
    oracle_reader,
    other_page_floor,
    run_ocr,
)
from vist2.layout import build_layout, collate_layouts, ocr_layout
from vist2.loading import load_model
from vist2.render import PageRenderer, pages_to_tensor

data_dir = eval_helpers.data_dir  # fixture
model_dir = eval_helpers.model_dir  # fixture


def test_ground_truth_scores_one_hundred_percent(model_dir, data_dir, tmp_path):
    run = OCRRun(
        str(model_dir),
        str(data_dir),
        str(tmp_path),
        split="all",
        max_pages=12,
        batch_size=4,
        progress=False,
    )
    report = run_ocr(run, reader=oracle_reader)
    assert set(report["runs"][0]["summary"]) == {
        "en",
        "zh",
        "all",
    }  # round robin reaches both files
    for lang, s in report["runs"][0]["summary"].items():
        assert s["pages"] > 0, lang
        assert s["character_accuracy"] == 1.0 and s["exact_page_rate"] == 1.0
        assert s["token_accuracy"] == 1.0 and s["rouge_l"] == 1.0
    pages = report["runs"][0]["pages"]
    assert all(p["correct_prefix"] > 0 for p in pages)  # the whole page, read right
    assert json.loads((tmp_path / "ocr.json").read_text())["reader"] == "oracle_reader"
    assert (tmp_path / "ocr_hist.png").stat().st_size > 0
    assert "| zh |" in (tmp_path / "ocr.md").read_text()


def test_a_page_size_sweep_scores_each_compression_ratio(model_dir, data_dir, tmp_path):
    (tmp_path / "worst").mkdir()
    stale = tmp_path / "worst" / "k128_page_00099.png"  # an earlier report's worst page
    stale.write_bytes(b"png")
    keep = tmp_path / "worst" / "notes.txt"  # not ours: left alone
    keep.write_text("mine")
    run = OCRRun(
        str(model_dir),
        str(data_dir),
        str(tmp_path),
        split="all",
        max_pages=6,
        page_tokens=(6, 8),
        progress=False,
    )
    report = run_ocr(run, reader=oracle_reader)
    assert [r["compression_ratio"] for r in report["runs"]] == [1.5, 2.0]  # β = 4
    assert all(r["summary"]["all"]["rouge_l"] == 1.0 for r in report["runs"])
    assert (tmp_path / "ocr_ratio.png").stat().st_size > 0
    assert "| en | 1.5 |" in (tmp_path / "ocr.md").read_text()
    images = {w["image"] for r in report["runs"] for w in r["worst"]}
    assert {f"worst/{f.name}" for f in (tmp_path / "worst").glob("*.png")} == images
    assert not stale.exists() and keep.read_text() == "mine"


def test_random_init_model_scores_near_zero(model_dir, data_dir, tmp_path):
    run = OCRRun(
        str(model_dir),
        str(data_dir),
        str(tmp_path),
        split="all",
        max_pages=12,
        batch_size=6,
        worst=3,
        control=True,
        progress=False,
    )
    report = run_ocr(run)
    assert (
        report["runs"][0]["blank_page_control"]["all"]["pages"] == 12
    )  # the same pages, read blank
    s = report["runs"][0]["summary"]["all"]
    assert s["pages"] == 12
    assert s["exact_page_rate"] == 0.0
    assert s["character_accuracy"] < 0.1 and s["token_accuracy"] < 0.1 and s["rouge_l"] < 0.1
    assert s["correct_prefix_tokens"] < 0.5
    gain = report["runs"][0]["page_gain"]["all"]  # random weights: the page tells it ~nothing
    assert gain["real_nll"] > 5.0 and abs(gain["gain_nats"]) < 0.1 * gain["blank_nll"]
    assert "loss, blank page" in (tmp_path / "ocr.md").read_text()
    floor = report["runs"][0]["other_page_floor"]["all"]  # another page's text as the reading
    assert floor["pages"] == 12 and 0.0 < floor["character_accuracy"] < 1.0
    assert floor["exact_page_rate"] == 0.0
    assert "another page's text (floor)" in (tmp_path / "ocr.md").read_text()
    lines = gain["by_line"]  # the same gain, line by line down the page
    assert lines and sum(row["tokens"] for row in lines) == gain["tokens"]
    assert (tmp_path / "ocr_line_gain.png").stat().st_size > 0
    markdown = (tmp_path / "ocr.md").read_text()
    assert markdown.count("| line |") == 2  # the gain, and the loss from the real page
    real_by_line = [
        float(row.split("|")[2])
        for row in markdown.split("The loss from the real")[1].split("\n")
        if row.startswith("| 1 |")
    ]
    first_lang = next(lang for lang in report["runs"][0]["page_gain"] if lang != "all")
    first_line = report["runs"][0]["page_gain"][first_lang]["by_line"][0]
    assert real_by_line == [round(first_line["real_nll"], 3)]  # the first curve's line 1
    worst = report["runs"][0]["worst"]
    assert len(worst) == 3 and all((tmp_path / w["image"]).is_file() for w in worst)
    assert worst[0]["character_accuracy"] <= worst[-1]["character_accuracy"]


def test_cached_reading_matches_one_forward_of_the_ocr_layout(model_dir, data_dir):
    """Greedy KV-cached reading == argmax of one uncached forward over [v, c] (teacher-forced
    with the tokens read): the reader uses exactly the training layout."""
    model, tokenizer = load_model(model_dir)
    docs = read_eval_documents(data_dir, "all")
    pages = ocr_pages(docs, tokenizer, 8, 4, max_pages=3)
    read = GreedyReader(model, tokenizer)(pages)
    renderer = PageRenderer(model.config.render_config)
    for page, ids in zip(pages, read, strict=True):
        layout = build_layout(ocr_layout([ids]), 4)
        batch = collate_layouts([layout])
        with torch.inference_mode():
            logits = model(
                input_ids=batch["input_ids"],
                visual_mask=batch["visual_mask"],
                pages=pages_to_tensor([renderer.render(page.text)]),
                position_ids=batch["position_ids"],
                attention_mask=batch["attention_mask"],
            ).logits[0]  # [L, V]
        # slot 3 (the last visual token) predicts text token 0, slot 3 + j predicts token j
        assert logits[3 : 3 + len(ids)].argmax(-1).tolist() == ids


def test_pages_follow_the_model_chunks(model_dir, data_dir):
    model, tokenizer = load_model(model_dir)
    docs = read_eval_documents(data_dir, "all")
    pages = ocr_pages(docs, tokenizer, 8, 4, max_pages=None)
    assert all(5 <= len(p.token_ids) <= 8 for p in pages)  # K, or a tail longer than β
    assert [p.index for p in pages] == list(range(len(pages)))
    assert {p.language for p in pages} == {"en", "zh"}


def test_a_page_beyond_the_position_budget_is_an_error(model_dir, data_dir):
    model, tokenizer = load_model(model_dir)
    pages = ocr_pages(read_eval_documents(data_dir, "all"), tokenizer, 8, 4, max_pages=2)
    config = tiny_config(
        text_config={**tiny_config().text_config.to_dict(), "max_position_embeddings": 10}
    )
    with pytest.raises(Vist2Error, match="max_position_embeddings"):
        check_ocr_budget(config, pages)


def test_page_loss_is_the_training_layouts_loss(model_dir, data_dir):
    """The teacher-forced page loss equals the stage-2 training loss of [v, c] on that page."""
    from vist2.eval.page_loss import page_token_loss

    model, tokenizer = load_model(model_dir)
    engine = Engine(model, tokenizer)
    docs = read_eval_documents(str(data_dir), "all")
    beta = model.config.visual_tokens_per_page
    page = ocr_pages(docs, tokenizer, model.config.chunk_tokens, beta, 1)[0]
    [(nats, n)] = page_token_loss(model, engine, [page], blank=False)
    batch = collate_layouts([build_layout(ocr_layout([list(page.token_ids)]), beta)])
    with torch.no_grad():
        out = model(
            input_ids=batch["input_ids"],
            visual_mask=batch["visual_mask"],
            pages=pages_to_tensor(engine.renderer.render_batch([page.text])),
            position_ids=batch["position_ids"],
            attention_mask=batch["attention_mask"],
            labels=batch["labels"],
        )
    assert n == out.num_labelled
    assert abs(nats / n - float(out.loss)) < 1e-4


def test_the_floor_scores_each_page_against_another_of_its_language():
    from vist2.eval.metrics import character_accuracy

    def page(i, text, language="en"):
        return OCRPage(i, "s", tuple(range(i, i + len(text.split()))), text, language)

    same = [page(0, "the cat sat"), page(1, "the cat sat")]
    assert other_page_floor(same)["en"]["character_accuracy"] == 1.0  # same text: a perfect "read"
    en = [page(0, "the cat sat"), page(1, "a dog ran off"), page(2, "the cat ran")]
    floor = other_page_floor([*en, page(3, "水浒传", "zh")])
    pairs = [(0, 1), (1, 2), (2, 0)]  # each page against the next of its language, cyclic
    expected = sum(character_accuracy(en[a].text, en[b].text) for a, b in pairs) / 3
    assert floor["en"]["pages"] == 3 and floor["en"]["character_accuracy"] == pytest.approx(
        expected
    )
    assert set(floor) == {"en", "all"} and floor["all"] == floor["en"]  # a lone zh page: no pair
    assert other_page_floor([page(3, "水浒传", "zh")]) == {}
