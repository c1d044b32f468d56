"""Published full-scale runs that no one here made, as evidence beside our own on ``reports/claims.md``.

Two sources, copied into ``experiments/paper/``: ``official_code.csv`` (the authors' released code: three
Cityscapes val runs each of R=1, R=2 and R=2+OHEM, and one test-set figure) and ``third_party.csv``
(mmsegmentation's and PaddleSeg's CCNet results with their settings, and mmcv's timing of the official CUDA
kernel against einsum; each row with repository, path and commit). Every text says whose runs they are
and how their setting differs from the paper's; every verdict follows :mod:`experiments.reports.verdicts`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from experiments.reports.verdicts import claim_verdict, prediction_band, welch

__all__ = ["Published", "Sources", "load_sources", "published_evidence", "spread_groups"]


@dataclass(frozen=True)
class Published:
    """The "published runs" cell of a claim and its verdict."""

    text: str
    verdict: str  # "holds" / "does not hold" / "not resolved", or "" (evidence without a verdict)


@dataclass(frozen=True)
class Sources:
    official: pd.DataFrame
    third_party: pd.DataFrame


def load_sources(paper_dir: str | Path) -> Sources | None:
    """Both CSVs (None when either is missing: claims.md then says so)."""
    paper_dir = Path(paper_dir)
    paths = [paper_dir / "official_code.csv", paper_dir / "third_party.csv"]
    if not all(p.is_file() for p in paths):
        return None
    official, third = (pd.read_csv(p, dtype=str, keep_default_na=False) for p in paths)
    return Sources(official, third)


def _runs(official: pd.DataFrame, recurrence: str, ohem: str = "no") -> list[float]:
    rows = official[(official["recurrence"] == recurrence) & (official["ohem"] == ohem) & (official["split"] == "val")]
    return [float(v) for _, r in rows.iterrows() for v in (r["run1_miou"], r["run2_miou"], r["run3_miou"]) if v != ""]


def spread_groups(src: Sources | None) -> list[list[float]]:
    """The authors' repeated val runs per configuration (R=1, R=2, R=2 + OHEM): the run-to-run spread."""
    if src is None:
        return []
    return [g for g in (_runs(src.official, "1"), _runs(src.official, "2"), _runs(src.official, "2", "yes")) if len(g) >= 2]


def _official_setting(official: pd.DataFrame) -> str:
    r = official.iloc[0]
    return f"{int(r['steps']) // 1000}k steps, {r['crop']} crop, batch {r['batch']}, {r['test_mode']}; {r['source']}, {r['confidence']}"


def _r2_vs_r1(src: Sources) -> Published | None:
    r2, r1 = _runs(src.official, "2"), _runs(src.official, "1")
    if len(r2) < 2 or len(r1) < 2:
        return None
    test = welch(r2, r1)
    text = (
        f"the authors' released code, Cityscapes val, {len(r2)} runs each ({_official_setting(src.official)}): R=2 "
        f"{' / '.join(f'{v:.2f}' for v in r2)} vs R=1 {' / '.join(f'{v:.2f}' for v in r1)}; R=2 minus R=1 "
        f"{test.diff:+.2f}, 95% Welch interval {test.interval_text(2)} (Welch df {test.df:.1f}, p = {test.p:.3f})"
    )
    return Published(text, claim_verdict(test.diff, test.p))


def _against_figure(src: Sources, rows: pd.DataFrame, figure: float, what: str) -> Published | None:
    """Single published runs against the paper's ``figure``: each holds when it reaches the lower end of the
    95% prediction band of one run (spread of the authors' three R=2 runs)."""
    spread = _runs(src.official, "2")
    if not len(rows) or len(spread) < 2:
        return None
    low, _ = prediction_band(spread, figure)
    parts, verdicts = [], []
    for _, r in rows.iterrows():
        value = float(r["value"])
        verdict = "holds" if value >= low else "does not hold"
        verdicts.append(verdict)
        notes = f"; {r['notes']}" if r.get("notes") else ""
        parts.append(
            f"{r['system']} {r['what']}, {r['backbone']}, {r['crop']}, {int(r['iterations']) // 1000}k iterations, batch "
            f"{r['batch']}, {r['test_mode']}{notes}: {value:.2f} ({verdict})"
        )
    overall = verdicts[0] if len(set(verdicts)) == 1 else "not resolved"
    text = (
        f"others' runs, not the paper's setting ({what}): "
        + "; ".join(parts)
        + f". Band: one run reaches {figure:g} within the authors' run-to-run spread if >= {low:.2f}"
    )
    return Published(text, overall)


