#!/usr/bin/env bash
# Train PRN on top of the base model of train_base_synthetic.sh (run that first with the same ROOT), refine the
# base's val predictions, and compare base and refined PQ. These are the commands behind the PRN figures in
# README.md and the project's notes.
set -euo pipefail
ROOT=${1:-prn-run}

# Real base predictions on half of the training images; PRN mixes them 50/50 with GT corrupted the way base
# models fail (so it also refines other models' output).
# (--images is repeatable: one --images per file.)
prn segment $(ls "$ROOT"/data/images/train/*.jpg | head -1000 | sed 's/^/--images /') \
    --weights "$ROOT/base_run/model_final.pt" --out "$ROOT/base_train" \
    --images-json "$ROOT/data/annotations/panoptic_train.json"

# The encoder starts from the base model's trained backbone (--backbone-weights takes a prn base checkpoint).
# configs/prn_hard_pixels.json turns on hard pixel mining in the semantic loss (the hardest 20% of pixels,
# Panoptic-DeepLab's Cityscapes setting): the pixels a base gets wrong are few; with the plain mean the same run
# refined the val base by +0.2 PQ, with it by +1.2 (foreground branch, stuff area 16384).
# --stuff-area 16384 (at 640x480, scaled with the image area) was chosen on training images 901-1000
# (models/README.md); it is stored in the checkpoint, so prn refine uses it.
OMP_NUM_THREADS=1 prn train prn --data "$ROOT/data/annotations/panoptic_train.json" --base "$ROOT/base_train" \
    --base-mix 0.5 --val "$ROOT/data/annotations/panoptic_val.json" --val-base "$ROOT/base_val" --val-limit 50 \
    --out "$ROOT/prn_run" --iters 900 --batch-size 4 --lr 0.002 --warmup-iters 50 --crop 256 --num-workers 1 \
    --checkpoint-every 100 --val-every 450 --backbone-weights "$ROOT/base_run/model_final.pt" --seed 0 \
    --config "$(dirname "$0")/configs/prn_hard_pixels.json" --stuff-area 16384

# The boundary refiner (docs/design.md, "PRN"): a full-resolution network trained alone on the PRN above
# (configs/prn_boundary.json adds it and freezes everything else), which re-cuts each thing's boundary within 2 px
# of where it was. The fusion with the base and the gated re-cut are the shipped PRN's (models/README.md); they
# are stored in the checkpoint, so prn refine uses them.
OMP_NUM_THREADS=1 prn train prn --data "$ROOT/data/annotations/panoptic_train.json" --base "$ROOT/base_train" \
    --base-mix 0.75 --out "$ROOT/prn_boundary" --iters 1200 --batch-size 4 --lr 0.002 --warmup-iters 50 \
    --crop 256 --num-workers 1 --checkpoint-every 100 --init-weights "$ROOT/prn_run/model_final.pt" --seed 0 \
    --config "$(dirname "$0")/configs/prn_boundary.json" --stuff-area 16384 --restore-base-segments all \
    --reclaim-other-classes --min-join-contact 10 --keep-base-thing-class --base-snap-confidence 0.9 \
    --boundary-radius 2 --boundary-confidence 0.7 --boundary-min-area 256 --boundary-min-gain 0.05

# Its second stage: the same refiner fine-tuned on mostly exact masks (half the samples are GT corrupted at
# strength 0-0.4), so that it leaves a base whose boundaries are right alone; then re-cut at confidence 0.5, every
# thing of at least 128 px whose expected gain is at least 0.02 (chosen on training images 901-1000).
OMP_NUM_THREADS=1 prn train prn --data "$ROOT/data/annotations/panoptic_train.json" --base "$ROOT/base_train" \
    --base-mix 0.5 --strength-range 0.0,0.4 --out "$ROOT/prn_boundary_exact" --iters 800 --batch-size 4 \
    --lr 0.001 --warmup-iters 50 --crop 256 --num-workers 1 --checkpoint-every 100 \
    --init-weights "$ROOT/prn_boundary/model_final.pt" --seed 3 --config "$(dirname "$0")/configs/prn_boundary.json" \
    --stuff-area 16384 --restore-base-segments all --reclaim-other-classes --min-join-contact 10 \
    --keep-base-thing-class --base-snap-confidence 0.9 --boundary-radius 2 --boundary-confidence 0.5 \
    --boundary-min-area 128 --boundary-min-gain 0.02
# Its third stage: 2400 more steps on the same data at a lower rate.
OMP_NUM_THREADS=1 prn train prn --data "$ROOT/data/annotations/panoptic_train.json" --base "$ROOT/base_train" \
    --base-mix 0.5 --strength-range 0.0,0.4 --out "$ROOT/prn_boundary_long" --iters 2400 --batch-size 4 \
    --lr 0.0007 --warmup-iters 50 --crop 256 --num-workers 1 --checkpoint-every 100 \
    --init-weights "$ROOT/prn_boundary_exact/model_final.pt" --seed 5 \
    --config "$(dirname "$0")/configs/prn_boundary.json" --stuff-area 16384 --restore-base-segments all \
    --reclaim-other-classes --min-join-contact 10 --keep-base-thing-class --base-snap-confidence 0.9 \
    --boundary-radius 2 --boundary-confidence 0.5 --boundary-min-area 128 --boundary-min-gain 0.02

# Every classifier stage below stores the fusion, re-cut and classifier settings of the shipped PRN (chosen on
# training images 901-1000); each adds its own removal and join settings.
CLASSIFIER_POST=(--stuff-area 16384 --restore-base-segments all --reclaim-other-classes --min-join-contact 10
    --keep-base-thing-class --base-snap-confidence 0.9 --boundary-radius 2 --boundary-confidence 0.5
    --boundary-min-area 128 --boundary-min-gain 0.02 --boundary-min-coverage 0.4 --classifier-confidence 0.7
    --classifier-small-area 400 --classifier-small-confidence 0.9)

# The thing classifier (docs/design.md, "PRN"): a small network trained alone on the PRN above (configs/
# prn_classifier.json adds it and freezes everything else) over crops of each thing (image and mask), on whole
# images (--scale-range 1,1: no crop cuts a shape); it relabels a thing where it gives another class a probability
# above 0.7, and names the regions PRN reads as things but leaves void where it is 0.8 sure. The shipped one left
# training images 901-1000 out, where that threshold was chosen (models/README.md).
OMP_NUM_THREADS=1 prn train prn --data "$ROOT/data/annotations/panoptic_train.json" --base "$ROOT/base_train" \
    --base-mix 0.5 --strength-range 0.0,0.4 --scale-range 1,1 --out "$ROOT/prn_classifier" --iters 3000 \
    --batch-size 8 --lr 0.003 --warmup-iters 50 --crop 256 --num-workers 1 --checkpoint-every 200 \
    --init-weights "$ROOT/prn_boundary_long/model_final.pt" --seed 12 \
    --config "$(dirname "$0")/configs/prn_classifier.json" "${CLASSIFIER_POST[@]}" --void-thing-confidence 0.8 --void-thing-min-area 50
# Its "no thing" class (configs/prn_classifier_bg.json): 1500 more steps of the classifier alone, with crops of the
# base's false detections and of GT shapes moved onto stuff; it removes a thing it is 0.8 sure is none (chosen on
# training images 901-1000).
OMP_NUM_THREADS=1 prn train prn --data "$ROOT/data/annotations/panoptic_train.json" --base "$ROOT/base_train" \
    --base-mix 0.5 --strength-range 0.0,0.4 --scale-range 1,1 --out "$ROOT/prn_classifier_bg" --iters 1500 \
    --batch-size 8 --lr 0.002 --warmup-iters 50 --crop 256 --num-workers 1 --checkpoint-every 200 \
    --init-weights "$ROOT/prn_classifier/model_final.pt" --seed 13 \
    --config "$(dirname "$0")/configs/prn_classifier_bg.json" "${CLASSIFIER_POST[@]}" --classifier-remove-confidence 0.8 --void-thing-confidence 0.8 --void-thing-min-area 50
# "No thing" learnt again from every base thing that matches no object (configs/prn_classifier_unmatched.json): a
# split's smaller half too, which joins the thing it was cut from when it shares a fifth of its boundary with it
# (chosen on training images 901-1000).
OMP_NUM_THREADS=1 prn train prn --data "$ROOT/data/annotations/panoptic_train.json" --base "$ROOT/base_train" \
    --base-mix 0.5 --strength-range 0.0,0.4 --scale-range 1,1 --out "$ROOT/prn_classifier_unmatched" --iters 1500 \
    --batch-size 8 --lr 0.002 --warmup-iters 50 --crop 256 --num-workers 1 --checkpoint-every 200 \
    --init-weights "$ROOT/prn_classifier_bg/model_final.pt" --seed 14 \
    --config "$(dirname "$0")/configs/prn_classifier_unmatched.json" "${CLASSIFIER_POST[@]}" --classifier-remove-confidence 0.8 --classifier-join-share 0.2 --void-thing-confidence 0.8 --void-thing-min-area 50
# 3000 more steps on more corrupted GT (more splits and merges among the unmatched things). The checkpoint also
# stores the cut of merged things (--classifier-split-confidence 0.9, chosen afterwards on a split made only for
# choosing; models/README.md).
OMP_NUM_THREADS=1 prn train prn --data "$ROOT/data/annotations/panoptic_train.json" --base "$ROOT/base_train" \
    --base-mix 0.5 --strength-range 0.3,0.8 --scale-range 1,1 --out "$ROOT/prn_classifier_unmatched2" --iters 3000 \
    --batch-size 8 --lr 0.002 --warmup-iters 50 --crop 256 --num-workers 1 --checkpoint-every 200 \
    --init-weights "$ROOT/prn_classifier_unmatched/model_final.pt" --seed 15 \
    --config "$(dirname "$0")/configs/prn_classifier_unmatched.json" "${CLASSIFIER_POST[@]}" --classifier-remove-confidence 0.8 --classifier-join-share 0.2 --classifier-split-confidence 0.9 --void-thing-confidence 0.8 --void-thing-min-area 50

prn refine --base "$ROOT/base_val" --images "$ROOT/data/images/val" \
    --weights "$ROOT/prn_classifier_unmatched2/model_final.pt" \
    --out "$ROOT/refined_val"
prn eval --gt "$ROOT/data/annotations/panoptic_val.json" --pred "$ROOT/base_val" --pred "$ROOT/refined_val"
prn viz "$ROOT/base_val" "$ROOT/refined_val" "$ROOT/data/annotations/panoptic_val.json" --title base \
    --title refined --title "ground truth" --images "$ROOT/data/images/val" --out "$ROOT/viz_refined" --limit 24 --html
