"""``reports/table5.md`` as the paper prints its efficiency table: one row per block (+NL, +NL x2, +RCCA
R=1/2/3), columns GFLOPs, memory and mIoU, the paper's value beside ours; the variants (two crops, forward
alone, other non-local forms) in a second table; and the verdict on the paper's +NL memory stated there.

Built from the comparison frame of :func:`experiments.reports.tables.compare` (the long CSV stays as it
is: ``reports/claims.md`` reads it); verdicts by the efficiency rule of :mod:`experiments.reports.verdicts`.
"""

from __future__ import annotations

import math

import pandas as pd

from experiments.reports.verdicts import TOLERANCE_PCT, band, efficiency_verdict, error_text

__all__ = ["MAIN_ROWS", "VARIANT_ROWS", "displayed", "verdict_on_nonlocal_memory"]

MAIN_ROWS = (
    ("nonlocal", "+NL"),
    ("nonlocal_x2", "+NL x2"),
    ("rcca_r1", "+RCCA (R=1)"),
    ("rcca_r2", "+RCCA (R=2)"),
    ("rcca_r3", "+RCCA (R=3)"),
)
VARIANT_ROWS = (  # (our row, compared with the paper's row of, what changes)
    ("nonlocal_batch2", "nonlocal", "+NL, two crops per GPU"),
    ("nonlocal_x2_batch2", "nonlocal_x2", "+NL x2, two crops per GPU"),
    ("rcca_r2_batch2", "rcca_r2", "+RCCA (R=2), two crops per GPU"),
    ("nonlocal_inference", "nonlocal", "+NL, forward alone (inference)"),
    ("rcca_r2_inference", "rcca_r2", "+RCCA (R=2), forward alone (inference)"),
    ("nl_2018_matmul", "nonlocal", "+NL as the 2018 PyTorch port of Wang et al. (matmul)"),
    ("nl_2018_scaled", "nonlocal", "+NL as OCNet's 2018 self-attention (scaled)"),
    ("nl_no_reduction", "nonlocal", "+NL with all 512 channels inside"),
    ("nl_subsampled", "nonlocal", "+NL with 2x2 max pooling on phi and g"),
)
NOT_IN_SOURCES = "not in our sources"


def _number(value) -> float | None:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return None if math.isnan(number) else number


def _cell(frame: pd.DataFrame, key: str, metric: str) -> tuple[float | None, float | None]:
    """(the paper's value, ours) of our row ``key`` and ``metric`` in the comparison frame."""
    hits = frame[(frame["ours_row"] == key) & (frame["metric"] == metric)]
    if not len(hits):
        return None, None
    paper = next((p for p in map(_number, hits["paper"]) if p is not None), None)
    ours = next((o for o in map(_number, hits["ours"]) if o is not None), None)
    return paper, ours


def _ours_text(ours: float | None, paper: float | None, error_pct: float, digits: int) -> str:
    if ours is None:
        return "not run"
    text = f"{ours:.{digits}f}"
    if error_pct:
        text += f" {error_text(error_pct)}"
    if paper is not None:
        text += f" (**{efficiency_verdict(*band(ours, error_pct), paper)}**)"
    return text


def displayed(frame: pd.DataFrame, memory_error_pct: float) -> list[tuple[str, pd.DataFrame]]:
    """The two tables of table5.md: the paper's table, then the variants."""
    main = []
    for key, label in MAIN_ROWS:
        gflops_paper, gflops = _cell(frame, key, "gflops_increment")
        memory_paper, memory = _cell(frame, key, "memory_increment_mb")
        miou_paper, miou = _cell(frame, key, "miou")
        main.append(
            {
                "": label,
                "GFLOPs: paper": f"{gflops_paper:g}" if gflops_paper is not None else NOT_IN_SOURCES,
                "GFLOPs: ours": _ours_text(gflops, gflops_paper, 0.0, 2),
                "memory (MB): paper": f"{memory_paper:g}" if memory_paper is not None else NOT_IN_SOURCES,
                "memory (MB): ours": _ours_text(memory, memory_paper, memory_error_pct, 1),
                "mIoU (%): paper": f"{miou_paper:g}" if miou_paper is not None else NOT_IN_SOURCES,
                "mIoU (%): ours": f"{miou:.1f}" if miou is not None else "not run (needs Cityscapes and GPUs)",
            }
        )
    variants = []
    for key, paper_key, label in VARIANT_ROWS:
        _, gflops = _cell(frame, key, "gflops_increment")
        _, memory = _cell(frame, key, "memory_increment_mb")
        paper_memory, _ = _cell(frame, paper_key, "memory_increment_mb")
        if gflops is None and memory is None:
            continue
        paper_label = dict(MAIN_ROWS)[paper_key]
        variants.append(
            {
                "": label,
                "row": f"`{key}`",
                "GFLOPs": f"{gflops:.2f}" if gflops is not None else "not run",
                "memory (MB)": f"{memory:.1f}" if memory is not None else "not run",
                "against the paper's": (
                    f"{paper_label} {paper_memory:g} MB: {memory / paper_memory - 1:+.0%}"
                    if memory is not None and paper_memory
                    else "—"
                ),
            }
        )
    return [
        ("The paper's table: increments over the ResNet-50 network (paper | ours)", pd.DataFrame(main)),
        ("Variants: one assumption changed at a time (not in the paper's table)", pd.DataFrame(variants)),
    ]


def verdict_on_nonlocal_memory(frame: pd.DataFrame, memory_error_pct: float) -> str:
    """The sentence table5.md states on the paper's +NL memory (``memory_increment_mb`` of the ``nonlocal`` row
    of ``experiments/paper/table05_efficiency.csv``), by the declared rule."""
    paper, ours = _cell(frame, "nonlocal", "memory_increment_mb")
    if paper is None or ours is None:
        return "The paper's +NL memory is not compared: the `nonlocal` row has not run at this scale."
    low, high = band(ours, memory_error_pct)
    verdict = efficiency_verdict(low, high, paper)
    within = [
        key
        for key, paper_key, _ in VARIANT_ROWS
        if paper_key == "nonlocal" and (value := _cell(frame, key, "memory_increment_mb")[1]) is not None
        and efficiency_verdict(*band(value, memory_error_pct), paper) != "does not hold"
    ]  # fmt: skip
    band_text = "unbounded" if math.isinf(high) else f"[{low:.0f}, {high:.0f}] MB"
    return (
        f"**Verdict on the paper's +NL {paper:g} MB**: ours {ours:.1f} MB with the allocation model's "
        f"{error_text(memory_error_pct)} ({band_text}) against {paper:g} MB ± {TOLERANCE_PCT:g}%: **{verdict}** "
        "(the declared efficiency rule, `experiments/reports/verdicts.py`; the error as claims.md states it). "
        + (
            f"Variants of the non-local row not excluded by the same rule: {', '.join(f'`{k}`' for k in within)}."
            if within
            else "No variant of the non-local row below reaches it either."
        )
    )
