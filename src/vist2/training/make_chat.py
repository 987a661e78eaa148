"""Write demo instruction-tuning data cut from a text corpus (no download needed).

    python -m vist2.training.make_chat ../shared/corpora/en --out runs/chat.jsonl --n 2000

Each line is {"prompt", "response"}: half "continue this text", half "repeat this text"
(`vist2.training.synthetic.synthetic_chats`). Not a benchmark: data to exercise stage 4.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from vist2.errors import Vist2Error
from vist2.training.problems import ProblemLog
from vist2.training.sources import read_documents
from vist2.training.synthetic import synthetic_chats


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m vist2.training.make_chat", description=__doc__.splitlines()[0]
    )
    parser.add_argument("corpus", help="text file, directory of text files, or JSONL of {'text'}")
    parser.add_argument("--out", required=True, help="JSONL file to write")
    parser.add_argument("--n", type=int, default=2000, help="examples to write (default 2000)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    try:
        problems = ProblemLog(max_bad_records=10**9)
        docs = read_documents(args.corpus, problems)
        chats = synthetic_chats([d.text for d in docs], args.n, args.seed)
    except (Vist2Error, ValueError) as err:
        print(f"vist2: error: {err}", file=sys.stderr)
        return 2
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    with out.open("w", encoding="utf-8") as f:
        for chat in chats:
            f.write(json.dumps(chat, ensure_ascii=False) + "\n")
    print(f"wrote {len(chats)} chat examples to {out} ({len(problems)} bad records skipped)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
