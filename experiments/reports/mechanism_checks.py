"""The mechanism checks of ``reports/claims.md``, recomputed from the per-run CSVs on disk.

Each check reads ``reports/<study>_runs.csv`` (``reports/longrange.csv`` for the long-range ablation),
applies the declared rules of :mod:`experiments.reports.verdicts` and says what its task can and
cannot show. The mechanism reports (``experiments/mechanisms``) state the same verdicts from the same
functions, so the two pages cannot disagree. A check is not a claim of the paper: its verdict words are
:data:`~experiments.reports.verdicts.MECHANISM_VERDICTS` and claims.md never counts it with the claims.
"""

from __future__ import annotations

import functools
import json
import math
import re
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from cca.provenance import REPO_ROOT
from experiments.reports.claims_efficiency import Paper, load_paper
from experiments.reports.verdicts import (
    Welch,
    equivalence_verdict,
    fisher_exact_p,
    mechanism_verdict,
    welch,
    welch_from_stats,
)

__all__ = ["Check", "ccl_checks", "gamma_check", "longrange_check", "mechanism_checks", "stacking_checks", "video_check"]

SUCCESS_MIOU_PCT = 90.0  # every mechanism study's success threshold (val mIoU), fixed before any run


@dataclass(frozen=True)
class Check:
    """One mechanism check: what it tests, what its task can and cannot show, the evidence and the verdict."""

    check_id: str
    claim: str  # the prediction, with what the task can and cannot show
    paper: str  # the paper's related figure or argument
    ours: str
    report: str  # e.g. "mechanism_ccl.md"
    verdict: str  # one of MECHANISM_VERDICTS
    command: str


def successes(frame: pd.DataFrame, variant: str, threshold: float = SUCCESS_MIOU_PCT) -> tuple[int, int]:
    """``(runs with val mIoU >= threshold and no NaN/inf loss, runs)`` of ``variant`` in a per-run frame."""
    part = frame[frame["variant"] == variant]
    diverged = part["diverged"].astype(str).str.lower().eq("true") if "diverged" in part else False
    ok = (part["miou"].astype(float) >= threshold) & ~diverged
    return int(ok.sum()), len(part)


def _miou(frame: pd.DataFrame, variant: str) -> list[float]:
    return [float(v) for v in frame.loc[frame["variant"] == variant, "miou"]]


def _test(a: list[float], b: list[float]) -> Welch:
    """Welch's test of ``mean(a) - mean(b)``; an arm without runs (a partial study) gives an unresolved result."""
    if not a or not b:
        return Welch(math.nan, -math.inf, math.inf, math.nan, 1.0)
    return welch(a, b)


def _p(p: float) -> str:
    return f"p = {p:.3f}" if p >= 0.001 else "p < 0.001"


def _welch_text(test, digits: int = 1) -> str:
    df = "df n/a" if math.isnan(test.df) else f"Welch df {test.df:.1f}"
    return f"{test.diff:+.{digits}f} mIoU, 95% interval {test.interval_text(digits)} ({df}, {_p(test.p)})"


@functools.cache
def _paper() -> Paper:
    return load_paper(REPO_ROOT / "experiments" / "paper")


def _paper_text(topic: str, row: str, metric: str) -> str:
    """A value of ``experiments/paper/tables_tpami.csv`` as the paper prints it ("not found" when absent)."""
    return _paper().text(topic, row, metric)


