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


def test_unknown_preset_is_a_clear_error():
    with pytest.raises(ConfigError, match="unknown preset"):
        preset_config("qwen9")
