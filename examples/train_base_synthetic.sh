#!/usr/bin/env bash
# Train MS-PanopticFPN (tiny) on synthetic data on a 2-core CPU, segment a separate val split, and score it.
# These are the commands behind the figures in the project's notes; ROOT defaults to ./prn-base-run.
set -euo pipefail
ROOT=${1:-prn-base-run}

prn synth --out "$ROOT/data" --n 2000 --size 256x256 --seed 1 --split train
prn synth --out "$ROOT/data" --n 200 --size 256x256 --seed 2 --split val

# One intra-op thread is steadier than two on a shared 2-core machine; the DataLoader worker takes the other core.
OMP_NUM_THREADS=1 prn train base --data "$ROOT/data/annotations/panoptic_train.json" \
    --val "$ROOT/data/annotations/panoptic_val.json" --out "$ROOT/run" --arch tiny --iters 600 \
    --batch-size 8 --lr 0.002 --warmup 50 --crop 256 --checkpoint-every 50 --val-images 50 --workers 1 --seed 0

prn segment "$ROOT/data/images/val" --weights "$ROOT/run/model_final.pt" --out "$ROOT/base"
prn eval --gt "$ROOT/data/annotations/panoptic_val.json" --pred "$ROOT/base" --per-class --json "$ROOT/eval.json"
prn viz "$ROOT/base" "$ROOT/data/annotations/panoptic_val.json" --title base --title "ground truth" \
    --images "$ROOT/data/images/val" --out "$ROOT/viz" --limit 24 --html
