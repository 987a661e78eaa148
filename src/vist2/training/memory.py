"""`vist2 loss-memory`: peak memory of one OLM training step, plain loss vs the memory-safe loss.

    vist2 loss-memory [--preset qwen3-0.6b-512px | --model DIR] [--slots 8192] [--vocab N]
                      [--micro-batch 1] [--impl plain,chunked] [--no-gradient-checkpointing]
                      [--device cpu|cuda] [--out FILE.json]

What is measured: the LLM's forward and backward over an OLM sequence of `--slots` slots (the
stage's layout and positions; visual tokens spliced in as the frozen encoder would give them),
then the next-token loss on every text slot and its backward. The vision encoder (frozen in OLM)
and the optimizer state (the same for both losses) are left out.

How (every printed figure says which):
- `cuda`: a real step as the GPU trainer runs it (bf16 autocast, flex attention with the rule-2
  BlockMask); `torch.cuda.max_memory_allocated` above the model's own bytes.
- `cpu`: torch's `MemTracker` (torch.distributed._tools.mem_tracker, a TorchDispatchMode that
  tallies the bytes of every live tensor storage) over the step on the *meta* device: every
  tensor's size and lifetime, nothing allocated or computed, fp32 (the CPU trainer's precision),
  so the 0.6B model at 8k slots and a 152k vocabulary is measured in a minute on a small machine.
  Attention is a flash-style stand-in with the memory of flex attention (keeps q, k, v, the output
  and the log-sum-exp, no L x L matrix; its values are not computed), because the CPU attention
  kernels' L x L scratch is neither what the GPU trainer uses nor what this command compares.
  `--real` runs the same step on real CPU tensors (only for sizes that fit; tests check that it
  tallies the same bytes as the meta run).
"""

from __future__ import annotations

import argparse
import contextlib
import json
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from vist2.chunker import Chunk
from vist2.errors import Vist2Error
from vist2.layout import IGNORE_INDEX, build_layout, collate_layouts, olm_layout
from vist2.loss import LOSS_IMPLS, next_token_loss_sum
from vist2.training.datasets import olm_tokens_for_length

GIB = 1024**3


@dataclass
class MemoryResult:
    impl: str  # loss implementation (vist2.loss)
    peak_bytes: int  # peak over the step, above what existed before it (params included on CPU)
    by_kind: dict[str, int]  # cpu: MemTracker's bytes per kind at the peak (Parameter, Activation…)
    method: str  # how it was measured
    slots: int
    micro_batch: int
    vocab_size: int
    labelled: int


def olm_batch(config, slots: int, micro_batch: int) -> dict[str, torch.Tensor]:
    """A collated OLM batch of `micro_batch` sequences of exactly `slots` slots (random ids)."""
    k, beta = config.chunk_tokens, config.visual_tokens_per_page
    tokens = olm_tokens_for_length(slots, k, beta)
    if tokens < 2:
        raise Vist2Error(f"--slots {slots} holds no OLM text with K={k}, β={beta}")
    generator = torch.Generator().manual_seed(0)
    ids = torch.randint(0, config.text_config.vocab_size, (tokens,), generator=generator).tolist()
    chunks = [
        Chunk(tuple(ids[i : i + k]), "", compressed=min(k, tokens - i) > beta)
        for i in range(0, tokens, k)
    ]
    layout = build_layout(olm_layout(chunks), beta)
    batch = collate_layouts([layout] * micro_batch)
    batch["label_index"] = label_index(batch["labels"])
    return batch


def label_index(labels: torch.Tensor) -> torch.Tensor:
    """labels (B, L) -> flat positions (n,) of the labelled slots in the (B·L) slots."""
    return (labels.reshape(-1) != IGNORE_INDEX).nonzero().squeeze(1)  # [n]


class _FlashLikeAttention(torch.autograd.Function):
    """Memory stand-in of a fused attention kernel: output and log-sum-exp are new tensors, q, k,
    v, output and log-sum-exp are saved for backward, gradients are q-, k- and v-sized. Values are
    not computed (the meta device has none; on real tensors they are uninitialised)."""

    @staticmethod
    def forward(ctx, query, key, value):  # [B, H, L, d], [B, H_kv, L, d], [B, H_kv, L, d]
        out = torch.empty_like(query)  # [B, H, L, d]
        lse = query.new_empty(query.shape[:-1], dtype=torch.float32)  # [B, H, L]
        ctx.save_for_backward(query, key, value, out, lse)
        return out

    @staticmethod
    def backward(ctx, grad_out):
        query, key, value, _, _ = ctx.saved_tensors
        return torch.empty_like(query), torch.empty_like(key), torch.empty_like(value)


