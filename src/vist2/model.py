"""`VIST2Model`: vision encoder + aligner + any Hugging Face causal LM.

Notable:
- Sub-models are Hugging Face classes built from their configs (`AutoModel.from_config`), so a
  real Qwen3 / SigLIP2 checkpoint drops in: `VIST2Model.from_parts(llm_dir, vision_dir, ...)`.
- Pages enter as grayscale tensors (N, H, W) in [-1, 1] and are repeated to the encoder's
  channels, so an RGB-pretrained SigLIP reads them unchanged. With `config.vision_window` the
  encoder sees each page as h × w windows, one at a time (`cut_windows` / `join_windows`).
- Visual tokens are spliced into the LLM's input embeddings at the slots the layout marks; a count
  mismatch raises a clear `ValueError` instead of a shape error deep in torch.
- The loss runs the LM head only on labelled slots, and by default one checkpointed chunk of them
  at a time (`vist2.loss`): at 8k slots and a 152k vocabulary the full logits tensor and its
  gradient would be the largest things in memory. Without autograd (evaluation), or with
  `return_logits=True`, the labelled slots' logits are returned as before.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from transformers import AutoConfig, AutoModel, AutoModelForCausalLM, PreTrainedModel
from transformers.utils import ModelOutput

from vist2.aligner import Aligner
from vist2.config import VIST2Config
from vist2.errors import Vist2Error
from vist2.layout import IGNORE_INDEX
from vist2.loss import next_token_loss_sum


@dataclass
class VIST2Output(ModelOutput):
    loss: torch.Tensor | None = None  # mean next-token loss over labelled slots
    # (B, L, V) without labels; with labels (n_labelled, V) under no_grad or return_logits=True,
    # else None (training: the memory-safe loss never holds them all)
    logits: torch.Tensor | None = None
    num_labelled: int | None = None  # slots that carried a label
    past_key_values: object | None = None
    hidden_states: torch.Tensor | None = None  # (B, L, D) last hidden states


def cache_argument(decoder: torch.nn.Module) -> str:
    """The name `decoder.forward` takes its KV cache by: transformers 5.25 renamed
    `past_key_values` to `cache` (the old name warns, and is to go in 5.40); earlier releases
    know only `past_key_values`."""
    parameters = inspect.signature(decoder.forward).parameters
    return "cache" if "cache" in parameters else "past_key_values"


def decoder_cache(out: ModelOutput):
    """The KV cache a decoder returned, under either release's field name (see cache_argument)."""
    return out.cache if "cache" in out.__dataclass_fields__ else out.past_key_values


