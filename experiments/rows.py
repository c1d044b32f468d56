"""Run: one row, resumable, locked, never losing an earlier result (a table's runner does the work).

Results go to ``runs/tableNN/<scale>/<row>/result.json`` with their key (:mod:`experiments.cache`: the
resolved settings and the runner's declared code version) and, as provenance, the commit; a row whose
result exists for the same key is skipped (``--force`` re-runs it), an interrupted training run with the
same key resumes from its ``last.pt``. A row that
fails leaves its earlier ``result.json`` in place: the report keeps showing it.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from cca._io import atomic_write_json
from experiments.cache import code_version, is_current
from experiments.report import data_label, row_label
from experiments.settings import device_of, row_key, row_settings, run_dir, settings_dict, settings_hash
from experiments.spec import Options, Row, Table

RESULT = "result.json"
KEEP = {RESULT, ".lock", ".row.lock"}  # what a fresh start of a row leaves in its directory


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
    """Run one row unless its result exists for the same key; returns the result record."""
    from cca.engine.lock import RunLock
    from cca.provenance import git_commit, provenance

    settings = row_settings(table, row, options)
    label = row_label(row, settings)
    directory = run_dir(table, row, options)
    digest, commit, version = row_key(table, row, settings), git_commit(), code_version(table.runner)
    legacy = settings_hash(table, row, settings)  # the key of results written before the one cache rule
    result_path, state_path = directory / RESULT, directory / "state.json"
    previous = read_json(result_path)
    if not options.force and is_current(previous, digest, table.runner, legacy):
        print(f"[table {table.number}] {row.key}: result exists for these settings and code, skipped (--force re-runs)")
        return previous
    directory.mkdir(parents=True, exist_ok=True)
    with RunLock(directory, ".row.lock"):  # a second `python -m experiments.run` on this row fails at once, naming this one
        state = read_json(state_path)
        resume = not options.force and is_current(state, digest, table.runner, legacy)
        if not resume:
            _clear(directory)
        atomic_write_json(state_path, {"settings_hash": digest, "code_version": version, "commit": commit,
                                       "settings": settings_dict(settings)})
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
            "code_version": version,
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
