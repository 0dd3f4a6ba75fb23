#!/usr/bin/env bash
# Refine the panoptic output of a model that is not prn's, and measure the change.
# Any model that writes COCO panoptic format (PNG + JSON: detectron2, mmdetection, panopticapi converters) works.
# Here "another model" is simulated by corrupting ground truth the way base models fail (coarse 28x28 masks,
# dropped, merged and split instances, wrong classes); replace BASE and IMAGES with your own. ROOT defaults to
# ./prn-refine-example. Without --weights, prn refine uses the PRN shipped in models/weights/.
set -euo pipefail
ROOT=${1:-prn-refine-example}

prn synth --out "$ROOT/data" --n "${N:-20}" --size 256x256 --seed 8 --split val --class-color 0.7 --overwrite
python - "$ROOT" <<'PY'
import sys
from prn_cli.perturb import write_corrupted_set
root = sys.argv[1]
write_corrupted_set(f"{root}/data/annotations/panoptic_val.json", f"{root}/other_model", seed=0, overwrite=True)
PY
BASE="$ROOT/other_model"          # panoptic.json + panoptic/ (or e.g. panoptic_val2017.json + its PNG folder)
IMAGES="$ROOT/data/images/val"    # the images that base was predicted on (paired by images records or file stem)

# If your model's category ids differ from the checkpoint's, add --category-map map.json ({"<yours>": <ours>}).
prn refine --base "$BASE" --images "$IMAGES" --out "$ROOT/refined" --overwrite --json "$ROOT/changes.json"

# Base and refined side by side, with the delta.
prn eval --gt "$ROOT/data/annotations/panoptic_val.json" --pred "$BASE" --pred "$ROOT/refined"
prn viz "$BASE" "$ROOT/refined" "$ROOT/data/annotations/panoptic_val.json" --title base --title refined \
    --title "ground truth" --images "$IMAGES" --out "$ROOT/viz" --html --overwrite
echo "changes per image: $ROOT/changes.json; panels: $ROOT/viz/index.html"
