"""PRN, the Panoptic Refinement Network: image + base -> refined Panoptic-DeepLab maps (docs/design.md, "PRN").

Input/output contract
---------------------
``forward(inputs, targets=None)``; ``inputs`` is a dict of batched tensors, all at the same (H, W), H and W
multiples of ``config.size_divisibility`` (32; ``prn_cli.data``'s collate pads them so):

- ``"image"``: (B, 3, H, W) float, ImageNet-normalised RGB.
- ``"base_semantic"``: (B, H, W) integer class index of the base model (contiguous 0..C-1, see
  :class:`CategoryMap`); 255 (or any value outside 0..C-1) = void / padding.
- ``"base_maps"``: (B, 9, H, W) float, ``render.input_maps`` of the base prediction (foreground, center,
  offset / offset_scale (dy, dx), box / offset_scale (l, t, r, b), boundary).

Training mode (``targets`` required: batched renderer outputs, padding with weight 0): returns a dict of scalar
losses, each already multiplied by its weight in ``config.loss``: ``loss_semantic``, ``loss_center``,
``loss_offset``, plus ``loss_foreground`` if ``config.foreground_head``, ``loss_box`` if ``config.box_head`` and
``loss_boundary`` if ``config.boundary_channels``.

Eval mode: returns the maps at input resolution (H, W), float:

- ``"semantic"`` (B, C, H, W) class logits;
- ``"center"`` (B, 1, H, W) raw center heatmap (no sigmoid; the target is a Gaussian with peak 1);
- ``"offset"`` (B, 2, H, W) (dy, dx) in input pixels, pointing from the pixel to its instance centroid;
- ``"foreground"`` (B, 1, H, W) logits that the pixel belongs to a thing (if ``config.foreground_head``);
- ``"box"`` (B, 4, H, W) (l, t, r, b) distances in input pixels, all >= 0 (if ``config.box_head``);
- ``"thing_foreground"`` (B, 1, H, W) the boundary refiner's full-resolution logits that the pixel belongs to a
  thing (if ``config.boundary_channels``; :mod:`.boundary`), with ``loss_boundary`` in training.

:meth:`PRN.predict` returns these maps in either mode and :meth:`PRN.loss` turns them into the losses, e.g. to
compute validation losses in eval mode.

Architecture
------------
Stem input = cat[RGB (3), base semantic (embedding of ``semantic_embedding_dim`` channels, or one-hot over C),
base maps (9), x/y coordinates (2, if ``coordconv_encoder``)] (the ranges are in :attr:`PRN.stem_slices`). The
ResNet stem's weights for every channel after RGB start at zero, so a fresh or ImageNet-initialised stem gives
exactly the RGB-only response; the network learns to use the base prediction from there.
ResNet (res5 dilated at output stride 16) -> two Panoptic-DeepLab decoders (own ASPP each; fuse projected res3 at
stride 8 and res2 at stride 4) -> heads at stride 4 -> bilinear x4 upsampling; offsets and box distances are
predicted in stride-4 units and multiplied by 4.

The foreground head reads the INSTANCE decoder by default (``config.foreground_decoder``): the mask it predicts
gates which pixels are grouped by the center/offset/box maps, so it is learnt from the features that predict
those maps (the instance extent), and it gives that decoder a dense thing/not-thing signal where the offset and
box losses only see thing pixels. It also keeps "Foreground" a different source from "ForegroundSem" (the argmax
of the semantic head) in the Table-1 ablation, instead of a second read-out of the same features.

ImageNet weights: :func:`load_pretrained_backbone` (or ``backbone.load_backbone_weights(model.backbone, path)``)
loads a torchvision ResNet ``state_dict`` (width 64) into the RGB slice of the stem and zeroes the rest.
"""

from __future__ import annotations

import math
import os
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ..backbone import ResNetBackbone, load_backbone_weights
from ..categories import CategoryMap
from ..coordconv import COORD_CHANNELS, add_coords
from .boundary import BoundaryRefiner, boundary_band
from .classifier import ThingClassifier
from .config import PRNConfig, PRNLossConfig
from .decoder import PanopticDeepLabDecoder, PredictionHead

__all__ = ["PRN", "build_model", "load_pretrained_backbone", "prn_losses", "semantic_cross_entropy",
           "weighted_mean", "COMMON_STRIDE", "IGNORE_INDEX"]

