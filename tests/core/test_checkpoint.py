"""Checkpoints: atomic round trip, and weights_only loading that refuses everything that is not a prn checkpoint."""

from __future__ import annotations

import os
import pickle
from pathlib import Path

import pytest
import torch
from torch import nn

from prn_cli.checkpoint import FORMAT, FORMAT_VERSION, load_checkpoint, save_checkpoint
from prn_cli.errors import InvalidInputError

CATS = [{"id": 1, "name": "square", "isthing": 1, "supercategory": "polygon"},
        {"id": 101, "name": "sky", "isthing": 0}]
CONFIG = {"backbone": {"depth": 18, "width": 16}, "milestones": (0.5, 0.8), "name": "tiny"}


def _net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.Conv2d(4, 2, 1))


def _save(path: Path, kind: str = "base", **kw) -> Path:
    return save_checkpoint(path, kind=kind, config=CONFIG, categories=CATS, model_state=_net().state_dict(), **kw)


class _Evil:
    """Pickles as a call to os.system: loading it with plain pickle would run a shell command."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_round_trip(tmp_path):
    net = _net()
    optim = torch.optim.AdamW(net.parameters())
    net(torch.randn(2, 3, 8, 8)).sum().backward()
    optim.step()
    path = save_checkpoint(tmp_path / "run" / "last.pt", kind="prn", config=CONFIG, categories=CATS,
                           model_state=net.state_dict(),
                           extra={"optimizer": optim.state_dict(), "step": 7, "rng": [{"torch": torch.get_rng_state()}],
                                  "path": tmp_path / "x"})
    assert path.is_file() and [p.name for p in path.parent.iterdir()] == ["last.pt"]   # no temp file left
    ck = load_checkpoint(path, kind="prn")
    assert ck["format"] == FORMAT and ck["format_version"] == FORMAT_VERSION and ck["kind"] == "prn"
    assert ck["config"] == CONFIG and ck["categories"] == CATS and ck["step"] == 7
    assert ck["path"] == str(tmp_path / "x")   # paths are stored as strings
    state = net.state_dict()
    assert list(ck["state_dict"]) == list(state)
    assert all(torch.equal(ck["state_dict"][k], state[k]) for k in state)
    fresh = _net()
    fresh.load_state_dict(ck["state_dict"])
    torch.optim.AdamW(fresh.parameters()).load_state_dict(ck["optimizer"])
    # a module is accepted in place of its state_dict
    save_checkpoint(tmp_path / "m.pt", kind="base", config={}, categories=CATS, model_state=net)
    assert torch.equal(load_checkpoint(tmp_path / "m.pt")["state_dict"]["0.weight"], state["0.weight"])


def test_overwrite_is_atomic_replace(tmp_path):
    path = _save(tmp_path / "a.pt")
    save_checkpoint(path, kind="base", config={"v": 2}, categories=CATS, model_state={})
    assert load_checkpoint(path)["config"] == {"v": 2}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.pt"]


def test_non_plain_content_is_refused_when_saving(tmp_path):
    with pytest.raises(TypeError, match="weights_only"):
        _save(tmp_path / "a.pt", extra={"obj": object()})
    assert not list(tmp_path.iterdir())


@pytest.mark.parametrize("writer", ["torch.save", "pickle"])
def test_malicious_pickle_is_refused_and_never_runs(tmp_path, writer):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pt"
    payload = {"format": FORMAT, "format_version": 1, "kind": "base", "state_dict": _Evil(marker)}
    if writer == "torch.save":
        torch.save(payload, path)
    else:
        with open(path, "wb") as f:
            pickle.dump(payload, f)
    with pytest.raises(InvalidInputError, match="contains code; refusing to load") as info:
        load_checkpoint(path)
    assert str(path) in str(info.value)
    assert not marker.exists()


def test_plain_state_dict_is_not_a_prn_checkpoint(tmp_path):
    path = tmp_path / "weights.pth"
    torch.save(_net().state_dict(), path)
    with pytest.raises(InvalidInputError, match="not a prn checkpoint") as info:
        load_checkpoint(path)
    assert str(path) in str(info.value)
    torch.save([torch.ones(2)], path)
    with pytest.raises(InvalidInputError, match="not a prn checkpoint"):
        load_checkpoint(path)


def test_wrong_kind(tmp_path):
    path = _save(tmp_path / "prn.pt", kind="prn")
    with pytest.raises(InvalidInputError, match="refinement-network .* base-model") as info:
        load_checkpoint(path, kind="base")
    assert str(path) in str(info.value) and "prn train base" in str(info.value)
    assert load_checkpoint(path, kind="prn")["kind"] == "prn"
    with pytest.raises(ValueError):
        _save(tmp_path / "x.pt", kind="other")


def test_truncated_and_garbage_files(tmp_path):
    good = _save(tmp_path / "good.pt")
    data = good.read_bytes()
    trunc = tmp_path / "trunc.pt"
    trunc.write_bytes(data[: len(data) // 2])
    with pytest.raises(InvalidInputError, match="corrupt or truncated") as info:
        load_checkpoint(trunc)
    assert str(trunc) in str(info.value)
    for name, content in [("empty.pt", b""), ("text.pt", b"hello, this is not a checkpoint\n")]:
        (tmp_path / name).write_bytes(content)
        with pytest.raises(InvalidInputError, match=name):
            load_checkpoint(tmp_path / name)


def test_missing_file_directory_and_newer_version(tmp_path):
    with pytest.raises(InvalidInputError, match="does not exist"):
        load_checkpoint(tmp_path / "nope.pt")
    with pytest.raises(InvalidInputError, match="directory"):
        load_checkpoint(tmp_path)
    path = tmp_path / "future.pt"
    torch.save({"format": FORMAT, "format_version": FORMAT_VERSION + 1, "kind": "base", "config": {},
                "categories": [], "state_dict": {}}, path)
    with pytest.raises(InvalidInputError, match="newer.*upgrade prn"):
        load_checkpoint(path)
    torch.save({"format": FORMAT, "format_version": 1, "kind": "base"}, path)
    with pytest.raises(InvalidInputError, match="lacks config, categories, state_dict"):
        load_checkpoint(path)


def test_a_checkpoint_the_disk_refuses_is_one_line_naming_it(tmp_path, monkeypatch):
    # torch's zip writer reports a full disk as a RuntimeError (measured on a full tmpfs: "[enforce fail at
    # inline_container.cc:672] . unexpected pos 64 vs 0"); prn names the file instead of "internal error"
    import shutil
    from collections import namedtuple

    from prn_cli.errors import OutputWriteError

    def refused(obj, f):
        raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 64 vs 0")

    monkeypatch.setattr(torch, "save", refused)
    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(shutil, "disk_usage", lambda p: usage(300_000, 299_000, 1_000))
    target = tmp_path / "run" / "last.pt"
    with pytest.raises(OutputWriteError) as err:
        save_checkpoint(target, kind="base", config={}, categories=[], model_state={"w": torch.zeros(2)})
    assert str(err.value).startswith(f"{target}: cannot be written (No space left on device); free space")
    assert not target.exists() and list(target.parent.iterdir()) == []
