"""The evidence behind ``reports/claims.md``: the paper's CSVs, our results in the generated reports, and
the efficiency claims (table 5, the paper's methodology). See :mod:`experiments.reports.claims`."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pandas as pd

__all__ = ["CLAIM_COLUMNS", "VERDICTS", "Evidence", "Paper", "claim_row", "efficiency_rows", "load_paper", "ours"]

CLAIM_COLUMNS = ("claim_id", "claim", "paper", "ours", "report", "scale", "hardware", "verdict", "command")
VERDICTS = ("holds", "does not hold", "holds in part", "not testable here")
TOLERANCE = 0.10  # |ours / paper - 1| within which an efficiency figure "holds"
VARIANT_PAIRS = (  # (non-local row, RCCA row, what differs) of table 5, beside the headline ratio
    ("nonlocal_batch2", "rcca_r2_batch2", "two crops per GPU"),
    ("nonlocal_inference", "rcca_r2_inference", "forward alone"),
)
GPU_TRAINING = "the real dataset and GPUs (the paper: 4 GPUs, hours to days per row)"


@dataclass(frozen=True)
class Paper:
    """The paper's CSVs: ``claims.csv`` and ``tables_tpami.csv``."""

    claims: pd.DataFrame
    tables: pd.DataFrame

    def claim(self, name: str, version: str = "TPAMI 2020") -> str:
        rows = self.claims[(self.claims["claim"] == name) & self.claims["version"].str.contains(version, regex=False)]
        if not len(rows):
            return "not found"
        row = rows.iloc[0]
        unit = {"x": "x", "percent": "%", "percent (about)": "% (about)"}.get(str(row["unit"]), f" {row['unit']}")
        return f"{_num(row['value'])}{unit} ({row['confidence']}, {row['source']})"

    def value(self, topic: str, row: str, metric: str, backbone: str | None = None) -> float | None:
        rows = self.tables[
            (self.tables["topic"] == topic) & (self.tables["row"] == row) & (self.tables["metric"] == metric)
        ]
        if backbone is not None:
            rows = rows[rows["backbone"] == backbone]
        if not len(rows):
            return None
        try:
            return float(rows.iloc[0]["value"])
        except ValueError:
            return None

    def text(self, topic: str, row: str, metric: str, backbone: str | None = None) -> str:
        rows = self.tables[
            (self.tables["topic"] == topic) & (self.tables["row"] == row) & (self.tables["metric"] == metric)
        ]
        if backbone is not None:
            rows = rows[rows["backbone"] == backbone]
        if not len(rows):
            return "not found"
        return str(rows.iloc[0]["value"])


def _num(value) -> str:
    return f"{float(value):g}"


def load_paper(paper_dir: str | Path) -> Paper:
    paper_dir = Path(paper_dir)
    for name in ("claims.csv", "tables_tpami.csv"):
        if not (paper_dir / name).is_file():
            raise FileNotFoundError(f"paper values not found: {paper_dir / name}")
    read = lambda name: pd.read_csv(paper_dir / name, dtype=str, keep_default_na=False)  # noqa: E731
    return Paper(read("claims.csv"), read("tables_tpami.csv"))


# --------------------------------------------------------------------------- our evidence
@dataclass(frozen=True)
class Evidence:
    value: float
    scale: str
    hardware: str
    report: str


def ours(reports: Path, table: int, row: str, metric: str) -> Evidence | None:
    """Our value of ``metric`` for ``row`` in ``reports/table<table>.csv`` (None when not run)."""
    path = reports / f"table{table}.csv"
    if not path.is_file():
        return None
    frame = pd.read_csv(path, dtype=str, keep_default_na=False)
    hits = frame[(frame["ours_row"] == row) & (frame["metric"] == metric) & (frame["ours"] != "")]
    if not len(hits):
        return None
    hit = hits.iloc[0]
    return Evidence(float(hit["ours"]), hit["scale"], hit["hardware"], f"table{table}.md")


def claim_row(claim_id, claim, paper, ours_text, report, scale, hardware, verdict, command) -> dict:
    return dict(
        zip(CLAIM_COLUMNS, (claim_id, claim, paper, ours_text, report, scale, hardware, verdict, command), strict=True)
    )


def _table5_row(
    claim_id: str,
    claim: str,
    paper_text: str,
    command: str,
    result: Evidence | None = None,
    text: str = "no full-scale table 5 yet",
    verdict: str = "not testable here",
) -> dict:
    """A claim on table 5: measured (``result`` at full scale, ``text``, ``verdict``) or not testable yet."""
    if result is None:
        return claim_row(claim_id, claim, paper_text, text, "table5.md", "", "", "not testable here", command)
    return claim_row(claim_id, claim, paper_text, text, result.report, result.scale, result.hardware, verdict, command)


