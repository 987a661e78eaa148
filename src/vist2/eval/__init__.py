"""Quality evaluation: does compression keep the text? One command each (`vist2 eval ...`).

- `ocr`: read held-out pages back greedily (the stage-2 layout: page, then its text) and score
  them per language: character accuracy (1 - CER), exact-page rate, token accuracy, ROUGE-L.
- `olm`: teacher-forced perplexity of a continuation given a prefix, with the prefix (and the
  continuation's earlier chunks) as pages (`global`, the stage-3 OLM layout) vs as text (`none`).
- `needle`: a passkey hidden at depth d of a long filler, asked for after it; accuracy per
  (length, depth) for each context policy, with a heat map.

Each writes JSON + Markdown (+ PNGs) under `--out`; `report.py` holds the writers. Data comes
from the held-out part of the files (`vist2.heldout`) unless `--split all` is given.
"""
