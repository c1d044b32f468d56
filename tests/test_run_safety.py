"""A run a user can trust: one run per directory, resume that finishes what is missing,
checkpoints that fall back or fail in one line, a full disk named, Ctrl-C in one line."""

from __future__ import annotations

import errno
import json
import logging

import pytest
import torch

from cca.__main__ import main
from cca.engine import checkpoint
from cca.engine.config import apply_overrides, save_config
from cca.engine.lock import RunLock, RunLockedError
from cca.engine.presets import get_config


@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
    return tmp_path_factory.mktemp("synthetic_cityscapes")


def tiny(data_root, out, *overrides):
    return apply_overrides(
        get_config("smoke"),
        [f"data_root={data_root}", f"output_dir={out}", "synthetic_size=32,64", "crop_size=32,32", "eval_every=0",
         "num_workers=0", "iterations=4", "checkpoint_every=2", *overrides],
    )


@pytest.fixture(autouse=True)
def one_thread():
    saved = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(saved)


def test_second_run_on_a_directory_fails_at_once_naming_the_holder(data_root, tmp_path, capsys):
    from cca.engine.train import train

    cfg = tiny(data_root, tmp_path / "run")
    with RunLock(tmp_path / "run"):
        with pytest.raises(RunLockedError, match=r"in use by pid \d+ on host .* \(command: "):
            train(cfg)
        path = save_config(cfg, tmp_path / "cfg.json")
        assert main(["train", "--config", str(path)]) == 1
        err = capsys.readouterr().err
        assert "is in use by pid" in err and "Traceback" not in err
        assert not (tmp_path / "run" / "metrics.jsonl").exists(), "the second run must not write anything"
    train(cfg)  # released: the run goes ahead
    assert (tmp_path / "run" / "metrics.json").is_file()


def test_resume_after_the_final_checkpoint_writes_the_missing_metrics(data_root, tmp_path):
    from cca.engine.train import train

    cfg = tiny(data_root, tmp_path / "run")
    train(cfg)
    metrics = tmp_path / "run" / "metrics.json"
    want = json.loads(metrics.read_text())
    metrics.unlink()  # killed right after the final checkpoint, before metrics.json
    summary = train(cfg, resume=True)
    got = json.loads(metrics.read_text())
    assert got["iteration"] == 4 and got["miou"] == pytest.approx(want["miou"], abs=1e-12)
    assert summary["final_metrics"]["miou"] == pytest.approx(want["miou"], abs=1e-12)


def test_truncated_checkpoint_falls_back_to_the_previous_one(data_root, tmp_path, caplog):
    from cca.engine.train import train

    cfg = tiny(data_root, tmp_path / "run")
    train(cfg)
    last = tmp_path / "run" / "last.pt"
    assert checkpoint.load(checkpoint.previous_path(last))["iteration"] == 2
    last.write_bytes(last.read_bytes()[:1000])  # truncated
    with caplog.at_level(logging.WARNING, logger="cca.engine"):
        summary = train(apply_overrides(cfg, ["iterations=6"]), resume=True)
    assert "falling back to the previous checkpoint" in caplog.text and str(last) in caplog.text
    assert summary["iteration"] == 6 and checkpoint.load(last)["iteration"] == 6


