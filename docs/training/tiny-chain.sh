#!/usr/bin/env bash
# The tiny four-stage chain on CPU (caption -> ocr -> olm -> sft), as run for
# docs/training/tiny-chain-loss.png. Run from the repo root with ../shared beside it.
set -euo pipefail
RUNS=${RUNS:-runs/tiny-chain}
TRAIN="vist2 train --recipe tiny"

vist2 init --preset tiny --out "$RUNS/0-init" --overwrite
# Stages 1-2 freeze the LLM in the paper (it is pretrained there); this tiny LLM is random-init,
# so the demo lets it learn in those stages too (one JSON file: freezing is data).
$TRAIN --stage caption --model "$RUNS/0-init" --out "$RUNS/1-caption" \
    --config configs/train/tiny-unfreeze-llm.json --max-steps 300
$TRAIN --stage ocr --model "$RUNS/1-caption" --data ../shared/corpora --out "$RUNS/2-ocr" \
    --config configs/train/tiny-unfreeze-llm.json --max-steps 600
$TRAIN --stage olm --model "$RUNS/2-ocr" --data ../shared/corpora --out "$RUNS/3-olm" --max-steps 600
python -m vist2.training.make_chat ../shared/corpora/en --out "$RUNS/chat.jsonl" --n 2000
$TRAIN --stage sft --model "$RUNS/3-olm" --data "$RUNS/chat.jsonl" --out "$RUNS/4-sft" --max-steps 400
vist2 plot "$RUNS/1-caption" "$RUNS/2-ocr" "$RUNS/3-olm" "$RUNS/4-sft" \
    --out docs/training/tiny-chain-loss.png
