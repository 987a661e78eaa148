"""Training data: readers and bad-data accounting, each stage's examples, workers, determinism."""

import functools
import json
import random
import re

import numpy as np
import pytest
import torch
from conftest import tiny_config
from PIL import Image
from train_helpers import (
    single_thread,  # noqa: F401 -- autouse: one torch thread
    tiny_train_config,
    write_captions,
    write_chats,
    write_corpus,
)

from vist2.errors import Vist2Error
from vist2.layout import IGNORE_INDEX
from vist2.training.datasets import (
    CaptionDataset,
    OCRDataset,
    OLMDataset,
    SampleRange,
    SFTDataset,
    TextDataset,
    build_dataset,
    collate_examples,
    olm_tokens_for_length,
    shuffle_text,
    split_spans,
)
from vist2.training.problems import BadDataBudgetExceeded, DataProblem, ProblemLog
from vist2.training.sources import read_captions, read_chats, read_documents
from vist2.training.synthetic import COLOURS, image_to_page, synthetic_caption

K, BETA = 8, 4
LLM_TRAINS = {"language_model": 1e-3}  # plain text in OCR trains the LLM


@pytest.fixture(scope="module")
def model_config():
    return tiny_config()


# -- readers and bad data -------------------------------------------------------------------------


def test_bad_text_records_are_skipped_counted_and_located(tmp_path):
    (tmp_path / "good.txt").write_text("A good document.\nWith two lines.\n")
    (tmp_path / "empty.txt").write_text("")
    (tmp_path / "mixed.txt").write_bytes(b"line one\nbad \xff\xfe bytes\nline three\n")
    lines = [
        json.dumps({"text": "fine"}),
        json.dumps({"txt": "wrong key"}),
        json.dumps({"text": 42}),
        "{not json",
        json.dumps(["a", "list"]),
        "",  # blank lines are not records
        json.dumps({"text": "   "}),
    ]
    (tmp_path / "docs.jsonl").write_text("\n".join(lines) + "\n")
    (tmp_path / "ignored.bin").write_bytes(b"\x00\x01")
    problems = ProblemLog(max_bad_records=100)
    docs = read_documents(tmp_path, problems)

    assert sorted(d.text for d in docs) == [
        "A good document.\nWith two lines.\n",
        "fine",
        "line one\nline three\n",
    ]
    where = {(p.source.rsplit("/", 1)[-1], p.line): p.reason for p in problems.problems}
    assert where[("empty.txt", None)] == "empty file"
    assert where[("mixed.txt", 2)].startswith("not UTF-8 (byte 0xff")
    assert where[("docs.jsonl", 2)] == "missing key 'text'"
    assert where[("docs.jsonl", 3)] == "'text' must be a string, got int"
    assert where[("docs.jsonl", 4)].startswith("not valid JSON")
    assert where[("docs.jsonl", 5)] == "a JSON list, not an object"
    assert where[("docs.jsonl", 7)] == "'text' is empty"
    assert len(problems) == 7
    assert "docs.jsonl:2: missing key 'text'" in problems.summary(limit=10)


def test_error_budget_stops_with_a_clear_message(tmp_path):
    path = tmp_path / "chats.jsonl"
    path.write_text("\n".join(json.dumps({"prompt": i}) for i in range(5)) + "\n")
    problems = ProblemLog(max_bad_records=3, path=tmp_path / "bad.jsonl")
    assert read_chats(path, problems) == []
    with pytest.raises(
        BadDataBudgetExceeded, match=r"5 bad data records skipped, more than max_bad_records=3"
    ) as err:
        problems.check_budget()
    assert "chats.jsonl:1: 'prompt' must be a string, got int" in str(err.value)
    assert len((tmp_path / "bad.jsonl").read_text().splitlines()) == 5
    assert (
        problems.add(DataProblem(str(path), 1, "'prompt' must be a string, got int")) is False
    )  # counted once


