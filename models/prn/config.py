"""Plain keyword configuration of PRN, the Panoptic Refinement Network (docs/design.md, "PRN").

Every width, switch and loss weight is a field. The Table 1 switches (docs/design.md, "Table 1 and prn ablate") are
:attr:`PRNConfig.foreground_head`, :attr:`PRNConfig.coordconv_encoder`, :attr:`PRNConfig.coordconv_decoder`
(network) and :attr:`PRNConfig.box_head` (needed by the post-processing's PredBbox rule); "ForegroundSem" vs
"Foreground" and PredBbox themselves are post-processing choices.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields

#: PRNConfig.classifier_background_examples
CLASSIFIER_BACKGROUND_EXAMPLES = ("off_things", "unmatched")


@dataclass
class PRNBackboneConfig:
    depth: int = 50                 # ResNet 18 / 34 / 50 / 101
    width: int = 64                 # stem width; stage widths scale with it (64 = torchvision's, ImageNet-loadable)
    norm: str = "bn"                # "bn" | "frozen_bn" | "gn"
    output_stride: int = 16         # 16 = res5 dilated (Panoptic-DeepLab), 32 = plain ResNet


@dataclass
class PRNDecoderConfig:
    aspp_channels: int = 256
    aspp_rates: tuple = (6, 12, 18)         # atrous rates of the 3x3 branches ((3, 6, 9) suits output stride 32)
    aspp_pooling: bool = True               # image-pooling branch
    aspp_dropout: float = 0.1               # on the ASPP output, training only
    semantic_channels: int = 256            # semantic decoder width
    instance_channels: int = 128            # instance decoder width
    projection_channels: tuple = (64, 32)   # 1x1 projections of res3 (stride 8) and res2 (stride 4)
    semantic_head_channels: int = 256
    instance_head_channels: int = 32        # center / offset / foreground / box heads
    norm: str = "bn"                        # "bn" | "gn" (decoders, ASPP, heads)


@dataclass
class PRNLossConfig:
    """Loss weights. Each weighted loss is ``sum(pixel_weight * loss) / max(sum(pixel_weight), 1)``."""

    semantic: float = 1.0           # cross-entropy x semantic_weight
    semantic_top_k: float = 1.0     # hard pixel mining: keep this fraction of the labelled pixels (1.0 = off)
    center: float = 200.0           # MSE x center_weight
    offset: float = 0.01            # L1 over (dy, dx) x offset_weight
    foreground: float = 1.0         # BCE x foreground_weight
    box: float = 0.01               # L1 over (l, t, r, b) x offset_weight
    boundary: float = 1.0           # BCE of the boundary refiner's thing foreground, weighted as below
    boundary_outside: float = 0.05  # its pixel weight away from the band around the base's thing boundaries (1 in it)
    classifier: float = 1.0         # cross-entropy of the thing classifier over its crops (label smoothing below)
    classifier_label_smoothing: float = 0.05


@dataclass
class PRNConfig:
    backbone: PRNBackboneConfig = field(default_factory=PRNBackboneConfig)
    decoder: PRNDecoderConfig = field(default_factory=PRNDecoderConfig)
    loss: PRNLossConfig = field(default_factory=PRNLossConfig)
    semantic_embedding_dim: int = 32    # base semantic class -> learned embedding; 0 = one-hot over the C classes
    base_map_channels: int = 9          # renderer's input_maps: fg, center, offset (2), box (4), boundary
    foreground_head: bool = True        # Table 1 "Foreground": a 1-channel foreground logit map
    foreground_decoder: str = "instance"  # which decoder feeds the foreground head: "instance" | "semantic"
    box_head: bool = True               # per-pixel box distances (l, t, r, b), used by PredBbox
    coordconv_encoder: bool = True      # Table 1 "CoordConvEnc": coords at the stem input and before ASPP
    coordconv_decoder: bool = True      # Table 1 "CoordConvDec": coords before each fuse conv and each head
    size_divisibility: int = 32         # inputs are padded to a multiple of this
    #: residual refinement: the base's own maps, times learnt per-map scales, are added to the heads' outputs
    #: (semantic logits += s * one-hot(base class), centre/offset/box += s * base map, foreground logit +=
    #: s * (2 * base fg - 1)), so a fresh PRN already reproduces its base and learns corrections from there
    base_prior: bool = True
    #: initial prior scales; any positive value keeps the base's argmax class and foreground at init, and a
    #: small one lets the heads overrule the base as soon as they are confident
    base_prior_init: dict = field(default_factory=lambda: {"semantic": 1.0, "foreground": 1.0, "center": 1.0,
                                                           "offset": 1.0, "box": 1.0})
    #: how fast the prior scales learn: scale = init * exp(gain * p), so Adam moves a scale by ~gain * lr per
    #: step (relative). High: the PRN soon trusts the base where it is reliable (a strong base keeps its good
    #: classes); 1: the scales move at the network's pace and the heads overrule more of the base early on.
    base_prior_gain: float = 5.0
    #: the renderer's offset_scale: base offsets/boxes arrive divided by it (RenderConfig.offset_scale)
    base_offset_scale: float = 64.0
    #: width of the full-resolution refiner (0 = none, the paper's network): two 3x3 convolutions at input
    #: resolution over [RGB, semantic and foreground probabilities] whose zero-initialised output corrects the
    #: semantic and foreground logits, so boundaries can move by the pixel or two that stride-4 heads and a sharp
    #: base prior cannot (a prn extension, docs/design.md "PRN")
    full_resolution_channels: int = 0
    #: whether the full-resolution refiner also corrects the foreground logit (else the semantic logits only)
    full_resolution_foreground: bool = True
    #: the dilation of each 3x3 convolution of the full-resolution refiner, one entry per layer: (1, 1) sees 5x5
    #: pixels; (1, 2, 4, 8) sees 31x31, enough to read a small object's shape and colour as a whole
    full_resolution_dilations: tuple = (1, 1)
    #: which parameters training updates: "all", or "full_resolution" (the refiner alone; every other module is
    #: frozen and kept in eval mode, its batch-norm statistics included, like torchvision's
    #: trainable_backbone_layers): to add a refiner to a trained PRN without moving anything else
    trainable: str = "all"
    #: width of the boundary refiner (0 = none): a full-resolution network over [RGB, the base's thing mask and
    #: segment boundaries] whose thing-foreground logit re-cuts each thing's boundary within a few pixels
    #: (models/prn/boundary.py; a prn extension, docs/design.md "PRN")
    boundary_channels: int = 0
    #: the dilation of each of its 3x3 convolutions, one entry per layer
    boundary_dilations: tuple = (1, 1, 2, 4, 8, 1)
    #: the band around the base's thing boundaries, in pixels each side, where its loss has full weight
    boundary_band: int = 3
    #: widths of the thing classifier's three stages (empty = none): a small network that reads each thing's crop
    #: (image and mask) and says its thing class, so that a base thing of the wrong class can be relabelled
    #: (models/prn/classifier.py; a prn extension, docs/design.md "PRN")
    classifier_channels: tuple = ()
    #: the side of its crops in pixels
    classifier_crop_size: int = 32
    #: the classifier also has a "no thing" class, learnt from the base's things that lie on stuff and from
    #: thing-shaped regions drawn on stuff, so that the predictor can drop a base thing that is not one
    #: (PostProcessConfig.classifier_remove_confidence) and the search for things left void can refuse a region
    classifier_background: bool = False
    #: with classifier_background, which base things its "no thing" crops show: "off_things", those with less than
    #: a fifth of their labelled pixels on the GT's things (false detections on stuff), or "unmatched", every base
    #: thing that matches no GT thing (IoU <= 0.5, as PQ counts a false positive: a split's smaller half, a fragment
    #: or a merge that matches neither object too) except those lying mostly on crowd regions
    classifier_background_examples: str = "off_things"

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict | None) -> "PRNConfig":
        """Inverse of :meth:`to_dict`; also accepts its JSON form (lists where tuples were). Missing keys take
        their defaults; an unknown key raises ``TypeError`` naming it."""
        d = dict(d or {})
        decoder = dict(d.pop("decoder", {}) or {})
        for f in fields(PRNDecoderConfig):
            if isinstance(f.default, tuple) and f.name in decoder:
                decoder[f.name] = tuple(decoder[f.name])
        return cls(backbone=PRNBackboneConfig(**(d.pop("backbone", {}) or {})), decoder=PRNDecoderConfig(**decoder),
                   loss=PRNLossConfig(**(d.pop("loss", {}) or {})), **d)

    def __post_init__(self) -> None:
        self.boundary_dilations = tuple(int(v) for v in self.boundary_dilations)
        if self.boundary_channels < 0 or self.boundary_band < 1 or not self.boundary_dilations \
                or min(self.boundary_dilations) < 1:
            raise ValueError(f"boundary_channels must be >= 0, boundary_band >= 1 and boundary_dilations integers "
                             f">= 1, got {self.boundary_channels}, {self.boundary_band}, {self.boundary_dilations!r}")
        self.full_resolution_dilations = tuple(int(v) for v in self.full_resolution_dilations)
        self.classifier_channels = tuple(int(v) for v in self.classifier_channels)
        if self.classifier_background_examples not in CLASSIFIER_BACKGROUND_EXAMPLES:
            raise ValueError(f"classifier_background_examples must be one of {CLASSIFIER_BACKGROUND_EXAMPLES}, "
                             f"got {self.classifier_background_examples!r}")
        if (self.classifier_channels and min(self.classifier_channels) < 1) or self.classifier_crop_size < 8:
            raise ValueError(f"classifier_channels must be integers >= 1 and classifier_crop_size >= 8, "
                             f"got {self.classifier_channels!r}, {self.classifier_crop_size}")
        if not self.full_resolution_dilations or min(self.full_resolution_dilations) < 1:
            raise ValueError(f"full_resolution_dilations must be one or more integers >= 1, "
                             f"got {self.full_resolution_dilations!r}")

    @classmethod
    def tiny(cls) -> "PRNConfig":
        """A width-reduced configuration that trains in minutes on a CPU at 256x256 (ResNet-18 at 1/4 width)."""
        return cls(backbone=PRNBackboneConfig(depth=18, width=16),
                   decoder=PRNDecoderConfig(aspp_channels=64, semantic_channels=64, instance_channels=32,
                                            projection_channels=(32, 16), semantic_head_channels=32,
                                            instance_head_channels=32),
                   semantic_embedding_dim=16)
