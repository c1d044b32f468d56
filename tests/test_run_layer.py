"""One run layer under every harness: the loops outside the segmentation engine (3D video, Mask R-CNN,
the mechanism studies) build model, loss and optimiser from the same settings as the engine, so a setting
(OHEM, the category consistent loss, the head LR) is honoured everywhere or refused in one line."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from cca.engine import runlog
from cca.engine.config import apply_overrides


@pytest.fixture(autouse=True)
def one_thread():
    saved = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(saved)


def _tiny_table9_3d(tmp_path, *overrides):
    from experiments.table09_camvid import SMOKE

    cfg = dataclasses.replace(SMOKE, model="ccnet3d", clip_length=3)
    return apply_overrides(
        cfg,
        [f"data_root={tmp_path / 'camvid'}", f"output_dir={tmp_path / 'run'}", "synthetic_size=24,32",
         "synthetic_num_train=4", "synthetic_num_val=1", "crop_size=24,24", "batch_size=2", "iterations=2",
         "checkpoint_every=1", "log_every=1", *overrides],
    )


def test_table9_3d_row_trains_with_ohem_and_the_ccl(tmp_path, monkeypatch):
    """Table 9's 3D loop with ``ohem=true`` and a CCL weight: OHEM scores the main term and the CCL term is
    in every logged loss (the loop used to build a plain criterion and drop both without a word)."""
    from cca import losses
    from experiments import video

    calls = []
    forward = losses.OhemCrossEntropy.forward

    def counted(self, *args, **kwargs):
        calls.append(1)
        return forward(self, *args, **kwargs)

    monkeypatch.setattr(losses.OhemCrossEntropy, "forward", counted)
    cfg = _tiny_table9_3d(tmp_path, "ohem=true", "ohem_min_kept=10", "ccl_weight=1.0", "ccl_channels=4")
    metrics = video.train_3d(cfg)
    assert 0.0 <= metrics["miou"] <= 1.0
    assert len(calls) == cfg.iterations  # one OHEM main term per step
    rows = [r for r in runlog.read_jsonl(cfg.run_dir / "metrics.jsonl") if r["type"] == "train"]
    assert [r["iter"] for r in rows] == [1, 2]
    for row in rows:
        assert row["ccl"] > 0.0  # the CCL on the projected centre-frame features
        assert row["loss"] == pytest.approx(row["main"] + cfg.aux_weight * row["aux"] + cfg.ccl_weight * row["ccl"],
                                            rel=1e-5)


def test_table9_3d_row_without_ohem_or_ccl_leaves_them_out(tmp_path, monkeypatch):
    from cca import losses
    from experiments import video

    monkeypatch.setattr(losses.OhemCrossEntropy, "forward", lambda *a, **k: pytest.fail("OHEM used with ohem=false"))
    cfg = _tiny_table9_3d(tmp_path)
    video.train_3d(cfg)
    rows = [r for r in runlog.read_jsonl(cfg.run_dir / "metrics.jsonl") if r["type"] == "train"]
    assert rows and all(r["ccl"] == 0.0 for r in rows)
