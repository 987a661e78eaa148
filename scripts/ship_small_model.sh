#!/usr/bin/env bash
# Put a vist2-small training checkpoint into the package, where `vist2 generate --model
# vist2-small` and `Engine.from_pretrained("vist2-small")` find it offline, and redraw its loss
# curve for the model card. Run from the repo root:
#
#   bash scripts/ship_small_model.sh /work/runs/vist2-small-ocr/checkpoints/step-N
#   bash scripts/ship_small_model.sh /work/runs/vist2-small-ocr      # its newest checkpoint
#
# Writes src/vist2/assets/models/vist2-small/ (config.json, model.safetensors in fp32, the
# tokenizer, training.json: run, step, loss, time, and the runs before it) and
# docs/model/vist2-small-loss.png (a panel per run of the chain, when every run is on this machine).
set -euo pipefail
SOURCE=${1:?usage: bash scripts/ship_small_model.sh RUN_DIR/checkpoints/step-N (or RUN_DIR)}
OUT=src/vist2/assets/models/vist2-small
export PYTHONPATH=${PYTHONPATH:-$PWD/src}

# the export refuses a model over the package's 50 MB limit (the shipped one stays), then prints
# every run of the chain (training.json: run, started_from: ...), first to last: a loss panel each
CHAIN=$(python -m vist2.training.export "$SOURCE" --out "$OUT" --max-mb 50 --print-chain)
mapfile -t RUNS <<< "$CHAIN"
mkdir -p docs/model
MISSING=()
for run in "${RUNS[@]}"; do
    [ -f "$run/metrics.jsonl" ] || MISSING+=("$run")
done
if [ ${#MISSING[@]} -eq 0 ]; then
    vist2 plot "${RUNS[@]}" --out docs/model/vist2-small-loss.png
else  # an earlier session's runs: their curves are in the PNG already, not on this machine
    echo "not redrawn: docs/model/vist2-small-loss.png (runs not here: ${MISSING[*]});" \
        "plot the runs you have with: vist2 plot RUN_DIR ... --out PNG" >&2
fi
# loads by name, offline, and writes under every policy
for policy in global prompt none; do
    vist2 generate --model vist2-small --policy "$policy" --max-new-tokens 8 \
        --prompt "It is a truth universally acknowledged" --json > /dev/null
done
echo "shipped $OUT (loads as vist2-small under global, prompt and none)"