def efficiency_rows(paper: Paper, reports: Path) -> list[dict]:
    command = "nox -s reproduce_table5 -- --scale full  (CPU, fake tensors; --device cuda measures a GPU)"
    nl_mem, r2_mem = (ours(reports, 5, key, "memory_increment_mb") for key in ("nonlocal", "rcca_r2"))
    nl_fl, r2_fl = (ours(reports, 5, key, "gflops_increment") for key in ("nonlocal", "rcca_r2"))
    ratio = ours(reports, 5, "ratio", "memory_ratio")
    reduction = ours(reports, 5, "ratio", "flops_reduction_pct")
    rows = []
    memory = ("memory_11x", "RCCA uses 11x less GPU memory than the non-local block", paper.claim("rcca_vs_nonlocal_memory_ratio"))
    flops = ("flops_85pct", "RCCA reduces FLOPs by about 85% against the non-local block", paper.claim("rcca_vs_nonlocal_flops_reduction"))
    target = paper.claims.loc[paper.claims["claim"] == "rcca_vs_nonlocal_memory_ratio", "value"]
    if ratio is not None and ratio.scale == "full" and len(target):
        goal = float(target.iloc[0])
        verdict = (
            "holds"
            if abs(ratio.value / goal - 1) <= TOLERANCE
            else ("holds in part" if ratio.value > 1 else "does not hold")
        )
        text = (
            f"{ratio.value:.1f}x (+NL {nl_mem.value:.0f} MB vs +RCCA R=2 {r2_mem.value:.0f} MB, increments over the "
            "ResNet-50 network, training step)"
            if nl_mem and r2_mem
            else f"{ratio.value:.1f}x"
        )
        variants = []
        for nl_key, rcca_key, what in VARIANT_PAIRS:
            a, b = ours(reports, 5, nl_key, "memory_increment_mb"), ours(reports, 5, rcca_key, "memory_increment_mb")
            if a is not None and b is not None and b.value > 0:
                variants.append(f"{what}: {a.value / b.value:.1f}x")
        if variants:
            text += "; other assumptions (table5.md): " + ", ".join(variants)
        if verdict == "holds in part":
            text += f". RCCA needs far less memory, but not {goal:g}x"
        rows.append(_table5_row(*memory, command, ratio, text, verdict))
    else:
        rows.append(_table5_row(*memory, command))
    target = paper.claims.loc[paper.claims["claim"] == "rcca_vs_nonlocal_flops_reduction", "value"]
    if reduction is not None and reduction.scale == "full" and len(target):
        goal = float(target.iloc[0])
        verdict = "holds" if goal - 2.5 <= reduction.value < goal + 2.5 else "holds in part"
        text = f"{reduction.value:.1f}% fewer FLOPs" + (
            f" (+NL {nl_fl.value:.1f} vs +RCCA R=2 {r2_fl.value:.2f} GFLOPs)" if nl_fl and r2_fl else ""
        )
        rows.append(_table5_row(*flops, command, reduction, text, verdict))
    else:
        rows.append(_table5_row(*flops, command))
    for key, label, paper_row in (("nonlocal", "+NL", "+NL (one block)"), ("rcca_r2", "+RCCA (R=2)", "+RCCA (R=2)")):
        for metric, unit, paper_metric in (
            ("gflops_increment", "GFLOPs", "GFLOPs"),
            ("memory_increment_mb", "MB", "memory"),
        ):
            mine, goal = ours(reports, 5, key, metric), paper.value("efficiency", paper_row, paper_metric)
            claim = f"{label} adds {paper.text('efficiency', paper_row, paper_metric)} {unit} to the ResNet-50 network"
            if mine is None or goal is None or mine.scale != "full":
                paper_text = f"{paper.text('efficiency', paper_row, paper_metric)} {unit} (secondary)"
                rows.append(_table5_row(f"{key}_{metric}", claim, paper_text, command, text="not measured at full scale yet"))
                continue
            rel = mine.value / goal - 1
            verdict = "holds" if abs(rel) <= TOLERANCE else "does not hold"
            text = f"{mine.value:.1f} {unit} ({rel:+.0%})"
            rows.append(_table5_row(f"{key}_{metric}", claim, f"{goal:g} {unit} (secondary, summary A)", command, mine, text, verdict))
    return rows
