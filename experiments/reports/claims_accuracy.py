"""The accuracy claims of ``reports/claims.md``: each table's headline (R=2 beats R=1, RCCA beats the other
context modules, the CCL, 3D context, Mask R-CNN), the state-of-the-art figures and the long-range mechanism
test. See :mod:`experiments.reports.claims`."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from experiments.reports.claims_efficiency import GPU_TRAINING, Paper, claim_row, ours

__all__ = ["COMPARISONS", "SOTA", "accuracy_rows"]


@dataclass(frozen=True)
class Comparison:
    """A table headline: ``better`` beats each of ``others`` on ``metric`` (ours rows of table ``table``)."""

    claim_id: str
    claim: str
    table: int
    metric: str
    better: str
    others: tuple[str, ...]
    paper: Callable[[Paper], str]
    command: str
    single_run: bool = True  # False: the claim is about many runs (success rates), not one result per row


def _comparison_row(c: Comparison, paper: Paper, reports: Path) -> dict:
    best = ours(reports, c.table, c.better, c.metric)
    rest = {key: ours(reports, c.table, key, c.metric) for key in c.others}
    paper_text = c.paper(paper)
    if (
        c.single_run
        and best is not None
        and best.scale == "full"
        and all(r is not None and r.scale == "full" for r in rest.values())
    ):
        wins = sum(best.value > r.value for r in rest.values())
        verdict = "holds" if wins == len(rest) else ("does not hold" if wins == 0 else "holds in part")
        text = f"{c.better} {best.value:.2f} vs " + ", ".join(f"{k} {r.value:.2f}" for k, r in rest.items())
        return claim_row(c.claim_id, c.claim, paper_text, text, best.report, "full", best.hardware, verdict, c.command)
    return _not_testable(c.claim_id, c.claim, paper_text, best, c.table, c.command)


def _not_testable(claim_id: str, claim: str, paper_text: str, result, table: int, command: str) -> dict:
    """The row of a claim without the full-scale results it needs (``result``: ours at any scale, or None)."""
    smoke = result is not None and result.scale == "smoke"
    text = "smoke run only: the pipeline runs end to end; no full-scale result" if smoke else "no result yet"
    scale, hardware = (result.scale, result.hardware) if result else ("", "")
    return claim_row(
        claim_id, claim, paper_text, text, f"table{table}.md", scale, hardware, "not testable here",
        f"{command}  (needs {GPU_TRAINING})",
    )  # fmt: skip


def _full(table: int, data: str, extra: str = "") -> str:
    return (
        f"nox -s reproduce_table{table} -- --scale full --data-root data/{data} --pretrained weights/resnet101.pth "
        f"--device cuda{extra}"
    )


def _pair(topic: str, a: str, b: str, metric: str = "mIoU", backbone: str | None = None) -> Callable[[Paper], str]:
    return lambda p: f"{b} {p.text(topic, b, metric, backbone)} vs {a} {p.text(topic, a, metric, backbone)} (secondary)"


COMPARISONS = (
    Comparison(
        "r2_beats_r1",
        "Two loops of criss-cross attention (R=2) beat one (R=1) on Cityscapes val",
        2,
        "miou",
        "r2",
        ("r1",),
        _pair("recurrence", "RCCA R=1", "RCCA R=2"),
        _full(2, "cityscapes", " --nproc 4"),
    ),
    Comparison(
        "rcca_beats_context",
        "RCCA beats the other context modules (GCN, PSP, ASPP, NL) on one baseline",
        4,
        "miou",
        "ccnet_r2",
        ("psp", "aspp", "nonlocal", "fcn"),
        lambda p: (
            "RCCA "
            + p.text("context", "+RCCA (R=2)", "mIoU")
            + " vs NL "
            + p.text("context", "+NL", "mIoU")
            + ", ASPP "
            + p.text("context", "+ASPP", "mIoU")
            + ", PSP "
            + p.text("context", "+PSP", "mIoU")
            + ", GCN "
            + p.text("context", "+GCN", "mIoU")
            + " (secondary)"
        ),
        _full(4, "cityscapes", " --nproc 4"),
    ),
    Comparison(
        "ccl_helps",
        "The category consistent loss improves mIoU (about +0.7)",
        3,
        "miou",
        "ccl",
        ("no_ccl",),
        lambda p: f"+{p.text('ccl', 'CCL gain', 'mIoU gain')} mIoU (secondary)",
        _full(3, "cityscapes", " --nproc 4"),
    ),
    Comparison(
        "ccl_piecewise_reliable",
        "The piecewise distance trains more reliably than the quadratic one",
        3,
        "miou",
        "ccl",
        ("ccl_quadratic",),
        lambda p: (
            f"{p.text('ccl', 'piecewise distance: training runs that succeed', 'success')} vs "
            f"{p.text('ccl', 'quadratic distance: training runs that succeed', 'success')} runs succeed (secondary)"
        ),
        _full(3, "cityscapes", " --nproc 4") + " (10 seeds per row)",
        single_run=False,
    ),
    Comparison(
        "video_3d_context",
        "3D criss-cross attention over more frames helps video (CamVid, T=5 vs T=1)",
        9,
        "miou",
        "ccnet3d_t5",
        ("ccnet3d_t1",),
        _pair("camvid", "CCNet3D (T=1)", "CCNet3D (T=5)"),
        _full(9, "camvid"),
    ),
    Comparison(
        "maskrcnn_rcca_r50",
        "RCCA improves Mask R-CNN (ResNet-50, box AP)",
        8,
        "box_ap",
        "maskrcnn_rcca_r50",
        ("maskrcnn_r50",),
        _pair("coco", "Mask R-CNN baseline", "+RCCA", "box AP", "ResNet-50"),
        "nox -s reproduce_table8 -- --scale full --data-root data/coco --pretrained weights/resnet50.pth --device cuda",
    ),
    Comparison(
        "maskrcnn_rcca_r101",
        "RCCA improves Mask R-CNN (ResNet-101, mask AP)",
        8,
        "mask_ap",
        "maskrcnn_rcca_r101",
        ("maskrcnn_r101",),
        _pair("coco", "Mask R-CNN baseline", "+RCCA", "mask AP", "ResNet-101"),
        "nox -s reproduce_table8 -- --scale full --data-root data/coco --pretrained weights/resnet101.pth --device cuda",
    ),
)

SOTA = (  # (claim_id, claim name in claims.csv, table, ours row, what is compared, dataset)
    ("sota_cityscapes", "ccnet_cityscapes_test", 1, "ccnet_r2", "Cityscapes test mIoU", "cityscapes", " --nproc 4"),
    ("sota_ade20k", "ccnet_ade20k_val", 6, "ccnet_r2", "ADE20K val mIoU", "ade20k", " --nproc 4"),
    ("sota_lip", "ccnet_lip_val", 7, "ccnet_r2", "LIP val mIoU", "lip", " --nproc 4"),
)


def _sota_rows(paper: Paper, reports: Path) -> list[dict]:
    rows = []
    for claim_id, name, table, key, what, data, extra in SOTA:
        mine = ours(reports, table, key, "miou")
        claim = f"CCNet reaches the state of the art: {what}"
        if mine is not None and mine.scale == "full":
            goal = float(paper.claims.loc[paper.claims["claim"] == name, "value"].iloc[0])
            verdict = "holds" if mine.value >= goal - 1.0 else "does not hold"
            rows.append(
                claim_row(
                    claim_id,
                    claim,
                    paper.claim(name),
                    f"{mine.value:.2f}",
                    mine.report,
                    "full",
                    mine.hardware,
                    verdict,
                    _full(table, data, extra),
                )
            )
            continue
        rows.append(_not_testable(claim_id, claim, paper.claim(name), mine, table, _full(table, data, extra)))
    return rows


def _longrange_row(reports: Path) -> list[dict]:
    path = reports / "longrange.csv"
    if not path.is_file():
        return []
    frame = pd.read_csv(path).set_index("variant")
    if not {"r1", "r2"} <= set(frame.index):
        return []
    r1, r2 = frame.loc["r1"], frame.loc["r2"]
    verdict = "holds" if r2["miou_mean"] - r2["miou_std"] > r1["miou_mean"] + r1["miou_std"] else "does not hold"
    return [
        claim_row(
            "r2_beats_r1",
            "Two loops reach every pixel (full-image context) where one loop cannot (mechanism)",
            "R=2 collects full-image context; R=1 only the cross (paper's argument)",
            f"R=2 {r2['miou_mean']:.1f} ± {r2['miou_std']:.1f} vs R=1 {r1['miou_mean']:.1f} ± {r1['miou_std']:.1f} "
            f"mIoU on the long-range task ({int(r2['seeds'])} seeds)",
            "longrange.md",
            "cpu-mechanism",
            "CPU",
            verdict,
            "nox -s reproduce_longrange",
        )
    ]


def accuracy_rows(paper: Paper, reports: Path) -> list[dict]:
    """The state-of-the-art rows, then each table headline (the long-range mechanism row after R=2 vs R=1)."""
    rows = _sota_rows(paper, reports)
    for comparison in COMPARISONS:
        rows.append(_comparison_row(comparison, paper, reports))
        if comparison.claim_id == "r2_beats_r1":
            rows += _longrange_row(reports)
    return rows
