#!/usr/bin/env bash
# Segment images with MS-PanopticFPN and score the result against ground truth.
# Without --weights, prn segment uses the small model shipped in models/weights/ (trained on prn's synthetic
# data), so this runs on a fresh clone in under a minute. ROOT defaults to ./prn-segment-example.
set -euo pipefail
ROOT=${1:-prn-segment-example}

# 1. Some images with ground truth: 20 synthetic 256x256 images, drawn like the shipped model's training data.
prn synth --out "$ROOT/data" --n "${N:-20}" --size 256x256 --seed 7 --split val --class-color 0.7 --overwrite

# 2. Segment them. --images-json gives the predictions the GT's image ids, so prn eval can pair them.
prn segment --images "$ROOT/data/images/val" --out "$ROOT/base" --overwrite \
    --images-json "$ROOT/data/annotations/panoptic_val.json"

# 3. PQ / SQ / RQ (the COCO reference's numbers), per class too, and a JSON report.
prn eval --gt "$ROOT/data/annotations/panoptic_val.json" --pred "$ROOT/base" --per-class --json "$ROOT/eval.json"

# 4. Look at it: image | prediction | ground truth panels and an HTML gallery.
prn viz "$ROOT/base" "$ROOT/data/annotations/panoptic_val.json" --title prediction --title "ground truth" \
    --images "$ROOT/data/images/val" --out "$ROOT/viz" --html --overwrite
echo "open $ROOT/viz/index.html"
