"""``--runtime onnxruntime``: :class:`~prn_cli.predictors.Segmenter` and :class:`~prn_cli.predictors.Refiner` on
a file written by ``prn export`` (:mod:`prn_cli.onnx_export`), with onnxruntime on the CPU.

onnxruntime runs the dense graph; everything after it is the same PyTorch and numpy code as with the PyTorch
runtime (the predictors, the detection decoding, RoI pooling, fusion and PRN's grouping), so both runtimes give
the same segmentations up to the float differences of the dense outputs (parity: ``tests/core/test_onnx.py``).
onnxruntime and onnx come with the ``onnx`` extra: ``pip install -e ".[onnx]"``.
"""

from __future__ import annotations

import importlib.util
import json
import os
from pathlib import Path

import numpy as np

from .errors import InvalidInputError, UsageError, fail

RUNTIMES = ("torch", "onnxruntime")


def check_runtime(runtime: str, weights, device: str) -> None:
    """Usage checks for ``--runtime`` before anything loads (no torch, no onnxruntime import)."""
    if runtime not in RUNTIMES:
        raise UsageError(f"--runtime {runtime}: use torch or onnxruntime")
    if runtime != "onnxruntime":
        if weights is not None and str(weights).endswith(".onnx"):
            raise UsageError(f"--weights {weights}: an ONNX file runs with --runtime onnxruntime")
        return
    if weights is None:
        raise UsageError("--runtime onnxruntime needs --weights FILE.onnx (write one with prn export CKPT "
                         "--format onnx --out FILE.onnx)")
    if str(device).startswith("cuda"):
        raise UsageError(f"--device {device}: --runtime onnxruntime runs on the CPU; use --device cpu (or auto), "
                         "or the torch runtime on CUDA")
    if importlib.util.find_spec("onnxruntime") is None:
        raise UsageError("--runtime onnxruntime needs onnxruntime; install it with pip install -e \".[onnx]\" "
                         "(or pip install onnxruntime)")


