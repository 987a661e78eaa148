#!/usr/bin/env bash
# Train the 115M reader (preset reader-115m, the model DESIGN.md measured on one H100: OCR loss
# 11.9 -> 0.22 in 1,440 steps) on one GPU, from scratch, with the Qwen3 tokenizer and the English
# corpora (train parts only: vist2.heldout keeps the last 10 % of each file out), then read it with
# the eval commands. Each step fits one call of a time-limited GPU session, and each resumes its
# run from the newest checkpoint, so a step cut short goes on where it stopped:
#
#   bash scripts/train_reader_gpu.sh init   # the random-init model (seconds)
#   bash scripts/train_reader_gpu.sh ocr    # stage 2, 2,000 steps x 32 sequences, all modules
#   bash scripts/train_reader_gpu.sh olm    # stage 3, 300 steps x 32 at 4,096 slots, the LLM
#   bash scripts/train_reader_gpu.sh eval   # OCR at r = 2 / 4 / 8, OLM perplexity, needle
#   bash scripts/train_reader_gpu.sh all    # the four in order
#
# Options after the step go to `vist2 train` (ocr, olm): e.g. `ocr --stop-after 1000`.
# RUNS (default runs/reader-115m) holds the runs, loss curves and reports; DATA the corpora
# (default ../shared/corpora); TOKENIZER the Qwen3 tokenizer (default ../shared/assets/
# qwen3-tokenizer; where the shared folder sits inside the tree, as on a lent GPU machine:
# DATA=shared/corpora TOKENIZER=shared/assets/qwen3-tokenizer). SMOKE=1 runs every step at 2
# sequences and 2 steps on short sequences (`vist2 train --set` over the config; a `--max-steps`
# after the step still wins): a check of the whole path on CPU (a few minutes), not a model.
set -euo pipefail
STEP=${1:?usage: bash scripts/train_reader_gpu.sh init|ocr|olm|eval|all [vist2 train options]}
shift
RUNS=${RUNS:-runs/reader-115m}
DATA=${DATA:-../shared/corpora}
TOKENIZER=${TOKENIZER:-../shared/assets/qwen3-tokenizer}
SMOKE=${SMOKE:-0}
mkdir -p "$RUNS"

# SMOKE=1: every stage's config shrunk to a 2-step path check
SMALL=()
if [ "$SMOKE" = 1 ]; then
    for field in batch_size=2 micro_batch_size=2 max_steps=2 max_length=1024 num_workers=0 \
        save_every=0 mixed_precision=no; do
        SMALL+=(--set "$field")
    done
fi

# train STAGE FROM OUT [options]: one run; resumes OUT if it has checkpoints
train() {
    local stage=$1 from=$2 out=$3
    shift 3
    local resume=()
    if [ -d "$out/checkpoints" ]; then
        resume=(--resume)
    fi
    vist2 train --stage "$stage" --model "$from" --data "$DATA/en" --out "$out" \
        --config "configs/train/reader-115m-$stage.json" "${SMALL[@]}" "${resume[@]}" "$@"
    vist2 plot "$out" --out "$RUNS/loss-$stage.png"
}

step_init() {
    [ -f "$RUNS/init/model.safetensors" ] ||
        vist2 init --preset reader-115m --seed 0 --tokenizer "$TOKENIZER" --out "$RUNS/init"
}

step_eval() {
    local pages=64 windows=16 lengths=(1024 4096) trials=3
    if [ "$SMOKE" = 1 ]; then
        pages=4 windows=2 lengths=(512) trials=1
    fi
    vist2 eval ocr --model "$RUNS/ocr/model" --data "$DATA" --out "$RUNS/eval/ocr" \
        --pages "$pages" --control --page-tokens 128 256 512
    vist2 eval olm --model "$RUNS/olm/model" --data "$DATA/en" --out "$RUNS/eval/olm" \
        --prefix 1024 --continue 1024 --windows "$windows" --control
    vist2 eval needle --model "$RUNS/olm/model" --out "$RUNS/eval/needle" \
        --lengths "${lengths[@]}" --depths 0 0.5 1 --trials "$trials"
}

case "$STEP" in
    init) step_init ;;
    ocr) train ocr "$RUNS/init" "$RUNS/ocr" "$@" ;;
    olm) train olm "$RUNS/ocr" "$RUNS/olm" "$@" ;;
    eval) step_eval ;;
    all)
        step_init
        train ocr "$RUNS/init" "$RUNS/ocr" "$@"
        train olm "$RUNS/ocr" "$RUNS/olm" "$@"
        step_eval
        ;;
    *) echo "train_reader_gpu.sh: unknown step '$STEP' (init, ocr, olm, eval or all)" >&2 && exit 2 ;;
esac