def ccl_checks(frame: pd.DataFrame, threshold: float = SUCCESS_MIOU_PCT) -> list[Check]:
    """Piecewise vs quadratic success counts (Fisher) and the CCL's mIoU gain (Welch), from the CCL study's runs."""
    piece, quad, plain = (successes(frame, v, threshold) for v in ("ccl_piecewise", "ccl_quadratic", "r2"))
    p_form = fisher_exact_p(*piece, *quad)
    rate = lambda wins: wins[0] / wins[1] if wins[1] else math.nan  # noqa: E731
    gain = _test(_miou(frame, "ccl_piecewise"), _miou(frame, "r2"))
    command = "nox -s mechanism_ccl"
    gain_paper = _paper_text("ccl", "CCL gain", "mIoU gain")
    return [
        Check(
            "mechanism_ccl_piecewise_reliable",
            "With the CCL, the piecewise distance makes training fail less often than the quadratic one (task: "
            "the long-range task, where a run can stall at chance; it can show which distance fails more often "
            "here, not the paper's Cityscapes success rates)",
            f"{_paper_text('ccl', 'piecewise distance: training runs that succeed', 'success')} vs "
            f"{_paper_text('ccl', 'quadratic distance: training runs that succeed', 'success')} runs succeed (secondary)",
            f"piecewise {piece[0]}/{piece[1]}, quadratic {quad[0]}/{quad[1]} succeed (Fisher exact {_p(p_form)}); "
            f"no CCL {plain[0]}/{plain[1]}",
            "mechanism_ccl.md",
            mechanism_verdict(rate(piece) - rate(quad), p_form),
            command,
        ),
        Check(
            "mechanism_ccl_helps",
            "The CCL raises val mIoU (task: the long-range task; its outcome is bimodal, about 35% or 100%, so "
            f"10 seeds can resolve a large change, never a gain of {gain_paper} points)",
            f"+{gain_paper} mIoU (about, secondary)",
            f"piecewise CCL minus no CCL: {_welch_text(gain)}",
            "mechanism_ccl.md",
            mechanism_verdict(gain.diff, gain.p),
            command,
        ),
    ]


def _gammas(value) -> list[float]:
    """gamma per block of one run: a list (in memory) or its JSON text (read back from the CSV)."""
    if isinstance(value, (list, tuple)):
        return [float(g) for g in value]
    if isinstance(value, str):
        return [float(g) for g in json.loads(value)]
    return [] if value is None or (isinstance(value, float) and math.isnan(value)) else [float(value)]


def gamma_check(frame: pd.DataFrame) -> Check:
    """gamma init 0 vs 1: runs that learn two-hop context within their budget (Fisher), same-seed slowdown."""
    learned = {v: frame[(frame["variant"] == v) & frame["iterations_to_learn"].notna()] for v in ("gamma0", "gamma1")}
    runs = {v: frame[frame["variant"] == v] for v in ("gamma0", "gamma1")}
    counts = {v: (len(learned[v]), len(runs[v])) for v in runs}
    p = fisher_exact_p(*counts["gamma1"], *counts["gamma0"])
    budget = int(runs["gamma0"]["iterations_run"].max()) if len(runs["gamma0"]) else 0
    ratios = []
    for _, row in learned["gamma0"].iterrows():
        twin = learned["gamma1"][learned["gamma1"]["seed"] == row["seed"]]
        if len(twin):
            ratios.append((int(row["seed"]), float(row["iterations_to_learn"]) / float(twin["iterations_to_learn"].iloc[0])))
    same_seed = "; ".join(f"seed {s}: {r:.1f}x slower than gamma = 1 on the same seed" for s, r in ratios)
    abs_gamma = {v: [abs(g) for x in runs[v]["gamma"] for g in _gammas(x)] for v in runs}
    mean_abs = {v: sum(g) / len(g) if g else math.nan for v, g in abs_gamma.items()}
    rate = {v: c[0] / c[1] if c[1] else math.nan for v, c in counts.items()}
    ours = (
        f"learned within the budget (at most {budget} iterations): gamma = 0 {counts['gamma0'][0]}/{counts['gamma0'][1]}, "
        f"gamma = 1 {counts['gamma1'][0]}/{counts['gamma1'][1]} (Fisher exact {_p(p)})"
        + (f"; {same_seed}" if same_seed else "")
        + f"; mean |gamma| at the end {mean_abs['gamma0']:.2f} vs {mean_abs['gamma1']:.2f}"
    )
    return Check(
        "mechanism_rcca_gamma_zero_init_slows",
        "RCCA R=2 with gamma initialised to 0 (the paper's init) learns two-hop context more slowly than with "
        "gamma = 1 (task: labels that need two hops, whose signal is of order gamma^2; it can show the slowdown "
        "on this task and budget, not an effect on the paper's accuracy)",
        "gamma = 0 at init (design; no accuracy figure)",
        ours,
        "mechanism_gamma.md",
        mechanism_verdict(rate["gamma1"] - rate["gamma0"], p),
        "nox -s mechanism_gamma",
    )


