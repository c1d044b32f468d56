"""A full-scale table run is planned before it starts (--dry-run states GPUs, memory per GPU, GPU-hours,
checkpoint disk and the paper's weights) and is refused on a CPU unless asked for explicitly."""

from __future__ import annotations

import re

import pytest
import torch

from experiments import run


def test_dry_run_at_full_scale_states_the_plan(capsys):
    assert run.main(["2", "--dry-run", "--scale", "full", "--set", "crop_size=97,97"]) == 0
    out = capsys.readouterr().out
    assert "GPUs: 4 x 2 images (global batch 8)" in out and "--nproc 4" in out, out[-3000:]
    memory = float(re.search(r"memory per GPU: (\d+) MiB for one training step at 2x3x97x97", out).group(1))
    assert memory > 4 * 40e6 / 2**20  # more than a ResNet-101's weights
    assert "GPU-hours (estimate)" in out and "A100" in out and "lower bound" in out
    assert re.search(r"last\.pt \d+ MiB .* every 1000 iterations", out) and "last.pt.prev" in out and "best.pt" in out
    assert "resnet101_deepstem" in out


def test_the_checkpoint_size_in_the_plan_matches_a_real_checkpoint(tmp_path):
    from cca.engine.config import apply_overrides
    from cca.engine.presets import get_config
    from cca.engine.train import train
    from experiments.full_scale_plan import estimate

    cfg = apply_overrides(get_config("smoke"), [f"data_root={tmp_path / 'data'}", f"output_dir={tmp_path / 'run'}",
                                                "synthetic_size=32,64", "crop_size=32,32", "eval_every=0",
                                                "num_workers=0", "iterations=1"])
    train(cfg)
    plan = estimate(cfg)
    on_disk_mib = (tmp_path / "run" / "last.pt").stat().st_size / 2**20
    assert plan["last_checkpoint_mib"] == pytest.approx(on_disk_mib, rel=0.05), (plan, on_disk_mib)


def test_full_scale_training_on_a_cpu_is_refused_unless_asked_for(tmp_path, capsys, monkeypatch):
    from cca.data import synthetic

    data = tmp_path / "cityscapes"
    synthetic.write("cityscapes", data, num_train=2, num_val=1, size=(32, 64), seed=0)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    argv = ["2", "--scale", "full", "--data-root", str(data), "--rows", "r1", "--runs-dir", str(tmp_path / "runs"),
            "--reports-dir", str(tmp_path / "reports")]
    assert run.main(argv) == 2
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "--device cpu" in lines[0] and "full scale" in lines[0], err
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").rglob("last.pt"))
