"""Shared fixtures: tiny random-init configs, the real Qwen3 tokenizer from ../shared."""

from pathlib import Path

import pytest
import torch

from vist2.config import VIST2Config

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
QWEN3_TOKENIZER = SHARED / "assets" / "qwen3-tokenizer"
CORPORA = SHARED / "corpora"


def tiny_config(**overrides) -> VIST2Config:
    """A VIST2 model of ~100k parameters: K=8, β=4, 64 px pages, 2×2 merge."""
    kwargs = dict(
        text_config=dict(
            model_type="qwen3",
            vocab_size=2048,
            hidden_size=32,
            num_hidden_layers=2,
            num_attention_heads=4,
            num_key_value_heads=2,
            head_dim=8,
            intermediate_size=64,
            max_position_embeddings=4096,
            tie_word_embeddings=True,
        ),
        vision_config=dict(
            model_type="siglip_vision_model",
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=1,
            num_attention_heads=2,
            image_size=64,
            patch_size=16,
            vision_use_head=False,
        ),
        chunk_tokens=8,
        visual_tokens_per_page=4,
        compression_ratio=2.0,
        merge_size=2,
        render={"page_width": 64, "page_height": 64, "font_size": 8, "min_font_size": 4},
    )
    kwargs.update(overrides)
    return VIST2Config(**kwargs)


def windowed_config(**overrides) -> VIST2Config:
    """`tiny_config` with a windowed encoder: the ViT sees each 32 px window (one visual token)
    on its own."""
    base = tiny_config().to_dict()["vision_config"] | {"image_size": 32}
    return tiny_config(vision_window=32, vision_config=base, **overrides)


@pytest.fixture
def tiny_model():
    from vist2.model import VIST2Model

    torch.manual_seed(0)
    return VIST2Model(tiny_config()).eval()


@pytest.fixture(scope="session")
def qwen3_tokenizer():
    from vist2.loading import load_tokenizer

    if not (QWEN3_TOKENIZER / "tokenizer.json").is_file():
        pytest.skip(f"the Qwen3 tokenizer is not at {QWEN3_TOKENIZER} (../shared missing)")
    return load_tokenizer(QWEN3_TOKENIZER)


@pytest.fixture(scope="session")
def tiny_tokenizer():
    from vist2.loading import load_tokenizer, tiny_tokenizer_path

    return load_tokenizer(tiny_tokenizer_path())