def test_chat_formats(tmp_path):
    path = write_chats(tmp_path / "chats.jsonl", n=4)
    with path.open("a") as f:
        f.write(json.dumps({"messages": [{"role": "user", "content": "hi"}]}) + "\n")  # no response
        f.write(
            json.dumps(
                {
                    "messages": [
                        {"role": "bot", "content": "hi"},
                        {"role": "assistant", "content": "x"},
                    ]
                }
            )
            + "\n"
        )
    problems = ProblemLog(100)
    chats = read_chats(path, problems)
    assert len(chats) == 4 and len(problems) == 2
    single = chats[1]  # {"prompt", "response"}
    assert single.query.startswith("Repeat this text") and single.response
    multi = chats[0]  # system + user -> "role: content" blocks, compressed together
    assert multi.query.startswith("system: You are terse.\n\nuser: Continue:")
    assert "last message must be the assistant's" in problems.problems[0].reason
    assert "role must be one of" in problems.problems[1].reason


# -- stage examples -------------------------------------------------------------------------------


def test_sft_example_trains_on_the_response_only(tmp_path, model_config, tiny_tokenizer):
    chats = read_chats(write_chats(tmp_path / "c.jsonl", n=2), ProblemLog(10))
    ds = SFTDataset(chats, model_config, tiny_tokenizer, tiny_train_config("sft"))
    chat = chats[1]
    ex = ds.make_example(0, 1)
    response_ids = tiny_tokenizer(chat.response, add_special_tokens=False)["input_ids"] + [
        tiny_tokenizer.eos_token_id
    ]
    labels = ex.layout.labels[ex.layout.labels != IGNORE_INDEX].tolist()
    assert labels == response_ids  # every response token, ending with <|im_end|>, and nothing else
    query_ids = tiny_tokenizer(chat.query, add_special_tokens=False)["input_ids"]
    query_pages = len(query_ids) // K + (len(query_ids) % K > BETA)  # tail rule
    response_pages = (len(response_ids) - 1) // K  # every response chunk but the last
    assert ex.pages.shape == (query_pages + response_pages, 64, 64) == (ex.layout.num_pages, 64, 64)
    assert ex.pages.min() >= -1 and ex.pages.max() <= 1


def test_olm_example_fills_max_length(tmp_path, model_config, tiny_tokenizer):
    cfg = tiny_train_config("olm")
    docs = read_documents(write_corpus(tmp_path / "corpus"), ProblemLog(10), split="all")
    ds = OLMDataset(docs, model_config, tiny_tokenizer, cfg)
    tokens = olm_tokens_for_length(cfg.max_length, K, BETA)
    ex = ds[0]
    assert len(ex.layout) <= cfg.max_length
    n_text = int((~ex.layout.visual).sum())
    assert n_text == tokens and ex.pages.shape[0] == (tokens + K - 1) // K - 1
    assert int((ex.layout.labels != IGNORE_INDEX).sum()) == tokens - 1  # every token but the first


def test_olm_ocr_fraction_mixes_in_read_backs_of_the_first_chunk(
    tmp_path, model_config, tiny_tokenizer
):
    docs = read_documents(write_corpus(tmp_path / "corpus"), ProblemLog(10), split="all")

    def examples(fraction):
        cfg = tiny_train_config("olm", olm_ocr_fraction=fraction)
        return OLMDataset(docs, model_config, tiny_tokenizer, cfg), [
            OLMDataset(docs, model_config, tiny_tokenizer, cfg)[s] for s in range(40)
        ]

    plain_ds, plain = examples(0.0)
    _, every = examples(1.0)
    _, half = examples(0.5)
    for s, (olm, read) in enumerate(zip(plain, every, strict=True)):
        # a read-back: one page, then exactly the tokens of the OLM sequence's first chunk
        assert read.pages.shape[0] == 1 and read.layout.num_pages == 1
        assert bool(read.layout.visual[:BETA].all()) and not read.layout.visual[BETA:].any()
        first_chunk = olm.layout.input_ids[~olm.layout.visual][:K]
        assert torch.equal(read.layout.input_ids[BETA:], first_chunk)
        assert torch.equal(read.pages[0], olm.pages[0])  # the page the OLM sequence shows first
        labels = read.layout.labels
        assert labels[labels != IGNORE_INDEX].tolist() == first_chunk.tolist()  # all K read
        assert olm.layout.num_pages > 1, s
    is_read = [ex.layout.num_pages == 1 for ex in half]
    assert 0 < sum(is_read) < len(half)
    assert is_read == [ex.layout.num_pages == 1 for ex in examples(0.5)[1]]  # keyed by sample
    with pytest.raises(Vist2Error, match="olm_ocr_fraction"):
        tiny_train_config("olm", olm_ocr_fraction=1.5)


