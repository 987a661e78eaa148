"""OCR learnability check: can a very small VIST2 model learn to read its pages at all?

Builds a small `VIST2Model` from the project's own pieces (VIST2Config, PageRenderer +
pages_to_tensor, ocr_layout + build_layout + collate_layouts, the model's forward with labels)
and trains it with AdamW on a stage-2 OCR task, [page, text], loss on the text. The text is
random (digits or words drawn at random), so a model that does not look at the page cannot
beat the unigram loss; the blank-page control (every page replaced by a white page) measures
exactly that. A model that reads drives the real-page loss far below the blank-page loss.

    python scripts/ocr_sanity.py                       # trivial: 6 digits, 24 px font, 96 px page
    python scripts/ocr_sanity.py --preset-geometry small --text words --steps 600
    python scripts/ocr_sanity.py --diagnose            # pipeline checks before training

Every --eval-every steps one row: step, train loss, eval loss on real pages, on blank pages,
their gap, and the real-page next-token accuracy. Uses one CPU thread unless told otherwise.
"""

from __future__ import annotations

import argparse
import math
import random
import re
import sys
import time
from contextlib import ExitStack, contextmanager
from pathlib import Path

import torch
from tqdm import tqdm

from vist2.config import VIST2Config
from vist2.eval.page_loss import token_boxes, token_lines
from vist2.layout import IGNORE_INDEX, build_layout, collate_layouts, ocr_layout
from vist2.loading import load_model, load_tokenizer, save_model, tiny_tokenizer_path
from vist2.model import VIST2Model
from vist2.render import PageRenderer, pages_to_tensor
from vist2.training.visual_variance import capture_visual_tokens, variance_penalty

CORPUS_DIR = Path("/work/shared/corpora/en")
SPARSE_INK = False  # --sparse-ink


# ---- the task --------------------------------------------------------------------------------


class TextSource:
    """Random page texts: `digits` ("3 7 1 9 4 2": one token per digit with the tiny tokenizer,
    uniform over 10, so the unigram floor is ln 10) or `words` (words drawn at random from a
    corpus, so the page text carries no context a blind model could use)."""

    def __init__(self, kind: str, tokens: int, tokenizer, corpus: Path, seed: int) -> None:
        self.kind, self.tokens, self.tokenizer = kind, tokens, tokenizer
        self.rng = random.Random(seed)
        self.words: list[str] = []
        if kind == "words":
            files = sorted(corpus.glob("*.txt")) if corpus.is_dir() else [corpus]
            text = " ".join(f.read_text(encoding="utf-8", errors="ignore") for f in files)
            self.words = sorted(set(re.findall(r"[A-Za-z]{2,10}", text)))
            if not self.words:
                raise SystemExit(f"no words found in {corpus}")

    def sample(self) -> tuple[str, list[int]]:
        """(page text, its token ids), at most `tokens` ids."""
        if self.kind == "digits":
            text = " ".join(self.rng.choice("0123456789") for _ in range(self.tokens))
            return text, self.encode(text)
        text = ""
        while True:  # add words until the next would pass the token budget
            nxt = (text + " " + self.rng.choice(self.words)).strip()
            if len(self.encode(nxt)) > self.tokens:
                break
            text = nxt
        return text, self.encode(text)

    def encode(self, text: str) -> list[int]:
        return self.tokenizer(text, add_special_tokens=False)["input_ids"]


def make_batch(source: TextSource, renderer: PageRenderer, n: int, beta: int) -> dict:
    texts, ids = zip(*(source.sample() for _ in range(n)), strict=True)
    layouts = [build_layout(ocr_layout([t]), beta) for t in ids]
    batch = collate_layouts(layouts)
    batch["pages"] = pages_to_tensor(renderer.render_batch(list(texts)))  # [N, H, W]
    batch["texts"] = list(texts)
    return batch


