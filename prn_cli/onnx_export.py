"""``prn export CKPT --format onnx --out FILE``: a checkpoint's dense network as one ONNX file.

What goes into the graph is what runs on every pixel or anchor; what depends on the data (detection decoding,
NMS, RoI pooling, mask pasting, panoptic fusion, PRN's grouping and its fusion with the base) stays in prn,
in PyTorch and numpy, as it does for the PyTorch runtime. detectron2 and mmdetection users report panoptic
exports that fail on exactly those data-dependent steps; splitting there makes the export a plain dense graph.

- base (MS-PanopticFPN): input ``images`` (B, 3, H, W) normalized, H and W multiples of the size divisibility;
  outputs the first three FPN levels (for the mask head's RoI pooling), every ATSS head output per level, and
  the semantic logits at stride 4. The SAG-Mask head's layers after RoI pooling are a second path of the same
  graph: input ``mask_features`` (N, C, 14, 14) -> ``mask_logits``.
- prn: inputs ``image`` (B, 3, H, W), ``base_semantic`` (B, H, W) int64 and ``base_maps`` (B, 9, H, W), H and W
  multiples of 32; outputs PRN's head maps at input resolution (``semantic``, ``center``, ``offset``, ...).

Batch, height and width are dynamic. The file's metadata holds what prn needs to run it without the checkpoint:
the kind, the categories, and the checkpoint's config (thresholds, post-processing, rendering), as JSON.
"""

from __future__ import annotations

import io
import json
import os
from pathlib import Path

from .errors import fail

OPSET = 17
FORMAT_VERSION = 1
#: metadata keys in the ONNX file
META_KIND, META_CATEGORIES, META_CONFIG, META_OUTPUTS, META_VERSION = (
    "prn.kind", "prn.categories", "prn.config", "prn.outputs", "prn.format_version")


def export_onnx(checkpoint: str | os.PathLike, out: str | os.PathLike, *, height: int = 256,
                width: int = 256) -> dict:
    """Export ``checkpoint`` (a base or PRN checkpoint) to ``out``; returns a summary (kind, inputs, outputs).
    ``height`` x ``width`` is the example input the graph is traced with (any size runs afterwards)."""
    import torch

    from .checkpoint import load_checkpoint
    from .io import atomic_output

    ckpt = load_checkpoint(checkpoint)
    kind = ckpt["kind"]
    if kind == "base":
        module, args, input_names, output_names, dynamic = _base_graph(ckpt, height, width)
    elif kind == "prn":
        module, args, input_names, output_names, dynamic = _prn_graph(ckpt, height, width)
    else:
        raise fail(checkpoint, f"is a {kind!r} checkpoint; only base and prn checkpoints export",
                   "pass a checkpoint written by prn train base or prn train prn")
    buffer = io.BytesIO()
    with torch.no_grad():
        torch.onnx.export(module, args, buffer, input_names=input_names, output_names=output_names,
                          dynamic_axes=dynamic, opset_version=OPSET, dynamo=False, do_constant_folding=True)
    config = ckpt["config"]
    if kind == "prn" and config["model"].get("classifier_channels"):
        # the graph is PRN's dense network; the thing classifier reads crops of the final things and stays out
        # of it, so the export describes a PRN without one: its refine relabels nothing and finds no void things
        config = {**config, "model": {**config["model"], "classifier_channels": []},
                  "postprocess": {**config.get("postprocess", {}), "classifier_confidence": 0.0,
                                  "classifier_remove_confidence": 0.0, "classifier_join_share": 0.0,
                                  "classifier_split_confidence": 0.0,
                                  "void_thing_confidence": 0.0}}
    data = _with_metadata(buffer.getvalue(), {
        META_KIND: kind, META_CATEGORIES: json.dumps(ckpt["categories"]), META_CONFIG: json.dumps(config),
        META_OUTPUTS: json.dumps(output_names), META_VERSION: str(FORMAT_VERSION)})
    out = Path(out)
    with atomic_output(out, "wb") as f:
        f.write(data)
    return {"kind": kind, "out": str(out), "inputs": input_names, "outputs": output_names, "opset": OPSET}


def _with_metadata(data: bytes, items: dict[str, str]) -> bytes:
    import onnx

    model = onnx.load_from_string(data)
    del model.metadata_props[:]
    for key, value in items.items():
        entry = model.metadata_props.add()
        entry.key, entry.value = key, value
    return model.SerializeToString()


# --------------------------------------------------------------------------------------------------------------
# MS-PanopticFPN


#: head outputs per level that the detection decoding reads (cls_features feed the semantic branch inside)
BASE_HEAD_KEYS = ("objectness", "super_logits", "category_logits", "class_logits", "box_regression", "centerness")
MASK_POOLED_LEVELS = 3