class ExportedModel:
    """An ONNX file written by ``prn export``: its onnxruntime session and the metadata prn stored in it."""

    def __init__(self, path: str | os.PathLike, *, threads: int | None = None):
        import onnxruntime as ort

        from .onnx_export import META_CATEGORIES, META_CONFIG, META_KIND, META_OUTPUTS

        self.path = Path(path)
        if not self.path.is_file():
            raise fail(self.path, "ONNX file is missing", "write it with prn export CKPT --format onnx --out FILE")
        options = ort.SessionOptions()
        if threads is None:
            import torch

            threads = torch.get_num_threads()   # --threads and OMP_NUM_THREADS, as for the torch runtime
        options.intra_op_num_threads = int(threads)
        # onnxruntime's threads spin for work after each run by default, taking the cores from the PyTorch
        # post-processing that follows every run here
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        try:
            self.session = ort.InferenceSession(str(self.path), options, providers=["CPUExecutionProvider"])
        except Exception as exc:  # onnxruntime raises its own exception types for unreadable models
            raise fail(self.path, f"is not a loadable ONNX model ({exc.__class__.__name__}: "
                       f"{str(exc).splitlines()[0][:200]})", "export it again with prn export") from None
        meta = self.session.get_modelmeta().custom_metadata_map
        if META_KIND not in meta:
            raise fail(self.path, "is an ONNX model that prn export did not write (no prn metadata)",
                       "export the checkpoint with prn export CKPT --format onnx --out FILE")
        self.kind = meta[META_KIND]
        self.categories = json.loads(meta[META_CATEGORIES])
        self.config = json.loads(meta[META_CONFIG])
        self.outputs = json.loads(meta[META_OUTPUTS])

    def expect(self, kind: str) -> "ExportedModel":
        if self.kind != kind:
            other = {"base": "prn segment", "prn": "prn refine"}[self.kind]
            raise InvalidInputError(f"{self.path}: is an exported {self.kind} model; use it with {other}")
        return self

    def run(self, names: list[str], feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return dict(zip(names, self.session.run(names, feeds)))


# --------------------------------------------------------------------------------------------------------------
# MS-PanopticFPN


def onnx_segmenter(path: str | os.PathLike, *, overrides=None, processing_size=None, threads: int | None = None):
    """A :class:`Segmenter` whose dense network runs in onnxruntime."""
    from .models.ms_panoptic_fpn.config import MSPanopticFPNConfig
    from .options import SegmentOverrides
    from .predictors import Segmenter

    exported = ExportedModel(path, threads=threads).expect("base")
    config = MSPanopticFPNConfig.from_dict(exported.config)
    config.inference = (overrides or SegmentOverrides()).apply(config.inference)
    segmenter = Segmenter.from_model(_onnx_base_model(exported, config), exported.categories,
                                     config.size_divisibility, processing_size)
    segmenter.weights = exported.path
    return segmenter


def _onnx_base_model(exported: ExportedModel, config):
    import torch
    import torch.nn as nn

    from .models.ms_panoptic_fpn.atss import make_anchors
    from .models.ms_panoptic_fpn.model import STRIDES, MSPanopticFPN
    from .onnx_export import BASE_HEAD_KEYS, MASK_POOLED_LEVELS

    head_keys = [k for k in BASE_HEAD_KEYS if f"{k}_0" in exported.outputs]
    dense = [n for n in exported.outputs if n != "mask_logits"]
    mask_channels = exported.session.get_inputs()[1].shape[1]
    size = max(32, int(config.size_divisibility))
    idle_image = np.zeros((1, 3, size, size), np.float32)   # fed, not computed, when only the mask path runs

    class OnnxMaskHead(nn.Module):
        """SAG-Mask: RoI pooling in PyTorch (as always), the layers after it in the graph."""

        def __init__(self, pooling):
            super().__init__()
            self.pooling = pooling

        def forward(self, features, boxes, image_sizes):
            pooled = self.pooling.pool(features, boxes, image_sizes)
            out = exported.run(["mask_logits"], {"images": idle_image,
                                                 "mask_features": pooled.float().numpy()})
            return torch.from_numpy(out["mask_logits"])

    class OnnxMSPanopticFPN(MSPanopticFPN):
        """MS-PanopticFPN whose dense part is the exported graph; decoding, masks and fusion are prn's own."""

        def _features(self, images):
            values = exported.run(dense, {"images": images.float().cpu().numpy(),
                                          "mask_features": np.zeros((0, mask_channels, 14, 14), np.float32)})
            pyramid = [torch.from_numpy(values[f"fpn_{level}"]) for level in range(MASK_POOLED_LEVELS)]
            head_out = {k: [torch.from_numpy(values[f"{k}_{level}"]) for level in range(len(STRIDES))]
                        for k in head_keys}
            anchors = make_anchors([t.shape[-2:] for t in head_out["box_regression"]], STRIDES,
                                   scale=self.config.head.anchor_scale)
            return pyramid, head_out, anchors, torch.from_numpy(values["semantic_logits"])

    model = OnnxMSPanopticFPN(config, exported.categories)
    for dense_part in ("backbone", "fpn", "head", "semantic"):
        delattr(model, dense_part)   # the graph holds these
    model.mask_head = OnnxMaskHead(model.mask_head)
    return model.eval()


# --------------------------------------------------------------------------------------------------------------
# PRN


def onnx_refiner(path: str | os.PathLike, *, overrides=None, processing_size=None, threads: int | None = None):
    """A :class:`Refiner` whose network runs in onnxruntime."""
    from .models.prn.config import PRNConfig
    from .models.prn.render import RenderConfig
    from .predictors import Refiner, refiner_postprocess

    exported = ExportedModel(path, threads=threads).expect("prn")
    stored = exported.config
    config = PRNConfig.from_dict(stored["model"])
    post = refiner_postprocess(stored, config, overrides, exported.path)
    refiner = Refiner.from_model(OnnxPRN(exported), exported.categories, RenderConfig(**stored.get("render", {})),
                                 post, processing_size)
    refiner.weights = exported.path
    return refiner


class OnnxPRN:
    """PRN's network as the Refiner calls it (a dict of input tensors -> a dict of output maps)."""

    def __init__(self, exported: ExportedModel):
        self.exported = exported

    def __call__(self, inputs: dict):
        import torch

        feeds = {"image": inputs["image"].float().cpu().numpy(),
                 "base_semantic": inputs["base_semantic"].long().cpu().numpy(),
                 "base_maps": inputs["base_maps"].float().cpu().numpy()}
        values = self.exported.run(self.exported.outputs, feeds)
        return {name: torch.from_numpy(value) for name, value in values.items()}

    def parameters(self):
        import torch

        yield torch.zeros(0)   # Refiner.from_model reads the device from here: the CPU

    def to(self, device):
        return self

    def eval(self):
        return self
