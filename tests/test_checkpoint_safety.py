"""Loading a file never runs code: every checkpoint we write loads with ``torch.load(weights_only=True)``,
and a crafted pickle is refused with one line naming the file, before anything in it executes."""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import pytest
import torch

from cca.engine import checkpoint
from cca.engine.config import apply_overrides
from cca.engine.presets import get_config


class _Payload:
    """Unpickling it calls ``Path.touch(marker)``: proof that loading ran code."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def _crafted(path: Path, marker: Path) -> Path:
    torch.save({"iteration": 3, "model": {}, "config": {}, "payload": _Payload(marker)}, path)
    return path


def test_crafted_pickle_is_refused_by_checkpoint_load(tmp_path):
    marker = tmp_path / "ran"
    path = _crafted(tmp_path / "last.pt", marker)
    with pytest.raises(checkpoint.CheckpointError) as info:
        checkpoint.load(path)
    message = str(info.value)
    assert str(path) in message and "\n" not in message and "code" in message, message
    assert not marker.exists()


def test_crafted_pickle_is_refused_by_attention_maps(tmp_path):
    from experiments.attention_maps import checkpoint_figure

    marker = tmp_path / "ran"
    path = _crafted(tmp_path / "best.pt", marker)
    with pytest.raises(checkpoint.CheckpointError, match="best.pt"):
        checkpoint_figure(path)
    assert not marker.exists()


def test_rng_state_is_tensors_and_loads_weights_only(tmp_path):
    state = checkpoint.rng_state()
    checkpoint.save({"rng": [state]}, tmp_path / "rng.pt")
    loaded = torch.load(tmp_path / "rng.pt", weights_only=True)["rng"][0]
    assert all(isinstance(v, torch.Tensor) for v in loaded.values()), {k: type(v) for k, v in loaded.items()}
    a = (random.random(), random.gauss(0, 1), float(np.random.rand()), float(np.random.randn()), torch.rand(2))
    checkpoint.set_rng_state(loaded)
    b = (random.random(), random.gauss(0, 1), float(np.random.rand()), float(np.random.randn()), torch.rand(2))
    assert a[:4] == b[:4] and torch.equal(a[4], b[4])


@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
    return tmp_path_factory.mktemp("synthetic_cityscapes")


def test_engine_checkpoints_load_weights_only(data_root, tmp_path):
    from cca.engine.train import train

    cfg = apply_overrides(
        get_config("smoke"),
        [f"data_root={data_root}", f"output_dir={tmp_path / 'run'}", "synthetic_size=32,64", "crop_size=32,32",
         "eval_every=2", "num_workers=0", "iterations=2", "checkpoint_every=1"],
    )
    train(cfg)
    for name in ("last.pt", "last.pt.prev", "best.pt"):
        state = torch.load(tmp_path / "run" / name, map_location="cpu", weights_only=True)
        assert state["iteration"] >= 1 and state["config"]["iterations"] == 2
    # and the run resumes from it (weights_only) to the same place
    summary = train(apply_overrides(cfg, ["iterations=3"]), resume=True)
    assert torch.load(tmp_path / "run" / "last.pt", weights_only=True)["iteration"] == 3, summary


def test_mechanism_checkpoints_load_weights_only(tmp_path):
    from cca.engine.parsing import apply_overrides as override
    from experiments.mechanisms.settings import MechanismSettings, Variant
    from experiments.mechanisms.training import train_one

    small = override(MechanismSettings(), {"iterations": 4, "checkpoint_every": 2, "eval_every": 0, "num_train": 16,
                                           "num_val": 4, "batch_size": 4})
    train_one(small, Variant(label="ccl", recurrence=1, ccl="piecewise", ccl_channels=4), seed=0, directory=tmp_path)
    for name in ("last.pt", "model.pt"):
        state = torch.load(tmp_path / name, map_location="cpu", weights_only=True)
        assert "model" in state
