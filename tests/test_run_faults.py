"""Faults a run directory meets: resume from ``last.pt.prev`` alone, a ``.lock`` that is a symlink, ``--out``
into a directory that is not a run, a read-only directory, refused weights, a finished run resumed; each
ends in a resumed run or one line on stderr, never a traceback or a user's file overwritten."""

from __future__ import annotations

import errno
import json
import logging
import os

import pytest
import torch
from test_run_safety import tiny  # the tiny run's settings

from cca.__main__ import main
from cca.engine import checkpoint
from cca.engine.config import apply_overrides, save_config
from cca.engine.lock import RunLock


@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
    return tmp_path_factory.mktemp("synthetic_cityscapes")


@pytest.fixture(autouse=True)
def one_thread():
    saved = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(saved)


def one_error_line(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert err and not any("Traceback" in line for line in err), err
    return err[-1]


def test_resume_with_only_the_previous_checkpoint(data_root, tmp_path, caplog, capsys):
    """A kill between the two renames of a checkpoint save leaves ``last.pt.prev`` and no ``last.pt``."""
    from cca.engine.train import train

    cfg = tiny(data_root, tmp_path / "run")
    train(cfg)
    last, previous = tmp_path / "run" / "last.pt", tmp_path / "run" / "last.pt.prev"
    os.replace(last, previous)  # previous now holds iteration 4
    before = previous.read_bytes()
    with pytest.raises(FileExistsError, match=f"already holds a run \\({previous}\\); pass --resume"):
        train(cfg)  # without --resume: refused, and the only checkpoint is not rotated away
    assert previous.read_bytes() == before and not last.exists()
    path = save_config(apply_overrides(cfg, ["iterations=6"]), tmp_path / "c.json")
    with caplog.at_level(logging.WARNING, logger="cca.engine"):
        assert main(["train", "--config", str(path), "--resume"]) == 0
    assert f"{last} is missing; falling back to the previous checkpoint {previous} (iteration 4)" in caplog.text
    assert checkpoint.load(last)["iteration"] == 6
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["iteration"] == 6


def test_load_or_fallback_reads_the_previous_checkpoint_when_last_is_missing_or_a_directory(tmp_path):
    last = tmp_path / "last.pt"
    checkpoint.save({"iteration": 1}, last)
    checkpoint.save({"iteration": 2}, last)
    last.unlink()
    assert checkpoint.load_or_fallback(last)[0]["iteration"] == 1
    last.mkdir()
    state, read = checkpoint.load_or_fallback(last)
    assert state["iteration"] == 1 and read == checkpoint.previous_path(last)
    checkpoint.previous_path(last).unlink()
    with pytest.raises(FileNotFoundError, match=f"checkpoint not found: {last} \\(it is a directory\\)"):
        checkpoint.load_or_fallback(last)


def test_a_directory_named_last_pt_is_refused_in_one_line(data_root, tmp_path, capsys):
    from cca.engine.train import train

    cfg = tiny(data_root, tmp_path / "run")
    train(cfg)
    last = tmp_path / "run" / "last.pt"
    last.unlink()
    last.mkdir()
    with pytest.raises(FileExistsError, match=f"{last} is a directory, not a checkpoint"):
        train(cfg, resume=True)
    assert main(["train", "--config", str(save_config(cfg, tmp_path / "c.json")), "--resume"]) == 1
    assert one_error_line(capsys).startswith(f"error: {last} is a directory, not a checkpoint")


def test_experiment_row_resumes_from_the_previous_checkpoint(data_root, tmp_path):
    from experiments.segmentation import train_runner
    from experiments.spec import Options

    directory = tmp_path / "row"
    cfg = tiny(data_root, directory)
    train_runner(None, None, cfg, Options(), directory)
    os.replace(directory / "last.pt", directory / "last.pt.prev")
    (directory / "metrics.json").unlink()
    metrics = train_runner(None, None, apply_overrides(cfg, ["iterations=6"]), Options(), directory)
    assert 0.0 <= metrics["miou"] <= 100.0 and checkpoint.load(directory / "last.pt")["iteration"] == 6


def test_a_lock_file_that_is_a_symlink_is_not_followed(data_root, tmp_path, capsys):
    target = tmp_path / "precious.txt"
    target.write_text("keep me\n")
    run = tmp_path / "run"
    run.mkdir()
    (run / ".lock").symlink_to(target)
    with pytest.raises(OSError, match=f"{run / '.lock'} is a symbolic link") as info:
        RunLock(run).acquire()
    assert info.value.errno == errno.ELOOP and "\n" not in str(info.value)
    assert main(["train", "--config", str(save_config(tiny(data_root, run), tmp_path / "c.json"))]) == 1
    assert one_error_line(capsys).startswith(f"error: {run / '.lock'} is a symbolic link (to {target})")
    assert target.read_text() == "keep me\n" and sorted(p.name for p in run.iterdir()) == [".lock"]


def test_out_into_a_directory_that_is_not_a_run_is_refused(data_root, tmp_path, capsys):
    from cca.engine.loop import TrainingRun
    from cca.engine.train import train

    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "config.json").write_text('{"my": "settings"}\n')
    (mine / "metrics.json").write_text('{"accuracy": 0.9}\n')
    cfg = tiny(data_root, mine)
    with pytest.raises(FileExistsError, match=f"{mine} is not a run directory: config.json, metrics.json"):
        train(cfg)
    assert main(["train", "--config", str(save_config(cfg, tmp_path / "c.json"))]) == 1
    assert one_error_line(capsys).startswith(f"error: {mine} is not a run directory")
    with pytest.raises(FileExistsError, match="is not a run directory"):
        with TrainingRun(cfg, parts={"model": torch.nn.Linear(1, 1)}) as run:
            run.resume()
    assert (mine / "config.json").read_text() == '{"my": "settings"}\n'
    assert (mine / "metrics.json").read_text() == '{"accuracy": 0.9}\n'
    assert sorted(p.name for p in mine.iterdir()) == [".lock", "config.json", "metrics.json"]