def stacking_checks(frame: pd.DataFrame) -> list[Check]:
    """+HV and +HV&VH against criss-cross R=2: the same accuracy (equivalence within ± EQUIVALENCE_MIOU)."""
    checks = []
    labels = {"hv": "row-then-column attention (+HV)", "hv_vh": "row-then-column plus column-then-row attention (+HV&VH)"}
    for variant, label in labels.items():
        if not (frame["variant"] == variant).any():
            continue
        test = _test(_miou(frame, variant), _miou(frame, "r2"))
        wins = successes(frame, variant)
        checks.append(
            Check(
                f"mechanism_context_{variant}_vs_rcca",
                f"{label[0].upper()}{label[1:]} gives every pixel full-image context as criss-cross R=2 does: the same "
                "accuracy (task: a cue sharing no row or column with its blob; it can show that both reach it, not "
                "the paper's Cityscapes values of these rows, which our sources lack)",
                "values of the +HV rows not in our sources",
                f"`{variant}` minus `r2`: {_welch_text(test)}; `{variant}` succeeds {wins[0]}/{wins[1]}",
                "mechanism_stacking.md",
                equivalence_verdict(test),
                "nox -s mechanism_stacking",
            )
        )
    return checks


def video_check(frame: pd.DataFrame) -> Check:
    """3D criss-cross attention T=5 vs T=1 on clips whose label needs another frame (Welch)."""
    test = _test(_miou(frame, "ccnet3d_t5"), _miou(frame, "ccnet3d_t1"))
    return Check(
        "mechanism_video_3d_context",
        "3D criss-cross attention carries information along time (task: clips whose centre-frame label is shown "
        "only in another frame, so only T > 1 can solve it; it shows the time axis works, not CamVid's gain of "
        "T=5 over T=1)",
        f"CCNet3D T=5 {_paper_text('camvid', 'CCNet3D (T=5)', 'mIoU')} vs T=1 "
        f"{_paper_text('camvid', 'CCNet3D (T=1)', 'mIoU')} mIoU on CamVid (secondary)",
        f"T=5 minus T=1: {_welch_text(test)}",
        "mechanism_video.md",
        mechanism_verdict(test.diff, test.p),
        "nox -s mechanism_video",
    )


def longrange_check(frame: pd.DataFrame) -> Check:
    """R=2 vs R=1 on the long-range task, from the per-variant summary (mean, std, seeds)."""
    r1, r2 = frame.loc["r1"], frame.loc["r2"]
    test = welch_from_stats(
        float(r2["miou_mean"]), float(r2["miou_std"]), int(r2["seeds"]), float(r1["miou_mean"]), float(r1["miou_std"]), int(r1["seeds"])
    )
    return Check(
        "mechanism_r2_reaches_every_pixel",
        "Two loops reach every pixel (full-image context) where one loop cannot (task: a cue sharing no row or "
        "column with its blob, so only two hops carry it; it shows the second loop's reach, not the size of the "
        "paper's Cityscapes gain)",
        "R=2 collects full-image context; R=1 only the cross (the paper's argument); Cityscapes val "
        f"{_paper_text('recurrence', 'RCCA R=2', 'mIoU')} vs {_paper_text('recurrence', 'RCCA R=1', 'mIoU')}",
        f"R=2 minus R=1: {_welch_text(test)} ({int(r2['seeds'])} seeds each)",
        "longrange.md",
        mechanism_verdict(test.diff, test.p),
        "nox -s reproduce_longrange",
    )


def report_hardware(path: Path) -> str:
    """The hardware a generated report names in its provenance line ("" when not found)."""
    if not path.is_file():
        return ""
    match = re.search(r" on (.+?), commit `", path.read_text())
    return match.group(1) if match else ""


def mechanism_checks(reports: str | Path) -> list[Check]:
    """Every check whose input is on disk under ``reports`` (a missing input: its checks are left out)."""
    reports = Path(reports)
    checks: list[Check] = []
    longrange = reports / "longrange.csv"
    if longrange.is_file():
        frame = pd.read_csv(longrange).set_index("variant")
        if {"r1", "r2"} <= set(frame.index):
            checks.append(longrange_check(frame))
    builders = {
        "mechanism_ccl": lambda f: ccl_checks(f),
        "mechanism_gamma": lambda f: [gamma_check(f)],
        "mechanism_stacking": stacking_checks,
        "mechanism_video": lambda f: [video_check(f)],
    }
    for name, build in builders.items():
        path = reports / f"{name}_runs.csv"
        if path.is_file():
            checks += build(pd.read_csv(path))
    return checks
