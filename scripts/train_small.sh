#!/usr/bin/env bash
# Train vist2-small (the shipped default model) on CPU: the OCR stage from scratch, all modules,
# on the English corpora (train part only: vist2.heldout keeps the last 10 % of each file out).
# Run from the repo root. Re-running resumes the same run from its newest checkpoint.
#
#   bash scripts/train_small.sh                 # foreground
#   nohup bash scripts/train_small.sh > /work/runs/vist2-small-ocr.log 2>&1 &
#
# RUNS (default /work/runs) holds the init model and the run directory; DATA the corpora.
set -euo pipefail
RUNS=${RUNS:-/work/runs}
DATA=${DATA:-$( [ -d ../shared/corpora ] && echo ../shared/corpora/en || echo /work/shared/corpora/en )}
INIT="$RUNS/vist2-small-init"
RUN="$RUNS/vist2-small-ocr"
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-2}  # the config asks for 2 torch threads

if [ ! -f "$INIT/model.safetensors" ]; then
    vist2 init --preset small --seed 0 --out "$INIT"
fi
RESUME=()
if [ -d "$RUN/checkpoints" ]; then
    RESUME=(--resume)
fi
# configs/train/small-ocr.json: lr 1e-3 on every module (random-init LLM, so it trains too),
# 5,000 steps x 16 sequences; the curriculum starts with pages of 2-16 tokens (easy to read: large
# glyphs, nothing to search), then 8-48, then full pages (K = 64), then 2-4 pages a sample;
# half the pages with their words shuffled, so that they must be read, not guessed; the
# anti-collapse term (visual_variance_weight) keeps the visual tokens from going constant before
# the model has learned to read them; a checkpoint every 250 steps.
vist2 train --stage ocr --recipe tiny --model "$INIT" --data "$DATA" --out "$RUN" \
    --config configs/train/small-ocr.json "${RESUME[@]}"
