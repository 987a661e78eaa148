"""The next-token loss without full-vocabulary logits for the whole sequence.

Notable:
- `plain`: LM head over every labelled slot at once, then cross-entropy. At 8k slots and Qwen3's
  151,936-token vocabulary, the fp32 logits (4.9 GB), their log-softmax and their gradient fill
  the memory of the training step (DESIGN.md, "Measured on a GPU").
- `chunked` (plain torch, any device): the labelled slots are cut into chunks of at most
  `chunk_size` rows; each chunk's head + cross-entropy runs under activation checkpointing, so the
  forward keeps only each chunk's loss and the backward recomputes one chunk's logits at a time.
  Peak extra memory is one chunk's logits (and their gradient) instead of the whole sequence's.
  The sum over chunks is the same sum the plain loss takes, so loss and gradients agree to float
  rounding (tests/test_loss.py).
- `fused` (CUDA only): liger-kernel's fused linear + cross-entropy, which also never holds the
  full logits. Used by `auto` on a GPU when `liger_kernel` is installed; elsewhere `auto` means
  `chunked`. Not measured on this project's machines yet (no GPU in the session that wrote it).
- Every function returns the *sum* of token losses in fp32; the caller divides by its count (the
  trainer divides by the global batch's label count).
"""

from __future__ import annotations

import importlib.util

import torch
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint

from vist2.errors import ConfigError

LOSS_IMPLS = ("auto", "plain", "chunked", "fused")
CHUNK_ELEMENTS = 1 << 25  # logits per chunk: 32M fp32 values = 128 MiB (~220 rows of Qwen3's vocab)


def default_chunk_size(vocab_size: int) -> int:
    """Rows per chunk so that one chunk's fp32 logits hold about `CHUNK_ELEMENTS` values."""
    return max(CHUNK_ELEMENTS // max(vocab_size, 1), 1)


def resolve_impl(impl: str, device: torch.device) -> str:
    """`auto` -> `fused` on CUDA with liger-kernel installed, else `chunked`; others as given."""
    if impl not in LOSS_IMPLS:
        raise ConfigError(f"loss implementation must be one of {LOSS_IMPLS}, got {impl!r}")
    has_liger = importlib.util.find_spec("liger_kernel") is not None
    if impl == "fused" and (device.type != "cuda" or not has_liger):
        raise ConfigError(
            "loss implementation 'fused' needs a CUDA device and liger-kernel "
            "(`pip install liger-kernel`); use 'chunked' (plain torch, any device)"
        )
    if impl == "auto":
        return "fused" if device.type == "cuda" and has_liger else "chunked"
    return impl


def plain_loss_sum(
    hidden: torch.Tensor, head: torch.nn.Linear, labels: torch.Tensor
) -> torch.Tensor:
    """hidden (N, D), labels (N,) -> summed cross-entropy (fp32), all N x V logits at once."""
    logits = head(hidden)  # [N, V]
    return F.cross_entropy(logits.float(), labels, reduction="sum")


def _chunk_loss_sum(
    hidden: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, labels: torch.Tensor
) -> torch.Tensor:
    logits = F.linear(hidden, weight, bias)  # [n, V]
    return F.cross_entropy(logits.float(), labels, reduction="sum")


def chunked_loss_sum(
    hidden: torch.Tensor,
    head: torch.nn.Linear,
    labels: torch.Tensor,
    chunk_size: int | None = None,
) -> torch.Tensor:
    """hidden (N, D), labels (N,) -> summed cross-entropy (fp32), one checkpointed chunk at a time.

    Without autograd (no gradient needed) the chunks simply run one after another.
    """
    chunk_size = chunk_size or default_chunk_size(head.out_features)
    grad = torch.is_grad_enabled() and (hidden.requires_grad or head.weight.requires_grad)
    total = hidden.new_zeros((), dtype=torch.float32)
    for start in range(0, hidden.shape[0], chunk_size):
        rows = slice(start, start + chunk_size)
        if grad:
            part = checkpoint(
                _chunk_loss_sum, hidden[rows], head.weight, head.bias, labels[rows],
                use_reentrant=False,
            )  # fmt: skip
        else:
            part = _chunk_loss_sum(hidden[rows], head.weight, head.bias, labels[rows])
        total = total + part
    return total


def fused_loss_sum(
    hidden: torch.Tensor, head: torch.nn.Linear, labels: torch.Tensor
) -> torch.Tensor:
    """liger-kernel's fused linear + cross-entropy (CUDA): summed loss, no full logits."""
    from liger_kernel.transformers import LigerFusedLinearCrossEntropyLoss

    loss = LigerFusedLinearCrossEntropyLoss(reduction="sum")
    # liger wants matching dtypes (autocast leaves the hidden states bf16, the weight fp32)
    weight = head.weight.to(hidden.dtype)
    bias = None if head.bias is None else head.bias.to(hidden.dtype)
    return loss(weight, hidden, labels, bias).float()


def next_token_loss_sum(
    hidden: torch.Tensor,
    head: torch.nn.Module,
    labels: torch.Tensor,
    impl: str = "auto",
    chunk_size: int | None = None,
) -> torch.Tensor:
    """Summed next-token loss of labelled slots: hidden (N, D) -> () fp32.

    `head` is the LM head; a head that is not a plain `nn.Linear` (a custom output layer) falls
    back to `plain`, the only path that calls it as a module.
    """
    impl = resolve_impl(impl, hidden.device)
    if not isinstance(head, torch.nn.Linear) or impl == "plain":
        return plain_loss_sum(hidden, head, labels)
    if impl == "fused":
        return fused_loss_sum(hidden, head, labels)
    return chunked_loss_sum(hidden, head, labels, chunk_size)


__all__ = [
    "CHUNK_ELEMENTS",
    "LOSS_IMPLS",
    "chunked_loss_sum",
    "default_chunk_size",
    "fused_loss_sum",
    "next_token_loss_sum",
    "plain_loss_sum",
    "resolve_impl",
]
