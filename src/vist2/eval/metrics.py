"""Scores of read-back text against what the page shows, and perplexity from per-token losses.

Edit distance and longest common subsequence come from `rapidfuzz` (C++, works on strings and on
lists of tokens). Definitions:
- character accuracy = max(0, 1 - CER), CER = Levenshtein(expected, read) / len(expected), over
  Unicode characters;
- token accuracy = share of the expected token ids read at the same index (greedy reading emits
  exactly as many tokens as the page holds);
- correct prefix = how many tokens greedy reading gets right before its first mistake: where on
  the page reading stops (a reader that reads only the top line scores its length in tokens);
- ROUGE-L = the F1 of the longest common subsequence over *units*: each CJK character is one
  unit, a run of letters/digits is one unit, each other visible character is one unit. For
  English that is word-level ROUGE-L (punctuation counted, case kept); for Chinese it is
  character-level, which `rouge-score`'s ASCII tokenizer cannot do.

A page read back is scored against what the page shows (`vist2.render.normalize_text`): "\r\n"
and "\n" are drawn alike, as are a tab and four spaces, so no reader can tell them apart and
neither counts as a mistake. Token accuracy and the correct prefix stay on the token ids.
"""

from __future__ import annotations

import difflib
import math
import re
from collections.abc import Sequence
from dataclasses import asdict, dataclass

from rapidfuzz.distance import LCSseq, Levenshtein

from vist2.render import normalize_text

_CJK = "\u3000-\u9fff\uf900-\ufaff\uff00-\uffef\U00020000-\U0003ffff"
_UNITS = re.compile(rf"[{_CJK}]|[^\W{_CJK}]+|[^\w\s]")


def rouge_units(text: str) -> list[str]:
    """The units ROUGE-L is computed over (see module docstring)."""
    return _UNITS.findall(text)


def character_accuracy(expected: str, read: str) -> float:
    """1 - CER, floored at 0."""
    if not expected:
        return 1.0 if not read else 0.0
    return max(0.0, 1.0 - Levenshtein.distance(expected, read) / len(expected))


def token_accuracy(expected: Sequence[int], read: Sequence[int]) -> float:
    """Share of expected token ids matched at the same index."""
    if not expected:
        return 1.0
    return sum(a == b for a, b in zip(expected, read, strict=False)) / len(expected)


def correct_prefix(expected: Sequence[int], read: Sequence[int]) -> int:
    """How many leading tokens of `read` match `expected` before the first mismatch."""
    count = 0
    for a, b in zip(expected, read, strict=False):
        if a != b:
            break
        count += 1
    return count


def rouge_l(expected: str, read: str) -> float:
    """ROUGE-L F1 (β = 1) over `rouge_units`."""
    ref, hyp = rouge_units(expected), rouge_units(read)
    if not ref or not hyp:
        return float(ref == hyp)
    lcs = LCSseq.similarity(ref, hyp)
    if lcs == 0:
        return 0.0
    recall, precision = lcs / len(ref), lcs / len(hyp)
    return 2 * recall * precision / (recall + precision)


@dataclass
class PageScore:
    """The scores of one page read back."""

    character_accuracy: float
    token_accuracy: float
    rouge_l: float
    exact: bool
    correct_prefix: int = 0  # tokens read right before the first mistake

    def to_dict(self) -> dict:
        return asdict(self)


def score_page(
    expected_text: str, read_text: str, expected_ids: Sequence[int], read_ids: Sequence[int]
) -> PageScore:
    """Scores of one page read back: text scores on what the page shows, token scores on ids."""
    expected_text, read_text = normalize_text(expected_text), normalize_text(read_text)
    return PageScore(
        character_accuracy=character_accuracy(expected_text, read_text),
        token_accuracy=token_accuracy(expected_ids, read_ids),
        rouge_l=rouge_l(expected_text, read_text),
        exact=expected_text == read_text,
        correct_prefix=correct_prefix(expected_ids, read_ids),
    )


def mean_scores(scores: Sequence[PageScore]) -> dict:
    """Page-averaged scores (exact -> exact-page rate) and the page count."""
    n = len(scores)
    if n == 0:
        return {"pages": 0}
    return {
        "pages": n,
        "character_accuracy": sum(s.character_accuracy for s in scores) / n,
        "exact_page_rate": sum(s.exact for s in scores) / n,
        "token_accuracy": sum(s.token_accuracy for s in scores) / n,
        "rouge_l": sum(s.rouge_l for s in scores) / n,
        "correct_prefix_tokens": sum(s.correct_prefix for s in scores) / n,
    }


def inline_diff(expected: str, read: str) -> str:
    """Character diff in wdiff style: `[-missing-]{+extra+}` around what differs."""
    matcher = difflib.SequenceMatcher(None, expected, read, autojunk=False)
    out = []
    for op, i1, i2, j1, j2 in matcher.get_opcodes():
        if op == "equal":
            out.append(expected[i1:i2])
            continue
        if i2 > i1:
            out.append(f"[-{expected[i1:i2]}-]")
        if j2 > j1:
            out.append(f"{{+{read[j1:j2]}+}}")
    return "".join(out)


def perplexity(total_nll: float, count: int) -> float:
    """exp(mean negative log-likelihood), in nats per token."""
    if count == 0:
        return float("nan")
    return math.exp(total_nll / count)
