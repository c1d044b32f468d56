"""The accuracy claims of ``reports/claims.md``: each table's headline (R=2 beats R=1, RCCA beats the other
context modules, the CCL, 3D context, Mask R-CNN), the paper's val figures and the state-of-the-art figures,
each with our evidence and the published runs that bear on it. See :mod:`experiments.reports.claims`."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from experiments.reports.claims_efficiency import GPU_TRAINING, Evidence, Paper, claim_row, ours
from experiments.reports.published import Sources, published_evidence, spread_groups
from experiments.reports.verdicts import claim_verdict, single_runs_test

__all__ = ["COMPARISONS", "SOTA", "accuracy_rows", "compared_rows"]


@dataclass(frozen=True)
class Comparison:
    """A table headline: the row ``better`` beats each of the rows ``others`` on ``metric``.

    ``better`` and ``others`` are rows of the paper's ``experiments/paper/table<NN>_*.csv``; ours are their
    ``ours_row`` (a paper row without one, e.g. +GCN, has nothing of ours to compare and is named as such).
    """

    claim_id: str
    claim: str
    table: int
    metric: str
    better: str
    others: tuple[str, ...]
    paper: Callable[[Paper], str]
    command: str
    single_run: bool = True  # False: the claim is about many runs (success rates), not one result per row


def compared_rows(paper_dir: Path, table: int, rows: tuple[str, ...]) -> dict[str, str]:
    """Paper row -> our row (``ours_row`` of ``table<NN>_*.csv``; "" when the paper's row has none of ours)."""
    found = sorted(paper_dir.glob(f"table{table:02d}_*.csv"))
    if not found:
        raise FileNotFoundError(f"no paper table CSV table{table:02d}_*.csv in {paper_dir}")
    frame = pd.read_csv(found[0], dtype=str, keep_default_na=False).set_index("row")
    missing = [r for r in rows if r not in frame.index]
    if missing:
        raise ValueError(f"{found[0].name} has no row(s) {missing}")
    return {r: frame.loc[r, "ours_row"] for r in rows}


def _comparison_row(c: Comparison, paper: Paper, reports: Path, paper_dir: Path, src: Sources | None) -> dict:
    keys = compared_rows(paper_dir, c.table, (c.better, *c.others))
    best = ours(reports, c.table, keys[c.better], c.metric) if keys[c.better] else None
    rest = {row: (ours(reports, c.table, key, c.metric) if key else None) for row, key in keys.items() if row != c.better}
    paper_text = c.paper(paper)
    published = published_evidence(c.claim_id, src)
    absent = [row for row, key in keys.items() if not key]
    groups = spread_groups(src)
    full = lambda e: e is not None and e.scale == "full"  # noqa: E731
    if c.single_run and full(best) and all(full(r) for row, r in rest.items() if row not in absent) and groups:
        tests = {row: single_runs_test(best.value, r.value, groups) for row, r in rest.items() if r is not None}
        verdicts = {claim_verdict(t.diff, t.p) for t in tests.values()}
        verdict = "does not hold" if "does not hold" in verdicts else ("holds" if verdicts == {"holds"} else "not resolved")
        if absent and verdict == "holds":
            verdict = "not resolved"  # a compared row the paper has and we do not
        text = f"{keys[c.better]} {best.value:.2f} vs " + ", ".join(
            f"{keys[row]} {r.value:.2f} (p = {tests[row].p:.3f})" for row, r in rest.items() if r is not None
        )
        text += "; one run per row, tested against the authors' run-to-run spread"
        if absent:
            text += f"; no row of ours for the paper's {', '.join(absent)}"
        return claim_row(c.claim_id, c.claim, paper_text, text, best.report, "full", best.hardware, verdict, c.command, published)
    why = "" if keys[c.better] else "no row of ours measures it (success rates over many runs: 10 seeds per row at full scale)"
    return _not_testable(c.claim_id, c.claim, paper_text, best, c.table, c.command, published, why)


def _not_testable(claim_id, claim, paper_text, result: Evidence | None, table: int, command: str, published=None, why="") -> dict:
    """The row of a claim without the full-scale results it needs (``result``: ours at any scale, or None)."""
    smoke = result is not None and result.scale == "smoke"
    text = why or ("smoke run only: the pipeline runs end to end; no full-scale result" if smoke else "no result yet")
    scale, hardware = (result.scale, result.hardware) if result else ("", "")
    return claim_row(
        claim_id, claim, paper_text, text, f"table{table}.md", scale, hardware, "not testable here",
        f"{command}  (needs {GPU_TRAINING})", published,
    )  # fmt: skip


def _full(table: int, data: str, extra: str = "") -> str:
    return (
        f"nox -s reproduce_table{table} -- --scale full --data-root data/{data} --pretrained weights/resnet101.pth "
        f"--device cuda{extra}"
    )


def _pair(topic: str, a: str, b: str, metric: str = "mIoU", backbone: str | None = None) -> Callable[[Paper], str]:
    return lambda p: f"{b} {p.text(topic, b, metric, backbone)} vs {a} {p.text(topic, a, metric, backbone)} (secondary)"


def _context_paper(p: Paper) -> str:
    named = (("RCCA", "+RCCA (R=2)"), ("NL", "+NL"), ("ASPP", "+ASPP"), ("PSP", "+PSP"), ("GCN", "+GCN"))
    return ", ".join(f"{short} {p.text('context', row, 'mIoU')}" for short, row in named) + " (secondary)"


COMPARISONS = (
    Comparison(
        "r2_beats_r1", "Two loops of criss-cross attention (R=2) beat one (R=1) on Cityscapes val", 2, "miou",
        "r2", ("r1",), _pair("recurrence", "RCCA R=1", "RCCA R=2"), _full(2, "cityscapes", " --nproc 4"),
    ),
    Comparison(
        "rcca_beats_context", "RCCA beats the other context modules (GCN, PSP, ASPP, NL) on one baseline", 4, "miou",
        "rcca", ("gcn", "psp", "aspp", "nonlocal"), _context_paper, _full(4, "cityscapes", " --nproc 4"),
    ),
    Comparison(
        "ccl_helps", "The category consistent loss improves mIoU (about +0.7)", 3, "miou", "ccl", ("no_ccl",),
        lambda p: f"+{p.text('ccl', 'CCL gain', 'mIoU gain')} mIoU (secondary)", _full(3, "cityscapes", " --nproc 4"),
    ),
    Comparison(
        "ccl_piecewise_reliable", "The piecewise distance trains more reliably than the quadratic one", 3, "miou",
        "piecewise_success", ("quadratic_success",),
        lambda p: (
            f"{p.text('ccl', 'piecewise distance: training runs that succeed', 'success')} vs "
            f"{p.text('ccl', 'quadratic distance: training runs that succeed', 'success')} runs succeed (secondary)"
        ),
        _full(3, "cityscapes", " --nproc 4") + " (10 seeds per row)", single_run=False,
    ),
    Comparison(
        "video_3d_context", "3D criss-cross attention over more frames helps video (CamVid, T=5 vs T=1)", 9, "miou",
        "ccnet3d_t5", ("ccnet3d_t1",), _pair("camvid", "CCNet3D (T=1)", "CCNet3D (T=5)"), _full(9, "camvid"),
    ),
    Comparison(
        "maskrcnn_rcca_r50", "RCCA improves Mask R-CNN (ResNet-50, box AP)", 8, "box_ap", "maskrcnn_rcca_r50", ("maskrcnn_r50",),
        _pair("coco", "Mask R-CNN baseline", "+RCCA", "box AP", "ResNet-50"),
        "nox -s reproduce_table8 -- --scale full --data-root data/coco --pretrained weights/resnet50.pth --device cuda",
    ),
    Comparison(
        "maskrcnn_rcca_r101", "RCCA improves Mask R-CNN (ResNet-101, mask AP)", 8, "mask_ap", "maskrcnn_rcca_r101", ("maskrcnn_r101",),
        _pair("coco", "Mask R-CNN baseline", "+RCCA", "mask AP", "ResNet-101"),
        "nox -s reproduce_table8 -- --scale full --data-root data/coco --pretrained weights/resnet101.pth --device cuda",
    ),
)  # fmt: skip

# (claim_id, claim, table, paper row of table<NN>_*.csv, its split, the figure's source: claims.csv name or
# (topic, row, metric, backbone) of tables_tpami.csv, dataset, extra command arguments)
SOTA = (
    ("sota_cityscapes", "CCNet reaches the state of the art: Cityscapes test mIoU", 1, "ccnet_tpami", "test",
     "ccnet_cityscapes_test", "cityscapes", " --nproc 4"),
    ("sota_ade20k", "CCNet reaches the state of the art: ADE20K val mIoU", 6, "ccnet_tpami", "val",
     "ccnet_ade20k_val", "ade20k", " --nproc 4"),
    ("sota_lip", "CCNet reaches the state of the art: LIP val mIoU", 7, "ccnet_tpami", "val",
     "ccnet_lip_val", "lip", " --nproc 4"),
    ("r2_val_miou", "CCNet (RCCA R=2, ResNet-101) reaches 79.8 mIoU on Cityscapes val", 2, "r2", "val",
     ("recurrence", "RCCA R=2", "mIoU", None), "cityscapes", " --nproc 4"),
    ("r50_rcca_miou", "+RCCA (R=2) on ResNet-50 reaches 78.5 mIoU on Cityscapes val (the efficiency table)", 5,
     "rcca_r2", "val", ("efficiency", "+RCCA (R=2)", "mIoU", "ResNet-50"), "cityscapes", " --nproc 4"),
)  # fmt: skip


def _figure(paper: Paper, source) -> tuple[float | None, str]:
    if isinstance(source, str):
        row = paper.claims[paper.claims["claim"] == source]
        return (float(row["value"].iloc[0]) if len(row) else None), paper.claim(source)
    value = paper.value(*source)
    return value, (f"{value:g}% (secondary)" if value is not None else "not found")


def _sota_rows(paper: Paper, reports: Path, paper_dir: Path, src: Sources | None) -> list[dict]:
    rows = []
    for claim_id, claim, table, paper_row, split, source, data, extra in SOTA:
        goal, paper_text = _figure(paper, source)
        key = compared_rows(paper_dir, table, (paper_row,))[paper_row]
        mine = ours(reports, table, key, "miou") if key else None
        published = published_evidence(claim_id, src, goal)
        command = _full(table, data, extra)
        if split == "test":  # our runs score val: a test-server figure needs a test-server submission
            why = "the paper's figure is from the Cityscapes test server; our runs score val, which is not comparable"
            if mine is not None:
                why += f" (ours: {mine.value:.2f} on val, {mine.scale} scale)"
            rows.append(_not_testable(claim_id, claim, paper_text, mine, table, command, published, why))
            continue
        if mine is not None and mine.scale == "full" and goal is not None and spread_groups(src):
            test = single_runs_test(mine.value, goal, spread_groups(src))
            verdict = "does not hold" if test.diff < 0 and test.p < 0.05 else "holds"
            text = f"{mine.value:.2f} ({test.diff:+.2f} vs the paper; p = {test.p:.3f} against the authors' run-to-run spread)"
            rows.append(claim_row(claim_id, claim, paper_text, text, mine.report, "full", mine.hardware, verdict, command, published))
            continue
        rows.append(_not_testable(claim_id, claim, paper_text, mine, table, command, published))
    return rows


def accuracy_rows(paper: Paper, reports: Path, paper_dir: Path, src: Sources | None) -> list[dict]:
    """The paper's figures (state of the art, val), then each table headline."""
    return _sota_rows(paper, reports, paper_dir, src) + [_comparison_row(c, paper, reports, paper_dir, src) for c in COMPARISONS]