def flash_like_attention(module, query, key, value, attention_mask, **kwargs):
    """A transformers attention function (AttentionInterface) around `_FlashLikeAttention`."""
    out = _FlashLikeAttention.apply(query, key, value)  # [B, H, L, d]
    return out.transpose(1, 2), None  # [B, L, H, d]


def olm_step(model, batch: dict[str, torch.Tensor], impl: str, autocast=None) -> torch.Tensor:
    """Forward + backward of the LLM and the loss over `batch` (all on one device)."""
    lm = model.language_model
    input_ids, visual_mask = batch["input_ids"], batch["visual_mask"]  # [B, L]
    labels = batch["labels"].reshape(-1)  # [B·L]
    index = batch["label_index"]  # [n] flat positions of labelled slots (no data-dependent op)
    with autocast or contextlib.nullcontext():
        embeds = lm.get_input_embeddings()(input_ids)  # [B, L, D]
        visual = torch.randn_like(embeds)  # [B, L, D], stands in for the frozen encoder's tokens
        embeds = torch.where(visual_mask[..., None], visual, embeds)  # [B, L, D]
        hidden = lm.get_decoder()(
            inputs_embeds=embeds,
            position_ids=batch["position_ids"],
            attention_mask=batch["attention_mask"],
        ).last_hidden_state  # [B, L, D]
        kept = hidden.reshape(-1, hidden.shape[-1]).index_select(0, index)  # [n, D]
        targets = labels.index_select(0, index)  # [n]
        loss = next_token_loss_sum(kept, lm.get_output_embeddings(), targets, impl=impl)
        loss = loss / index.numel()
    loss.backward()
    return loss


def _build_model(config, gradient_checkpointing: bool, device: str, attention: str):
    from transformers import AttentionInterface

    from vist2.model import VIST2Model

    AttentionInterface.register("vist2_memory_standin", flash_like_attention)
    with torch.device(device):
        model = VIST2Model(config).train()
    model.language_model.set_attn_implementation(attention)
    model.vision_model.requires_grad_(False)  # OLM trains the LLM (DESIGN.md, stage 3)
    model.aligner.requires_grad_(False)
    if gradient_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    return model


def measure_cpu(config, batch, impl: str, gradient_checkpointing: bool, real: bool = False):
    """(peak bytes, bytes per kind at the peak) of one fp32 step by MemTracker (meta or real)."""
    from torch.distributed._tools.mem_tracker import MemTracker

    device = torch.device("cpu" if real else "meta")
    model = _build_model(config, gradient_checkpointing, device.type, "vist2_memory_standin")
    batch = {k: v.to(device) for k, v in batch.items() if k != "attention_mask"}
    batch["attention_mask"] = None  # the stand-in attention takes no mask
    tracker = MemTracker()
    tracker.track_external(model)
    with tracker:
        olm_step(model, batch, impl)
    snapshot = tracker.get_tracker_snapshot("peak")[device]
    by_kind = {getattr(k, "value", str(k)): int(v) for k, v in snapshot.items() if k != "Total"}
    return int(snapshot["Total"]), by_kind


def measure_cuda(config, batch, impl: str, gradient_checkpointing: bool):
    """Peak CUDA bytes of one real bf16 step with flex attention, above the model's own bytes."""
    from vist2.training.trainer import FLEX_BLOCK, block_mask, pad_to_multiple

    device = torch.device("cuda")
    model = _build_model(config, gradient_checkpointing, "cuda", "flex_attention")
    batch = pad_to_multiple(batch, FLEX_BLOCK)
    batch["label_index"] = label_index(batch["labels"])  # the padded width moves the flat index
    batch = {k: v.to(device) for k, v in batch.items()}
    batch["attention_mask"] = block_mask(batch)
    torch.cuda.synchronize()
    torch.cuda.empty_cache()
    torch.cuda.reset_peak_memory_stats()
    before = torch.cuda.memory_allocated()
    olm_step(model, batch, impl, torch.autocast("cuda", dtype=torch.bfloat16))
    torch.cuda.synchronize()
    peak = torch.cuda.max_memory_allocated() - before
    del model, batch
    torch.cuda.empty_cache()
    return int(peak), {"Parameter (before the step, not in peak)": int(before)}