def test_unreadable_checkpoint_without_fallback_fails_in_one_line_naming_it(data_root, tmp_path, capsys):
    from cca.engine.train import train

    cfg = tiny(data_root, tmp_path / "run")
    train(cfg)
    last = tmp_path / "run" / "last.pt"
    checkpoint.previous_path(last).unlink()
    last.write_bytes(last.read_bytes()[:1000])
    with pytest.raises(checkpoint.CheckpointError, match=f"checkpoint {last} is unreadable") as info:
        train(cfg, resume=True)
    assert "\n" not in str(info.value)
    assert main(["train", "--config", str(save_config(cfg, tmp_path / "c.json")), "--resume"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith(f"error: checkpoint {last} is unreadable") and not any("Traceback" in e for e in err)


def test_full_disk_names_the_device_and_the_file(tmp_path, monkeypatch):
    path = tmp_path / "last.pt"
    checkpoint.save({"iteration": 1}, path)

    class Full:
        def __init__(self, fd, mode):
            self.fd = fd

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            import os

            os.close(self.fd)

        def write(self, data):
            raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(checkpoint.os, "fdopen", Full)
    with pytest.raises(OSError, match=f"no space left on the device holding {tmp_path} while writing {path}") as info:
        checkpoint.save({"iteration": 2}, path)
    assert info.value.errno == errno.ENOSPC
    monkeypatch.undo()
    assert checkpoint.load(path)["iteration"] == 1 and sorted(p.name for p in tmp_path.iterdir()) == ["last.pt"]


def test_resume_with_fewer_iterations_than_the_checkpoint_is_refused(data_root, tmp_path, caplog):
    from cca.engine.train import train

    cfg = tiny(data_root, tmp_path / "run")
    train(cfg)
    config_before = (tmp_path / "run" / "config.json").read_text()
    with pytest.raises(checkpoint.CheckpointError, match="is at iteration 4 but iterations=2: a run cannot be shortened"):
        train(apply_overrides(cfg, ["iterations=2"]), resume=True)
    assert (tmp_path / "run" / "config.json").read_text() == config_before, "config.json must not change"
    with caplog.at_level(logging.WARNING, logger="cca.engine"):
        train(apply_overrides(cfg, ["iterations=5"]), resume=True)
    assert "iterations changed from 4 to 5: the run is extended to 5 iterations" in caplog.text


def test_ctrl_c_prints_one_line(data_root, tmp_path, monkeypatch, capsys):
    from cca.engine import train as train_mod

    real_step = train_mod._Trainer._step
    calls = []

    def step(self):
        calls.append(1)
        if len(calls) == 4:
            raise KeyboardInterrupt
        return real_step(self)

    monkeypatch.setattr(train_mod._Trainer, "_step", step)
    path = save_config(tiny(data_root, tmp_path / "run", "iterations=6"), tmp_path / "c.json")
    assert main(["train", "--config", str(path)]) == 130
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1] == "interrupted at iteration 3; run the same command with --resume to resume"
    assert not any("Traceback" in line for line in err)


def test_cli_run_on_cpu_prints_percent_and_no_cuda_notice(data_root, tmp_path):
    """`cca train` on a CPU machine: no "No CUDA runtime is found" line; mIoU printed in percent."""
    import os
    import subprocess
    import sys

    path = save_config(tiny(data_root, tmp_path / "run", "iterations=1"), tmp_path / "c.json")
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK")}
    out = subprocess.run([sys.executable, "-m", "cca", "train", "--config", str(path)], capture_output=True,
                         text=True, timeout=300, env={**env, "OMP_NUM_THREADS": "1"})
    assert out.returncode == 0, out.stderr[-2000:]
    assert "No CUDA runtime is found" not in out.stderr
    summary = json.loads(out.stdout.strip().splitlines()[-1])
    assert "best_miou" not in summary and 0.0 <= summary["final_miou_pct"] <= 100.0
    final = json.loads((tmp_path / "run" / "metrics.json").read_text())["miou"]
    assert summary["final_miou_pct"] == pytest.approx(100.0 * final, abs=0.01)


def test_loops_outside_the_engine_use_its_run_files(tmp_path):
    """Mask R-CNN and 3D video loops (cca.engine.loop.TrainingRun): lock, checkpoint + fallback, resume, log, metrics."""
    from cca.engine import runlog
    from cca.engine.config import ExperimentConfig
    from cca.engine.loop import TrainingRun
    from cca.engine.runtime import TrainingInterrupted

    cfg = ExperimentConfig(name="loop", output_dir=str(tmp_path / "run"), iterations=4, checkpoint_every=2)

    def parts():
        model = torch.nn.Linear(2, 1)
        optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda it: 1.0)
        return {"model": model, "optimizer": optimizer, "scheduler": scheduler}

    with pytest.raises(TrainingInterrupted, match="interrupted at iteration 3; resumes from iteration 2"):
        with TrainingRun(cfg, parts()) as run:
            assert run.resume() == 0
            with pytest.raises(RunLockedError):
                RunLock(tmp_path / "run").acquire()
            for it in (1, 2, 3):
                run.step_done(it, {"loss": 1.0 / it})
            raise KeyboardInterrupt
    with TrainingRun(cfg, parts()) as run:
        assert run.resume() == 2
        assert [r["iter"] for r in runlog.read_jsonl(tmp_path / "run" / "metrics.jsonl")] == [1, 2]
        run.step_done(3, {"loss": 0.3})
        run.step_done(4, {"loss": 0.25})
        assert not run.finished()
        run.finish({"miou": 0.5})
        assert run.finished() and run.read_metrics()["miou"] == 0.5
    with pytest.raises(checkpoint.CheckpointError, match="cannot be shortened"):
        with TrainingRun(apply_overrides(cfg, ["iterations=3"]), parts()) as run:
            run.resume()
    last = tmp_path / "run" / "last.pt"
    last.write_bytes(b"torn")
    with TrainingRun(cfg, parts()) as run:
        assert run.resume() == 2  # last.pt.prev: the checkpoint before the final one
