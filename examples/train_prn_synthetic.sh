#!/usr/bin/env bash
# Train PRN on top of the base model of train_base_synthetic.sh (run that first with the same ROOT), refine the
# base's val predictions, and compare base and refined PQ. These are the commands behind the PRN figures in
# README.md and the project's notes.
set -euo pipefail
ROOT=${1:-prn-run}

# Real base predictions on half of the training images; PRN mixes them 50/50 with GT corrupted the way base
# models fail (so it also refines other models' output).
prn segment $(ls -d "$ROOT"/data/images/train/* | head -1000) --weights "$ROOT/base_run/model_final.pt" \
    --out "$ROOT/base_train" --images-json "$ROOT/data/annotations/panoptic_train.json"

# The encoder starts from the base model's trained backbone (--backbone-weights takes a prn base checkpoint).
OMP_NUM_THREADS=1 prn train prn --data "$ROOT/data/annotations/panoptic_train.json" --base "$ROOT/base_train" \
    --base-mix 0.5 --val "$ROOT/data/annotations/panoptic_val.json" --val-base "$ROOT/base_val" --val-images 50 \
    --out "$ROOT/prn_run" --iters 900 --batch-size 4 --lr 0.002 --warmup 50 --crop 256 --workers 1 \
    --checkpoint-every 100 --val-every 300 --backbone-weights "$ROOT/base_run/model_final.pt" --seed 0

prn refine --base "$ROOT/base_val" --images "$ROOT/data/images/val" --weights "$ROOT/prn_run/model_final.pt" \
    --out "$ROOT/refined_val"
prn eval --gt "$ROOT/data/annotations/panoptic_val.json" --pred "$ROOT/base_val" --pred "$ROOT/refined_val"
prn viz "$ROOT/base_val" "$ROOT/refined_val" "$ROOT/data/annotations/panoptic_val.json" --title base \
    --title refined --title "ground truth" --images "$ROOT/data/images/val" --out "$ROOT/viz_refined" --limit 24 --html
