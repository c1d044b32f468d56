"""Kill-and-resume: a run SIGKILLed mid-way and resumed with ``python -m cca train --resume`` repeats the
per-iteration losses, evaluations and final weights of an uninterrupted run (CPU, deterministic)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest
import torch

from cca.engine import checkpoint, runlog
from cca.engine.config import apply_overrides, save_config
from cca.engine.presets import get_config

ITERATIONS = 12

# Runs train() with a pause after each step from step 5 on, so the test can kill it mid-run.
_SLOW_TRAIN = """
import sys, time
import torch
torch.set_num_threads(1)
from cca.engine.config import load_config
from cca.engine.train import train
train(load_config(sys.argv[1]), on_step=lambda it, row: time.sleep(0.3) if it >= 5 else None)
"""


def _env():
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK")}
    env.update(OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    return env


def _train_rows(run_dir):
    return [r for r in runlog.read_jsonl(run_dir / "metrics.jsonl") if r["type"] == "train"]


def test_kill_and_resume_repeats_uninterrupted_run(tmp_path):
    from cca.engine.train import train

    cfg = apply_overrides(
        get_config("smoke"),
        [
            f"data_root={tmp_path / 'data'}",
            "synthetic_size=32,64",
            "crop_size=32,32",
            f"iterations={ITERATIONS}",
            "checkpoint_every=4",
            "eval_every=6",
            "num_workers=0",
            "deterministic=true",
        ],
    )
    killed_dir, reference_dir = tmp_path / "killed", tmp_path / "reference"
    config_path = save_config(apply_overrides(cfg, [f"output_dir={killed_dir}"]), tmp_path / "killed.json")

    proc = subprocess.Popen(
        [sys.executable, "-c", _SLOW_TRAIN, str(config_path)],
        env=_env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + 120
        while True:
            assert proc.poll() is None, f"the run ended before it was killed: {proc.stderr.read().decode()[-2000:]}"
            assert time.monotonic() < deadline, "no checkpoint within 120 s"
            log = killed_dir / "metrics.jsonl"
            if (killed_dir / "last.pt").is_file() and log.is_file() and len(log.read_text().splitlines()) >= 6:
                break
            time.sleep(0.02)
        proc.send_signal(signal.SIGKILL)
        assert proc.wait(timeout=30) == -signal.SIGKILL
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.stderr.close()
    killed_at = checkpoint.load(killed_dir / "last.pt")["iteration"]
    assert 4 <= killed_at < ITERATIONS

    # the uninterrupted run, meanwhile, in this process
    saved = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        train(apply_overrides(cfg, [f"output_dir={reference_dir}"]))
    finally:
        torch.set_num_threads(saved)

    resumed = subprocess.run(
        [sys.executable, "-m", "cca", "train", "--config", str(config_path), "--resume", "--out", str(killed_dir)],
        env=_env(),
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert f"resumed {killed_dir / 'last.pt'} at iteration {killed_at}" in resumed.stderr

    got, want = _train_rows(killed_dir), _train_rows(reference_dir)
    assert [r["iter"] for r in got] == list(range(1, ITERATIONS + 1))
    for a, b in zip(got, want, strict=True):
        for key in ("loss", "main", "aux", "lr"):
            assert a[key] == pytest.approx(b[key], rel=1e-6, abs=1e-6), (a["iter"], key)
    evals = [
        [(r["iter"], r["miou"]) for r in runlog.read_jsonl(d / "metrics.jsonl") if r["type"] == "eval"]
        for d in (killed_dir, reference_dir)
    ]
    assert [i for i, _ in evals[0]] == [i for i, _ in evals[1]] == [6, 12]
    assert [m for _, m in evals[0]] == pytest.approx([m for _, m in evals[1]], abs=1e-9)

    a, b = checkpoint.load(killed_dir / "last.pt")["model"], checkpoint.load(reference_dir / "last.pt")["model"]
    for key in b:
        torch.testing.assert_close(a[key], b[key], rtol=1e-6, atol=1e-6, msg=key)
