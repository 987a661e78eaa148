"""Shared pieces of the eval tests: a tiny random-init model directory and small UTF-8 texts."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from conftest import CORPORA, tiny_config

from vist2.loading import load_tokenizer, save_model, tiny_tokenizer_path
from vist2.model import VIST2Model


@pytest.fixture(autouse=True)
def single_thread():
    """Tiny models run fastest on one thread on a busy 2-core machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    """tiny_config() (K=8, β=4, 64 px pages, 4,096 positions), random init, tiny tokenizer."""
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("tiny_model")
    save_model(VIST2Model(tiny_config()), load_tokenizer(tiny_tokenizer_path()), path)
    return path


def corpus_slice(language: str, chars: int) -> str:
    """Real text from ../shared (a stand-in when it is missing), one sentence a line so that
    every file has a held-out part (the last 10 %, cut at a line break)."""
    name = {"en": "en/pride_and_prejudice.txt", "zh": "zh/hongloumeng.txt"}[language]
    path = CORPORA / name
    if path.is_file():
        text = path.read_text(encoding="utf-8")[-chars:]
    else:
        sample = (
            "It is a truth universally acknowledged. "
            if language == "en"
            else "满纸荒唐言，一把辛酸泪。"
        )
        text = (sample * (chars // len(sample) + 1))[:chars]
    return text.replace(". ", ".\n").replace("。", "。\n")


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory) -> Path:
    """One English and one Chinese text file (UTF-8)."""
    path = tmp_path_factory.mktemp("eval_data")
    (path / "en.txt").write_text(corpus_slice("en", 3000), encoding="utf-8")
    (path / "zh.txt").write_text(corpus_slice("zh", 1500), encoding="utf-8")
    return path
