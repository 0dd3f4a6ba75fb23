"""The contract every network of models/ keeps, as one test class that each network's tests subclass.

A subclass (``class TestPRNContract(NetworkContract)`` in test_prn_model.py, ``TestMSPanopticFPNContract`` in
test_model.py) fills in the hooks below for a tiny configuration that runs in well under a second on one CPU
thread; the tests themselves are written once, here:

- the model builds from its config (the dataclass or its dict) and keeps it;
- eval mode returns the documented outputs with the documented shapes (:meth:`check_eval_outputs`);
- train mode returns a dict of scalar losses named ``loss*``, all finite, and one backward pass gives every
  trainable parameter a finite gradient, non-zero except for the parameters the subclass lists, with the reason,
  in :attr:`zero_grad_at_init`;
- the config survives ``to_dict`` / ``from_dict`` (also through JSON, as checkpoints and model_config.json hold it);
- a checkpoint written by ``prn_cli.checkpoint.save_checkpoint`` and read by ``load_checkpoint`` (``torch.load``
  with ``weights_only=True``) rebuilds, as ``prn segment`` / ``prn refine`` do, a model whose outputs are
  identical (``torch.equal``) to the saved model's on the same input;
- a fixed seed gives identical weights, outputs and losses.

Imported as ``from base import NetworkContract`` (pytest puts a test file's folder on ``sys.path``). The class
name does not start with ``Test``, so pytest collects its tests only through the subclasses.
"""

from __future__ import annotations

import json
from typing import Any, ClassVar

import torch


def named_tensors(obj: Any, prefix: str = "") -> dict[str, torch.Tensor]:
    """Every tensor in nested dicts / lists / tuples, by path (``"0.boxes"``, ``"semantic"``)."""
    if isinstance(obj, torch.Tensor):
        return {prefix or "output": obj}
    items = obj.items() if isinstance(obj, dict) else enumerate(obj) if isinstance(obj, (list, tuple)) else ()
    out: dict[str, torch.Tensor] = {}
    for key, value in items:
        out.update(named_tensors(value, f"{prefix}.{key}" if prefix else str(key)))
    return out


def differences(a: Any, b: Any) -> list[str]:
    """The tensor paths where ``a`` and ``b`` differ (structure, shape, dtype or any value)."""
    ta, tb = named_tensors(a), named_tensors(b)
    if list(ta) != list(tb):
        return sorted(set(ta) ^ set(tb)) or ["(order)"]
    return [k for k in ta if ta[k].dtype != tb[k].dtype or not torch.equal(ta[k], tb[k])]


def assert_identical(a: Any, b: Any) -> None:
    """Same structure, and every tensor ``torch.equal`` (same shape, dtype and values)."""
    diff = differences(a, b)
    assert not diff, f"differ: {diff}"


