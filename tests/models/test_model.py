"""MS-PanopticFPN assembled: the forward contract, gradients into every branch, panoptic output, learning; the
shared network contract (base.py) as :class:`TestMSPanopticFPNContract`."""

from __future__ import annotations

import torch

from base import NetworkContract

from prn_cli.models.categories import CategoryMap
from prn_cli.models.ms_panoptic_fpn.config import MSPanopticFPNConfig
from prn_cli.models.ms_panoptic_fpn.model import build_model
from prn_cli.panoptic import segment_stats
from prn_cli.synth import synth_categories


def _targets(batch: int, size: int = 128):
    targets = []
    for i in range(batch):
        masks = torch.zeros(2, size, size, dtype=torch.bool)
        masks[0, 10:50, 20:70] = True
        masks[1, 60 + i:110, 60:100] = True
        semantic = torch.full((size, size), 7, dtype=torch.long)     # class index 7 = first stuff class
        semantic[masks[0]] = 0
        semantic[masks[1]] = 3
        targets.append({"boxes": torch.tensor([[20.0, 10, 70, 50], [60, 60 + i, 100, 110]]),
                        "labels": torch.tensor([0, 3]), "masks": masks, "semantic": semantic})
    return targets


def test_training_forward_returns_weighted_losses_and_gradients_reach_every_branch():
    torch.manual_seed(0)
    model = build_model(MSPanopticFPNConfig.tiny(), synth_categories()).train()
    losses = model(torch.randn(2, 3, 128, 128), _targets(2), image_sizes=[(128, 128)] * 2)
    assert set(losses) == {"loss_objectness", "loss_classification", "loss_box", "loss_centerness",
                           "loss_semantic_dice", "loss_semantic_focal", "loss_mask"}
    assert all(torch.isfinite(v) and v.ndim == 0 for v in losses.values())
    sum(losses.values()).backward()
    for part in (model.backbone, model.fpn, model.head, model.semantic, model.mask_head):
        grads = [p.grad for p in part.parameters() if p.requires_grad]
        assert grads and all(g is not None for g in grads), type(part).__name__
        assert sum(float(g.abs().sum()) for g in grads) > 0, type(part).__name__


def test_inference_contract_and_panoptic_output_is_consistent():
    torch.manual_seed(0)
    categories = synth_categories()
    model = build_model(MSPanopticFPNConfig.tiny(), categories).eval()
    model.config.inference.instance_score_threshold = 0.0    # an untrained model: keep whatever it finds
    outputs = model(torch.randn(2, 3, 128, 256), image_sizes=[(128, 256), (100, 200)])
    assert len(outputs) == 2
    out = outputs[1]
    k = len(out["boxes"])
    assert out["boxes"].shape == (k, 4) and out["scores"].shape == (k,) and out["labels"].shape == (k,)
    assert out["mask_probs"].shape == (k, 28, 28)
    assert out["semantic_logits"].shape == (len(categories), 100, 200)
    if k:
        assert bool((out["boxes"][:, 2] <= 200).all() and (out["boxes"][:, 3] <= 100).all())
        assert bool((out["scores"][:-1] >= out["scores"][1:]).all())
    ids, segments = model.panoptic(out, out_size=(50, 100))
    assert ids.shape == (50, 100)
    cmap = CategoryMap.from_categories(categories)
    assert set(segment_stats(ids)) == {s["id"] for s in segments}
    assert all(s["category_id"] in cmap.class_ids for s in segments)


def test_config_round_trips_through_a_dict():
    config = MSPanopticFPNConfig.tiny()
    config.loss.mask = 3.0
    again = MSPanopticFPNConfig.from_dict(config.to_dict())
    assert again == config


# ------------------------------------------------------------------------------------------------------------
# the shared contract (tests/models/base.py)

#: two images of one padded batch; the second is smaller than the padding (image_sizes)
SIZES = [(128, 128), (112, 120)]


class TestMSPanopticFPNContract(NetworkContract):
    kind = "base"
    loss_names = frozenset({"loss_objectness", "loss_classification", "loss_box", "loss_centerness",
                            "loss_semantic_dice", "loss_semantic_focal", "loss_mask"})
    zero_grad_at_init = {}      # every parameter learns from the first step

    def categories(self):
        return synth_categories()

    def make_config(self):
        config = MSPanopticFPNConfig.tiny()
        # an untrained model scores every box far below 0.05: keep its best ones so every output has rows
        config.inference.score_threshold = 0.0
        config.inference.pre_nms_top_n = 50
        config.inference.max_detections = 8
        return config

    def config_from_dict(self, d):
        return MSPanopticFPNConfig.from_dict(d)

    def build(self, config, categories):
        return build_model(config, categories)

    def make_inputs(self):
        g = torch.Generator().manual_seed(1)
        return {"images": torch.randn(2, 3, 128, 128, generator=g), "image_sizes": list(SIZES)}

    def make_targets(self):
        targets = _targets(2)
        for t, (h, w) in zip(targets, SIZES):     # each target at its image's unpadded size
            t["masks"], t["semantic"] = t["masks"][:, :h, :w], t["semantic"][:h, :w]
        return targets

    def forward(self, model, inputs, targets=None):
        return model(inputs["images"], targets, image_sizes=inputs["image_sizes"])

    def check_eval_outputs(self, outputs, inputs, model):
        inference = model.config.inference
        assert isinstance(outputs, list) and len(outputs) == len(inputs["image_sizes"])
        for out, (h, w) in zip(outputs, inputs["image_sizes"]):
            assert set(out) == {"boxes", "scores", "labels", "mask_probs", "semantic_logits"}
            k = len(out["boxes"])
            assert 0 < k <= inference.max_detections
            assert out["boxes"].shape == (k, 4) and out["scores"].shape == (k,) and out["labels"].shape == (k,)
            assert out["mask_probs"].shape == (k, 28, 28)
            assert out["semantic_logits"].shape == (model.category_map.num_classes, h, w)
            assert out["labels"].dtype == torch.long
            assert bool(((out["labels"] >= 0) & (out["labels"] < model.category_map.num_things)).all())
            assert bool(((out["mask_probs"] >= 0) & (out["mask_probs"] <= 1)).all())
            assert bool((out["scores"][:-1] >= out["scores"][1:]).all())          # best first
            boxes = out["boxes"]
            assert bool((boxes[:, 0] <= boxes[:, 2]).all() and (boxes[:, 1] <= boxes[:, 3]).all())
            assert bool((boxes >= 0).all() and (boxes[:, 2] <= w).all() and (boxes[:, 3] <= h).all())