IGNORE_INDEX = 255
#: Stride of the decoder output and the heads; maps are upsampled by it and offsets/boxes multiplied by it.
COMMON_STRIDE = 4
#: Output name -> channels (the foreground and box heads exist only when switched on).
HEAD_CHANNELS = {"center": 1, "offset": 2, "foreground": 1, "box": 4}
#: ``PRNConfig.trainable``: everything, or one module alone (the rest frozen, in eval mode)
TRAINABLE = ("all", "full_resolution", "boundary", "classifier")


class FullResolutionRefiner(nn.Module):
    """Corrections of the semantic (and foreground) logits at input resolution, from the image.

    The heads work at stride 4 and are upsampled bilinearly, and the base prior added to them is sharp but is the
    base's own boundary, so on their own the outputs cannot move a boundary by the pixel or two that separates a
    coarse base mask from the object. Here 3x3 convolutions (ReLU; two by default, each with its ``dilations`` entry)
    read [RGB, softmax of the semantic logits, sigmoid of the foreground logit] at full resolution and a 1x1 convolution, zero at initialisation, adds a
    correction to the logits: a fresh refiner changes nothing, so it can be added to a trained PRN and fine-tuned.

    ``forward(image (B, 3, H, W), outputs)`` returns ``outputs`` with ``"semantic"`` (and ``"foreground"``) corrected.
    """

    def __init__(self, num_classes: int, channels: int, foreground: bool, dilations: Sequence[int] = (1, 1)):
        super().__init__()
        self.foreground = foreground
        maps = num_classes + int(foreground)
        layers: list[nn.Module] = []
        for i, dilation in enumerate(dilations):
            layers += [nn.Conv2d(3 + maps if i == 0 else channels, channels, 3, padding=dilation, dilation=dilation),
                       nn.ReLU(inplace=True)]
        self.body = nn.Sequential(*layers)
        self.correction = nn.Conv2d(channels, maps, 1)
        nn.init.zeros_(self.correction.weight)
        nn.init.zeros_(self.correction.bias)

    def forward(self, image: torch.Tensor, outputs: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        semantic = outputs["semantic"]
        parts = [image.to(semantic.dtype), torch.softmax(semantic, dim=1)]
        if self.foreground:
            parts.append(torch.sigmoid(outputs["foreground"]))
        correction = self.correction(self.body(torch.cat(parts, dim=1)))
        c = semantic.shape[1]
        corrected = dict(outputs, semantic=semantic + correction[:, :c])
        if self.foreground:
            corrected["foreground"] = outputs["foreground"] + correction[:, c:]
        return corrected


class PRN(nn.Module):
    """The refinement network. ``categories``: the COCO category list (class index = list position)."""

    def __init__(self, config: PRNConfig, categories: Sequence[dict]):
        super().__init__()
        self.config = config
        self.category_map = CategoryMap.from_categories(categories)
        num_classes = self.category_map.num_classes
        if num_classes < 1:
            raise ValueError("PRN needs at least one category")
        if config.base_map_channels < 0 or config.semantic_embedding_dim < 0:
            raise ValueError("base_map_channels and semantic_embedding_dim must be >= 0")
        if config.foreground_decoder not in ("instance", "semantic"):
            raise ValueError(f"foreground_decoder must be 'instance' or 'semantic', got {config.foreground_decoder!r}")
        self.num_classes = num_classes
        # Which base classes are things, for the post-processing; follows the model's device, not saved.
        self.register_buffer("thing_classes", torch.tensor(self.category_map.is_thing_class(), dtype=torch.bool),
                             persistent=False)

        # --- input encoding: stem channel layout
        emb = config.semantic_embedding_dim
        sem_ch = emb if emb > 0 else num_classes
        # Index num_classes stands for void: the padding row of the embedding stays 0, and one-hot drops it.
        self.semantic_embedding = nn.Embedding(num_classes + 1, emb, padding_idx=num_classes) if emb > 0 else None
        layout, start = {}, 0
        for name, n in (("rgb", 3), ("semantic", sem_ch), ("maps", config.base_map_channels),
                        ("coords", COORD_CHANNELS if config.coordconv_encoder else 0)):
            layout[name] = slice(start, start + n)
            start += n
        self.stem_slices: dict[str, slice] = layout
        self.in_channels = start

        # --- encoder, decoders, heads
        b, d = config.backbone, config.decoder
        self.backbone = ResNetBackbone(b.depth, width=b.width, norm=b.norm, in_channels=self.in_channels,
                                       output_stride=b.output_stride, return_c2=True)
        rates = tuple(d.aspp_rates)

        def decoder(channels: int) -> PanopticDeepLabDecoder:
            return PanopticDeepLabDecoder(self.backbone.out_channels, channels, d.aspp_channels, rates,
                                          d.projection_channels, d.norm, aspp_pooling=d.aspp_pooling,
                                          aspp_dropout=d.aspp_dropout, coords_aspp=config.coordconv_encoder,
                                          coords_fuse=config.coordconv_decoder)

        self.semantic_decoder = decoder(d.semantic_channels)
        self.instance_decoder = decoder(d.instance_channels)
        coords = config.coordconv_decoder
        heads = {"semantic": PredictionHead(d.semantic_channels, d.semantic_head_channels, num_classes, d.norm,
                                            coords=coords)}
        self._head_decoder = {"semantic": "semantic"}
        names = ["center", "offset"] + (["foreground"] if config.foreground_head else []) + \
            (["box"] if config.box_head else [])
        for name in names:
            source = config.foreground_decoder if name == "foreground" else "instance"
            in_ch = d.semantic_channels if source == "semantic" else d.instance_channels
            heads[name] = PredictionHead(in_ch, d.instance_head_channels, HEAD_CHANNELS[name], d.norm, coords=coords)
            self._head_decoder[name] = source
        self.heads = nn.ModuleDict(heads)
        # The heads start near zero, so with the prior a fresh PRN reproduces its base (argmax class, foreground,
        # centres, offsets, boxes); training moves these scales and the heads' corrections. The semantic scale is
        # one per base class: a base is usually far more reliable on some classes (e.g. stuff) than on others.
        # Scales are stored as log-gains (scale = init * exp(base_prior_gain * p)) so that Adam's ~lr-sized steps
        # change them by about base_prior_gain * lr per step, relative: fast enough to settle within a short run.
        if config.base_prior:
            init = {"semantic": 1.0, "center": 1.0, "offset": 1.0, "foreground": 1.0, "box": 1.0}
            init.update(config.base_prior_init or {})
            self.prior_init = {name: float(init[name]) for name in heads}
            self.prior_scale = nn.ParameterDict({
                name: nn.Parameter(torch.zeros(num_classes if name == "semantic" else ())) for name in heads})
        else:
            self.prior_scale = None
        if config.full_resolution_channels < 0:
            raise ValueError("full_resolution_channels must be >= 0")
        self.full_resolution = (FullResolutionRefiner(num_classes, config.full_resolution_channels,
                                                      config.foreground_head and config.full_resolution_foreground,
                                                      config.full_resolution_dilations)
                                if config.full_resolution_channels else None)
        self.boundary = (BoundaryRefiner(config.boundary_channels, config.boundary_dilations)
                         if config.boundary_channels else None)
        self.classifier = (ThingClassifier(len(self.category_map.thing_ids), config.classifier_channels,
                                           config.classifier_crop_size, config.classifier_background)
                           if config.classifier_channels else None)
        #: whether :meth:`predict` runs the boundary refiner; a predictor whose post-processing has no use for its
        #: output (``boundary_radius`` 0) switches it off, since at full resolution it costs more than the rest
        self.run_boundary = True
        if config.trainable not in TRAINABLE:
            raise ValueError(f"trainable must be one of {TRAINABLE}, got {config.trainable!r}")
        if config.trainable != "all":
            if getattr(self, config.trainable) is None:
                raise ValueError(f"trainable {config.trainable!r} needs {config.trainable}_channels > 0")
            for name, parameter in self.named_parameters():
                parameter.requires_grad_(name.startswith(config.trainable + "."))
            self.train(self.training)

    def train(self, mode: bool = True) -> "PRN":
        """As nn.Module.train; with ``config.trainable`` other than "all" everything but that module stays in eval
        mode (frozen batch-norm statistics, no dropout)."""
        super().train(mode)
        if self.config.trainable != "all":
            for name, module in self.named_children():
                if name != self.config.trainable:
                    module.train(False)
        return self

    # ------------------------------------------------------------------------------------------------------------

    def encode_inputs(self, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
        """The stem input (B, in_channels, H, W), laid out as :attr:`stem_slices`."""
        image, base_sem, base_maps = inputs["image"], inputs["base_semantic"], inputs["base_maps"]
        if image.dim() != 4 or image.shape[1] != 3:
            raise ValueError(f"image must be (B, 3, H, W), got {tuple(image.shape)}")
        bsz, _, h, w = image.shape
        if tuple(base_sem.shape) != (bsz, h, w):
            raise ValueError(f"base_semantic must be (B, H, W) = {(bsz, h, w)}, got {tuple(base_sem.shape)}")
        n_maps = self.config.base_map_channels
        if tuple(base_maps.shape) != (bsz, n_maps, h, w):
            raise ValueError(f"base_maps must be (B, {n_maps}, H, W) = {(bsz, n_maps, h, w)}, "
                             f"got {tuple(base_maps.shape)}")
        c = self.num_classes
        base_sem = base_sem.long()
        index = torch.where((base_sem >= 0) & (base_sem < c), base_sem, torch.full_like(base_sem, c))
        if self.semantic_embedding is not None:
            sem = self.semantic_embedding(index).permute(0, 3, 1, 2)
        else:
            sem = F.one_hot(index, c + 1)[..., :c].permute(0, 3, 1, 2)
        x = torch.cat([image, sem.to(image.dtype), base_maps.to(image.dtype)], dim=1)
        return add_coords(x) if self.config.coordconv_encoder else x

    def predict(self, inputs: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """The output maps at input resolution (the eval-mode result), in either mode."""
        x = self.encode_inputs(inputs)
        h, w = x.shape[-2:]
        features = self.backbone(x)
        decoded = {"semantic": self.semantic_decoder(features), "instance": self.instance_decoder(features)}
        outputs = {}
        prior = self._base_prior(inputs) if self.prior_scale is not None else {}
        for name, head in self.heads.items():
            y = head(decoded[self._head_decoder[name]])
            if name == "box" and not prior:
                y = F.softplus(y)  # distances are >= 0; softplus keeps a gradient where ReLU would be dead
            y = F.interpolate(y, size=(h, w), mode="bilinear", align_corners=False)
            if name in ("offset", "box"):
                y = y * COMMON_STRIDE  # predicted in stride-4 units, targets are in input pixels
            if prior:
                y = y + self.prior_gain(name).to(y.dtype) * prior[name].to(y.dtype)
                if name == "box":
                    y = F.softplus(y)  # ~identity above a few pixels; keeps distances >= 0
            outputs[name] = y
        if self.full_resolution is not None:
            outputs = self.full_resolution(inputs["image"], outputs)
        if self.boundary is not None and self.run_boundary:
            outputs["thing_foreground"] = self.boundary(inputs["image"], inputs["base_maps"])
        return outputs

    def classifier_loss(self, targets: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """``{"loss_classifier"}``: the thing classifier's cross-entropy over the crops ``targets["thing_crops"]``
        (B, K, 4, S, S) with labels ``targets["thing_crop_labels"]`` (B, K), the thing-class index, the number of
        thing classes for a "no thing" crop (``classifier_background``), or -1 for a padding crop
        (refine_data.RefineDataOptions.thing_crops)."""
        if self.classifier is None:
            raise ValueError("classifier_loss needs a thing classifier (classifier_channels)")
        crops, labels = targets["thing_crops"], targets["thing_crop_labels"].long()
        keep = labels.flatten() >= 0
        if not bool(keep.any()):
            return {"loss_classifier": sum(p.sum() for p in self.classifier.parameters()) * 0.0}
        logits = self.classifier(crops.flatten(0, 1)[keep].float())
        loss = F.cross_entropy(logits, labels.flatten()[keep],
                               label_smoothing=self.config.loss.classifier_label_smoothing)
        return {"loss_classifier": self.config.loss.classifier * loss}

    def prior_gain(self, name: str) -> torch.Tensor:
        """The scale of the base prior of head ``name``: a scalar, or (1, C, 1, 1) per class for "semantic"."""
        scale = self.prior_init[name] * torch.exp(self.config.base_prior_gain * self.prior_scale[name])
        return scale.view(1, -1, 1, 1) if name == "semantic" else scale

    def _base_prior(self, inputs: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """The base prediction in the units of each head's output (see ``PRNConfig.base_prior``)."""
        sem = inputs["base_semantic"].long()
        valid = (sem >= 0) & (sem < self.num_classes)
        onehot = F.one_hot(torch.where(valid, sem, 0), self.num_classes).permute(0, 3, 1, 2)
        maps = inputs["base_maps"]
        scale = self.config.base_offset_scale
        onehot = onehot.to(maps.dtype) * valid[:, None].to(maps.dtype)
        return {"semantic": onehot, "foreground": 2 * maps[:, 0:1] - 1, "center": maps[:, 1:2],
                "offset": maps[:, 2:4] * scale, "box": maps[:, 4:8] * scale}

    def loss(self, outputs: dict[str, torch.Tensor], targets: dict[str, torch.Tensor],
             inputs: dict[str, torch.Tensor] | None = None) -> dict[str, torch.Tensor]:
        """Weighted losses of :meth:`predict`'s ``outputs`` (see :func:`prn_losses`); the boundary refiner's loss
        needs the ``inputs`` (its band follows the base's thing boundaries)."""
        if "thing_foreground" in outputs:
            if inputs is None:
                raise ValueError("the boundary refiner's loss needs the inputs (the base's thing mask)")
            band = boundary_band(inputs["base_maps"][:, 0] > 0.5, self.config.boundary_band)
            targets = dict(targets, boundary_weight=targets["foreground_weight"] * torch.where(
                band, 1.0, self.config.loss.boundary_outside).to(targets["foreground_weight"].dtype))
        return prn_losses(outputs, targets, self.config.loss)

    def forward(self, inputs: dict[str, torch.Tensor], targets: dict[str, torch.Tensor] | None = None):
        if self.training and targets is not None and self.config.trainable == "classifier":
            # the classifier reads crops that the data set cut out; nothing else can change
            return self.classifier_loss(targets)
        if self.training and targets is not None and self.config.trainable == "boundary":
            # only the boundary refiner learns and it reads the image and the base's maps, not the frozen trunk's
            # outputs: computing those would cost a forward pass for losses that cannot change anything
            outputs = {"thing_foreground": self.boundary(inputs["image"], inputs["base_maps"])}
            return self.loss(outputs, targets, inputs)
        outputs = self.predict(inputs)
        if self.training:
            if targets is None:
                raise ValueError("PRN in training mode needs targets")
            losses = self.loss(outputs, targets, inputs)
            if self.classifier is not None and "thing_crops" in targets:
                losses.update(self.classifier_loss(targets))
            return losses
        return outputs


# ----------------------------------------------------------------------------------------------------------------
# losses


def weighted_mean(per_pixel: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """``sum(weight * per_pixel) / max(sum(weight), 1)``; ``per_pixel`` and ``weight`` (B, H, W).

    The clamp at 1 makes an all-zero weight map give loss 0 (with graph) instead of 0/0.
    """
    weight = weight.to(per_pixel.dtype)
    return (per_pixel * weight).sum() / weight.sum().clamp(min=1.0)


def semantic_cross_entropy(logits: torch.Tensor, target: torch.Tensor, weight: torch.Tensor,
                           top_k: float = 1.0, ignore_index: int = IGNORE_INDEX) -> torch.Tensor:
    """Per-pixel cross-entropy times ``weight``, normalised by the sum of weights (clamped >= 1).

    ``logits`` (B, C, H, W); ``target`` (B, H, W) long, ``ignore_index`` pixels count with weight 0; ``weight``
    (B, H, W) float (renderer's ``semantic_weight``: 0 on void and padding, 3 on small instances, else 1).

    ``top_k < 1`` is hard pixel mining (Panoptic-DeepLab): over the whole batch, of the pixels with weight > 0
    keep the ``ceil(top_k * n)`` with the largest weighted loss ``weight * ce``; the loss is then
    ``sum(weight * ce) / max(sum(weight), 1)`` over those pixels only.
    """
    ce = F.cross_entropy(logits.float(), target.long(), ignore_index=ignore_index, reduction="none")
    w = weight.float() * (target != ignore_index)
    if top_k >= 1.0:
        return weighted_mean(ce, w)
    if top_k <= 0:
        raise ValueError(f"semantic_top_k must be in (0, 1], got {top_k}")
    losses, w = (ce * w).flatten(), w.flatten()
    valid = w > 0
    n = int(valid.sum())
    if n == 0:
        return losses.sum() * 0.0
    k = max(1, math.ceil(top_k * n))
    keep = losses.masked_fill(~valid, -1.0).topk(k).indices  # losses are >= 0: invalid pixels rank last
    return losses[keep].sum() / w[keep].sum().clamp(min=1.0)


def prn_losses(outputs: dict[str, torch.Tensor], targets: dict[str, torch.Tensor],
               cfg: PRNLossConfig) -> dict[str, torch.Tensor]:
    """PRN's losses at input resolution, each multiplied by its weight in ``cfg``, for the maps in ``outputs``.

    ``outputs``: :meth:`PRN.predict`'s maps (in training with ``trainable="boundary"``, ``thing_foreground``
    alone). ``targets``: batched renderer outputs, see the module docstring; each loss is normalised by the sum
    of its pixel weights, clamped >= 1 (:func:`weighted_mean`):

    - ``loss_semantic`` = semantic x cross-entropy weighted by ``semantic_weight`` (top-k mining option);
    - ``loss_center`` = center x squared error of the heatmap, weighted by ``center_weight``;
    - ``loss_offset`` = offset x L1 summed over (dy, dx), weighted by ``offset_weight`` (thing pixels);
    - ``loss_foreground`` = foreground x BCE-with-logits, weighted by ``foreground_weight`` (if predicted);
    - ``loss_box`` = box x L1 summed over (l, t, r, b), weighted by ``offset_weight`` (if predicted);
    - ``loss_boundary`` = boundary x BCE-with-logits of ``thing_foreground`` against the foreground target,
      weighted by ``boundary_weight`` (:meth:`PRN.loss` adds it: 1 near the base's thing boundaries, else
      ``boundary_outside``, 0 on void).

    Channel sums are divided by the single-channel weight sum, as Panoptic-DeepLab's offset loss.
    """
    def f(name: str) -> torch.Tensor:
        return outputs[name].float()

    losses = {}
    if "semantic" in outputs:
        losses["loss_semantic"] = cfg.semantic * semantic_cross_entropy(
            outputs["semantic"], targets["semantic"], targets["semantic_weight"], cfg.semantic_top_k)
    if "center" in outputs:
        losses["loss_center"] = cfg.center * weighted_mean((f("center") - targets["center"]).square().sum(1),
                                                           targets["center_weight"])
    if "offset" in outputs:
        losses["loss_offset"] = cfg.offset * weighted_mean((f("offset") - targets["offset"]).abs().sum(1),
                                                           targets["offset_weight"])
    if "foreground" in outputs:
        bce = F.binary_cross_entropy_with_logits(f("foreground")[:, 0], targets["foreground"].float(),
                                                 reduction="none")
        losses["loss_foreground"] = cfg.foreground * weighted_mean(bce, targets["foreground_weight"])
    if "thing_foreground" in outputs:
        bce = F.binary_cross_entropy_with_logits(f("thing_foreground")[:, 0], targets["foreground"].float(),
                                                 reduction="none")
        losses["loss_boundary"] = cfg.boundary * weighted_mean(bce, targets["boundary_weight"])
    if "box" in outputs:
        losses["loss_box"] = cfg.box * weighted_mean((f("box") - targets["box"]).abs().sum(1),
                                                     targets["offset_weight"])
    return losses


# ----------------------------------------------------------------------------------------------------------------


def build_model(config: PRNConfig | dict, categories: Sequence[dict]) -> PRN:
    if isinstance(config, dict):
        config = PRNConfig.from_dict(config)
    return PRN(config, categories)


def load_pretrained_backbone(model: PRN, path: str | os.PathLike) -> int:
    """Load a local torchvision ResNet ``state_dict`` (the config's depth, width 64) into ``model.backbone``.

    The file's 3-channel ``conv1`` fills the RGB slice of the stem; the extra input channels (base semantic,
    base maps, coordinates) are set to zero, so the stem's response is the pretrained RGB one whatever the base
    prediction holds. Returns the number of tensors loaded; raises like :func:`load_backbone_weights`.
    """
    return load_backbone_weights(model.backbone, path)