def _third(src: Sources, **match: str) -> pd.DataFrame:
    frame = src.third_party
    for column, value in match.items():
        frame = frame[frame[column] == value]
    return frame


def _official_test(src: Sources, figure: float) -> Published | None:
    rows = src.official[src.official["split"] == "test"]
    spread = _runs(src.official, "2")
    if not len(rows) or len(spread) < 2:
        return None
    r = rows.iloc[0]
    low, _ = prediction_band(spread, figure)
    value = float(r["best_miou"])
    verdict = "holds" if value >= low else "does not hold"
    return Published(
        f"the authors' released code (R={r['recurrence']}, {int(r['steps']) // 1000}k steps, {r['test_mode']}; "
        f"{r['source']}, {r['confidence']}): Cityscapes test {value:.2f}, one run; the paper's figure may use other "
        f"test-time settings. Band: >= {low:.2f} ({verdict})",
        verdict,
    )


def _mmcv_kernel(src: Sources) -> Published | None:
    rows = _third(src, system="mmcv (PR 1186)", metric="time")
    if len(rows) < 2:
        return None
    kernel = rows[rows["what"].str.contains("CUDA")]
    einsum = rows[rows["what"].str.contains("einsum")]
    if not len(kernel) or not len(einsum):
        return None
    k, e = float(kernel["value"].iloc[0]), float(einsum["value"].iloc[0])
    return Published(
        f"no published FLOPs count; mmcv measured one forward of an official-style CUDA criss-cross kernel at "
        f"{1000 * k:.1f} ms against {1000 * e:.1f} ms for einsum ({kernel['notes'].iloc[0].split(';')[0]}; "
        f"{kernel['hardware'].iloc[0]}): {k / e:.1f}x slower. Fewer FLOPs did not make that kernel fast; the paper "
        "claims FLOPs, not time, so no verdict",
        "",
    )


def published_evidence(claim_id: str, src: Sources | None, figure: float | None = None) -> Published | None:
    """The published-runs evidence of ``claim_id`` (None when no published run bears on it)."""
    if src is None:
        return None
    if claim_id == "r2_beats_r1":
        return _r2_vs_r1(src)
    if claim_id == "r2_val_miou" and figure is not None:
        rows = pd.concat(
            [
                _third(src, system="mmsegmentation", backbone="R-101-D8", dataset="Cityscapes", crop="769x769", test_mode="single scale"),
                _third(src, system="PaddleSeg", dataset="Cityscapes", test_mode="single scale"),
            ]
        )
        return _against_figure(src, rows, figure, "other iterations, crops per GPU and backbone variants")
    if claim_id == "r50_rcca_miou" and figure is not None:
        rows = _third(src, system="mmsegmentation", backbone="R-50-D8", dataset="Cityscapes", crop="769x769", test_mode="single scale")
        return _against_figure(src, rows, figure, "40k/80k iterations at batch 8 instead of 60k")
    if claim_id == "sota_ade20k" and figure is not None:
        rows = _third(src, system="mmsegmentation", backbone="R-101-D8", dataset="ADE20K", test_mode="multi-scale + flip")
        return _against_figure(src, rows, figure, "multi-scale + flip test; the spread borrowed from Cityscapes")
    if claim_id == "sota_cityscapes" and figure is not None:
        return _official_test(src, figure)
    if claim_id == "flops_85pct":
        return _mmcv_kernel(src)
    return None
