"""One training step of a preset model on CPU, fp32 vs bf16 autocast, side by side.

    python scripts/bench_train_step_dtype.py --preset small --threads 2

Builds the preset (random init: speed does not depend on the weights), a batch shaped like the
OCR stage's full pages (N pages, β visual + K text tokens each), and times forward + backward in
fp32 and under `torch.autocast("cpu", dtype=torch.bfloat16)` (what `mixed_precision: "bf16"`
does), alternating the two `--repeats` times; prints the median of each and their ratio. bf16
pays off on CPUs with AVX512-BF16 or AMX; elsewhere it can be slower.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from vist2.model import VIST2Model
from vist2.presets import preset_config


def batch_for(config, pages: int) -> dict[str, torch.Tensor]:
    """A stage-2 shaped batch: each row [β visual slots, K text tokens], loss on the text."""
    beta, k = config.visual_tokens_per_page, config.chunk_tokens
    vocab = config.text_config.vocab_size
    height, width = config.render_config.page_height, config.render_config.page_width
    ids = torch.randint(0, vocab, (pages, beta + k))  # [N, L]
    visual = torch.zeros(pages, beta + k, dtype=torch.bool)  # [N, L]
    visual[:, :beta] = True
    labels = ids.masked_fill(visual, -100)  # [N, L]
    return {
        "input_ids": ids,
        "visual_mask": visual,
        "pages": torch.rand(pages, height, width) * 2 - 1,  # [N, H, W]
        "position_ids": torch.arange(beta + k).expand(pages, -1),  # [N, L]
        "labels": labels,
    }


def step_seconds(model: VIST2Model, batch: dict, bf16: bool) -> float:
    model.zero_grad(set_to_none=True)
    start = time.perf_counter()
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
        loss = model(**batch).loss
    loss.backward()
    return time.perf_counter() - start


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--preset", default="small")
    p.add_argument("--pages", type=int, default=16, help="pages (sequences) in the batch")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--repeats", type=int, default=5)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    config = preset_config(args.preset)
    model = VIST2Model(config).train()
    batch = batch_for(config, args.pages)
    times: dict[str, list[float]] = {"fp32": [], "bf16": []}
    for bf16 in (False, True):  # warm-up: kernels, allocator
        step_seconds(model, batch, bf16)
    for _ in range(args.repeats):
        for name in times:
            times[name].append(step_seconds(model, batch, name == "bf16"))
    fp32, bf16 = (statistics.median(times[n]) for n in ("fp32", "bf16"))
    print(
        f"{args.preset}, {args.pages} pages, {args.threads} threads: fp32 {fp32:.3f} s/step, "
        f"bf16 autocast {bf16:.3f} s/step, fp32 / bf16 = {fp32 / bf16:.2f}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
