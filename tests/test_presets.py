"""Every preset is a valid VIST2Config; the tiny one builds a small model."""

import pytest

from vist2.errors import ConfigError
from vist2.presets import PRESETS, preset_config


@pytest.mark.parametrize("name", list(PRESETS))
def test_preset_configs_validate(name):
    config = preset_config(name)
    assert config.chunk_tokens == config.compression_ratio * config.visual_tokens_per_page


def test_paper_shapes_match_the_public_facts():
    c = preset_config("qwen3-0.6b")
    t = c.text_config
    assert (t.hidden_size, t.num_hidden_layers, t.num_attention_heads, t.num_key_value_heads) == (
        1024,
        28,
        16,
        8,
    )
    assert (t.head_dim, t.intermediate_size, t.vocab_size, t.tie_word_embeddings) == (
        128,
        3072,
        151936,
        True,
    )
    assert (c.vision_config.image_size, c.vision_config.patch_size) == (256, 16)
    assert (c.chunk_tokens, c.visual_tokens_per_page) == (1024, 256)
    legible = preset_config("qwen3-0.6b-512px")
    assert legible.render["page_width"] == 512 and legible.merge_size == 2
    assert legible.visual_tokens_per_page == 256


def test_the_gpu_reader_is_the_measured_115m_model():
    """reader-115m has DESIGN.md's measured shapes; built on the meta device (no memory)."""
    import torch

    from vist2.model import VIST2Model

    c = preset_config("reader-115m")
    t, v = c.text_config, c.vision_config
    assert (t.hidden_size, t.num_hidden_layers, t.vocab_size) == (512, 8, 151936)
    assert (v.hidden_size, v.num_hidden_layers, v.image_size, v.patch_size) == (384, 6, 256, 16)
    assert (c.merge_size, c.chunk_tokens, c.visual_tokens_per_page) == (2, 256, 64)
    with torch.device("meta"):
        model = VIST2Model(c)
    assert 110e6 < sum(p.numel() for p in model.parameters()) < 120e6


def test_unknown_preset_is_a_clear_error():
    with pytest.raises(ConfigError, match="unknown preset"):
        preset_config("qwen9")
