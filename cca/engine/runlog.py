"""Run records: the JSON-lines metrics log and atomic JSON output (provenance: :mod:`cca.provenance`).

``metrics.jsonl`` holds one JSON object per line: ``{"type": "train", "iter", "loss", <loss terms>,
"lr", "time_s", "step_time_s"}`` and ``{"type": "eval", "iter", "miou", "pixel_acc", "mean_acc", ...}``.
``iter`` counts optimiser steps done (1-based).
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from cca._io import atomic_write_json, atomic_write_text, finite_or_none  # noqa: F401  (re-exported)


class MetricsLog:
    """Appends JSON rows to ``path`` (only when ``enabled``, i.e. on rank 0), flushed line by line."""

    def __init__(self, path: str | Path, enabled: bool = True) -> None:
        self.path = Path(path)
        self.enabled = enabled

    def write(self, row: dict[str, Any]) -> None:
        if not self.enabled:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.path.open("a") as f:
            f.write(json.dumps(_finite_or_str(row)) + "\n")
            f.flush()

    def truncate_after(self, iteration: int) -> int:
        """Drop rows with ``iter > iteration`` (work after the checkpoint a resumed run repeats).

        The dropped rows are appended to ``<name>.discarded.jsonl`` beside the log; returns their number.
        """
        if not self.enabled or not self.path.is_file():
            return 0
        keep, drop = [], []
        for line in self.path.read_text().splitlines():
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError:  # a line torn by a kill
                drop.append(line)
                continue
            (drop if row.get("iter", 0) > iteration else keep).append(line)
        if drop:
            with self.path.with_name(self.path.stem + ".discarded.jsonl").open("a") as f:
                f.write("".join(line + "\n" for line in drop))
        atomic_write_text(self.path, "".join(line + "\n" for line in keep))
        return len(drop)


def foreign_files(run_dir: str | Path) -> list[str]:
    """The files of ``run_dir`` that a run would overwrite but no run wrote (a user's ``config.json``,
    ``metrics.json`` or ``metrics.jsonl``), by name; ``[]`` for a new, empty or run directory."""
    run_dir = Path(run_dir)
    foreign = []
    for name, ours in (("config.json", _is_run_config), ("metrics.json", _is_run_metrics), ("metrics.jsonl", _is_run_log)):
        path = run_dir / name
        if path.exists() or path.is_symlink():
            try:
                mine = path.is_file() and not path.is_symlink() and ours(path)
            except (OSError, UnicodeDecodeError, ValueError):
                mine = False
            if not mine:
                foreign.append(name)
    return foreign


def check_run_directory(run_dir: str | Path) -> None:
    """Raise ``FileExistsError`` when ``run_dir`` holds :func:`foreign_files` (a run would overwrite them)."""
    foreign = foreign_files(run_dir)
    if foreign:
        raise FileExistsError(
            f"{run_dir} is not a run directory: {', '.join(foreign)} were not written by a run and would be "
            "overwritten; use another --out DIR (or move them away)"
        )


def _is_run_config(path: Path) -> bool:  # cca.engine.config.save_config: every setting, "name" and "output_dir" among them
    data = json.loads(path.read_text())
    return isinstance(data, dict) and {"name", "model", "output_dir"} <= set(data)


def _is_run_metrics(path: Path) -> bool:  # the final evaluation of a run (train, TrainingRun.finish, evaluate)
    data = json.loads(path.read_text())
    return isinstance(data, dict) and {"iteration", "checkpoint"} <= set(data)


def _is_run_log(path: Path) -> bool:  # MetricsLog rows (its first line is enough); empty after a truncation to 0
    with path.open() as f:
        first = next((line for line in f if line.strip()), None)
    if first is None:
        return True
    row = json.loads(first)
    return isinstance(row, dict) and {"type", "iter"} <= set(row)


def read_jsonl(path: str | Path) -> list[dict[str, Any]]:
    """All rows of a JSON-lines file."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"metrics log not found: {path}")
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def write_json(path: str | Path, data: dict[str, Any]) -> Path:
    """Write ``data`` as indented JSON atomically; NaN/inf become ``null`` (e.g. IoU of an absent class)."""
    return atomic_write_json(path, data)


def _finite_or_str(value: Any) -> Any:
    """JSON has no NaN/inf: in the metrics log they are the strings ``"nan"``, ``"inf"`` (what the loss was)."""
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, dict):
        return {k: _finite_or_str(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite_or_str(v) for v in value]
    return value
