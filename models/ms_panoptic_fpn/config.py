"""Plain keyword configuration of MS-PanopticFPN (docs/design.md, "MS-PanopticFPN").

Every weight and threshold is a field.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field


@dataclass
class BackboneConfig:
    depth: int = 50                 # ResNet 18 / 34 / 50 / 101
    width: int = 64                 # stem width; ResNet stage widths scale with it (64 = torchvision's)
    fpn_channels: int = 256
    frozen_stages: int = 0          # 0 = train everything; k = freeze the stem and the first k-1 stages
    norm: str = "bn"                # "bn" | "frozen_bn" | "gn"


@dataclass
class HeadConfig:
    num_convs: int = 4              # per tower
    cls_channels: int = 256         # classification tower width (the semantic branch reads this tower)
    box_channels: int = 256
    norm: str = "bn_shared"         # "bn_shared" (statistics pooled over FPN levels) | "gn"
    classification: str = "hierarchical"   # "hierarchical" (objectness x super x category) | "flat" (sigmoid)
    prior_prob: float = 0.01
    anchor_scale: float = 8.0       # anchor side = anchor_scale x stride
    atss_topk: int = 9


@dataclass
class LossConfig:
    focal_alpha: float = 0.25
    focal_gamma: float = 2.0
    objectness: float = 1.0         # focal, objectness (or flat class) over all anchors / num positives
    classification: float = 1.0     # hierarchical cross-entropy on positives
    box: float = 2.0                # GIoU, weighted by the centerness target
    centerness: float = 1.0         # BCE on positives
    semantic_dice: float = 1.0
    semantic_focal: float = 1.0
    mask: float = 4.0               # sigmoid focal on 28x28 targets (focal means run ~4x below BCE)
    mask_focal_alpha: float = 0.5   # balanced: inside a box the foreground is the majority, unlike anchors


@dataclass
class InferenceConfig:
    score_threshold: float = 0.05
    pre_nms_top_n: int = 1000       # per level
    nms_iou: float = 0.6
    max_detections: int = 100
    mask_threshold: float = 0.5
    instance_score_threshold: float = 0.5   # fusion: stop below this score
    overlap_threshold: float = 0.5          # fusion: drop an instance whose mask is more than this claimed
    stuff_area: int = 4096                  # at COCO size (640x480 ~ 307k px); scaled with image area
    stuff_area_reference_pixels: int = 640 * 480


@dataclass
class MSPanopticFPNConfig:
    backbone: BackboneConfig = field(default_factory=BackboneConfig)
    head: HeadConfig = field(default_factory=HeadConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    inference: InferenceConfig = field(default_factory=InferenceConfig)
    mask_train_proposals: int = 64  # boxes per image for SAG-Mask training (ATSS positives, GT boxes mixed in)
    size_divisibility: int = 128    # P7 stride: inputs are padded to a multiple of this

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "MSPanopticFPNConfig":
        d = dict(d or {})
        return cls(backbone=BackboneConfig(**d.pop("backbone", {})), head=HeadConfig(**d.pop("head", {})),
                   loss=LossConfig(**d.pop("loss", {})), inference=InferenceConfig(**d.pop("inference", {})), **d)

    @classmethod
    def tiny(cls) -> "MSPanopticFPNConfig":
        """A width-reduced configuration that trains in minutes on a CPU (ResNet-18 at 1/4 width)."""
        return cls(backbone=BackboneConfig(depth=18, width=16, fpn_channels=64),
                   head=HeadConfig(num_convs=2, cls_channels=64, box_channels=64),
                   mask_train_proposals=32)
