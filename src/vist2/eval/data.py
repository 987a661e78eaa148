"""Evaluation data: the held-out documents, read strictly, and a record of which parts were used.

Training skips a bad record and goes on; evaluation does not: a file in another encoding, an
empty file or a bad JSONL line would silently change what is measured, so the first one is a
`Vist2Error` that names the file, the line and the fix.
"""

from __future__ import annotations

import unicodedata
from pathlib import Path

from vist2.errors import Vist2Error
from vist2.heldout import HELDOUT_EVERY, HELDOUT_FRACTION, heldout_start
from vist2.training.problems import ProblemLog
from vist2.training.sources import Document, read_documents


def read_eval_documents(path: str | Path, split: str = "heldout") -> list[Document]:
    """The `split` part of every document under `path`; any unreadable record is an error."""
    problems = ProblemLog(max_bad_records=0)
    docs = read_documents(path, problems, split=split)
    if problems.problems:
        first = problems.problems[0]
        hint = (
            "; evaluation reads UTF-8 only: convert the file first (e.g. `iconv -f GB18030 -t "
            "UTF-8 in.txt > out.txt` or `iconv -f LATIN1 -t UTF-8 ...`)"
            if "UTF-8" in first.reason
            else ""
        )
        more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
        raise Vist2Error(f"{first}{more}{hint}")
    if not docs:
        raise Vist2Error(f"{path}: no text in the {split!r} part of the data; nothing to evaluate")
    return docs


def describe_parts(docs: list[Document], split: str) -> list[dict]:
    """Which file and which part of it each document is (for the JSON and Markdown reports)."""
    parts: dict[str, dict] = {}
    for doc in docs:
        if doc.line is not None:  # a JSONL record
            entry = parts.setdefault(
                doc.source, {"file": doc.source, "part": _jsonl_part(split), "records": []}
            )
            entry["records"].append(doc.line)
        else:
            parts[doc.source] = {
                "file": doc.source,
                "part": _text_part(doc.source, split),
                "characters": len(doc.text),
            }
    return list(parts.values())


def _text_part(source: str, split: str) -> str:
    if split == "all":
        return "the whole file"
    text = Path(source).read_bytes().decode("utf-8")
    start = heldout_start(text)
    line = text.count("\n", 0, start) + 1
    return (
        f"held out: the last {HELDOUT_FRACTION:.0%} (characters {start}-{len(text)}, "
        f"from line {line})"
    )


def _jsonl_part(split: str) -> str:
    if split == "all":
        return "every record"
    return f"held out: every {HELDOUT_EVERY}th record (lines {HELDOUT_EVERY}, {2 * HELDOUT_EVERY}, ...)"


def is_cjk(ch: str) -> bool:
    """A Chinese/Japanese/Korean ideograph or CJK punctuation / full-width form."""
    code = ord(ch)
    return (
        0x3000 <= code <= 0x9FFF
        or 0xF900 <= code <= 0xFAFF
        or 0xFF00 <= code <= 0xFFEF
        or 0x20000 <= code <= 0x3FFFF
    )


def language_of(text: str) -> str:
    """'zh' when at least a fifth of the visible characters are CJK, else 'en' (by script)."""
    visible = [ch for ch in text if not ch.isspace() and unicodedata.category(ch)[0] != "C"]
    if not visible:
        return "en"
    cjk = sum(is_cjk(ch) for ch in visible)
    return "zh" if cjk * 5 >= len(visible) else "en"
