"""Figures: training curves from a run's ``metrics.jsonl`` and bar charts of mean ± std.

``metrics.jsonl`` rows (written by :mod:`cca.engine.runlog`): ``{"type": "train", "iter", "loss",
...}`` and ``{"type": "eval", "iter", "miou", ...}``.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from cca.reports.render import save_figure  # noqa: E402

DPI = 80  # committed figures: small files


def read_metrics(path: str | Path) -> list[dict[str, Any]]:
    """The rows of a ``metrics.jsonl`` (torn last lines of a killed run are skipped)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"metrics log not found: {path}")
    rows = []
    for line in path.read_text().splitlines():
        if not line.strip():
            continue
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return rows


def _series(rows: Sequence[Mapping[str, Any]], kind: str, key: str) -> tuple[list[float], list[float]]:
    xs, ys = [], []
    for row in rows:
        if row.get("type") != kind or key not in row:
            continue
        try:
            value = float(row[key])
        except (TypeError, ValueError):
            continue
        if math.isfinite(value):
            xs.append(float(row["iter"]))
            ys.append(value)
    return xs, ys


def plot_training_curves(
    metrics_path: str | Path, out_path: str | Path, title: str = "", metric: str = "miou", metric_label: str = "mIoU"
) -> Path:
    """Loss (and its terms) vs iteration, and the val ``metric`` (a fraction in the log) in percent vs
    iteration, side by side, as a PNG."""
    rows = read_metrics(metrics_path)
    if not any(r.get("type") == "train" for r in rows):
        raise ValueError(f"{metrics_path} has no training rows (type='train')")
    fig, (ax_loss, ax_metric) = plt.subplots(1, 2, figsize=(8, 3), dpi=DPI)
    x, y = _series(rows, "train", "loss")
    ax_loss.plot(x, y, label="loss", color="black")
    terms = sorted({k for r in rows if r.get("type") == "train" for k in r} - {"type", "iter", "loss", "lr", "time_s", "step_time_s"})
    for term in terms:
        tx, ty = _series(rows, "train", term)
        if ty and any(v != 0 for v in ty):
            ax_loss.plot(tx, ty, label=term, linewidth=0.8)
    ax_loss.set_xlabel("iteration")
    ax_loss.set_ylabel("loss")
    ax_loss.legend(fontsize=7)
    ex, ey = _series(rows, "eval", metric)
    if ey:
        ax_metric.plot(ex, [100.0 * v for v in ey], marker="o", color="tab:blue")
    else:
        ax_metric.text(0.5, 0.5, f"no evaluation rows with {metric!r}", ha="center", va="center", transform=ax_metric.transAxes)
    ax_metric.set_xlabel("iteration")
    ax_metric.set_ylabel(f"val {metric_label} (%)")
    ax_metric.set_ylim(0, 100)  # the whole percent scale: a few points of smoke-run noise do not read as a trend
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    return save_figure(fig, out_path)


def plot_bars(
    groups: Mapping[str, Sequence[float]],
    out_path: str | Path,
    *,
    ylabel: str,
    title: str = "",
    note: str = "",
) -> Path:
    """One bar per group at the mean with a ±std error bar and every value as a dot."""
    if not groups:
        raise ValueError("groups must hold at least one named list of values")
    names = list(groups)
    fig, ax = plt.subplots(figsize=(1.3 * len(names) + 2, 3), dpi=DPI)
    for i, name in enumerate(names):
        values = [float(v) for v in groups[name]]
        if not values:
            continue
        mean = sum(values) / len(values)
        std = (sum((v - mean) ** 2 for v in values) / (len(values) - 1)) ** 0.5 if len(values) > 1 else 0.0
        ax.bar(i, mean, yerr=std, capsize=4, color="tab:blue", alpha=0.6)
        ax.scatter([i] * len(values), values, color="black", s=10, zorder=3)
    ax.set_xticks(range(len(names)))
    ax.set_xticklabels(names, fontsize=8)
    ax.set_ylabel(ylabel)
    if title:
        ax.set_title(title, fontsize=9)
    if note:
        fig.text(0.01, 0.01, note, fontsize=6)
    fig.tight_layout()
    return save_figure(fig, out_path)
