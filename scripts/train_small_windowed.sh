#!/usr/bin/env bash
# The windowed-encoder experiment (docs/model/vist2-small.md, item 10): vist2-small's shape with
# VIST2Config.vision_window = 32 (preset small-windowed: the ViT sees each visual token's 32 px
# cell on its own), trained on the OCR stage two ways, side by side (one torch thread each):
#
#   scratch  random init (preset small-windowed, seed 0)
#   warm     run 4 of scripts/train_small.sh (the page-wide vist2-small shipped before this
#            experiment): its LLM, aligner and ViT in the windowed config
#            (scripts/windowed_from.py: the ViT's position table cropped to one window)
#
# Both: configs/train/small-windowed-ocr.json (4,000 steps x 16 pages, lr 1e-3 on every module,
# short pages first, half the pages word-shuffled, the variance hinge on). Then the held-out
# read-back with the line view, at r = 4, English:
#
#   vist2 eval ocr --model RUNS/sw-warm/model --data ../shared/corpora/en --out OUT --pages 40 \
#       --control --page-tokens 64
#
# Run from the repo root; RUNS (default /work/runs) holds the inits and runs, PAGE_WIDE the
# page-wide model to start from (default: run 4 in RUNS). Re-running resumes. The warm run went
# on to become today's vist2-small (scripts/train_small.sh, runs 5-8).
set -euo pipefail
RUNS=${RUNS:-/work/runs}
DATA=${DATA:-$( [ -d ../shared/corpora ] && echo ../shared/corpora/en || echo /work/shared/corpora/en )}
CONFIG=configs/train/small-windowed-ocr.json
export OMP_NUM_THREADS=1

[ -f "$RUNS/sw-init/model.safetensors" ] ||
    vist2 init --preset small-windowed --seed 0 --out "$RUNS/sw-init" \
        --tokenizer src/vist2/assets/models/vist2-small
[ -f "$RUNS/sw-warm-init/model.safetensors" ] ||
    python scripts/windowed_from.py "${PAGE_WIDE:-$RUNS/vist2-small-olm}" --window 32 \
        --out "$RUNS/sw-warm-init"

run() {  # run INIT OUT: one OCR run, resumed if it has checkpoints
    local resume=()
    [ -d "$RUNS/$2/checkpoints" ] && resume=(--resume)
    vist2 train --stage ocr --recipe tiny --model "$RUNS/$1" --data "$DATA" --out "$RUNS/$2" \
        --config "$CONFIG" "${resume[@]}" > "$RUNS/$2.log" 2>&1
}
run sw-init sw-scratch &
run sw-warm-init sw-warm &
wait
