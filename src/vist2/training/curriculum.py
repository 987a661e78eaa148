"""The multi-turn OCR curriculum as a schedule over training steps.

Paper §3.2: OCR samples go from easy (1 page) through medium (2-4 pages) to hard (more than 4).
Here a level holds while `(step + 1) / total_steps <= level.until`, and a sample's page count is
drawn uniformly from the level's range with an RNG keyed by (seed, sample number), so the same
sample has the same pages on every process, in every worker, before and after a resume.
"""

from __future__ import annotations

import random
from collections.abc import Sequence

from vist2.training.config import CurriculumLevel


def level_at(step: int, total_steps: int, levels: Sequence[CurriculumLevel]) -> CurriculumLevel:
    """The curriculum level of optimizer step `step` (0-based) of `total_steps`."""
    progress = (step + 1) / max(total_steps, 1)
    for level in levels:
        if progress <= level.until + 1e-12:
            return level
    return levels[-1]


def pages_for_sample(
    sample: int,
    samples_per_step: int,
    total_steps: int,
    levels: Sequence[CurriculumLevel],
    max_pages: int,
    seed: int,
) -> int:
    """Pages of OCR sample `sample` (global sample number), capped at `max_pages` (what fits the
    sequence length)."""
    level = level_at(sample // samples_per_step, total_steps, levels)
    rng = random.Random(f"vist2-ocr-pages-{seed}-{sample}")
    return max(1, min(rng.randint(level.min_pages, level.max_pages), max_pages))


def page_tokens_for_page(
    sample: int,
    page: int,
    samples_per_step: int,
    total_steps: int,
    levels: Sequence[CurriculumLevel],
    full_page: int,
    seed: int,
) -> int:
    """Text tokens on page `page` of OCR sample `sample`: drawn from the level's
    min_page_tokens..max_page_tokens (capped at `full_page`), or `full_page` where the level
    sets none."""
    level = level_at(sample // samples_per_step, total_steps, levels)
    if level.max_page_tokens is None:
        return full_page
    rng = random.Random(f"vist2-ocr-page-tokens-{seed}-{sample}-{page}")
    return min(rng.randint(level.min_page_tokens, level.max_page_tokens), full_page)


__all__ = ["level_at", "page_tokens_for_page", "pages_for_sample"]
