#!/usr/bin/env bash
# Train vist2-small (the shipped default model) on CPU, from scratch, on the English corpora
# (train parts only: vist2.heldout keeps the last 10 % of each file out). Four runs, each starting
# from the model of the one before (`training.json` of the shipped model records the chain):
#
#   1. OCR   configs/train/small-ocr.json    5,000 steps: short pages first, then full ones
#   2. OCR   configs/train/small-ocr-2.json  1,000 steps of a 3,500-step schedule (--stop-after:
#            the session it ran in moved on to 3.)
#   3. OCR   configs/train/small-ocr-3.json  5,500 steps of a 6,000-step schedule, bf16 autocast
#            (1.45x faster on this CPU: scripts/bench_train_step_dtype.py; stopped early for time, as 2.)
#   4. OLM   configs/train/small-olm.json    600 steps of stage 3: write from earlier pages (LLM)
#
# Then the windowed encoder (VIST2Config.vision_window = 32: the ViT sees each visual token's
# 32 px cell on its own; docs/model/vist2-small.md, items 10-11), warm-started from run 4:
#
#   5. -     scripts/windowed_from.py        run 4's weights in the windowed config
#   6. OCR   configs/train/small-windowed-ocr.json    4,000 steps, short pages first
#   7. OCR   configs/train/small-windowed-ocr-2.json  4,000 more steps on full pages
#   8. OLM   configs/train/small-olm-mix.json         600 steps, a quarter of them read-backs
#            (olm_ocr_fraction), so the LLM keeps reading while it learns to write from pages
#
# Then half-full pages (docs/model/vist2-small.md, item 12: of the same 2,000 OCR steps at
# r = 2 / 4 / 8, those at r = 2 read best at every density):
#
#   9. OCR   configs/train/small-windowed-ocr-sweep.json  2,000 steps at K = 32 (r = 2), a copy
#            of run 8's model at that K by scripts/with_density.py
#  10. OLM   configs/train/small-olm-mix.json         600 steps as 8, at K = 64 again
#  11. OCR   as 9, from run 10 (a second round: the reading was still growing)
#  12. OLM   as 10, from run 11
#
# Then one longer run on half-full pages (a single schedule reads further than two short ones):
#
#  13. OCR   configs/train/small-windowed-ocr-long.json  4,000 steps at K = 32, from run 12
#  14. OLM   as 10, from run 13
#  15. OCR   configs/train/small-windowed-ocr-long-2.json  5,000 more, a new order of pages (seed 1)
#  16. OLM   as 10, from run 15
#  17. OCR   configs/train/small-windowed-ocr-long-3.json  7,000 more, data seed 2
#  18. OLM   configs/train/small-olm-mix-half-lr.json  as 10 at half the lr (2.5e-4), data seed 1
#  19. OCR   configs/train/small-windowed-ocr-long-4.json  7,000 more, data seed 3
#  20. OLM   configs/train/small-olm-mix-half-lr-2.json  as 18, data seed 2
#  21. OCR   configs/train/small-windowed-ocr-long-5.json  7,000 more, data seed 4
#  22. OLM   configs/train/small-olm-mix-half-lr-3.json  as 18, data seed 3 (2 threads)
#
# Then full pages again (docs/model/vist2-small.md, item 13: half-full pages never put text in
# the bottom half of the page, so the model never learned to read there):
#
#  23. OCR   configs/train/small-windowed-ocr-full.json  4,000 steps at K = 64 (r = 4), seed 5
#  24. OLM   configs/train/small-olm-mix-half-lr-4.json  as 18, data seed 4
#  25-34.    five more rounds as 23-24, 6,000 OCR steps each (small-windowed-ocr-full-2..6.json,
#            seeds 6-10; OLM small-olm-mix-half-lr-5..9.json, seeds 5-9; run 34's 1,200 steps)
#
# Then one line to a visual token (docs/model/vist2-small.md, items 14-15): run 34's weights on
# pages drawn at a 16 px line pitch, encoded in 16 x 64 px windows (2 x 8 patches a token):
#
#  40. OCR   configs/train/small-windowed-ocr-full-7.json  4,000 steps, a quarter plain text, seed 11
#  46. OLM   configs/train/small-olm-aligner.json  600 steps, the aligner trained with the LLM
#
# Then OCR rounds whose inputs have some of their tokens replaced (labels clean), so that the
# reader learns to go on after a wrong token (model card, items 17-20):
#
#  49. OCR   configs/train/small-lines-ocr-noise.json  2,500 steps, 15 % input noise, seed 13
#  51. OLM   configs/train/small-olm-aligner-noise.json  as 46, the noise in its read-backs
#  52. OCR   configs/train/small-lines-ocr-noise-2.json  2,500 steps, 20 % input noise, seed 14
#  53. OLM   configs/train/small-olm-aligner-noise-2.json  as 51 at 20 %
#  54. OLM   as 53 from run 53, data seed 11
#  55. OCR   configs/train/small-lines-ocr-noise-3.json  2,500 steps, 30 % input noise, seed 16
#  57. OLM   configs/train/small-olm-aligner-noise-3-llm-lr.json  the LLM at 1e-4, seed 13
#  58. OCR   as 55 from run 57, data seed 17
#  59. OLM   as 57 from run 58, data seed 18
#  60. OCR   as 55 from run 59, data seed 19
#  61. OLM   as 57 from run 60, data seed 20
#  62. OCR   as 55 from run 61, data seed 21
#  63. OLM   as 57 from run 62, data seed 22
#  64. OCR   as 55 from run 63 at 40 % input noise, data seed 23
#  65. OLM   as 57 from run 64, data seed 24
#  66. OCR   as 64 from run 65, data seed 25
#  67b. OLM  as 57 from run 66, data seed 26, half of its sequences read-backs (olm_ocr_fraction 0.5)
#
# (Runs 35-39, 41-45, 47-48, 50, 56, 67, 67c and 68-76 were measured and not shipped; their
# commands are in docs/quality/r-sweep/README.md and the model card, items 14-16 and 23-25.)
#
# The configs ask for bf16 autocast, 1.45x faster than fp32 on the CPU (with AMX) that ran runs
# 3-34; on a CPU without bf16 instructions (AVX2 only) bf16 is ~30x slower: vist2 train warns,
# and MIXED_PRECISION=no passes --set mixed_precision=no to every run.
#
# Run from the repo root. Re-running resumes the unfinished run from its newest checkpoint and
# skips the finished ones (each just re-saves its model).
#
#   bash scripts/train_small.sh                 # foreground (about 35 h on a 2-core CPU)
#   nohup bash scripts/train_small.sh > /work/runs/vist2-small.log 2>&1 &
#
# RUNS (default /work/runs) holds the init model and the run directories; DATA the corpora.
set -euo pipefail
RUNS=${RUNS:-/work/runs}
DATA=${DATA:-$( [ -d ../shared/corpora ] && echo ../shared/corpora/en || echo /work/shared/corpora/en )}
INIT="$RUNS/vist2-small-init"
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-2}  # the configs ask for 1-2 torch threads