def cell_targets(
    renderer: PageRenderer, texts, tokenizer, side: int, cell_px: int, vocab: int, chars: bool
):
    """Which tokens (or, with `chars`, characters: code point mod `vocab`) each visual token's
    page region holds: (N, β, vocab) soft targets (uniform over the tokens with a character
    centred in the region) and (N, β) bool: the region has text."""
    target = torch.zeros(len(texts), side * side, vocab)  # [N, β, V]
    for n, text in enumerate(texts):
        norm, boxes = renderer.char_boxes(text)  # boxes: (n_drawn, 5)
        enc = tokenizer(norm, add_special_tokens=False, return_offsets_mapping=True)
        token_of_char = [-1] * len(norm)
        for k, (a, b) in enumerate(enc["offset_mapping"]):
            token_of_char[a:b] = [k] * (b - a)
        for i, x0, y0, x1, y1 in boxes.tolist():
            k = token_of_char[i]
            if k < 0:
                continue
            row = min((y0 + y1) // 2 // cell_px, side - 1)
            col = min((x0 + x1) // 2 // cell_px, side - 1)
            label = ord(norm[i]) % vocab if chars else enc["input_ids"][k]
            target[n, row * side + col, label] = 1.0
    mask = target.sum(-1) > 0  # [N, β]
    return target / target.sum(-1, keepdim=True).clamp(min=1.0), mask


def forward(model: VIST2Model, batch: dict, blank: bool = False, grad: bool = True):
    pages = torch.ones_like(batch["pages"]) if blank else batch["pages"]  # white = +1
    if SPARSE_INK:  # paper 0, ink 1
        pages = (1.0 - pages) / 2
    with torch.set_grad_enabled(grad):
        return model(
            input_ids=batch["input_ids"],
            visual_mask=batch["visual_mask"],
            pages=pages,
            position_ids=batch["position_ids"],
            attention_mask=batch["attention_mask"],
            labels=batch["labels"],
            return_logits=not grad,
        )


def with_lines(batch: dict, renderer: PageRenderer, tokenizer) -> dict:
    """Add "lines": the page line (0 = top) of every labelled token, in label order."""
    ids = [row[row != IGNORE_INDEX].tolist() for row in batch["labels"]]
    batch["lines"] = torch.cat(
        [torch.from_numpy(token_lines(renderer, tokenizer, i)) for i in ids]
    )  # (labelled tokens,)
    batch["index"] = torch.cat([torch.arange(len(i)) for i in ids])  # (labelled tokens,)
    return batch


@torch.no_grad()
def evaluate(model: VIST2Model, batches: list[dict]) -> dict[str, float]:
    """Mean loss and accuracy from real and blank pages; with "lines" in the batches also the
    loss on line 1 only and on the lines below it (`real_l1`, `real_below`, ...)."""
    model.eval()
    out = {}
    for name, blank in (("real", False), ("blank", True)):
        nll, correct = [], []
        for b in batches:
            o = forward(model, b, blank=blank, grad=False)
            targets = b["labels"][b["labels"] != IGNORE_INDEX]
            nll.append(
                torch.nn.functional.cross_entropy(o.logits.float(), targets, reduction="none")
            )
            correct.append(o.logits.argmax(-1) == targets)
        nll_all, correct_all = torch.cat(nll), torch.cat(correct)  # (labelled tokens,)
        out[name], out[name + "_acc"] = float(nll_all.mean()), float(correct_all.float().mean())
        if "lines" in batches[0]:
            lines = torch.cat([b["lines"] for b in batches])
            for part, sel in (("l1", lines == 0), ("below", lines > 0)):
                out[f"{name}_{part}"] = float(nll_all[sel].mean()) if sel.any() else float("nan")
            index = torch.cat([b["index"] for b in batches])
            out[f"{name}_by_index"] = [
                float(nll_all[index == i].mean()) for i in range(min(16, int(index.max()) + 1))
            ]
    # how much the visual tokens vary from page to page, relative to their size
    v = model.encode_pages(batches[0]["pages"])  # [N, β, D]
    out["spread"] = float(v.std(0).norm(dim=-1).mean() / v.norm(dim=-1).mean())
    model.train()
    return out


# ---- the model -------------------------------------------------------------------------------


def build_config(args, vocab: int) -> VIST2Config:
    grid = args.page_size // args.patch_size
    beta = (grid // args.merge) ** 2
    return VIST2Config(
        text_config={
            "model_type": "qwen3",
            "vocab_size": vocab,
            "hidden_size": args.text_hidden,
            "num_hidden_layers": args.text_layers,
            "num_attention_heads": 4,
            "num_key_value_heads": 2,
            "head_dim": args.text_hidden // 4,
            "intermediate_size": 2 * args.text_hidden,
            "max_position_embeddings": 4096,
            "tie_word_embeddings": True,
        },
        vision_config={
            "model_type": "siglip_vision_model",
            "hidden_size": args.vision_hidden,
            "intermediate_size": 2 * args.vision_hidden,
            "num_hidden_layers": args.vision_layers,
            "num_attention_heads": 2,
            "image_size": args.patch_size * args.merge if args.local_vision else args.page_size,
            "patch_size": args.patch_size,
            "vision_use_head": False,
        },
        chunk_tokens=4 * beta,
        visual_tokens_per_page=beta,
        compression_ratio=4.0,
        aligner=args.aligner,
        merge_size=args.merge,
        vision_window=args.patch_size * args.merge if args.local_vision else 0,
        render={
            "page_width": args.page_size,
            "page_height": args.page_size,
            "font_size": args.font_size,
            "min_font_size": max(1, args.font_size - 6),
            "line_spacing": args.line_spacing,
            "margin": args.margin,
        },
    )


# ---- pipeline checks (--diagnose) ------------------------------------------------------------


def diagnose(model: VIST2Model, batch: dict) -> None:
    """Pixels reach the loss, pages are told apart, the merge keeps spatial order, and the
    positions / mask / labels of an OCR layout follow DESIGN.md."""
    cfg = model.config
    beta = cfg.visual_tokens_per_page
    pages = batch["pages"].clone().requires_grad_(True)
    out = model(
        input_ids=batch["input_ids"],
        visual_mask=batch["visual_mask"],
        pages=pages,
        position_ids=batch["position_ids"],
        attention_mask=batch["attention_mask"],
        labels=batch["labels"],
    )
    out.loss.backward()
    g = pages.grad.abs()
    print(
        f"[diag] d loss / d pixels: mean |g| {g.mean():.3e}, pages with zero grad "
        f"{int((g.flatten(1).sum(1) == 0).sum())}/{g.shape[0]}"
    )
    with torch.no_grad():
        v = model.encode_pages(batch["pages"][:2])  # [2, β, D]
        blank = model.encode_pages(torch.ones_like(batch["pages"][:1]))
        print(
            f"[diag] |v(page0) - v(page1)| / |v(page0)| = {(v[0] - v[1]).norm() / v[0].norm():.3f}; "
            f"|v(page0) - v(blank)| / |v(page0)| = {(v[0] - blank[0]).norm() / v[0].norm():.3f}"
        )
    # merge order: token t of the merged grid must hold patches (mr·r+i, mc·c+j), i < mr, j < mc
    rows, cols = cfg.patch_grid
    mr, mc = cfg.merge_shape
    ids = torch.arange(rows * cols, dtype=torch.float32).reshape(1, rows * cols, 1)
    merged = model.aligner.pixel_shuffle(ids)[0]  # [β, mr·mc]
    ok = True
    for t in range(merged.shape[0]):
        r, c = divmod(t, cols // mc)
        want = [(r * mr + i) * cols + (c * mc + j) for i in range(mr) for j in range(mc)]
        ok &= merged[t].tolist() == want
    print(f"[diag] pixel-shuffle merge keeps row-major spatial order: {ok}")
    # positions / mask / labels of [page, text]
    n_text = int((batch["labels"][0] != IGNORE_INDEX).sum())
    pos = batch["position_ids"][0, : beta + n_text].tolist()
    print(
        f"[diag] positions of sample 0: visual {pos[:beta][:4]}..{pos[beta - 1]}, "
        f"text {pos[beta:]} (want 0..{beta - 1}, then {beta}..{beta + n_text - 1})"
    )
    mask = batch["attention_mask"][0, 0, : beta + n_text, : beta + n_text]
    causal = torch.tril(torch.ones_like(mask))
    print(f"[diag] mask of sample 0 is plain causal: {bool((mask == causal).all())}")
    lab = batch["labels"][0, : beta + n_text]
    ids0 = batch["input_ids"][0, : beta + n_text]
    print(
        f"[diag] label at last visual slot = first text token: {int(lab[beta - 1]) == int(ids0[beta])}; "
        f"labels shift by one: {bool((lab[beta - 1 : beta + n_text - 1] == ids0[beta:]).all())}"
    )
    slots = batch["visual_mask"][0].nonzero().flatten().tolist()
    print(f"[diag] visual slots of sample 0: {slots[0]}..{slots[-1]} ({len(slots)} = β {beta})")
    model.zero_grad(set_to_none=True)


# ---- main ------------------------------------------------------------------------------------


GEOMETRIES = {
    "trivial": {
        "text": "digits",
        "tokens": 6,
        "page_size": 96,
        "font_size": 24,
        "patch_size": 16,
        "merge": 1,
    },
    "small": {
        "text": "words",
        "tokens": 64,
        "page_size": 128,
        "font_size": 12,
        "patch_size": 8,
        "merge": 4,
    },
}


def with_geometry(args: argparse.Namespace) -> argparse.Namespace:
    """Fill the options left unset from --preset-geometry."""
    for key, value in GEOMETRIES[args.preset_geometry].items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    return args


def add_variant_args(p: argparse.ArgumentParser) -> None:
    """The experiment variants: anti-collapse, auxiliary losses, merge shape, encoder scope."""
    p.add_argument(
        "--variance-weight",
        type=float,
        default=0.0,
        help="anti-collapse: add w x mean(relu(target - std over pages)) of the visual tokens "
        "(each scaled to unit RMS) to the loss; 0 = off",
    )
    p.add_argument("--variance-target", type=float, default=0.5)
    p.add_argument("--aux-weight", type=float, default=0.0, help="region token-set loss weight")
    p.add_argument("--aux-head", choices=["linear", "embed"], default="linear")
    p.add_argument("--aux-unit", choices=["token", "char"], default="token")
    p.add_argument(
        "--where-weight",
        type=float,
        default=0.0,
        help="weight of a loss making the LLM's hidden state say which visual token holds the "
        "next text token (0 = off)",
    )
    p.add_argument(
        "--attention",
        action="store_true",
        help="after training, report where the LLM's text positions attend on the page",
    )
    p.add_argument(
        "--local-vision",
        action="store_true",
        help="encode each visual token's cell on its own (VIST2Config.vision_window; no "
        "page-wide attention in the ViT); with --init, the loaded model's weights are kept",
    )
    p.add_argument("--where-layer", type=int, default=2, help="LLM layer (1-based) it reads")
    p.add_argument("--merge-shape", type=int, nargs=2, metavar=("ROWS", "COLS"), default=None)
    p.add_argument("--sparse-ink", action="store_true", help="feed pages as paper 0, ink 1")


def add_model_args(p: argparse.ArgumentParser) -> None:
    """The corpus, the page and the model sizes (unset geometry comes from --preset-geometry)."""
    p.add_argument("--corpus", type=Path, default=CORPUS_DIR)
    p.add_argument("--page-size", type=int, default=None)
    p.add_argument("--font-size", type=int, default=None)
    p.add_argument("--line-spacing", type=float, default=1.2, help="line height = font size x this")
    p.add_argument("--margin", type=int, default=4, help="blank border of the page, pixels")
    p.add_argument("--patch-size", type=int, default=None)
    p.add_argument("--merge", type=int, default=None)
    p.add_argument("--aligner", choices=["mlp", "tanh"], default="mlp")
    p.add_argument("--text-hidden", type=int, default=64)
    p.add_argument("--text-layers", type=int, default=2)
    p.add_argument("--vision-hidden", type=int, default=64)
    p.add_argument("--vision-layers", type=int, default=2)


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument(
        "--preset-geometry",
        choices=["trivial", "small"],
        default="trivial",
        help="trivial: 96 px page, 24 px font, 6 digits, patch 16, no merge; small: the "
        "shipped small preset's page (128 px, 12 px font, patch 8, 4x4 merge, "
        "K=64, beta=16); explicit flags below override",
    )
    p.add_argument("--text", choices=["digits", "words"], default=None)
    p.add_argument("--tokens", type=int, default=None, help="text tokens per page")
    p.add_argument(
        "--tokens-from",
        type=int,
        default=0,
        help="curriculum: training pages hold this many tokens at step 1, growing linearly to "
        "--tokens by --ramp-steps (eval pages always hold --tokens); 0 = no curriculum",
    )
    p.add_argument("--ramp-steps", type=int, default=0)
    add_variant_args(p)
    add_model_args(p)
    p.add_argument("--steps", type=int, default=300)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument(
        "--llm-lr-scale",
        type=float,
        default=1.0,
        help="the LLM's lr is lr x this (0 freezes it); vision encoder and aligner get lr",
    )
    p.add_argument("--weight-decay", type=float, default=1e-4)
    p.add_argument("--warmup", type=int, default=20)
    p.add_argument("--eval-every", type=int, default=25)
    p.add_argument("--eval-samples", type=int, default=128)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--time-limit", type=float, default=0, help="stop after this many seconds")
    p.add_argument(
        "--init",
        default=None,
        help="start from this trained model (a directory, a run directory or a shipped name such "
        "as vist2-small) instead of random weights; its page geometry and tokenizer replace the "
        "geometry flags",
    )
    p.add_argument("--save", default=None, help="write the trained model (and tokenizer) here")
    p.add_argument(
        "--eval-tokens",
        type=int,
        nargs="*",
        default=[],
        help="after training, also measure the gap on held-out pages of these many tokens",
    )
    p.add_argument("--diagnose", action="store_true", help="run the pipeline checks first")
    p.add_argument("--no-progress", action="store_true")
    args = p.parse_args(argv)
    return with_geometry(args)


def run(args: argparse.Namespace) -> list[dict]:
    """Train; return the eval rows (step, train, real, blank, real_acc, blank_acc, seconds)."""
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    model, tokenizer = build_model(args)
    config = model.config
    beta = config.visual_tokens_per_page
    renderer = PageRenderer(config.render_config)
    train_src = TextSource(args.text, args.tokens, tokenizer, args.corpus, args.seed)
    eval_src = TextSource(args.text, args.tokens, tokenizer, args.corpus, args.seed + 10_000)
    eval_batches = held_out_batches(eval_src, renderer, tokenizer, args, beta)
    n_params = sum(p.numel() for p in model.parameters())
    print(
        f"model: {n_params / 1e6:.2f} M params; page {args.page_size} px, font "
        f"{args.font_size} px, patch {args.patch_size}, merge {args.merge}, beta {beta}, "
        f"K {config.chunk_tokens}, aligner {args.aligner}; text {args.text} x {args.tokens} "
        f"tokens; e.g. {eval_batches[0]['texts'][0]!r}"
    )
    if args.text == "digits":
        print(f"a blind model's floor: ln 10 = {math.log(10):.3f} nats/token")
    if args.diagnose:
        diagnose(model, eval_batches[0])

    region = RegionLoss(args, config, tokenizer, renderer) if args.aux_weight else None
    where = WhereLoss(args, model, tokenizer, renderer) if args.where_weight else None
    heads = [
        *(region.head.parameters() if region else []),
        *(where.head.parameters() if where else []),
    ]
    opt, sched = make_optimizer(model, args, heads)
    rows: list[dict] = []
    header = f"{'step':>5} {'train':>7} {'real':>7} {'blank':>7} {'gap':>7} {'gap_l1':>7} {'gap_below':>9} {'acc':>6} {'blank_acc':>9} {'spread':>7} {'s':>6}"
    print(header)
    start, train_loss = time.time(), float("nan")

    def log(step: int) -> None:
        e = evaluate(model, eval_batches)
        row = {"step": step, "train": train_loss, "seconds": time.time() - start, **e}
        rows.append(row)
        tqdm.write(
            f"{step:>5} {train_loss:>7.3f} {e['real']:>7.3f} {e['blank']:>7.3f} "
            f"{e['blank'] - e['real']:>7.3f} {e['blank_l1'] - e['real_l1']:>7.3f} "
            f"{e['blank_below'] - e['real_below']:>9.3f} "
            f"{e['real_acc']:>6.3f} {e['blank_acc']:>9.3f} {e['spread']:>7.4f} "
            f"{row['seconds']:>6.0f}"
        )

    log(0)
    bar = tqdm(range(1, args.steps + 1), disable=args.no_progress, file=sys.stderr, leave=False)
    for step in bar:
        train_src.tokens = page_tokens(args, step)
        batch = make_batch(train_src, renderer, args.batch_size, beta)
        loss = objective(model, batch, args, region, where)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        train_loss = float(loss.detach())
        bar.set_postfix(loss=f"{train_loss:.3f}")
        out_of_time = args.time_limit and time.time() - start > args.time_limit
        if step % args.eval_every == 0 or step == args.steps or out_of_time:
            log(step)
        if out_of_time:
            tqdm.write(f"time limit {args.time_limit:.0f} s reached at step {step}")
            break
    if args.eval_tokens:
        gap_by_length(model, tokenizer, renderer, args, beta)
    if args.attention:
        attention_report(model, eval_batches[0], renderer, tokenizer, args)
    if args.save:
        save_model(model, tokenizer, args.save)
        print(f"saved the model to {args.save}")
    return rows


def build_model(args) -> tuple[VIST2Model, object]:
    """(model in train mode, tokenizer): random weights from the geometry flags, or --init.
    With --init, the loaded model's page geometry is written back into `args`."""
    if args.init:
        model, tokenizer = load_model(args.init)
        cfg, render = model.config, model.config.render_config
        args.page_size, args.font_size = render.page_width, render.font_size
        if not isinstance(cfg.merge_size, int):
            raise SystemExit(
                f"ocr_sanity.py: --init {args.init} merges {cfg.merge_size}; "
                "square merges only here (see --merge-shape)"
            )
        args.patch_size, args.merge = cfg.vision_config.patch_size, cfg.merge_size
        args.aligner = cfg.aligner
    else:
        tokenizer = load_tokenizer(tiny_tokenizer_path())
        model = VIST2Model(build_config(args, len(tokenizer)))
    if args.merge_shape:
        reshape_merge(model, *args.merge_shape)
    if args.local_vision and not model.config.vision_window:
        sys.path.insert(0, str(Path(__file__).resolve().parent))  # scripts/, when imported
        from windowed_from import windowed_from

        model = windowed_from(model, args.patch_size * args.merge)
    return model.train(), tokenizer


def held_out_batches(source: TextSource, renderer: PageRenderer, tokenizer, args, beta: int):
    """--eval-samples pages from `source` in batches, each token's page line attached."""
    return [
        with_lines(
            make_batch(source, renderer, min(args.batch_size, args.eval_samples - i), beta),
            renderer,
            tokenizer,
        )
        for i in range(0, args.eval_samples, args.batch_size)
    ]


def gap_by_length(model: VIST2Model, tokenizer, renderer: PageRenderer, args, beta: int) -> None:
    """--eval-tokens: the blank-page gap on held-out random-text pages of each length, overall,
    on line 1 and on the lines below it."""
    print(
        f"{'tokens':>6} {'real':>7} {'blank':>7} {'gap':>7} {'gap_l1':>7} {'gap_below':>9} {'acc':>6}"
    )
    for n in args.eval_tokens:
        src = TextSource(args.text, n, tokenizer, args.corpus, args.seed + 20_000 + n)
        e = evaluate(model, held_out_batches(src, renderer, tokenizer, args, beta))
        print(
            f"{n:>6} {e['real']:>7.3f} {e['blank']:>7.3f} {e['blank'] - e['real']:>7.3f} "
            f"{e['blank_l1'] - e['real_l1']:>7.3f} {e['blank_below'] - e['real_below']:>9.3f} "
            f"{e['real_acc']:>6.3f}"
        )
        gaps = [b - r for b, r in zip(e["blank_by_index"], e["real_by_index"], strict=True)]
        print(f"{'':>6} gap by token index: " + " ".join(f"{g:.2f}" for g in gaps))


def make_optimizer(model: VIST2Model, args, extra: list[torch.nn.Parameter]):
    """AdamW (the LLM at lr x --llm-lr-scale, frozen at 0) with warm-up + cosine."""
    llm = list(model.language_model.parameters())
    llm_ids = {id(p) for p in llm}
    groups = [{"params": [p for p in model.parameters() if id(p) not in llm_ids], "lr": args.lr}]
    if extra:
        groups.append({"params": extra, "lr": args.lr})
    if args.llm_lr_scale > 0:
        groups.append({"params": llm, "lr": args.lr * args.llm_lr_scale})
    else:
        for p in llm:
            p.requires_grad_(False)
    opt = torch.optim.AdamW(groups, weight_decay=args.weight_decay)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt,
        lambda s: (
            min(1.0, (s + 1) / max(args.warmup, 1))
            * 0.5
            * (1 + math.cos(math.pi * min(s, args.steps) / max(args.steps, 1)))
        ),
    )
    return opt, sched


class RegionLoss:
    """--aux-weight: each visual token predicts the tokens (--aux-unit char: characters) drawn
    in its page region, through a linear head or the LLM's input embeddings (--aux-head)."""

    def __init__(self, args, config, tokenizer, renderer: PageRenderer) -> None:
        self.args, self.tokenizer, self.renderer = args, tokenizer, renderer
        self.classes = 256 if args.aux_unit == "char" else len(tokenizer)
        self.head = torch.nn.Linear(config.text_config.hidden_size, self.classes)
        self.side = args.page_size // (args.patch_size * args.merge)

    def __call__(self, model: VIST2Model, texts, visual: torch.Tensor) -> torch.Tensor:
        """visual: (N, β, D) -> scalar cross-entropy against the regions' soft targets."""
        args = self.args
        target, has_text = cell_targets(
            self.renderer,
            texts,
            self.tokenizer,
            self.side,
            args.patch_size * args.merge,
            self.classes,
            args.aux_unit == "char",
        )
        if args.aux_head == "embed":  # the LLM's (frozen here) input embeddings as the head
            logits = visual @ model.get_input_embeddings().weight.detach().T  # [N, β, V]
        else:
            logits = self.head(visual)  # [N, β, V]
        logp = torch.log_softmax(logits, -1)  # [N, β, V]
        return -(target * logp).sum(-1)[has_text].mean()


def token_cells(batch: dict, renderer, tokenizer, cell: tuple[int, int], cols: int) -> torch.Tensor:
    """(labelled tokens,) for each labelled token, the visual token (cells of `cell` = (height,
    width) px, `cols` to a row) whose region holds its first drawn character."""
    cells = []
    for row in batch["labels"]:
        box = token_boxes(renderer, tokenizer, row[row != IGNORE_INDEX].tolist())  # (n, 4)
        cy, cx = (box[:, 1] + box[:, 3]) // 2, (box[:, 0] + box[:, 2]) // 2
        cells.append(torch.from_numpy(cy // cell[0] * cols + cx // cell[1]))
    return torch.cat(cells)


@torch.no_grad()
def attention_report(model: VIST2Model, batch: dict, renderer, tokenizer, args) -> None:
    """--attention: per LLM layer and head, at the positions that predict text tokens 2, 3, ...:
    the attention share on the visual slots, and on the one cell that holds the token being
    predicted (a model that follows the text puts most of the first on the second)."""
    mh, mw = args.merge_shape or (args.merge, args.merge)
    cell = (args.patch_size * mh, args.patch_size * mw)
    cells = token_cells(batch, renderer, tokenizer, cell, args.page_size // cell[1])
    beta = model.config.visual_tokens_per_page
    labelled = batch["labels"] != IGNORE_INDEX  # (B, L)
    index = torch.cat([torch.arange(int(r.sum())) for r in labelled])  # (tokens,)
    weights: list[torch.Tensor] = []
    layers = model.language_model.get_decoder().layers
    before = model.language_model.config._attn_implementation
    model.language_model.set_attn_implementation("eager")  # the only backend that returns weights
    hooks = [
        la.self_attn.register_forward_hook(lambda _m, _i, o: weights.append(o[1])) for la in layers
    ]
    try:
        model.eval()
        forward(model, batch, grad=False)
    finally:
        for h in hooks:
            h.remove()
        model.language_model.set_attn_implementation(before)
        model.train()
    later = index >= 2
    print("attention at positions predicting text token 2+: on visual slots / on the right cell")
    for li, w in enumerate(weights):  # w: (B, H, L, L)
        q = w.float().permute(0, 2, 1, 3)[labelled][later]  # (tokens, H, L)
        on_cell = q[..., :beta].gather(-1, cells[later][:, None, None].expand(-1, q.shape[1], 1))
        heads = [
            f"{q[:, h, :beta].sum(-1).mean():.2f} / {on_cell[:, h, 0].mean():.2f}"
            for h in range(q.shape[1])
        ]
        print(f"  layer {li + 1}: " + " | ".join(heads))


class WhereLoss:
    """--where-weight: from the LLM's hidden state after layer --where-layer, at each position
    that predicts a text token, a linear head predicts which visual token's page region that
    token is drawn in -- telling the LLM where on the page it is reading."""

    def __init__(self, args, model: VIST2Model, tokenizer, renderer: PageRenderer) -> None:
        self.args, self.tokenizer, self.renderer = args, tokenizer, renderer
        mh, mw = args.merge_shape or (args.merge, args.merge)
        self.cell = (args.patch_size * mh, args.patch_size * mw)  # (height, width) px
        self.cols = args.page_size // self.cell[1]
        beta = model.config.visual_tokens_per_page
        hidden = model.config.text_config.hidden_size
        self.head = torch.nn.Sequential(torch.nn.LayerNorm(hidden), torch.nn.Linear(hidden, beta))
        self.layer = model.language_model.get_decoder().layers[args.where_layer - 1]

    def targets(self, batch: dict) -> torch.Tensor:
        """(labelled tokens,) the visual token whose region holds each labelled token."""
        return token_cells(batch, self.renderer, self.tokenizer, self.cell, self.cols)

    @contextmanager
    def capture(self):
        """Yields a list that holds the layer's output hidden states (N, S, D) after forward."""
        out: list[torch.Tensor] = []
        handle = self.layer.register_forward_hook(
            lambda _m, _i, o: out.append(o[0] if isinstance(o, tuple) else o)
        )
        try:
            yield out
        finally:
            handle.remove()

    def __call__(self, hidden: torch.Tensor, batch: dict) -> torch.Tensor:
        """hidden: (N, S, D) -> cross-entropy of the cell predicted at each labelled position."""
        labelled = hidden[batch["labels"] != IGNORE_INDEX]  # (tokens, D)
        return torch.nn.functional.cross_entropy(self.head(labelled), self.targets(batch))


def objective(
    model: VIST2Model,
    batch: dict,
    args,
    region: RegionLoss | None,
    where: WhereLoss | None = None,
) -> torch.Tensor:
    """The OCR loss plus the optional variance, region and where terms."""
    with capture_visual_tokens(model.aligner) as visual, ExitStack() as stack:
        hidden = stack.enter_context(where.capture()) if where else None
        loss = forward(model, batch).loss
    if args.variance_weight:
        loss = loss + args.variance_weight * variance_penalty(visual[0], args.variance_target)
    if region is not None:
        loss = loss + args.aux_weight * region(model, batch["texts"], visual[0])
    if where is not None:
        loss = loss + args.where_weight * where(hidden[0], batch)
    return loss


def reshape_merge(model: VIST2Model, mh: int, mw: int) -> None:
    """Merge mh x mw patches (mh * mw = merge²: the same β and widths) instead of a square:
    e.g. 1 x 16 makes each visual token one full-width strip, in reading order."""
    aligner = model.aligner
    size = aligner.merge_shape[0] * aligner.merge_shape[1]
    if mh * mw != size:
        raise SystemExit(f"--merge-shape {mh} {mw}: the product must be {size}")

    def shuffle(x: torch.Tensor) -> torch.Tensor:
        n, _, d = x.shape
        rows, cols = aligner.grid
        x = x.reshape(n, rows // mh, mh, cols // mw, mw, d).permute(0, 1, 3, 2, 4, 5)
        return x.reshape(n, (rows // mh) * (cols // mw), mh * mw * d)  # [N, β, mh·mw·D]

    aligner.pixel_shuffle = shuffle


def page_tokens(args: argparse.Namespace, step: int) -> int:
    """Text tokens on a training page at `step` (the --tokens-from -> --tokens ramp)."""
    if not args.tokens_from or step >= args.ramp_steps:
        return args.tokens
    return round(args.tokens_from + (args.tokens - args.tokens_from) * step / args.ramp_steps)


def main(argv=None) -> int:
    global SPARSE_INK
    args = parse_args(argv)
    SPARSE_INK = args.sparse_ink
    run(args)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