def _load_base(ckpt):
    from .models.ms_panoptic_fpn.config import MSPanopticFPNConfig
    from .models.ms_panoptic_fpn.model import build_model

    config = MSPanopticFPNConfig.from_dict(ckpt["config"])
    model = build_model(config, ckpt["categories"])
    model.load_state_dict(ckpt["state_dict"])
    return model.eval(), config


def base_output_names(head_keys, num_levels: int) -> list[str]:
    return ([f"fpn_{level}" for level in range(MASK_POOLED_LEVELS)]
            + [f"{key}_{level}" for key in head_keys for level in range(num_levels)]
            + ["semantic_logits", "mask_logits"])


def _base_graph(ckpt, height: int, width: int):
    import torch
    import torch.nn as nn
    import torch.nn.functional as F

    from .models.ms_panoptic_fpn.model import STRIDES

    model, config = _load_base(ckpt)
    d = int(config.size_divisibility)
    h, w = -(-height // d) * d, -(-width // d) * d
    images = torch.randn(1, 3, h, w)
    with torch.no_grad():
        head_keys = [k for k in BASE_HEAD_KEYS if k in model.head(model.fpn(model.backbone(images)))]
    class BaseDense(nn.Module):
        """images -> FPN levels, head outputs, semantic logits; and mask_features -> the mask head's logits."""

        def __init__(self, base):
            super().__init__()
            self.base = base

        def forward(self, images, mask_features):
            base = self.base
            pyramid = base.fpn(base.backbone(images))
            head_out = base.head(pyramid)
            # MSPanopticFPN._features with the semantic branch's output size kept symbolic (its int() would fix
            # the traced size); every cls level is at stride >= 8, so each one is resized as there
            hp, wp = images.shape[-2:]
            up = [F.interpolate(f, size=(hp // 4, wp // 4), mode="bilinear", align_corners=False)
                  for f in head_out["cls_features"]]
            sem_logits = base.semantic.predictor(torch.cat(up, dim=1))
            outs = list(pyramid[:MASK_POOLED_LEVELS])
            for key in head_keys:
                outs.extend(head_out[key])
            return (*outs, sem_logits, mask_layers(self.base.mask_head, mask_features))

    module = BaseDense(model)
    channels = model.fpn(model.backbone(images))[0].shape[1]
    mask_features = torch.randn(2, channels, 14, 14)
    names = base_output_names(head_keys, len(STRIDES))
    dynamic = {"images": {0: "batch", 2: "height", 3: "width"}, "mask_features": {0: "rois"},
               "mask_logits": {0: "rois"}, "semantic_logits": {0: "batch", 2: "height_4", 3: "width_4"}}
    for name in names[:-2]:
        dynamic[name] = {0: "batch", 2: f"{name}_h", 3: f"{name}_w"}
    return module, (images, mask_features), ["images", "mask_features"], names, dynamic


def mask_layers(mask_head, pooled):
    """SAGMaskHead.forward after its RoI pooling (the same layers, in the same order)."""
    import torch.nn.functional as F

    x = mask_head.convs(pooled)
    x = mask_head.sam(x)
    x = F.relu(mask_head.deconv(x))
    return mask_head.predictor(x)


# --------------------------------------------------------------------------------------------------------------
# PRN


def _load_prn(ckpt):
    from .models.prn.config import PRNConfig
    from .models.prn.model import build_model

    config = PRNConfig.from_dict(ckpt["config"]["model"])
    model = build_model(config, ckpt["categories"])
    model.load_state_dict(ckpt["state_dict"])
    return model.eval(), config


def _prn_graph(ckpt, height: int, width: int):
    import torch
    import torch.nn as nn

    model, config = _load_prn(ckpt)
    h, w = -(-height // 32) * 32, -(-width // 32) * 32
    num_classes = len(ckpt["categories"])
    example = {"image": torch.randn(1, 3, h, w),
               "base_semantic": torch.randint(0, num_classes, (1, h, w), dtype=torch.int64),
               "base_maps": torch.rand(1, config.base_map_channels, h, w)}
    with torch.no_grad():
        names = list(model(example).keys())

    class PRNDense(nn.Module):
        def __init__(self, prn):
            super().__init__()
            self.prn = prn

        def forward(self, image, base_semantic, base_maps):
            out = self.prn({"image": image, "base_semantic": base_semantic, "base_maps": base_maps})
            return tuple(out[name] for name in names)

    inputs = ["image", "base_semantic", "base_maps"]
    dynamic = {name: {0: "batch", 1 + (name != "base_semantic"): "height", 2 + (name != "base_semantic"): "width"}
               for name in inputs}
    for name in names:
        dynamic[name] = {0: "batch", 2: "height", 3: "width"}
    return PRNDense(model), tuple(example[k] for k in inputs), inputs, names, dynamic
