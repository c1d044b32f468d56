"""``torchrun --nproc_per_node 2 -m cca train`` (gloo, CPU) against one process on the same global batch.

Why the two runs must agree. With global batch 2, the 2-process run gives each rank a micro-batch of 1
and DDP averages the two gradients; the single process uses ``grad_accum=2``: two micro-batches of 1,
each loss divided by 2, gradients summed. Both take the same two samples per step (the data order
depends only on the seed and the global batch), with the same augmentation (seeded per sample) and the
same dropout masks (seeded per micro-batch), and BatchNorm normalises each micro-batch of 1 by its own
statistics in both. So losses and weights agree up to float rounding. What differs, by design, is the
BN running statistics: without SyncBN (CPU) DDP keeps rank 0's, the single process has seen both
samples. They only matter in eval mode, so the evaluation is checked on its own: the 2-process
evaluation of the final weights (3 val images: uneven shards) against a 1-process evaluation of them.
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch

from cca.engine import checkpoint, runlog
from cca.engine.config import apply_overrides, save_config
from cca.engine.presets import get_config


def test_two_process_gloo_run_matches_single_process(tmp_path):
    from cca.engine.evaluate import evaluate
    from cca.engine.train import train

    cfg = apply_overrides(
        get_config("smoke"),
        [f"data_root={tmp_path / 'data'}", "synthetic_size=32,64", "crop_size=32,32", "iterations=6",
         "batch_size=2", "eval_every=0", "checkpoint_every=3", "num_workers=0", "synthetic_num_val=3",
         "lr=0.02"],
    )
    ddp_dir, single_dir = tmp_path / "ddp", tmp_path / "single"
    config_path = save_config(apply_overrides(cfg, ["grad_accum=1"]), tmp_path / "ddp.json")

    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK")}
    env.update(OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    proc = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
         "-m", "cca", "train", "--config", str(config_path), "--out", str(ddp_dir)],
        env=env, capture_output=True, text=True, timeout=240,
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    ddp_ckpt = checkpoint.load(ddp_dir / "last.pt")
    assert ddp_ckpt["world_size"] == 2 and len(ddp_ckpt["rng"]) == 2

    saved = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        train(apply_overrides(cfg, [f"output_dir={single_dir}", "grad_accum=2"]))
        ddp_eval_again = evaluate(ddp_dir / "last.pt", output_dir=tmp_path / "eval1")
    finally:
        torch.set_num_threads(saved)

    rows = {d: runlog.read_jsonl(d / "metrics.jsonl") for d in (ddp_dir, single_dir)}
    train_rows = {d: [r for r in rs if r["type"] == "train"] for d, rs in rows.items()}
    assert [r["iter"] for r in train_rows[ddp_dir]] == list(range(1, 7))
    for a, b in zip(train_rows[ddp_dir], train_rows[single_dir], strict=True):
        for key in ("loss", "main", "aux"):
            assert a[key] == pytest.approx(b[key], rel=1e-5, abs=1e-6), (a["iter"], key)
    assert len({r["loss"] for r in train_rows[ddp_dir]}) > 1

    single = checkpoint.load(single_dir / "last.pt")["model"]
    for key, value in ddp_ckpt["model"].items():
        if value.is_floating_point() and "running_" not in key:
            torch.testing.assert_close(value, single[key], rtol=1e-5, atol=1e-6, msg=key)

    # distributed evaluation: every val image once (3 over 2 ranks), same numbers as 1 process
    ddp_eval = [r for r in rows[ddp_dir] if r["type"] == "eval"][-1]
    assert ddp_eval["num_images"] == 3 and ddp_eval_again["num_images"] == 3
    assert ddp_eval["miou"] == pytest.approx(ddp_eval_again["miou"], abs=1e-9)
    assert ddp_eval["pixel_acc"] == pytest.approx(ddp_eval_again["pixel_acc"], abs=1e-9)
