"""How much a page tells the model: teacher-forced next-token loss on a page's own text, read
from the real page vs from a blank page, in nats per token.

Greedy character accuracy only moves once a model reads most of a page; this measure moves
as soon as the page helps at all (a model that ignores its pages scores a gain of 0; one that
reads perfectly, the whole blank-page loss). Stage-2 layout, one page per row: [β visual tokens,
the page's text], the loss on the text.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F  # noqa: N812


@torch.inference_mode()
def page_token_loss(model, engine, pages: Sequence, blank: bool) -> list[tuple[float, int]]:
    """(summed nats, tokens) per page: its text's teacher-forced loss after its β visual tokens
    (a blank page's when `blank`). `pages` have .text and .token_ids; `engine` encodes pages."""
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
        nll = F.cross_entropy(logits[0, beta - 1 : beta - 1 + n].float(), ids[0], reduction="sum")
        out.append((float(nll), n))
    return out


def page_gain(model, engine, pages: Sequence) -> dict[str, dict]:
    """Per language (and 'all'): loss per token from the real page, from a blank page, and the
    gain (blank - real) in nats per token."""
    real = page_token_loss(model, engine, pages, blank=False)
    blank = page_token_loss(model, engine, pages, blank=True)
    groups: dict[str, list[int]] = {"all": list(range(len(pages)))}
    for i, page in enumerate(pages):
        groups.setdefault(page.language, []).append(i)
    summary = {}
    for lang, idx in groups.items():
        tokens = sum(real[i][1] for i in idx)
        r = sum(real[i][0] for i in idx) / max(tokens, 1)
        b = sum(blank[i][0] for i in idx) / max(tokens, 1)
        summary[lang] = {"real_nll": r, "blank_nll": b, "gain_nats": b - r, "tokens": tokens}
    return summary


__all__ = ["page_gain", "page_token_loss"]