def run(args: argparse.Namespace) -> list[MemoryResult]:
    from vist2.loading import load_config
    from vist2.presets import preset_config

    config = load_config(args.model) if args.model else preset_config(args.preset)
    if args.vocab:
        config.text_config.vocab_size = args.vocab
    impls = [name.strip() for name in args.impl.split(",") if name.strip()]
    bad = [name for name in impls if name not in LOSS_IMPLS]
    if bad:
        raise Vist2Error(f"--impl: unknown loss implementation(s) {bad}; choose from {LOSS_IMPLS}")
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cuda" and not torch.cuda.is_available():
        raise Vist2Error("--device cuda: no CUDA device here; use --device cpu")
    if args.slots < 2 or args.micro_batch < 1:
        raise Vist2Error("--slots must be >= 2 and --micro-batch >= 1")
    batch = olm_batch(config, args.slots, args.micro_batch)
    labelled = int(batch["label_index"].numel())
    results = []
    for impl in impls:
        if device == "cuda":
            peak, kinds = measure_cuda(config, batch, impl, args.gradient_checkpointing)
            method = "cuda max_memory_allocated, bf16 autocast, flex attention (real step)"
        else:
            peak, kinds = measure_cpu(config, batch, impl, args.gradient_checkpointing, args.real)
            where = "real CPU" if args.real else "meta"
            method = f"MemTracker on {where} tensors, fp32, flash-like attention stand-in"
        results.append(
            MemoryResult(
                impl,
                peak,
                kinds,
                method,
                args.slots,
                args.micro_batch,
                config.text_config.vocab_size,
                labelled,
            )  # fmt: skip
        )
        print(
            f"{impl:>8}: peak {peak / GIB:7.2f} GiB  ({method}; {args.slots} slots x "
            f"{args.micro_batch}, vocab {config.text_config.vocab_size}, {labelled} labelled, "
            f"gradient checkpointing {'on' if args.gradient_checkpointing else 'off'})"
        )
    if len(results) > 1:
        base = results[0]
        for other in results[1:]:
            print(f"{other.impl} / {base.impl}: {other.peak_bytes / base.peak_bytes:.3f}")
    if args.out:
        Path(args.out).write_text(json.dumps([asdict(r) for r in results], indent=2) + "\n")
        print(f"wrote {args.out}")
    return results


def add_command(subparsers) -> None:
    """Register `vist2 loss-memory` on the main CLI's sub-parsers."""
    p = subparsers.add_parser(
        "loss-memory",
        help="peak memory of one OLM training step: plain vs memory-safe loss",
        description=__doc__.split("\n\n")[2],
    )
    where = p.add_mutually_exclusive_group()
    where.add_argument("--preset", default="qwen3-0.6b-512px", help="model shape (vist2 init)")
    where.add_argument("--model", help="a model directory instead of a preset")
    p.add_argument("--slots", type=int, default=8192, help="slots per sequence (max_length)")
    p.add_argument("--micro-batch", type=int, default=1, help="sequences per forward pass")
    p.add_argument("--vocab", type=int, help="override the LLM's vocabulary size")
    p.add_argument(
        "--impl", default="plain,chunked", help="comma-separated: " + ", ".join(LOSS_IMPLS)
    )
    p.add_argument(
        "--no-gradient-checkpointing", dest="gradient_checkpointing", action="store_false"
    )
    p.add_argument("--device", choices=("cpu", "cuda"), help="default: cuda if present")
    p.add_argument("--real", action="store_true", help="cpu: real tensors instead of meta ones")
    p.add_argument("--out", help="also write the results as JSON here")
    p.set_defaults(func=cmd_loss_memory)


def cmd_loss_memory(args: argparse.Namespace) -> int:
    run(args)
    return 0


__all__ = [
    "MemoryResult",
    "add_command",
    "cmd_loss_memory",
    "flash_like_attention",
    "measure_cpu",
    "measure_cuda",
    "olm_batch",
    "olm_step",
    "run",
]