if [ ! -f "$INIT/model.safetensors" ]; then
    vist2 init --preset small --seed 0 --out "$INIT"
fi

precision=()
if [ -n "${MIXED_PRECISION:-}" ]; then
    precision=(--set "mixed_precision=$MIXED_PRECISION")
fi

# piece STAGE CONFIG FROM OUT [vist2 train options]: one run; resumes OUT if it has checkpoints
piece() {
    local stage=$1 config=$2 from=$3 out=$4
    shift 4
    local resume=()
    if [ -d "$out/checkpoints" ]; then
        resume=(--resume)
    fi
    vist2 train --stage "$stage" --recipe tiny --model "$from" --data "$DATA" --out "$out" \
        --config "$config" "${resume[@]}" "${precision[@]}" "$@"
}

# 1. lr 1e-3 on every module (random-init LLM, so it trains too), 5,000 steps x 16 sequences;
# pages of 2-16 text tokens first (large glyphs, nothing to search), then 8-48, then full pages
# (K = 64), then 2-4 pages a sample; half the pages with their words shuffled, so that they must
# be read, not guessed; the anti-collapse term (visual_variance_weight) keeps the visual tokens
# from going constant before the model has learned to read them.
piece ocr configs/train/small-ocr.json "$INIT" "$RUNS/vist2-small-ocr"
# 2.-3. more of the same on full pages at lr 7e-4 / 6e-4 (a new schedule, a new optimizer).
piece ocr configs/train/small-ocr-2.json "$RUNS/vist2-small-ocr" "$RUNS/vist2-small-ocr2" \
    --stop-after 1000
piece ocr configs/train/small-ocr-3.json "$RUNS/vist2-small-ocr2" "$RUNS/vist2-small-ocr3" \
    --stop-after 5500
# 4. the paper's stage 3: [c1, v1, c2, v2, ...], loss on every chunk, each chunk seeing the
# pages of the chunks before it; the LLM trains, the encoder and aligner stay as stage 2 left them.
piece olm configs/train/small-olm.json "$RUNS/vist2-small-ocr3" "$RUNS/vist2-small-olm"

WINDOWED="$RUNS/vist2-small-windowed-init"
if [ ! -f "$WINDOWED/model.safetensors" ]; then
    python scripts/windowed_from.py "$RUNS/vist2-small-olm" --window 32 --out "$WINDOWED"
