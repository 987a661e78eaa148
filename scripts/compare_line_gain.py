"""Put the line-by-line page gain of several `vist2 eval ocr --control` reports on one plot.

    python scripts/compare_line_gain.py --lang en --ratio 4 --out docs/model/windowed-line-gain.png \
        "vist2-small (page-wide ViT)=docs/quality/vist2-small/ocr/ocr.json" \
        "windowed, warm=docs/quality/small-windowed/ocr/ocr.json"

A report may name its own ratio, `LABEL=OCR_JSON@R` (models trained at different r, each read
at its own), instead of --ratio.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from vist2.eval.report import line_gain_png


def curve(report: Path, lang: str, ratio: float) -> list[float]:
    """The gain per line of `lang` at compression `ratio` in one ocr.json."""
    if not report.is_file():
        raise SystemExit(f"{report}: no such report (vist2 eval ocr --out DIR writes DIR/ocr.json)")
    runs = json.loads(report.read_text(encoding="utf-8"))["runs"]
    for run in runs:
        if abs(run["compression_ratio"] - ratio) < 1e-9:
            if not run.get("page_gain") or lang not in run["page_gain"]:
                raise SystemExit(f"{report}: no page gain for {lang!r} (run eval ocr --control)")
            return [row["gain_nats"] for row in run["page_gain"][lang]["by_line"]]
    raise SystemExit(f"{report}: no run at r = {ratio:g}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("reports", nargs="+", metavar="LABEL=OCR_JSON[@R]")
    p.add_argument("--lang", default="en")
    p.add_argument("--ratio", type=float, default=4.0)
    p.add_argument("--out", required=True, help="PNG to write")
    args = p.parse_args()
    curves = {}
    for item in args.reports:
        label, sep, path = item.rpartition("=")  # labels may hold "=" (r=2)
        if not sep:
            raise SystemExit(f"{item!r}: expected LABEL=path/to/ocr.json")
        path, _, ratio = path.partition("@")
        ratio = float(ratio) if ratio else args.ratio
        curves[f"{label}, {args.lang}, r={ratio:g}"] = curve(Path(path), args.lang, ratio)
    line_gain_png(curves, Path(args.out))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