class VIST2Model(PreTrainedModel):
    config_class = VIST2Config
    config: VIST2Config
    base_model_prefix = "vist2"
    main_input_name = "input_ids"
    supports_gradient_checkpointing = True
    _supports_sdpa = True
    _supports_flex_attn = True
    _supports_flash_attn = False  # flash kernels cannot take the rule-2 mask
    _supports_attention_backend = True

    def __init__(self, config: VIST2Config) -> None:
        super().__init__(config)
        self.vision_model = AutoModel.from_config(config.vision_config)
        self.aligner = Aligner(
            vision_hidden=config.vision_config.hidden_size,
            text_hidden=config.text_config.hidden_size,
            grid=config.patch_grid,
            merge_size=config.merge_shape,
            kind=config.aligner,
        )
        self.language_model = AutoModelForCausalLM.from_config(config.text_config)
        # the decoder's name for its KV-cache argument: pass the cache as {cache_argument: cache}
        self.cache_argument = cache_argument(self.language_model.get_decoder())
        self.post_init()

    # -- assembling from pretrained parts (the paper's set-up) ---------------------------------

    @classmethod
    def from_parts(
        cls,
        llm_path: str | Path,
        vision_path: str | Path,
        dtype: torch.dtype | None = None,
        **vist2_kwargs,
    ) -> VIST2Model:
        """Assemble from a pretrained causal-LM dir and a pretrained SigLIP/SigLIP2 dir.

        The aligner starts from random init; `vist2_kwargs` are `VIST2Config` fields (K, β, render…).
        A full SigLIP checkpoint (text + vision towers) is accepted: its vision tower is taken.
        """
        for what, path in (("LLM", llm_path), ("vision encoder", vision_path)):
            if not (Path(path) / "config.json").is_file():
                raise Vist2Error(
                    f"{what} checkpoint {path}: no config.json there; pass a local model directory"
                )
        vision_config = AutoConfig.from_pretrained(vision_path)
        vision_config = getattr(vision_config, "vision_config", vision_config)
        text_config = AutoConfig.from_pretrained(llm_path)
        config = VIST2Config(text_config=text_config, vision_config=vision_config, **vist2_kwargs)
        model = cls(config)
        model.language_model = AutoModelForCausalLM.from_pretrained(llm_path, dtype=dtype)
        vision = AutoModel.from_pretrained(vision_path, dtype=dtype)
        if hasattr(vision, "text_model"):  # a full SigLIP checkpoint: keep its vision tower
            vision = vision.vision_model
        model.vision_model = vision
        _drop_pooling_head(model)
        if dtype is not None:
            model.aligner.to(dtype)
        return model

    # -- pieces the engine and the trainer call --------------------------------------------------

    def get_input_embeddings(self):
        return self.language_model.get_input_embeddings()

    def encode_pages(self, pages: torch.Tensor) -> torch.Tensor:
        """pages: (N, H, W) in [-1, 1] (paper white = +1) -> visual tokens (N, β, D_text)."""
        vcfg = self.config.vision_config
        dtype = (
            self.aligner.proj.weight.dtype
            if self.config.aligner == "tanh"
            else self.aligner.proj[0].weight.dtype
        )
        n, height, width = pages.shape
        pixels = pages.to(dtype)[:, None].expand(
            n, vcfg.num_channels, height, width
        )  # [N, C, H, W]
        window = self.config.window_shape  # (h, w) px or None
        if window:
            pixels = cut_windows(pixels, window)  # [N·n_windows, C, h, w]
        if vcfg.model_type == "siglip2_vision_model":
            feats = self._encode_naflex(pixels)
        else:
            feats = self.vision_model(pixel_values=pixels).last_hidden_state  # [N', P', D_vision]
        if window:
            p = vcfg.patch_size
            feats = join_windows(
                feats, n, height // window[0], width // window[1], (window[0] // p, window[1] // p)
            )  # [N, P, D_vision] in page patch order
        return self.aligner(feats)  # [N, β, D_text]

    def _encode_naflex(self, pixels: torch.Tensor) -> torch.Tensor:
        """SigLIP2 NaFlex takes patch sequences: (N, C, H, W) -> (N, P, C·p·p) in its (p, p, C) order."""
        p = self.config.vision_config.patch_size
        n, c, height, width = pixels.shape
        rows, cols = height // p, width // p
        patches = pixels.reshape(n, c, rows, p, cols, p).permute(
            0, 2, 4, 3, 5, 1
        )  # [N, R, C', p, p, C]
        patches = patches.reshape(n, rows * cols, p * p * c)  # [N, P, p·p·C]
        shapes = torch.tensor([[rows, cols]] * n, device=pixels.device)
        mask = torch.ones(n, rows * cols, dtype=torch.long, device=pixels.device)
        out = self.vision_model(
            pixel_values=patches, pixel_attention_mask=mask, spatial_shapes=shapes
        )
        return out.last_hidden_state  # [N, P, D_vision]

    def embed(
        self,
        input_ids: torch.Tensor,
        visual_mask: torch.Tensor | None = None,
        visual_tokens: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Text embeddings with visual tokens spliced in.

        input_ids, visual_mask: (B, L); visual_tokens: (N, β, D) in slot order -> (B, L, D).
        """
        embeds = self.get_input_embeddings()(input_ids)  # [B, L, D]
        n_slots = 0 if visual_mask is None else int(visual_mask.sum())
        n_tokens = 0 if visual_tokens is None else visual_tokens.shape[0] * visual_tokens.shape[1]
        if n_slots != n_tokens:
            raise ValueError(
                f"the layout has {n_slots} visual slots but the pages give {n_tokens} visual tokens "
                f"({0 if visual_tokens is None else visual_tokens.shape[0]} pages x "
                f"{self.config.visual_tokens_per_page}); pass one page per PageSegment/ChunkSegment"
            )
        if n_slots == 0:
            return embeds
        flat = visual_tokens.reshape(-1, embeds.shape[-1]).to(embeds.dtype)  # [N·β, D]
        return embeds.masked_scatter(visual_mask[..., None], flat)

    def _attention_mask_for_backend(self, mask, dtype: torch.dtype):
        """SDPA takes the boolean rule-2 mask as is; eager attention silently misreads a boolean
        mask as additive, so there it becomes 0 / -inf-like floats."""
        if not isinstance(mask, torch.Tensor) or mask.dtype != torch.bool or mask.dim() != 4:
            return mask  # a 2-D padding mask is read as such by every backend
        if self.language_model.config._attn_implementation == "sdpa":
            return mask
        return torch.zeros(mask.shape, dtype=dtype, device=mask.device).masked_fill(
            ~mask, torch.finfo(dtype).min
        )

    def forward(
        self,
        input_ids: torch.Tensor,
        visual_mask: torch.Tensor | None = None,
        pages: torch.Tensor | None = None,
        position_ids: torch.Tensor | None = None,
        attention_mask=None,
        labels: torch.Tensor | None = None,
        past_key_values=None,
        use_cache: bool = False,
        visual_tokens: torch.Tensor | None = None,
        logits_to_keep: int = 0,
        loss_impl: str = "auto",
        return_logits: bool | None = None,
        **kwargs,
    ) -> VIST2Output:
        """One pass over a laid-out batch (see `vist2.layout.collate_layouts`).

        input_ids, visual_mask, position_ids, labels: (B, L); pages: (N, H, W) in slot order (or
        precomputed `visual_tokens` (N, β, D)); attention_mask: (B, 1, L, L_kv) bool, or a
        flex-attention BlockMask. Without `labels`, logits of the last `logits_to_keep` slots
        (0 = all). With `labels`, the loss over labelled slots by `loss_impl` (`vist2.loss`:
        auto, chunked, fused or plain) and no logits, unless `return_logits` (then the plain path
        and the labelled slots' logits (n_labelled, V)). `return_logits=None` means True without
        autograd (evaluation: the logits cost no gradient) and False with it (training).
        """
        if visual_tokens is None and pages is not None and pages.shape[0] > 0:
            visual_tokens = self.encode_pages(pages)
        embeds = self.embed(input_ids, visual_mask, visual_tokens)
        attention_mask = self._attention_mask_for_backend(attention_mask, embeds.dtype)
        decoder = self.language_model.get_decoder()
        out = decoder(
            inputs_embeds=embeds,
            position_ids=position_ids,
            attention_mask=attention_mask,
            use_cache=use_cache,
            **{self.cache_argument: past_key_values},
            **kwargs,
        )
        hidden = out.last_hidden_state  # [B, L, D]
        head = self.language_model.get_output_embeddings()
        if labels is None:
            kept = hidden[:, -logits_to_keep:] if logits_to_keep else hidden  # [B, n, D]
            return VIST2Output(
                logits=head(kept), past_key_values=decoder_cache(out), hidden_states=hidden
            )
        keep = labels != IGNORE_INDEX  # [B, L]
        kept, targets = hidden[keep], labels[keep]  # [n_labelled, D], [n_labelled]
        n = int(keep.sum())
        logits = None
        if return_logits is None:
            return_logits = not torch.is_grad_enabled()
        if return_logits:
            logits = head(kept)  # [n_labelled, V]
            loss_sum = F.cross_entropy(logits.float(), targets, reduction="sum")
        else:
            loss_sum = next_token_loss_sum(kept, head, targets, impl=loss_impl)
        loss = loss_sum / max(n, 1)
        return VIST2Output(
            loss=loss,
            logits=logits,
            num_labelled=n,
            past_key_values=decoder_cache(out),
            hidden_states=hidden,
        )


__all__ = ["VIST2Model", "VIST2Output"]


def cut_windows(pixels: torch.Tensor, window: int | tuple[int, int]) -> torch.Tensor:
    """(N, C, H, W) -> (N·(H/h)·(W/w), C, h, w): each page's h × w windows, row by row."""
    wh, ww = (window, window) if isinstance(window, int) else window
    n, c, height, width = pixels.shape
    rows, cols = height // wh, width // ww
    tiles = pixels.reshape(n, c, rows, wh, cols, ww).permute(
        0, 2, 4, 1, 3, 5
    )  # [N, R, Cw, C, h, w]
    return tiles.reshape(n * rows * cols, c, wh, ww)


def join_windows(
    feats: torch.Tensor, pages: int, rows: int, cols: int, side: int | tuple[int, int]
) -> torch.Tensor:
    """(N·R·Cw, ph·pw, D) window patch features -> (N, P, D) in whole-page patch order
    (row-major over the page's patch grid), which is what the aligner's merge expects.
    `side`: the window's patch grid, (ph, pw) or one int for a square."""
    ph, pw = (side, side) if isinstance(side, int) else side
    d = feats.shape[-1]
    grid = feats.reshape(pages, rows, cols, ph, pw, d).permute(
        0, 1, 3, 2, 4, 5
    )  # [N, R, ph, Cw, pw, D]
    return grid.reshape(pages, rows * ph * cols * pw, d)


def _drop_pooling_head(model: VIST2Model) -> None:
    """SigLIP's attention-pooling head makes one image vector; VIST2 reads the patch tokens, so the
    head would sit unused in every step (and DDP rejects parameters that never get a gradient)."""
    tower = getattr(model.vision_model, "vision_model", model.vision_model)
    if getattr(tower, "use_head", False):
        tower.use_head = False
        del tower.head
    model.config.vision_config.vision_use_head = False


# After `import vist2`, `AutoModel.from_pretrained(dir)` builds a VIST2Model.
AutoModel.register(VIST2Config, VIST2Model, exist_ok=True)