fi
piece ocr configs/train/small-windowed-ocr.json "$WINDOWED" "$RUNS/vist2-small-w-ocr"
piece ocr configs/train/small-windowed-ocr-2.json "$RUNS/vist2-small-w-ocr" "$RUNS/vist2-small-w-ocr2"
piece olm configs/train/small-olm-mix.json "$RUNS/vist2-small-w-ocr2" "$RUNS/vist2-small-w-olm"

# density DIR FROM K: FROM's model at K text tokens a page (once)
density() {
    [ -f "$1/model.safetensors" ] || python scripts/with_density.py "$2" --page-tokens "$3" --out "$1"
}
# half_full N OCR_CONFIG [OLM_CONFIG]: round N of runs 9-22, from the model of the OLM run before
# it: OCR on half-full pages (K = 32), then the OLM stage at K = 64 again
half_full() {
    local n=$1 config=$2 olm=${3:-configs/train/small-olm-mix.json} s="-$1"
    local from="$RUNS/vist2-small-w-olm$1"
    if [ "$n" = 1 ]; then s=""; from="$RUNS/vist2-small-w-olm"; fi
    density "$RUNS/vist2-small-w-r2-init$s" "$from" 32
    piece ocr "$config" "$RUNS/vist2-small-w-r2-init$s" "$RUNS/vist2-small-w-ocr-r2$s"
    density "$RUNS/vist2-small-w-k64$s" "$RUNS/vist2-small-w-ocr-r2$s" 64
    piece olm "$olm" "$RUNS/vist2-small-w-k64$s" \
        "$RUNS/vist2-small-w-olm$((n + 1))"
}
half_full 1 configs/train/small-windowed-ocr-sweep.json        # runs 9-10
half_full 2 configs/train/small-windowed-ocr-sweep.json        # runs 11-12
half_full 3 configs/train/small-windowed-ocr-long.json         # runs 13-14
half_full 4 configs/train/small-windowed-ocr-long-2.json       # runs 15-16
half_full 5 configs/train/small-windowed-ocr-long-3.json configs/train/small-olm-mix-half-lr.json  # 17-18
half_full 6 configs/train/small-windowed-ocr-long-4.json configs/train/small-olm-mix-half-lr-2.json  # 19-20
half_full 7 configs/train/small-windowed-ocr-long-5.json configs/train/small-olm-mix-half-lr-3.json  # 21-22
# full pages (K = 64) from run 22's model: runs 23-24
piece ocr configs/train/small-windowed-ocr-full.json "$RUNS/vist2-small-w-olm8" "$RUNS/vist2-small-w-ocr-full"
piece olm configs/train/small-olm-mix-half-lr-4.json "$RUNS/vist2-small-w-ocr-full" "$RUNS/vist2-small-w-olm9"
# a second round on full pages from run 24's model: runs 25-26
piece ocr configs/train/small-windowed-ocr-full-2.json "$RUNS/vist2-small-w-olm9" "$RUNS/vist2-small-w-ocr-full-2"
piece olm configs/train/small-olm-mix-half-lr-5.json "$RUNS/vist2-small-w-ocr-full-2" "$RUNS/vist2-small-w-olm10"
# a third round on full pages from run 26's model: runs 27-28
piece ocr configs/train/small-windowed-ocr-full-3.json "$RUNS/vist2-small-w-olm10" "$RUNS/vist2-small-w-ocr-full-3"
piece olm configs/train/small-olm-mix-half-lr-6.json "$RUNS/vist2-small-w-ocr-full-3" "$RUNS/vist2-small-w-olm11"
# a fourth round on full pages from run 28's model: runs 29-30
piece ocr configs/train/small-windowed-ocr-full-4.json "$RUNS/vist2-small-w-olm11" "$RUNS/vist2-small-w-ocr-full-4"
piece olm configs/train/small-olm-mix-half-lr-7.json "$RUNS/vist2-small-w-ocr-full-4" "$RUNS/vist2-small-w-olm12"
# a fifth round on full pages from run 30's model: runs 31-32
piece ocr configs/train/small-windowed-ocr-full-5.json "$RUNS/vist2-small-w-olm12" "$RUNS/vist2-small-w-ocr-full-5"
piece olm configs/train/small-olm-mix-half-lr-8.json "$RUNS/vist2-small-w-ocr-full-5" "$RUNS/vist2-small-w-olm13"
# a sixth round on full pages from run 32's model, its OLM stage 1,200 steps: runs 33-34
piece ocr configs/train/small-windowed-ocr-full-6.json "$RUNS/vist2-small-w-olm13" "$RUNS/vist2-small-w-ocr-full-6"
piece olm configs/train/small-olm-mix-half-lr-9.json "$RUNS/vist2-small-w-ocr-full-6" "$RUNS/vist2-small-w-olm14"
# one line to a visual token from run 34's model: runs 40 and 46
LINES="$RUNS/vist2-small-lines-init"
if [ ! -f "$LINES/model.safetensors" ]; then
    python scripts/with_density.py "$RUNS/vist2-small-w-olm14" --page-tokens 64 --line-height 16 \
        --margin 0 --out "$RUNS/vist2-small-pitch16"
    python scripts/windowed_from.py "$RUNS/vist2-small-pitch16" --window 16x64 --merge 2x8 \
        --out "$LINES"
