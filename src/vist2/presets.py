"""Named model shapes for `vist2 init --preset NAME`.

A preset is a base `VIST2Config` keyword dict; variants change a field. `tiny` runs anywhere in
seconds (tests, quick tries). The `qwen3-*` presets are the paper's shapes (Qwen3 + SigLIP2 at
256 px, patch 16, K = 1024, β = 256); random-init, they are for speed and memory benchmarks,
whose figures do not depend on the weights.
"""

from __future__ import annotations

import copy
from typing import Any

from vist2.errors import ConfigError

# SigLIP2 base at 256 px, patch 16 (google/siglip2-base-patch16-256 loads as a SigLIP vision model).
_SIGLIP2_BASE_256 = {
    "model_type": "siglip_vision_model",
    "hidden_size": 768,
    "intermediate_size": 3072,
    "num_hidden_layers": 12,
    "num_attention_heads": 12,
    "image_size": 256,
    "patch_size": 16,
    "hidden_act": "gelu_pytorch_tanh",
    "layer_norm_eps": 1e-6,
    "vision_use_head": False,
}


def _qwen3(hidden: int, layers: int, heads: int, intermediate: int, tied: bool) -> dict[str, Any]:
    return {
        "model_type": "qwen3",
        "vocab_size": 151936,
        "hidden_size": hidden,
        "num_hidden_layers": layers,
        "num_attention_heads": heads,
        "num_key_value_heads": 8,
        "head_dim": 128,
        "intermediate_size": intermediate,
        "rope_parameters": {"rope_type": "default", "rope_theta": 1_000_000.0},
        "max_position_embeddings": 131072,
        "tie_word_embeddings": tied,
        "rms_norm_eps": 1e-6,
    }


_PAPER_PAGE = {
    "chunk_tokens": 1024,
    "visual_tokens_per_page": 256,
    "compression_ratio": 4.0,
    "aligner": "tanh",
    "merge_size": 1,
    "render": {"page_width": 256, "page_height": 256, "font_size": 8, "min_font_size": 3},
}

PRESETS: dict[str, dict[str, Any]] = {
    "tiny": {
        "text_config": {
            "model_type": "qwen3",
            "vocab_size": 2048,
            "hidden_size": 64,
            "num_hidden_layers": 2,
            "num_attention_heads": 4,
            "num_key_value_heads": 2,
            "head_dim": 16,
            "intermediate_size": 128,
            "max_position_embeddings": 32768,
            "tie_word_embeddings": True,
        },
        "vision_config": {
            "model_type": "siglip_vision_model",
            "hidden_size": 64,
            "intermediate_size": 128,
            "num_hidden_layers": 2,
            "num_attention_heads": 2,
            "image_size": 128,
            "patch_size": 16,
            "vision_use_head": False,
        },
        "chunk_tokens": 64,
        "visual_tokens_per_page": 16,
        "compression_ratio": 4.0,
        "aligner": "tanh",
        "merge_size": 2,
        "render": {"page_width": 128, "page_height": 128, "font_size": 8, "min_font_size": 5},
    },
    # Shape-alike of the paper's set-up for CPU benchmarks: the paper's page (256 px, patch 16,
    # K = 1024, β = 256) with a narrow Qwen3-style LLM and SigLIP-style encoder, so a 32k-token
    # sweep of all three policies fits in minutes on two cores. Vocabulary: the tiny tokenizer's.
    "bench-cpu": {
        "text_config": {
            "model_type": "qwen3",
            "vocab_size": 2048,
            "hidden_size": 256,
            "num_hidden_layers": 4,
            "num_attention_heads": 4,
            "num_key_value_heads": 2,
            "head_dim": 64,
            "intermediate_size": 768,
            "max_position_embeddings": 131072,
            "rope_parameters": {"rope_type": "default", "rope_theta": 1_000_000.0},
            "tie_word_embeddings": True,
        },
        "vision_config": {
            "model_type": "siglip_vision_model",
            "hidden_size": 192,
            "intermediate_size": 768,
            "num_hidden_layers": 2,
            "num_attention_heads": 3,
            "image_size": 256,
            "patch_size": 16,
            "vision_use_head": False,
        },
        **_PAPER_PAGE,
    },
    "qwen3-0.6b": {
        "text_config": _qwen3(1024, 28, 16, 3072, tied=True),
        "vision_config": _SIGLIP2_BASE_256,
        **_PAPER_PAGE,
    },
    "qwen3-4b": {
        "text_config": _qwen3(2560, 36, 32, 9728, tied=True),
        "vision_config": _SIGLIP2_BASE_256,
        **_PAPER_PAGE,
    },
    "qwen3-8b": {
        "text_config": _qwen3(4096, 36, 32, 12288, tied=False),
        "vision_config": _SIGLIP2_BASE_256,
        **_PAPER_PAGE,
    },
}


