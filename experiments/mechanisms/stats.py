"""Intervals over seeds and the per-variant summary table of the mechanism experiments.

* :func:`t_interval`: a 95% Student-t interval of a mean over seeds;
* :func:`spread_text`, :func:`range_text`: "mean ± std" and "[low, high]" as a report prints them (one run: no spread);
* :func:`wilson_interval`: a 95% Wilson score interval of a proportion (successes out of runs);
* :func:`summarise`: one row per variant (seeds, mean ± std, interval, per-seed values, successes);
* :func:`difference_interval`: the Welch interval of a difference of means; the tests themselves live in
  :mod:`experiments.reports.verdicts` (the declared decision rules).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from experiments.reports.verdicts import ALPHA, fisher_exact_p, t_quantile, welch

__all__ = [
    "difference_interval", "fisher_exact_p", "interval_text", "mean_std", "publish", "range_text", "runs_frame",
    "spread_text", "succeeded", "summarise", "t_interval", "wilson_interval",
]  # fmt: skip

Z_975 = 1.959964  # the normal quantile of the Wilson interval


def mean_std(values: Sequence[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (0 for one value)."""
    if not values:
        raise ValueError("values must hold at least one number")
    mean = sum(values) / len(values)
    std = math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1)) if len(values) > 1 else 0.0
    return mean, std


def t_interval(values: Sequence[float]) -> tuple[float, float]:
    """95% interval of the mean, ``mean ± t_{0.975, n-1} std / sqrt(n)`` (a point for one value)."""
    mean, std = mean_std(values)
    n = len(values)
    if n < 2:
        return mean, mean
    half = t_quantile(1 - ALPHA / 2, n - 1) * std / math.sqrt(n)
    return mean - half, mean + half


def wilson_interval(successes: int, runs: int) -> tuple[float, float]:
    """95% Wilson score interval of ``successes / runs`` (fractions in [0, 1])."""
    if runs < 1 or not 0 <= successes <= runs:
        raise ValueError(f"need runs >= 1 and 0 <= successes <= runs, got successes={successes}, runs={runs}")
    p, z2 = successes / runs, Z_975**2
    centre = (p + z2 / (2 * runs)) / (1 + z2 / runs)
    half = Z_975 * math.sqrt(p * (1 - p) / runs + z2 / (4 * runs**2)) / (1 + z2 / runs)
    return max(0.0, centre - half), min(1.0, centre + half)


def interval_text(values: Sequence[float], digits: int = 1) -> str:
    lo, hi = t_interval(values)
    return range_text(lo, hi, len(values), digits)


def spread_text(mean: float, std: float, n: int, digits: int = 1) -> str:
    """``"550 ± 71"``; one run has no spread: ``"550 (one run)"``; none: ``"-"``."""
    if n < 1 or math.isnan(mean):
        return "-"
    return f"{mean:.{digits}f} (one run)" if n == 1 else f"{mean:.{digits}f} ± {std:.{digits}f}"


def range_text(low: float, high: float, n: int, digits: int = 1) -> str:
    """``"[480, 620]"``; fewer than two runs give no interval: ``"-"``."""
    return f"[{low:.{digits}f}, {high:.{digits}f}]" if n >= 2 else "-"


def succeeded(result: dict[str, Any], threshold_pct: float) -> bool:
    """A run succeeds when its val mIoU reaches ``threshold_pct`` and its loss never became NaN/inf."""
    return (not result.get("diverged")) and result["miou"] is not None and float(result["miou"]) >= threshold_pct


def summarise(
    results: list[dict[str, Any]], names: Sequence[str], labels: dict[str, str], threshold_pct: float | None = None
) -> pd.DataFrame:
    """One row per variant name (results carry ``name``): mIoU mean ± std, 95% t interval, per seed,
    and with ``threshold_pct`` the successes and their 95% Wilson interval."""
    rows = []
    for name in names:
        part = [r for r in results if r["name"] == name]
        if not part:
            continue
        values = [float(r["miou"]) for r in part]
        mean, std = mean_std(values)
        lo, hi = t_interval(values)
        row = {
            "variant": name,
            "label": labels[name],
            "seeds": len(part),
            "miou_mean": mean,
            "miou_std": std,
            "miou_ci95_low": lo,
            "miou_ci95_high": hi,
            "miou_per_seed": " / ".join(f"{v:.1f}" for v in values),
        }
        if threshold_pct is not None:
            wins = sum(succeeded(r, threshold_pct) for r in part)
            wlo, whi = wilson_interval(wins, len(part))
            row.update({"successes": wins, "success_ci95_low": wlo, "success_ci95_high": whi})
        rows.append(row)
    return pd.DataFrame(rows)


def runs_frame(results: list[dict[str, Any]], keys: Sequence[str]) -> pd.DataFrame:
    """The per-run CSV: name, seed and the given result keys."""
    return pd.DataFrame([{"variant": r["name"], "seed": r["seed"], **{k: r.get(k) for k in keys}} for r in results])


def publish(report: Any, reports: Path, name: str, summary: pd.DataFrame, per_run: pd.DataFrame) -> Path:
    """``reports/<name>.md`` with ``<name>.csv`` (per variant) and ``<name>_runs.csv`` (per run, the input of
    the mechanism checks on ``reports/claims.md``); returns the Markdown path."""
    from cca.reports.render import write_report

    files = {reports / f"{name}.csv": summary, reports / f"{name}_runs.csv": per_run}
    return write_report(report, reports / f"{name}.md", files)


def difference_interval(a: Sequence[float], b: Sequence[float]) -> tuple[float, float, float]:
    """``mean(a) - mean(b)`` and its 95% Welch interval (Welch-Satterthwaite df; see
    :func:`experiments.reports.verdicts.welch`)."""
    test = welch(a, b)
    return test.diff, test.low, test.high
