"""How much a page tells the model: teacher-forced next-token loss on a page's own text, read
from the real page vs from a blank page, in nats per token.

Greedy character accuracy only moves once a model reads most of a page; this measure moves
as soon as the page helps at all (a model that ignores its pages scores a gain of 0; one that
reads perfectly, the whole blank-page loss). Stage-2 layout, one page per row: [β visual tokens,
the page's text], the loss on the text.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F  # noqa: N812

from vist2.chunker import decode_pieces
from vist2.render import normalize_text


def page_token_loss(model, engine, pages: Sequence, blank: bool) -> list[tuple[float, int]]:
    """(summed nats, tokens) per page: its text's teacher-forced loss after its β visual tokens
    (a blank page's when `blank`). `pages` have .text and .token_ids; `engine` encodes pages."""
    return [(float(nll.sum()), nll.numel()) for nll in page_token_nll(model, engine, pages, blank)]


def page_token_nll(model, engine, pages: Sequence, blank: bool) -> list[torch.Tensor]:
    """Per page, the (n,) teacher-forced loss of each of its n text tokens, in nats."""
    return [nll for nll, _ in page_token_scores(model, engine, pages, blank)]


@torch.inference_mode()
def page_token_scores(
    model, engine, pages: Sequence, blank: bool
) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Per page, (nll, hit) of each of its n text tokens, teacher-forced: the (n,) loss in nats
    and the (n,) bool whether the model's most likely token is the page's, given the page's
    text before it (greedy read-back is given its own)."""
    beta = model.config.visual_tokens_per_page
    out = []
    blank_page = engine.encode_texts([""])[0] if blank else None  # one blank page serves all
    for page in pages:
        visual = blank_page if blank else engine.encode_texts([page.text])[0]  # [1, β, D]
        ids = torch.tensor(page.token_ids, device=visual.device)[None]  # [1, n]
        n = ids.shape[1]
        logits = model(
            input_ids=torch.cat(
                [torch.zeros(1, beta, dtype=torch.long, device=ids.device), ids], 1
            ),
            visual_mask=torch.arange(beta + n, device=ids.device)[None] < beta,
            visual_tokens=visual,
            position_ids=torch.arange(beta + n, device=ids.device)[None],
        ).logits  # [1, β + n, V]: position β - 1 + i predicts token i
        scored = logits[0, beta - 1 : beta - 1 + n].float()  # [n, V]
        nll = F.cross_entropy(scored, ids[0], reduction="none")
        out.append((nll.cpu(), (scored.argmax(-1) == ids[0]).cpu()))  # (n,), (n,)
    return out


def token_boxes(renderer, tokenizer, token_ids: Sequence[int]) -> np.ndarray:
    """(n, 4) where each token of a page is drawn: the box (x0, y0, x1, y1, page pixels) of its
    first drawn character. A token that draws nothing (a space, a newline, part of a character)
    takes the box of the next drawn character, or of the last one at the end of the page; a page
    with nothing drawn gives zeros."""
    return _token_and_char_boxes(renderer, tokenizer, token_ids)[0]


def _token_and_char_boxes(renderer, tokenizer, token_ids) -> tuple[np.ndarray, np.ndarray]:
    """(`token_boxes`, every drawn character's (index, x0, y0, x1, y1))."""
    pieces = decode_pieces(tokenizer, [[t] for t in token_ids])
    norm, boxes = renderer.char_boxes("".join(pieces))  # (n_drawn, 5): index, x0, y0, x1, y1
    if len(boxes) == 0:
        return np.zeros((len(token_ids), 4), np.int64), boxes
    box_of_char = np.full(len(norm) + 1, -1, np.int64)  # (len + 1,): -1 = nothing drawn
    box_of_char[boxes[:, 0]] = np.arange(len(boxes))
    box_of_char[-1] = len(boxes) - 1
    # each undrawn character takes the next drawn one (the sentinel at the end: the last box)
    nxt = np.where(box_of_char >= 0, np.arange(len(norm) + 1), len(norm))
    nxt = np.minimum.accumulate(nxt[::-1])[::-1]  # (len + 1,) index of the next drawn char
    prefix, starts = "", []
    for piece in pieces:  # where each token starts in the normalised text
        starts.append(len(normalize_text(prefix)))
        prefix += piece
    return boxes[box_of_char[nxt[np.minimum(starts, len(norm))]], 1:], boxes  # (n, 4), (m, 5)


def token_lines(renderer, tokenizer, token_ids: Sequence[int]) -> np.ndarray:
    """(n,) the line (0 = top) each token of a page is drawn on (see `token_boxes`); blank
    lines count."""
    boxes, all_boxes = _token_and_char_boxes(renderer, tokenizer, token_ids)  # (n, 4), (m, 5)
    if len(all_boxes) == 0:
        return np.zeros(len(token_ids), np.int64)
    height = int(all_boxes[0, 4] - all_boxes[0, 2])  # every box spans its line's height
    return (boxes[:, 1] - all_boxes[:, 2].min() + height // 2) // height


def page_gain(model, engine, pages: Sequence) -> dict[str, dict]:
    """Per language (and 'all'): loss per token from the real page, from a blank page, the gain
    (blank - real) in nats per token, and `by_line`: the same for the tokens drawn on each line
    of the page (line 1 = top), which shows where on a page reading stops; and the teacher-forced
    token accuracy from each (against greedy read-back's: how far its own mistakes derail it)."""
    real, real_hit = zip(*page_token_scores(model, engine, pages, blank=False), strict=True)
    blank, blank_hit = zip(*page_token_scores(model, engine, pages, blank=True), strict=True)
    lines = [token_lines(engine.renderer, engine.tokenizer, p.token_ids) for p in pages]
    groups: dict[str, list[int]] = {"all": list(range(len(pages)))}
    for i, page in enumerate(pages):
        groups.setdefault(page.language, []).append(i)
    summary = {}
    for lang, idx in groups.items():
        r = torch.cat([real[i] for i in idx]).numpy()  # (tokens,)
        b = torch.cat([blank[i] for i in idx]).numpy()  # (tokens,)
        line = np.concatenate([lines[i] for i in idx])  # (tokens,)
        summary[lang] = gain_row(r, b) | {
            "real_teacher_forced_accuracy": float(
                torch.cat([real_hit[i] for i in idx]).float().mean()
            ),
            "blank_teacher_forced_accuracy": float(
                torch.cat([blank_hit[i] for i in idx]).float().mean()
            ),
            "by_line": [gain_row(r[line == k], b[line == k]) for k in range(line.max() + 1)],
        }
    return summary


def gain_row(real: np.ndarray, blank: np.ndarray) -> dict:
    """Mean real and blank loss of some tokens, and their gain, in nats per token."""
    n = max(len(real), 1)
    r, b = float(real.sum()) / n, float(blank.sum()) / n
    return {"real_nll": r, "blank_nll": b, "gain_nats": b - r, "tokens": len(real)}


__all__ = [
    "page_gain",
    "page_token_loss",
    "page_token_nll",
    "page_token_scores",
    "token_boxes",
    "token_lines",
]
