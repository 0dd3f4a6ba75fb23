#!/usr/bin/env bash
# Train both networks on COCO panoptic with several GPUs (torchrun + DDP), then refine and evaluate on val2017.
# Needs COCO on disk (nothing is downloaded):
#   $COCO/train2017/*.jpg  $COCO/val2017/*.jpg
#   $COCO/annotations/panoptic_train2017.json + panoptic_train2017/   (and the same for val2017)
# and, optionally, torchvision's ImageNet ResNet-50 weights as a local file ($R50, e.g. resnet50-0676ba61.pth).
# The figures to compare with are the paper's (docs/design.md, "Table 1 and prn ablate"):
# MS-PanopticFPN 40.6 PQ, PRN 44.4 PQ.
set -euo pipefail
COCO=${COCO:?set COCO to the COCO folder}
R50=${R50:-}
GPUS=${GPUS:-8}
RUN=${RUN:-runs/coco}
BACKBONE=${R50:+--backbone-weights $R50}

# 1. MS-PanopticFPN (ResNet-50 + FPN), bf16 autocast on the GPUs; --resume continues an interrupted run.
torchrun --nproc_per_node "$GPUS" -m prn_cli train base --data "$COCO/annotations/panoptic_train2017.json" \
    --val "$COCO/annotations/panoptic_val2017.json" --out "$RUN/base" --arch r50 $BACKBONE \
    --iters 90000 --batch-size 16 --lr 0.0002 --crop 1024 --amp bf16 --num-workers 4 --val-every 10000

# 2. Base predictions on train (PRN's real training inputs) and val (what PRN refines).
prn segment --images "$COCO/train2017" --weights "$RUN/base/model_final.pt" --out "$RUN/base_train" \
    --images-json "$COCO/annotations/panoptic_train2017.json" --device cuda --batch-size 8
prn segment --images "$COCO/val2017" --weights "$RUN/base/model_final.pt" --out "$RUN/base_val" \
    --images-json "$COCO/annotations/panoptic_val2017.json" --device cuda --batch-size 8

# 3. PRN (all Table 1 switches on), half real base predictions, half corrupted GT.
torchrun --nproc_per_node "$GPUS" -m prn_cli train prn --data "$COCO/annotations/panoptic_train2017.json" \
    --base "$RUN/base_train" --base-mix 0.5 --val "$COCO/annotations/panoptic_val2017.json" \
    --val-base "$RUN/base_val" --out "$RUN/prn" --arch r50 $BACKBONE --iters 90000 --batch-size 32 \
    --lr 0.001 --crop 640 --amp bf16 --num-workers 4 --val-every 10000

# 4. Refine val (COCO images are large: NMS kernel 41 as Panoptic-DeepLab; stuff area 4096) and compare.
prn refine --base "$RUN/base_val" --images "$COCO/val2017" --weights "$RUN/prn/model_final.pt" \
    --out "$RUN/refined_val" --device cuda --nms-kernel 41 --stuff-area 4096
prn eval --gt "$COCO/annotations/panoptic_val2017.json" --pred "$RUN/base_val" --pred "$RUN/refined_val"

# 5. The whole Table 1 (trains the 7 PRN rows; resumes row by row).
torchrun --nproc_per_node "$GPUS" -m prn_cli ablate --data "$COCO/annotations/panoptic_train2017.json" \
    --base "$RUN/base_train" --val "$COCO/annotations/panoptic_val2017.json" --val-base "$RUN/base_val" \
    --out "$RUN/table1" --arch r50 $BACKBONE --iters 90000 --batch-size 32 --amp bf16
