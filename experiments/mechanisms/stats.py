"""Intervals over seeds, the per-variant summary table and the claims rows of the mechanism experiments.

* :func:`t_interval`: a 95% Student-t interval of a mean over seeds (two-sided quantiles below);
* :func:`wilson_interval`: a 95% Wilson score interval of a proportion (successes out of runs);
* :func:`summarise`: one row per variant (seeds, mean ± std, interval, per-seed values, successes);
* :func:`write_claims`: ``reports/claims/<name>.csv`` in the interface of ``reports/claims.md``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from experiments.reports.claims import CLAIM_COLUMNS, VERDICTS

# Two-sided 95% quantiles t_{0.975, df} of Student's t distribution, df = 1..30 (standard table values).
T_975 = (
    12.706,
    4.303,
    3.182,
    2.776,
    2.571,
    2.447,
    2.365,
    2.306,
    2.262,
    2.228,
    2.201,
    2.179,
    2.160,
    2.145,
    2.131,
    2.120,
    2.110,
    2.101,
    2.093,
    2.086,
    2.080,
    2.074,
    2.069,
    2.064,
    2.060,
    2.056,
    2.052,
    2.048,
    2.045,
    2.042,
)
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
    t = T_975[n - 2] if n - 1 <= len(T_975) else 1.96
    half = t * std / math.sqrt(n)
    return mean - half, mean + half


def wilson_interval(successes: int, runs: int) -> tuple[float, float]:
    """95% Wilson score interval of ``successes / runs`` (fractions in [0, 1])."""
    if runs < 1 or not 0 <= successes <= runs:
        raise ValueError(f"need runs >= 1 and 0 <= successes <= runs, got successes={successes}, runs={runs}")
    p, z2 = successes / runs, Z_975**2
    centre = (p + z2 / (2 * runs)) / (1 + z2 / runs)
    half = Z_975 * math.sqrt(p * (1 - p) / runs + z2 / (4 * runs**2)) / (1 + z2 / runs)
    return max(0.0, centre - half), min(1.0, centre + half)


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


def write_claims(path: str | Path, rows: list[dict[str, str]]) -> Path:
    """``reports/claims/<name>.csv``: one row per claim (columns :data:`CLAIM_COLUMNS`, verdict in :data:`VERDICTS`)."""
    from cca._io import atomic_write_text

    for row in rows:
        if set(row) != set(CLAIM_COLUMNS):
            raise ValueError(f"a claims row needs exactly the columns {CLAIM_COLUMNS}, got {sorted(row)}")
        if row["verdict"] not in VERDICTS:
            raise ValueError(f"verdict must be one of {VERDICTS}, got verdict={row['verdict']!r}")
    frame = pd.DataFrame(rows, columns=list(CLAIM_COLUMNS))
    return atomic_write_text(path, frame.to_csv(index=False))



def claim(
    claim_id: str, text: str, paper: str, ours: str, name: str, prov: dict[str, Any], verdict: str, command: str
) -> dict[str, str]:
    """One claims row of the mechanism report ``reports/<name>.md`` (its path relative to ``reports/``)."""
    row = (claim_id, text, paper, ours, f"{name}.md", "cpu-mechanism", prov["hardware"], verdict, command)
    return dict(zip(CLAIM_COLUMNS, row, strict=True))


def publish(
    report: Any, reports: Path, name: str, summary: pd.DataFrame, per_run: pd.DataFrame, claims: list[dict[str, str]]
) -> Path:
    """``reports/<name>.md`` with ``<name>.csv`` (per variant) and ``<name>_runs.csv`` (per run), then
    ``reports/claims/<name>.csv``; returns the Markdown path."""
    from cca.reports.render import write_report

    files = {reports / f"{name}.csv": summary, reports / f"{name}_runs.csv": per_run}
    path = write_report(report, reports / f"{name}.md", files)
    write_claims(reports / "claims" / f"{name}.csv", claims)
    return path

def difference_interval(a: Sequence[float], b: Sequence[float]) -> tuple[float, float, float]:
    """``mean(a) - mean(b)`` and a 95% Welch interval (conservative df = min(n_a, n_b) - 1)."""
    (ma, sa), (mb, sb) = mean_std(a), mean_std(b)
    diff = ma - mb
    n = min(len(a), len(b))
    if n < 2:
        return diff, diff, diff
    se = math.sqrt(sa**2 / len(a) + sb**2 / len(b))
    t = T_975[n - 2] if n - 1 <= len(T_975) else 1.96
    return diff, diff - t * se, diff + t * se


def fisher_exact_p(a_wins: int, a_runs: int, b_wins: int, b_runs: int) -> float:
    """Two-sided Fisher exact test p-value of two success counts (sum of tables no likelier than the observed)."""
    wins, total = a_wins + b_wins, a_runs + b_runs
    if a_runs == 0 or b_runs == 0:
        return 1.0

    def prob(k: int) -> float:
        return math.comb(a_runs, k) * math.comb(b_runs, wins - k) / math.comb(total, wins)

    observed = prob(a_wins)
    ks = range(max(0, wins - b_runs), min(a_runs, wins) + 1)
    return min(1.0, sum(p for p in (prob(k) for k in ks) if p <= observed * (1 + 1e-9)))