def test_a_run_killed_before_its_first_checkpoint_starts_again(data_root, tmp_path):
    """Its own config.json and metrics.jsonl (no checkpoint yet) are a run's: a fresh start may replace them."""
    from cca.engine.train import train

    cfg = tiny(data_root, tmp_path / "run")
    run = tmp_path / "run"
    run.mkdir()
    save_config(cfg, run / "config.json", provenance={"command": "killed"})
    (run / "metrics.jsonl").write_text('{"type": "train", "iter": 1, "loss": 1.0}\n')
    assert train(cfg)["iteration"] == 4


def test_read_only_run_directory_mid_run_is_one_line(data_root, tmp_path, monkeypatch, capsys):
    from cca.engine import runlog

    real_write = runlog.MetricsLog.write

    def write(self, row):
        if row.get("iter", 0) >= 2:  # the directory turned read-only after step 1
            raise PermissionError(errno.EACCES, "Permission denied", str(self.path))
        real_write(self, row)

    monkeypatch.setattr(runlog.MetricsLog, "write", write)
    path = save_config(tiny(data_root, tmp_path / "run"), tmp_path / "c.json")
    assert main(["train", "--config", str(path)]) == 1
    line = one_error_line(capsys)
    assert line == f"error: Permission denied: {tmp_path / 'run' / 'metrics.jsonl'}"


def test_refused_pretrained_file_is_one_line(data_root, tmp_path, capsys):
    weights = tmp_path / "weights.pth"
    weights.write_bytes(b"not a state dict\n" * 4)
    path = save_config(tiny(data_root, tmp_path / "run", f"pretrained={weights}"), tmp_path / "c.json")
    assert main(["train", "--config", str(path)]) == 1
    assert one_error_line(capsys).startswith(f"error: pretrained='{weights}' is not a readable PyTorch state dict")


def test_evaluate_a_checkpoint_without_a_saved_config_is_one_line(tmp_path, capsys):
    path = tmp_path / "weights.pt"
    torch.save({"model": {"w": torch.zeros(1)}}, path)
    assert main(["evaluate", "--checkpoint", str(path)]) == 1
    assert one_error_line(capsys).startswith(f"error: {path} has no saved config")


def test_resuming_a_finished_run_prints_its_final_miou(data_root, tmp_path, capsys):
    path = save_config(tiny(data_root, tmp_path / "run"), tmp_path / "c.json")
    assert main(["train", "--config", str(path)]) == 0
    first = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert main(["train", "--config", str(path), "--resume"]) == 0
    again = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    final = json.loads((tmp_path / "run" / "metrics.json").read_text())["miou"]
    assert again["final_miou_pct"] is not None and again["final_miou_pct"] == first["final_miou_pct"]
    assert again["final_miou_pct"] == pytest.approx(100.0 * final, abs=0.01)


def test_foreign_files_tells_a_users_files_from_a_runs(tmp_path):
    from cca.engine import runlog
    from cca.engine.config import ExperimentConfig

    assert runlog.foreign_files(tmp_path / "new") == [] and runlog.foreign_files(tmp_path) == []
    save_config(ExperimentConfig(), tmp_path / "config.json")
    runlog.write_json(tmp_path / "metrics.json", {"miou": 0.5, "iteration": 4, "checkpoint": "last.pt"})
    runlog.MetricsLog(tmp_path / "metrics.jsonl").write({"type": "train", "iter": 1, "loss": 1.0})
    assert runlog.foreign_files(tmp_path) == []
    (tmp_path / "metrics.jsonl").write_text("epoch,loss\n1,0.5\n")
    (tmp_path / "config.json").write_bytes(b"\xff\xfe")
    assert runlog.foreign_files(tmp_path) == ["config.json", "metrics.jsonl"]