class NetworkContract:
    """Shared contract tests; subclass it as ``Test<Network>Contract`` and fill in the hooks."""

    #: ``prn_cli.checkpoint`` kind of the network's checkpoints: "base" or "prn"
    kind: ClassVar[str]
    #: exact names of the losses a training step returns with :meth:`make_config`
    loss_names: ClassVar[frozenset[str]]
    #: parameter name -> why its gradient may be all zeros in the first step from initialisation (it must still
    #: be a finite tensor, not None). Everything trainable that is not listed must get a non-zero gradient.
    zero_grad_at_init: ClassVar[dict[str, str]] = {}

    # ---- hooks ---------------------------------------------------------------------------------------------

    def categories(self) -> list[dict]:
        """The COCO categories the tiny model is built for."""
        raise NotImplementedError

    def make_config(self):
        """A tiny config (fresh object on every call)."""
        raise NotImplementedError

    def config_from_dict(self, d: dict):
        raise NotImplementedError

    def build(self, config, categories: list[dict]) -> torch.nn.Module:
        """The network's ``build_model`` (takes the config dataclass or its dict)."""
        raise NotImplementedError

    def make_inputs(self) -> dict:
        """Keyword inputs of :meth:`forward` (a batch of 2, small)."""
        raise NotImplementedError

    def make_targets(self):
        """Training targets matching :meth:`make_inputs`."""
        raise NotImplementedError

    def forward(self, model: torch.nn.Module, inputs: dict, targets=None):
        """One call of the model as its callers make it."""
        raise NotImplementedError

    def check_eval_outputs(self, outputs, inputs: dict, model: torch.nn.Module) -> None:
        """Assert the documented eval-mode outputs and their shapes."""
        raise NotImplementedError

    def checkpoint_config(self, config) -> dict:
        """The ``config`` entry ``prn train`` stores in this network's checkpoints."""
        return config.to_dict()

    def config_from_checkpoint(self, stored: dict):
        """The config that ``prn segment`` / ``prn refine`` rebuild from a checkpoint's ``config`` entry."""
        return self.config_from_dict(stored)

    # ---- helpers -------------------------------------------------------------------------------------------

    def new_model(self, seed: int = 0, config=None) -> torch.nn.Module:
        torch.manual_seed(seed)
        return self.build(config if config is not None else self.make_config(), self.categories())

    def eval_outputs(self, model: torch.nn.Module, inputs: dict | None = None):
        model.eval()
        with torch.no_grad():
            return self.forward(model, inputs if inputs is not None else self.make_inputs())

    def train_losses(self, model: torch.nn.Module, seed: int = 0) -> dict:
        model.train()
        torch.manual_seed(seed)            # dropout and any sampling inside the training forward
        return self.forward(model, self.make_inputs(), self.make_targets())

    # ---- the contract --------------------------------------------------------------------------------------

    def test_builds_from_its_config_or_its_dict(self):
        config = self.make_config()
        model = self.new_model(0, config)
        assert isinstance(model, torch.nn.Module)
        assert model.config == config
        from_dict = self.new_model(0, config.to_dict())
        assert from_dict.config == config
        assert_identical(model.state_dict(), from_dict.state_dict())
        assert sum(p.numel() for p in model.parameters() if p.requires_grad) > 0

    def test_eval_forward_returns_the_documented_outputs(self):
        model = self.new_model()
        inputs = self.make_inputs()
        outputs = self.eval_outputs(model, inputs)
        self.check_eval_outputs(outputs, inputs, model)
        tensors = named_tensors(outputs)
        assert tensors
        for name, t in tensors.items():
            assert not t.requires_grad, name
            if t.is_floating_point():
                assert bool(torch.isfinite(t).all()), name

    def test_train_step_gives_finite_scalar_losses_and_gradients_to_every_parameter(self):
        model = self.new_model()
        losses = self.train_losses(model)
        assert isinstance(losses, dict) and set(losses) == set(self.loss_names), sorted(losses)
        for name, value in losses.items():
            assert name.startswith("loss"), name
            assert isinstance(value, torch.Tensor) and value.ndim == 0 and value.is_floating_point(), name
            assert bool(torch.isfinite(value)), (name, value)
            assert value.requires_grad, name
        sum(losses.values()).backward()
        params = dict(model.named_parameters())
        stale = set(self.zero_grad_at_init) - set(params)
        assert not stale, f"zero_grad_at_init names no parameter: {sorted(stale)}"
        missing, zero = [], []
        for name, p in params.items():
            if not p.requires_grad:
                continue
            if p.grad is None:
                missing.append(name)
                continue
            assert bool(torch.isfinite(p.grad).all()), name
            if name not in self.zero_grad_at_init and not bool(p.grad.abs().sum() > 0):
                zero.append(name)
        assert not missing, f"no gradient: {missing}"
        assert not zero, f"all-zero gradient: {zero}"

    def test_config_round_trips_through_a_dict_and_json(self):
        config = self.make_config()
        assert self.config_from_dict(config.to_dict()) == config
        assert self.config_from_dict(json.loads(json.dumps(config.to_dict()))) == config

    def test_checkpoint_round_trip_gives_identical_outputs(self, tmp_path):
        from prn_cli.checkpoint import load_checkpoint, save_checkpoint

        config = self.make_config()
        model = self.new_model(0, config)
        self.train_losses(model)           # BatchNorm running statistics move away from their initial values
        inputs = self.make_inputs()
        expected = self.eval_outputs(model, inputs)
        path = save_checkpoint(tmp_path / "model_final.pt", kind=self.kind, config=self.checkpoint_config(config),
                               categories=self.categories(), model_state=model)

        ckpt = load_checkpoint(path, kind=self.kind)
        assert ckpt["categories"] == self.categories()
        stored = self.config_from_checkpoint(ckpt["config"])
        assert stored == config
        other = self.new_model(1, stored)  # other initial weights: only the checkpoint can make them agree
        assert differences(self.eval_outputs(other, inputs), expected)
        other.load_state_dict(ckpt["state_dict"], strict=True)
        assert_identical(self.eval_outputs(other, inputs), expected)

    def test_a_fixed_seed_gives_identical_weights_outputs_and_losses(self):
        a, b = self.new_model(3), self.new_model(3)
        assert_identical(a.state_dict(), b.state_dict())
        inputs = self.make_inputs()
        assert_identical(self.eval_outputs(a, inputs), self.eval_outputs(b, inputs))
        assert_identical(self.eval_outputs(a, inputs), self.eval_outputs(a, inputs))   # and again, same model
        assert_identical(self.train_losses(a, seed=5), self.train_losses(b, seed=5))
        assert differences(self.new_model(4).state_dict(), self.new_model(3).state_dict())   # the seed matters
