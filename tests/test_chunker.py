"""Chunking and causal chunk decoding, with the real Qwen3 tokenizer."""

import pytest
from conftest import CORPORA
from tokenizers import Tokenizer, models

from vist2.chunker import decode_pieces, split_into_chunks

MIXED = "红楼梦 😀😀 abc 𠀀𠀁 naïve café — «ok» 龘龘"


def test_tail_rule():
    ids = list(range(10))  # with K=4: chunks of 4, 4 and a tail of 2

    tok = Tokenizer(models.WordLevel({str(i): i for i in range(10)}, unk_token="0"))
    chunks = split_into_chunks(ids, tok, chunk_tokens=4, visual_tokens_per_page=2)
    assert [len(c.token_ids) for c in chunks] == [4, 4, 2]
    assert [c.compressed for c in chunks] == [True, True, False]  # m = 2 <= β = 2 stays raw
    chunks = split_into_chunks(ids, tok, chunk_tokens=4, visual_tokens_per_page=1)
    assert chunks[-1].compressed  # m = 2 > β = 1 is rendered
    chunks = split_into_chunks(list(range(8)), tok, chunk_tokens=4, visual_tokens_per_page=2)
    assert all(c.compressed for c in chunks)


@pytest.mark.parametrize("k", [1, 2, 3, 5, 7])
def test_boundaries_inside_multibyte_characters_lose_nothing(qwen3_tokenizer, k):
    ids = qwen3_tokenizer(MIXED, add_special_tokens=False)["input_ids"]
    chunks = split_into_chunks(ids, qwen3_tokenizer, chunk_tokens=k, visual_tokens_per_page=0)
    texts = [c.text for c in chunks]
    assert "".join(texts) == MIXED
    assert not any("\ufffd" in t for t in texts)  # no replacement characters on any page


def test_split_characters_go_to_the_chunk_holding_their_last_byte(qwen3_tokenizer):
    ids = qwen3_tokenizer("𠀀", add_special_tokens=False)["input_ids"]
    assert len(ids) > 1  # a rare character: several byte-level tokens
    pieces = decode_pieces(qwen3_tokenizer, [[t] for t in ids])
    assert pieces[:-1] == [""] * (len(ids) - 1) and pieces[-1] == "𠀀"


@pytest.mark.parametrize("name", ["en/moby_dick.txt", "zh/hongloumeng.txt"])
def test_real_text_chunks_round_trip(qwen3_tokenizer, name):
    path = CORPORA / name
    if not path.is_file():
        pytest.skip(f"{path} missing")
    text = path.read_text(encoding="utf-8")[:20000]
    ids = qwen3_tokenizer(text, add_special_tokens=False)["input_ids"]
    for k in (64, 1024):
        chunks = split_into_chunks(
            ids, qwen3_tokenizer, chunk_tokens=k, visual_tokens_per_page=k // 4
        )
        assert "".join(c.text for c in chunks) == qwen3_tokenizer.decode(ids)
        assert sum(len(c.token_ids) for c in chunks) == len(ids)
        assert not any("\ufffd" in c.text for c in chunks)


def test_special_tokens_are_kept_in_page_text(qwen3_tokenizer):
    ids = qwen3_tokenizer("<|im_start|>user\nhi<|im_end|>", add_special_tokens=False)["input_ids"]
    chunks = split_into_chunks(ids, qwen3_tokenizer, chunk_tokens=2, visual_tokens_per_page=0)
    assert "".join(c.text for c in chunks) == "<|im_start|>user\nhi<|im_end|>"