def test_olm_recall_fraction_asks_for_a_key_written_on_an_earlier_page(
    tmp_path, model_config, tiny_tokenizer
):
    docs = read_documents(write_corpus(tmp_path / "corpus"), ProblemLog(10), split="all")

    def texts(fraction, **overrides):
        cfg = tiny_train_config("olm", olm_recall_fraction=fraction, max_length=160, **overrides)
        ds = OLMDataset(docs, model_config, tiny_tokenizer, cfg)
        return [ds[s] for s in range(16)]

    def text_of(ex):
        return tiny_tokenizer.decode(ex.layout.input_ids[~ex.layout.visual].tolist())

    asks = re.compile(r"\? [A-Za-z ]+ (\d{5})\.")

    plain, every, half = texts(0.0), texts(1.0), texts(0.5)
    for olm, recall in zip(plain, every, strict=True):
        assert len(recall.layout) == len(olm.layout)  # the same length, the same pages
        assert recall.pages.shape == olm.pages.shape
        text = text_of(recall)
        key = asks.search(text).group(1)
        assert text.count(key) >= 2  # the fact and the answer
        assert not asks.search(text_of(olm))
    asked = [bool(asks.search(text_of(ex))) for ex in half]
    assert 0 < sum(asked) < len(asked)
    assert asked == [bool(asks.search(text_of(ex))) for ex in texts(0.5)]  # keyed by sample
    read_backs = texts(1.0, olm_ocr_fraction=1.0)  # a read-back stays a read-back
    assert all(ex.layout.num_pages == 1 for ex in read_backs)
    with pytest.raises(Vist2Error, match="olm_recall_fraction"):
        tiny_train_config("olm", olm_recall_fraction=-0.1)


def test_text_baseline_example_is_plain_text_with_loss_on_every_token(
    tmp_path, model_config, tiny_tokenizer
):
    cfg = tiny_train_config("olm").with_overrides({"stage": "text"})
    docs = read_documents(write_corpus(tmp_path / "corpus"), ProblemLog(10), split="all")
    ds = TextDataset(docs, model_config, tiny_tokenizer, cfg)
    ex = ds[0]
    ids = ex.layout.input_ids.tolist()
    assert 0.8 * cfg.max_length < len(ids) <= cfg.max_length and not ex.layout.visual.any()
    assert ex.pages.shape == (0, 64, 64)
    labels = ex.layout.labels
    assert labels[labels != IGNORE_INDEX].tolist() == ids[1:]  # every token but the first
    assert ex.layout.position_ids.tolist() == list(range(len(ids)))  # plain causal positions
    assert isinstance(
        build_dataset(
            "text", str(tmp_path / "corpus"), model_config, tiny_tokenizer, cfg, ProblemLog(10)
        ),
        TextDataset,
    )


