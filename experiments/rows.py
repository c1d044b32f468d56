"""Running one row: resumable, locked, never losing an earlier result; the engine runner of training rows.

Results go to ``runs/tableNN/<scale>/<row>/result.json`` with the hash of the settings and the commit; a
row whose result exists for the same settings and commit is skipped (``--force`` re-runs it), an
interrupted training run with the same settings and commit resumes from its ``last.pt``. A row that
fails leaves its earlier ``result.json`` in place: the report keeps showing it.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from cca._io import atomic_write_json
from experiments.settings import data_label, row_label, row_settings, run_dir, settings_dict, settings_hash
from experiments.spec import ROOT, Options, Row, Table

RESULT = "result.json"
KEEP = {RESULT, ".lock", ".row.lock"}  # what a fresh start of a row leaves in its directory
ENGINE_METRICS = ("miou", "pixel_acc", "mean_acc")


def read_json(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return None
    return data if isinstance(data, dict) else None


def read_result(table: Table, row: Row, options: Options) -> dict[str, Any] | None:
    """The row's result at the options' scale, if one is on disk."""
    record = read_json(run_dir(table, row, options) / RESULT)
    return record if record and "metrics" in record and record.get("scale", options.scale) == options.scale else None


def device_of(settings: Any) -> str:
    import torch

    device = getattr(settings, "device", "cpu")
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return device


def _clear(directory: Path) -> None:
    """Remove a row directory's files from other settings, keeping its result (until replaced) and locks."""
    import shutil

    for path in directory.iterdir():
        if path.name in KEEP:
            continue
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        else:
            path.unlink()


def run_row(table: Table, row: Row, options: Options) -> dict[str, Any]:
    """Run one row unless its result exists for the same settings and commit; returns the result record."""
    from cca.engine.lock import RunLock
    from cca.provenance import git_commit, provenance

    settings = row_settings(table, row, options)
    label = row_label(row, settings)
    directory = run_dir(table, row, options)
    digest, commit = settings_hash(table, row, settings), git_commit()
    result_path, state_path = directory / RESULT, directory / "state.json"
    previous = read_json(result_path)
    if previous and not options.force and previous.get("settings_hash") == digest and previous.get("commit") == commit:
        print(f"[table {table.number}] {row.key}: result exists for these settings and commit, skipped (--force re-runs)")
        return previous
    directory.mkdir(parents=True, exist_ok=True)
    with RunLock(directory, ".row.lock"):  # a second `run.py` on this row fails at once, naming this one
        state = read_json(state_path)
        resume = bool(state and not options.force and state.get("settings_hash") == digest and state.get("commit") == commit)
        if not resume:
            _clear(directory)
        atomic_write_json(state_path, {"settings_hash": digest, "commit": commit, "settings": settings_dict(settings)})
        start = time.time()
        how = "starting"
        if resume:
            done = _checkpoint_iteration(directory)
            total = settings_dict(settings).get("iterations")
            how = "resuming" + (f" from iteration {done}" + (f" of {total}" if total else "") if done is not None else "")
        print(f"[table {table.number}] {row.key}: {label} ({how}, {options.scale} scale)")
        metrics = table.runner(table, row, settings, options, directory)
        prov = provenance(device_of(settings), command=options.command or None)
        record = {
            "table": table.number,
            "row": row.key,
            "label": label,
            "scale": options.scale,
            "dataset": data_label(settings),
            "metrics": metrics,  # in the paper's units (percent for mIoU, accuracies and AP)
            "settings_hash": digest,
            "commit": commit,
            "dirty": prov["dirty"],
            "hardware": prov["hardware"] + (f" x{options.nproc} processes" if options.nproc > 1 else ""),
            "time_utc": prov["time_utc"],
            "command": prov["command"],
            "seconds": round(time.time() - start, 1),
            "settings": settings_dict(settings),
        }
        atomic_write_json(result_path, record)
    return record


def _checkpoint_iteration(directory: Path) -> int | None:
    """The iteration of the row's ``last.pt`` (memory-mapped: only that number is read), ``None`` without one."""
    import torch

    path = directory / "last.pt"
    if not path.is_file():
        return None
    try:
        return int(torch.load(path, map_location="cpu", weights_only=True, mmap=True)["iteration"])
    except Exception:  # noqa: BLE001 - an unreadable checkpoint is reported by the engine when it resumes
        return None


def as_percent(value: float) -> float:
    """The engine reports fractions in [0, 1]; the paper prints percentages."""
    return 100.0 * float(value)


def train_runner(table: Table, row: Row, cfg: Any, options: Options, directory: Path) -> dict[str, float]:
    """Train + evaluate one row through the engine (``torchrun -m cca train`` when ``--nproc > 1``);
    returns the engine's metrics in percent."""
    from cca.engine.checkpoint import previous_path
    from cca.engine.config import save_config

    last = directory / "last.pt"
    resume = last.is_file() or previous_path(last).is_file()
    if options.nproc > 1:
        requested = save_config(cfg, directory / "requested_config.json")
        command = [
            sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={options.nproc}",
            "-m", "cca", "train", "--config", str(requested),
        ] + (["--resume"] if resume else [])
        print("  $ " + " ".join(command))
        subprocess.run(command, check=True, cwd=ROOT)
    else:
        from cca.engine.train import train

        train(cfg, resume=resume)
    metrics_path = directory / "metrics.json"
    final = read_json(metrics_path)
    if final is None:
        raise RuntimeError(f"training finished but wrote no {metrics_path}")
    return {key: as_percent(final[key]) for key in ENGINE_METRICS if key in final}