fi
piece ocr configs/train/small-windowed-ocr-full-7.json "$LINES" "$RUNS/vist2-small-lines-ocr" \
    --max-steps 4000
piece olm configs/train/small-olm-aligner.json "$RUNS/vist2-small-lines-ocr" "$RUNS/vist2-small-lines-olm"
# an OCR round with 15 % of the input tokens replaced (labels clean), then the same OLM stage with
# the noise in its read-backs: runs 49 and 51
piece ocr configs/train/small-lines-ocr-noise.json "$RUNS/vist2-small-lines-olm" "$RUNS/vist2-small-noise-ocr"
piece olm configs/train/small-olm-aligner-noise.json "$RUNS/vist2-small-noise-ocr" \
    "$RUNS/vist2-small-noise-olm-rb"
# a second round at 20 % noise, its OLM stage, then a second OLM stage (the first had not brought
# `global` back): runs 52, 53 and 54
piece ocr configs/train/small-lines-ocr-noise-2.json "$RUNS/vist2-small-noise-olm-rb" \
    "$RUNS/vist2-small-noise2-ocr"
piece olm configs/train/small-olm-aligner-noise-2.json "$RUNS/vist2-small-noise2-ocr" \
    "$RUNS/vist2-small-noise2-olm"
piece olm configs/train/small-olm-aligner-noise-2.json "$RUNS/vist2-small-noise2-olm" \
    "$RUNS/vist2-small-noise2-olm-b" --set seed=11
# four rounds at 30 % noise and two at 40 %, each followed by an OLM stage with the LLM at 1e-4
# (the last with half of its sequences read-backs): runs 55, 57-66 and 67b (the shipped model)
piece ocr configs/train/small-lines-ocr-noise-3.json "$RUNS/vist2-small-noise2-olm-b" \
    "$RUNS/vist2-small-noise3-ocr"
piece olm configs/train/small-olm-aligner-noise-3-llm-lr.json "$RUNS/vist2-small-noise3-ocr" \
    "$RUNS/vist2-small-noise3-olm"
piece ocr configs/train/small-lines-ocr-noise-3.json "$RUNS/vist2-small-noise3-olm" \
    "$RUNS/vist2-small-noise3-ocr-b" --set seed=17
piece olm configs/train/small-olm-aligner-noise-3-llm-lr.json "$RUNS/vist2-small-noise3-ocr-b" \
    "$RUNS/vist2-small-noise3-olm-b" --set seed=18
piece ocr configs/train/small-lines-ocr-noise-3.json "$RUNS/vist2-small-noise3-olm-b" \
    "$RUNS/vist2-small-noise3-ocr-c" --set seed=19
piece olm configs/train/small-olm-aligner-noise-3-llm-lr.json "$RUNS/vist2-small-noise3-ocr-c" \
    "$RUNS/vist2-small-noise3-olm-c" --set seed=20
piece ocr configs/train/small-lines-ocr-noise-3.json "$RUNS/vist2-small-noise3-olm-c" \
    "$RUNS/vist2-small-noise3-ocr-d" --set seed=21
piece olm configs/train/small-olm-aligner-noise-3-llm-lr.json "$RUNS/vist2-small-noise3-ocr-d" \
    "$RUNS/vist2-small-noise3-olm-d" --set seed=22
piece ocr configs/train/small-lines-ocr-noise-3.json "$RUNS/vist2-small-noise3-olm-d" \
    "$RUNS/vist2-small-noise4-ocr" --set seed=23 --set ocr_input_noise=0.4
piece olm configs/train/small-olm-aligner-noise-3-llm-lr.json "$RUNS/vist2-small-noise4-ocr" \
    "$RUNS/vist2-small-noise4-olm" --set seed=24
piece ocr configs/train/small-lines-ocr-noise-3.json "$RUNS/vist2-small-noise4-olm" \
    "$RUNS/vist2-small-noise4-ocr-b" --set seed=25 --set ocr_input_noise=0.4
piece olm configs/train/small-olm-aligner-noise-3-llm-lr.json "$RUNS/vist2-small-noise4-ocr-b" \
    "$RUNS/vist2-small-noise4-olm-b" --set seed=26 --set olm_ocr_fraction=0.5