def test_olm_tokens_for_length():
    for max_length in range(10, 200):
        t = olm_tokens_for_length(max_length, K, BETA)
        slots = t + (-(-t // K) - 1) * BETA
        assert slots <= max_length
        t1 = t + 1
        assert t1 + (-(-t1 // K) - 1) * BETA > max_length  # T is the largest that fits


def test_ocr_pages_follow_the_curriculum(tmp_path, model_config, tiny_tokenizer):
    cfg = tiny_train_config("ocr", max_length=K * 100)
    docs = read_documents(write_corpus(tmp_path / "corpus"), ProblemLog(10), split="all")
    ds = OCRDataset(docs, model_config, tiny_tokenizer, cfg)
    ds.samples_per_step, ds.total_steps = 4, 10
    easy, hard = ds[0], ds[39]
    assert easy.pages.shape[0] == 1 and hard.pages.shape[0] >= 5
    lay = hard.layout  # [v1, c1, v2, c2, ...]: each page's text follows its visual tokens
    assert lay.visual[:BETA].all() and not lay.visual[BETA]
    assert int((lay.labels != IGNORE_INDEX).sum()) == int((~lay.visual).sum())  # loss on every c_i


def test_ocr_page_text_follows_the_curriculum(tmp_path, model_config, tiny_tokenizer):
    levels = [
        {"until": 0.5, "min_pages": 1, "max_pages": 1, "min_page_tokens": 2, "max_page_tokens": 5},
        {"until": 1.0, "min_pages": 1, "max_pages": 1},
    ]
    cfg = tiny_train_config("ocr", max_length=K * 100, curriculum=levels)
    docs = read_documents(write_corpus(tmp_path / "corpus"), ProblemLog(10), split="all")
    ds = OCRDataset(docs, model_config, tiny_tokenizer, cfg)
    ds.samples_per_step, ds.total_steps = 4, 10

    def text_tokens(sample: int) -> int:
        return int((~ds[sample].layout.visual).sum())

    early = [text_tokens(s) for s in range(16)]  # steps 0-3: the short-page level
    assert all(2 <= n <= 5 for n in early) and len(set(early)) > 1
    late = [text_tokens(s) for s in range(24, 40)]  # full pages (a span's tokens, <= K) after it
    assert min(late) > 5 and max(late) <= K
    assert text_tokens(3) == text_tokens(3)  # the draw is keyed, the same on every call


def test_ocr_text_fraction_mixes_in_plain_text_of_one_document(
    tmp_path, model_config, tiny_tokenizer
):
    docs = read_documents(write_corpus(tmp_path / "corpus"), ProblemLog(10), split="all")

    def dataset(fraction):
        cfg = tiny_train_config(
            "ocr", max_length=K * 12, ocr_text_fraction=fraction, learning_rates=LLM_TRAINS
        )
        ds = OCRDataset(docs, model_config, tiny_tokenizer, cfg)
        ds.samples_per_step, ds.total_steps = 4, 10
        return ds

    every, half = dataset(1.0), dataset(0.5)
    for sample in range(12):
        ex = every[sample]
        ids = ex.layout.input_ids.tolist()
        assert ex.pages.shape == (0, 64, 64) and not ex.layout.visual.any()
        assert K < len(ids) <= every.config.max_length  # longer than a page's text
        labels = ex.layout.labels
        assert labels[labels != IGNORE_INDEX].tolist() == ids[1:]  # every token but the first
        first = every.spans[every.unit_of(sample)]  # the text starts where the span does, and
        text = docs[first.doc].text[first.start :]  # stays inside that document
        assert text.startswith(tiny_tokenizer.decode(ids[:4]))
    short = dataset(1.0).config.with_overrides({"ocr_text_tokens": 2 * K})
    short_ds = OCRDataset(docs, model_config, tiny_tokenizer, short)
    assert all(len(short_ds[s].layout.input_ids) == 2 * K for s in range(12))
    with pytest.raises(Vist2Error, match="ocr_text_tokens"):
        short.with_overrides({"ocr_text_tokens": short.max_length + 1})
    is_text = [half[s].layout.num_pages == 0 for s in range(40)]
    assert 0 < sum(is_text) < 40
    assert is_text == [dataset(0.5)[s].layout.num_pages == 0 for s in range(40)]  # keyed
    assert all(half[s].layout.num_pages >= 1 for s in range(40) if not is_text[s])
    batch = collate_examples([half[s] for s in range(8)], pad_id=0)  # pages and text together
    assert batch["pages"].shape[0] == sum(half[s].pages.shape[0] for s in range(8))
    with pytest.raises(Vist2Error, match="ocr_text_fraction"):
        tiny_train_config("ocr", ocr_text_fraction=-0.1, learning_rates=LLM_TRAINS)
    frozen_llm = {"language_model": 0.0, "vision_model": 1e-3}
    with pytest.raises(Vist2Error, match="trains only the LLM"):  # text would train nothing
        tiny_train_config("ocr", ocr_text_fraction=0.5, learning_rates=frozen_llm)


def test_caption_examples_and_broken_images(tmp_path, model_config, tiny_tokenizer):
    path = write_captions(tmp_path / "caps", n=4, broken=(2,))
    records = read_captions(path, ProblemLog(10))
    ds = CaptionDataset(records, model_config, tiny_tokenizer, tiny_train_config("caption"))
    ex = ds.make_example(0, 0)
    assert ex.pages.shape == (1, 64, 64) and ex.layout.num_pages == 1
    assert ex.layout.labels[BETA - 1] != IGNORE_INDEX  # the last visual token predicts the caption
    sample = next(s for s in range(8) if ds.unit_of(s) == 2)  # the broken image
    ex = ds[sample]  # skipped: the next image stands in, and the problem travels with the example
    assert [p.line for p in ex.problems] == [3] and "cannot open image" in ex.problems[0].reason


def test_synthetic_captions_are_deterministic_and_grayscale_distinct():
    image, caption = synthetic_caption(7, seed=0, width=64, height=64)
    again, caption_again = synthetic_caption(7, seed=0, width=64, height=64)
    assert caption == caption_again and np.array_equal(np.asarray(image), np.asarray(again))
    assert caption.endswith(".") and " in the " in caption
    assert len({synthetic_caption(i, 0, 64, 64)[1] for i in range(50)}) > 30
    levels = sorted(round(0.299 * r + 0.587 * g + 0.114 * b) for r, g, b in COLOURS.values())
    assert min(b - a for a, b in zip(levels, levels[1:], strict=False)) >= 20 and levels[-1] < 230
    page = image_to_page(Image.new("RGB", (100, 50), (0, 0, 0)), 64, 64)
    assert page.shape == (64, 64) and page.max() == 1.0 and page.min() == -1.0  # padded with paper


def test_split_spans_covers_the_text():
    text = "word " * 500
    spans = split_spans(text, 97)
    assert "".join(text[s:e] for s, e in spans) == text
    assert all(text[e - 1] == " " for s, e in spans[:-1])  # cut at spaces
    assert all(70 <= e - s <= 97 for s, e in spans[:-1])


def test_workers_give_the_same_batches_as_the_main_process(tmp_path, model_config, tiny_tokenizer):
    cfg = tiny_train_config("olm")
    problems = ProblemLog(10)
    ds = build_dataset(
        "olm", str(write_corpus(tmp_path / "corpus")), model_config, tiny_tokenizer, cfg, problems
    )

    def batches(workers):
        loader = torch.utils.data.DataLoader(
            ds,
            batch_size=2,
            sampler=SampleRange(3, 11),
            collate_fn=functools.partial(collate_examples, pad_id=0),
            num_workers=workers,
        )
        return list(loader)

    for a, b in zip(batches(0), batches(2), strict=True):
        for key in ("input_ids", "labels", "position_ids", "pages", "attention_mask"):
            torch.testing.assert_close(a[key], b[key])


def test_directories_skip_hidden_files_but_not_dotdot_paths(tmp_path, monkeypatch):
    from vist2.training.sources import list_files

    (tmp_path / "data" / ".cache").mkdir(parents=True)
    (tmp_path / "data" / "a.txt").write_text("a")
    (tmp_path / "data" / ".cache" / "b.txt").write_text("b")
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path / "elsewhere")
    assert [p.name for p in list_files("../data", (".txt",))] == ["a.txt"]


def test_shuffle_text_keeps_the_glyphs():
    rng = random.Random(0)
    english = "It is a truth universally acknowledged, that a single man in possession"
    shuffled = shuffle_text(english, rng)
    assert shuffled != english and sorted(shuffled.split()) == sorted(english.split())
    chinese = "满纸荒唐言，一把辛酸泪！\r\n都云作者痴，谁解其中味？"
    shuffled = shuffle_text(chinese, rng)
    assert shuffled != chinese and sorted(shuffled) == sorted(c for c in chinese if not c.isspace())


def stepped_ocr(docs, model_config, tokenizer, **overrides) -> OCRDataset:
    """An OCR dataset with room for 100 × K slots a sample, on a 10-step schedule of 4 a step."""
    cfg = tiny_train_config("ocr", max_length=K * 100, **overrides)
    ds = OCRDataset(docs, model_config, tokenizer, cfg)
    ds.samples_per_step, ds.total_steps = 4, 10
    return ds


def test_ocr_shuffle_fraction(tmp_path, model_config, tiny_tokenizer):
    docs = read_documents(write_corpus(tmp_path / "corpus"), ProblemLog(10), split="all")

    def texts(fraction):
        ds = stepped_ocr(docs, model_config, tiny_tokenizer, ocr_shuffle_fraction=fraction)
        return [ds[s].layout.input_ids.tolist() for s in range(40)]

    plain, none, half, every = texts(0.0), texts(0.0), texts(0.5), texts(1.0)
    assert plain == none  # deterministic
    changed = [a != b for a, b in zip(plain, every, strict=True)]
    assert all(changed)
    assert 0 < sum(a != b for a, b in zip(plain, half, strict=True)) < len(plain)
    assert half == texts(0.5)  # the draw is keyed by the sample, not by call order


def test_ocr_input_noise_changes_text_inputs_not_labels(tmp_path, model_config, tiny_tokenizer):
    docs = read_documents(write_corpus(tmp_path / "corpus"), ProblemLog(10), split="all")

    def layouts(noise):
        ds = stepped_ocr(docs, model_config, tiny_tokenizer, ocr_input_noise=noise)
        return [ds[s].layout for s in range(20)]

    clean, noisy = layouts(0.0), layouts(0.3)
    changed = total = 0
    for a, b in zip(clean, noisy, strict=True):
        assert torch.equal(a.labels, b.labels)  # still the page's text
        assert torch.equal(a.visual, b.visual) and torch.equal(a.position_ids, b.position_ids)
        assert torch.equal(a.input_ids[a.visual], b.input_ids[b.visual])  # visual slots untouched
        text = ~a.visual
        changed += int((a.input_ids[text] != b.input_ids[text]).sum())
        total += int(text.sum())
        assert set(b.input_ids[text].tolist()) <= set(a.input_ids[text].tolist())  # same tokens
    assert 0.1 < changed / total < 0.3  # 30 % replaced, some by the token they replace
    again = layouts(0.3)
    assert all(torch.equal(a.input_ids, b.input_ids) for a, b in zip(noisy, again, strict=True))


def test_ocr_input_noise_reaches_olm_read_backs_only(tmp_path, model_config, tiny_tokenizer):
    docs = read_documents(write_corpus(tmp_path / "corpus"), ProblemLog(10), split="all")

    def examples(noise):
        cfg = tiny_train_config("olm", olm_ocr_fraction=0.5, ocr_input_noise=noise)
        ds = OLMDataset(docs, model_config, tiny_tokenizer, cfg)
        return [ds[s].layout for s in range(24)]

    clean, noisy = examples(0.0), examples(0.5)
    read_backs = [i for i, layout in enumerate(clean) if layout.num_pages == 1]
    assert 0 < len(read_backs) < len(clean)
    for i, (a, b) in enumerate(zip(clean, noisy, strict=True)):
        assert torch.equal(a.labels, b.labels)
        same_inputs = torch.equal(a.input_ids, b.input_ids)
        assert same_inputs == (i not in read_backs), i  # OLM sequences untouched