# The shipped default model (`vist2-small`, docs/model/vist2-small.md): small enough to learn to
# read its pages from scratch on a 2-core CPU in a couple of hours, and well under 50 MB. The tiny
# page geometry (128 px, patch 8, 4x4 merge, K = 64, beta = 16, r = 4) with glyphs of 10-12 px
# (English ~160 characters, Chinese ~60 per page with the bundled 2,048-token tokenizer), a wider
# encoder (an 8 px patch holds about one glyph) and a 4-layer Qwen3-style LLM.
PRESETS["small"] = {
    "text_config": {
        **PRESETS["tiny"]["text_config"],
        "hidden_size": 256,
        "num_hidden_layers": 4,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "head_dim": 64,
        "intermediate_size": 768,
    },
    "vision_config": {
        **PRESETS["tiny"]["vision_config"],
        "hidden_size": 192,
        "intermediate_size": 768,
        "num_hidden_layers": 4,
        "num_attention_heads": 3,
        # patch 8 (256 patches, about one glyph each) merged 4x4 into β = 16 tokens: with patch
        # 16 (2-3 glyph pieces per patch, merged 2x2) this model had not begun to read 8-word
        # pages after 450 steps; with patch 8 the real-vs-blank loss gap grew from step 50.
        "patch_size": 8,
    },
    "chunk_tokens": 64,
    "visual_tokens_per_page": 16,
    "compression_ratio": 4.0,
    # Linear-GELU-Linear: with the paper's tanh aligner this model's visual tokens saturated at
    # +-1 (98.7 % of values) and went constant within 1,100 steps at lr 2e-3, and it never read.
    "aligner": "mlp",
    "merge_size": 4,
    "render": {"page_width": 128, "page_height": 128, "font_size": 12, "min_font_size": 7},
}

# vist2-small's shape with a windowed encoder: the ViT sees each 32 px cell (one visual token) on
# its own, so no visual token can carry a page-wide summary (VIST2Config.vision_window).
PRESETS["small-windowed"] = {
    **copy.deepcopy(PRESETS["small"]),
    "vision_window": 32,
}
PRESETS["small-windowed"]["vision_config"]["image_size"] = 32

# The legible variant of the paper's shape (DESIGN.md): a 512 px page read at patch 16 and merged
# 2x2 keeps β = 256 at r = 4, with glyphs of 8-10 px instead of 3-5 px. SigLIP's position
# embeddings are then for 512 px (interpolate a 256 px checkpoint's, or train them).
PRESETS["qwen3-0.6b-512px"] = {
    **PRESETS["qwen3-0.6b"],
    "vision_config": {**_SIGLIP2_BASE_256, "image_size": 512},
    "merge_size": 2,
    "render": {"page_width": 512, "page_height": 512, "font_size": 10, "min_font_size": 6},
}

# The reader measured on one H100 (DESIGN.md, "Measured on a GPU"): 115M parameters, from scratch,
# OCR loss 11.9 -> 0.22 in 1,440 steps of batch 32 (~7 minutes). A SigLIP-style ViT 384 x 6 on a
# 256 px page at patch 16, merged 2x2 into beta = 64; a Qwen3-style LLM 512 x 8 with the Qwen3
# vocabulary (77.8M of the parameters are its tied embedding); K = 256, r = 4. The aligner is
# vist2-small's MLP (the tanh one saturated on a from-scratch encoder). Trained by
# scripts/train_reader_gpu.sh.
PRESETS["reader-115m"] = {
    "text_config": {
        **_qwen3(512, 8, 8, 1536, tied=True),
        "num_key_value_heads": 4,
        "head_dim": 64,
        "max_position_embeddings": 32768,
    },
    "vision_config": {
        **_SIGLIP2_BASE_256,
        "hidden_size": 384,
        "intermediate_size": 1536,
        "num_hidden_layers": 6,
        "num_attention_heads": 6,
    },
    "chunk_tokens": 256,
    "visual_tokens_per_page": 64,
    "compression_ratio": 4.0,
    "aligner": "mlp",
    "merge_size": 2,
    "render": {"page_width": 256, "page_height": 256, "font_size": 8, "min_font_size": 5},
}


def preset_kwargs(name: str) -> dict[str, Any]:
    """A fresh copy of the `VIST2Config` keyword arguments of preset `name`."""
    if name not in PRESETS:
        raise ConfigError(f"unknown preset {name!r}; choose one of: {', '.join(PRESETS)}")
    return copy.deepcopy(PRESETS[name])


def preset_config(name: str):
    """The `VIST2Config` of preset `name`."""
    from vist2.config import VIST2Config

    return VIST2Config(**preset_kwargs(name))
