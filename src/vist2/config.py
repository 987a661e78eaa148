"""`VIST2Config`: a nested Hugging Face config (text_config + vision_config) plus what VIST2 adds.

Notable:
- K (`chunk_tokens`), β (`visual_tokens_per_page`) and r (`compression_ratio`) are all stored and
  checked against each other, so a config file says what it means and a typo fails early.
- The page geometry lives in `render` (a `RenderConfig` as a dict) and is checked against the
  vision encoder: the page must be cut into whole patches, and patches / merge² must equal β.
- Every error names the field, e.g. "VIST2Config.render.page_width (500) is not divisible by
  vision_config.patch_size (16)".
"""

from __future__ import annotations

from typing import Any

from transformers import AutoConfig, PreTrainedConfig

from vist2.errors import ConfigError

ALIGNERS = ("tanh", "mlp")


class VIST2Config(PreTrainedConfig):
    r"""Configuration of a `VIST2Model`.

    Args:
        text_config: config of the causal LM (any `AutoModelForCausalLM` model type; Qwen3 by default).
        vision_config: config of the vision encoder (`siglip_vision_model` or `siglip2_vision_model`).
        chunk_tokens: K, text tokens per page.
        visual_tokens_per_page: β, visual tokens one page becomes.
        compression_ratio: r = K / β.
        aligner: "tanh" (paper: tanh(xW + b) per token) or "mlp" (Linear-GELU-Linear).
        merge_size: pixel-shuffle merge of merge_size × merge_size patches into one token before the
            aligner (1 = none). A 2×2 merge keeps β at 4× the patch count, for legible larger pages.
            `[rows, cols]` merges a rectangle instead (`[2, 8]`: 2 patches tall, 8 wide).
        render: page settings, the fields of `vist2.render.RenderConfig`.
        vision_window: 0 (default) = the vision encoder sees the whole page at once; w > 0 = it
            sees the page in w × w pixel windows, one at a time (w a multiple of patch_size ×
            merge_size, so each window makes whole visual tokens), and a visual token then holds
            only what is drawn in its window. With page-wide attention a small encoder can copy
            the page's first word into every token and the LLM learns to read that summary
            instead of the page (docs/model/vist2-small.md); windows take that shortcut away.
            A SigLIP encoder's `image_size` is then the window, not the page.
            `[height, width]` cuts rectangular windows (`[16, 64]` with 8 px patches and merge
            `[2, 8]`: one visual token per half line at a 16 px line pitch). A SigLIP (v1)
            encoder has a fixed table of (image_size / patch_size)² position embeddings, so a
            rectangular window must hold that many patches; the table is read row by row over the
            window's patches (what it means there is learned in training). SigLIP2 takes any shape.
    """

    model_type = "vist2"
    # Public across transformers 5.x: `sub_configs` names the nested configs (saving, loading);
    # `__post_init__` builds them from dicts (`SubConfigSpec`, which would do it, is 5.20+ only).
    sub_configs = {"text_config": AutoConfig, "vision_config": AutoConfig}
    sub_config_defaults = {
        "text_config": {"model_type": "qwen3"},
        "vision_config": {
            "model_type": "siglip_vision_model",
            "image_size": 256,
            "patch_size": 16,
            "vision_use_head": False,
        },
    }

    text_config: dict | PreTrainedConfig | None = None
    vision_config: dict | PreTrainedConfig | None = None
    chunk_tokens: int = 1024
    visual_tokens_per_page: int = 256
    compression_ratio: float = 4.0
    aligner: str = "tanh"
    merge_size: int | list[int] = 1
    render: dict | None = None
    vision_window: int | list[int] = 0
    tie_word_embeddings: bool = False

    def __post_init__(self, **kwargs: Any) -> None:
        for key, defaults in self.sub_config_defaults.items():
            value = getattr(self, key)
            if value is None:  # the default sub-config
                value = defaults
            if isinstance(value, dict):
                value = dict(value)
                model_type = value.pop("model_type", defaults["model_type"])
                setattr(self, key, AutoConfig.for_model(model_type, **value))
        super().__post_init__(**kwargs)
        if self.render is None:
            self.render = {
                "page_width": 256,
                "page_height": 256,
                "font_size": 8,
                "min_font_size": 4,
            }
        self.tie_word_embeddings = bool(getattr(self.text_config, "tie_word_embeddings", False))
        self.check()

    def replaced(self, **changes: Any) -> VIST2Config:
        """A new config with `changes` to its fields; a nested config's changes are a dict of its
        fields (`vision_config={"image_size": 32}`), merged into the rest of it. Checked as any."""
        kwargs = self.to_dict()
        for key in ("architectures", "transformers_version", "model_type", "dtype"):
            kwargs.pop(key, None)  # written by to_dict, not fields
        for key, value in changes.items():
            if isinstance(value, dict) and isinstance(kwargs.get(key), dict):
                value = kwargs[key] | value
            kwargs[key] = value
        return VIST2Config(**kwargs)

    # The render config is a dict on disk; this is the typed view of it.
    @property
    def render_config(self):
        from vist2.render import RenderConfig

        try:
            return RenderConfig.from_dict(self.render)
        except ConfigError as err:
            raise ConfigError(f"VIST2Config.render: {err}") from None

    @property
    def patch_grid(self) -> tuple[int, int]:
        """(rows, cols) of patches on a page."""
        patch = self.vision_config.patch_size
        return self.render["page_height"] // patch, self.render["page_width"] // patch

    @property
    def merge_shape(self) -> tuple[int, int]:
        """(rows, cols) of patches merged into one visual token."""
        return _pair(self.merge_size, "merge_size")

    @property
    def window_shape(self) -> tuple[int, int] | None:
        """(height, width) in pixels of the windows the encoder sees; None = the whole page."""
        if isinstance(self.vision_window, int) and not isinstance(self.vision_window, bool):
            if self.vision_window < 0:
                raise ConfigError(
                    "VIST2Config.vision_window must be 0 (whole page) or a positive integer "
                    f"or [height, width], got {self.vision_window!r}"
                )
            if self.vision_window == 0:
                return None
        return _pair(self.vision_window, "vision_window")

    def check(self) -> None:
        """Raise `ConfigError` naming the first field that cannot work."""
        k, beta, ratio = self.chunk_tokens, self.visual_tokens_per_page, self.compression_ratio
        if not isinstance(k, int) or k < 1:
            raise ConfigError(f"VIST2Config.chunk_tokens must be a positive integer, got {k!r}")
        if not isinstance(beta, int) or beta < 1:
            raise ConfigError(
                f"VIST2Config.visual_tokens_per_page must be a positive integer, got {beta!r}"
            )
        if abs(k - ratio * beta) > 1e-6:
            raise ConfigError(
                f"VIST2Config.compression_ratio ({ratio}) must equal chunk_tokens / "
                f"visual_tokens_per_page ({k} / {beta} = {k / beta:g})"
            )
        if self.aligner not in ALIGNERS:
            raise ConfigError(
                f"VIST2Config.aligner must be one of {ALIGNERS}, got {self.aligner!r}"
            )
        merge_rows, merge_cols = self.merge_shape
        for field in ("page_width", "page_height"):
            if field not in self.render:
                raise ConfigError(f"VIST2Config.render.{field} is missing")
        vision_type = self.vision_config.model_type
        if vision_type not in ("siglip_vision_model", "siglip2_vision_model"):
            raise ConfigError(
                f"VIST2Config.vision_config.model_type must be siglip_vision_model or "
                f"siglip2_vision_model, got {vision_type!r}"
            )
        patch = self.vision_config.patch_size
        for field in ("page_width", "page_height"):
            size = self.render[field]
            if not isinstance(size, int) or size < 1 or size % patch:
                raise ConfigError(
                    f"VIST2Config.render.{field} ({size}) is not divisible by "
                    f"vision_config.patch_size ({patch})"
                )
        rows, cols = self.patch_grid
        if rows % merge_rows or cols % merge_cols:
            raise ConfigError(
                f"VIST2Config.merge_size ({self.merge_size}) must divide the patch grid "
                f"({rows} x {cols} patches)"
            )
        tokens = (rows // merge_rows) * (cols // merge_cols)
        if tokens != beta:
            raise ConfigError(
                f"VIST2Config.visual_tokens_per_page ({beta}) does not match the page: "
                f"{rows} x {cols} patches / merge {merge_rows} x {merge_cols} = {tokens} tokens"
            )
        self._check_encoder_input()

    def _check_encoder_input(self) -> None:
        """The encoder's input (the page, or one window of it) must fit the vision config."""
        window = self.window_shape
        width, height = self.render["page_width"], self.render["page_height"]
        patch = self.vision_config.patch_size
        if window:
            merge_rows, merge_cols = self.merge_shape
            cell_h, cell_w = patch * merge_rows, patch * merge_cols
            if window[0] % cell_h or window[1] % cell_w:
                raise ConfigError(
                    f"VIST2Config.vision_window ({self.vision_window}) must be a multiple of "
                    f"vision_config.patch_size x merge_size ({cell_h} x {cell_w} px), so that "
                    "each window makes whole visual tokens"
                )
            if height % window[0] or width % window[1]:
                raise ConfigError(
                    f"VIST2Config.vision_window ({self.vision_window}) must divide the page "
                    f"({width} x {height})"
                )
        seen_h, seen_w = window or (height, width)
        what = (
            f"vision_window ({self.vision_window})"
            if window
            else f"render page ({width} x {height})"
        )
        if self.vision_config.model_type == "siglip_vision_model":
            self._check_siglip_positions(what, seen_h, seen_w)
        else:
            patches = (seen_w // patch) * (seen_h // patch)
            if patches > self.vision_config.num_patches:
                raise ConfigError(
                    f"VIST2Config.{what} has {patches} patches, more than "
                    f"vision_config.num_patches ({self.vision_config.num_patches})"
                )

    def _check_siglip_positions(self, what: str, seen_h: int, seen_w: int) -> None:
        """SigLIP (v1) adds a fixed table of (image_size / patch)² position embeddings."""
        size, patch = self.vision_config.image_size, self.vision_config.patch_size
        if seen_h == seen_w:
            if seen_w != size:
                raise ConfigError(
                    f"VIST2Config.{what} must equal vision_config.image_size ({size}) "
                    "for a SigLIP encoder (fixed position embeddings)"
                )
            return
        patches, table = (seen_h // patch) * (seen_w // patch), (size // patch) ** 2
        if patches != table:
            raise ConfigError(
                f"VIST2Config.{what} holds {patches} patches; a SigLIP encoder with "
                f"vision_config.image_size {size} has {table} position embeddings, and a "
                "rectangular window must hold exactly that many"
            )


def _pair(value: Any, field: str) -> tuple[int, int]:
    """A positive int n -> (n, n); [a, b] of positive ints -> (a, b); else ConfigError."""
    if isinstance(value, int) and not isinstance(value, bool) and value >= 1:
        return value, value
    if (
        isinstance(value, (list, tuple))
        and len(value) == 2
        and all(isinstance(v, int) and not isinstance(v, bool) and v >= 1 for v in value)
    ):
        return int(value[0]), int(value[1])
    raise ConfigError(
        f"VIST2Config.{field} must be a positive integer or [rows, cols] of them, got {value!r}"
    )


__all__ = ["VIST2Config"]

# `import vist2` makes AutoConfig (and AutoTokenizer, which reads config.json) know the model type.
AutoConfig.register("vist2", VIST2Config, exist_ok=True)
