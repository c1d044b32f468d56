"""The evidence behind ``reports/claims.md``: the paper's CSVs, our results in the generated reports, and
the efficiency claims (table 5, the paper's methodology). See :mod:`experiments.reports.claims`."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from experiments.reports.published import published_evidence
from experiments.reports.verdicts import (
    FLOPS_ERROR_PCT,
    band,
    efficiency_verdict,
    error_text,
    memory_error_pct,
    ratio_band,
)

__all__ = [
    "CLAIM_COLUMNS", "SECTIONS", "Evidence", "Paper", "claim_row", "efficiency_rows", "load_paper", "memory_error", "ours",
]  # fmt: skip

CLAIM_COLUMNS = (
    "claim_id", "section", "claim", "paper", "ours", "report", "scale", "hardware", "verdict",
    "published", "published_verdict", "command",
)  # fmt: skip
SECTIONS = ("paper claim", "mechanism check")
VARIANT_PAIRS = (  # (non-local row, RCCA row, what differs) of table 5, beside the headline ratio
    ("nonlocal_batch2", "rcca_r2_batch2", "two crops per GPU"),
    ("nonlocal_inference", "rcca_r2_inference", "forward alone"),
)
GPU_TRAINING = "the real dataset and GPUs (the paper: 4 GPUs, hours to days per row)"
TABLE5_COMMAND = "nox -s reproduce_table5 -- --scale full  (CPU, fake tensors; --device cuda measures a GPU)"


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


def claim_row(
    claim_id, claim, paper, ours_text, report, scale, hardware, verdict, command, published=None, section="paper claim"
) -> dict:
    """One row of claims.csv (``published``: a :class:`~experiments.reports.published.Published` or None)."""
    values = (
        claim_id, section, claim, paper, ours_text, report, scale, hardware, verdict,
        published.text if published else "", published.verdict if published else "", command,
    )  # fmt: skip
    return dict(zip(CLAIM_COLUMNS, values, strict=True))


def memory_error(reports: Path) -> tuple[float, dict[str, float]]:
    """The memory model's error band (%) and the measured shifts per block (empty: not measured)."""
    from experiments.memory_model_error import read_shift

    frame = read_shift(reports / "data" / "memory_model_error.csv")
    shifts = {} if frame is None else dict(zip(frame["block"], frame["shift_pct"].astype(float), strict=True))
    return memory_error_pct(list(shifts.values())), shifts


def _band_text(low: float, high: float, unit: str, digits: int = 0) -> str:
    return f"band [{low:.{digits}f}, {high:.{digits}f}]{unit}" if high != float("inf") else "band unbounded"


def _not_measured(claim_id: str, claim: str, paper_text: str, text: str = "no full-scale table 5 yet") -> dict:
    return claim_row(claim_id, claim, paper_text, text, "table5.md", "", "", "not testable here", TABLE5_COMMAND)


def efficiency_rows(paper: Paper, reports: Path, sources=None) -> list[dict]:
    """The abstract's 11x and ~85% and the four table 5 figures, each by the efficiency rule of
    :mod:`experiments.reports.verdicts` (FLOPs exact; memory with the model's measured error band)."""
    error, _ = memory_error(reports)
    nl_mem, r2_mem = (ours(reports, 5, key, "memory_increment_mb") for key in ("nonlocal", "rcca_r2"))
    nl_fl, r2_fl = (ours(reports, 5, key, "gflops_increment") for key in ("nonlocal", "rcca_r2"))
    reduction = ours(reports, 5, "ratio", "flops_reduction_pct")
    rows = []
    memory = ("memory_11x", "RCCA uses 11x less GPU memory than the non-local block", paper.claim("rcca_vs_nonlocal_memory_ratio"))
    flops = ("flops_85pct", "RCCA reduces FLOPs by about 85% against the non-local block", paper.claim("rcca_vs_nonlocal_flops_reduction"))
    target = paper.claims.loc[paper.claims["claim"] == "rcca_vs_nonlocal_memory_ratio", "value"]
    full = lambda *e: all(x is not None and x.scale == "full" for x in e)  # noqa: E731
    if full(nl_mem, r2_mem) and len(target) and r2_mem.value > 0:
        goal = float(target.iloc[0])
        low, high = ratio_band(nl_mem.value, r2_mem.value, error)
        verdict = efficiency_verdict(low, high, goal)
        text = (
            f"{nl_mem.value / r2_mem.value:.1f}x (+NL {nl_mem.value:.0f} MB vs +RCCA R=2 {r2_mem.value:.0f} MB, increments "
            f"over the ResNet-50 network, training step, allocation model; {_band_text(low, high, 'x', 1)} with the "
            f"model's {error_text(error)} on each)"
        )
        variants = []
        for nl_key, rcca_key, what in VARIANT_PAIRS:
            a, b = ours(reports, 5, nl_key, "memory_increment_mb"), ours(reports, 5, rcca_key, "memory_increment_mb")
            if a is not None and b is not None and b.value > 0:
                variants.append(f"{what}: {a.value / b.value:.1f}x")
        if variants:
            text += "; other assumptions (table5.md): " + ", ".join(variants)
        rows.append(claim_row(*memory, text, r2_mem.report, r2_mem.scale, r2_mem.hardware, verdict, TABLE5_COMMAND))
    else:
        rows.append(_not_measured(*memory))
    target = paper.claims.loc[paper.claims["claim"] == "rcca_vs_nonlocal_flops_reduction", "value"]
    published = published_evidence("flops_85pct", sources)
    if reduction is not None and reduction.scale == "full" and len(target):
        goal = float(target.iloc[0])
        verdict = efficiency_verdict(*band(reduction.value, FLOPS_ERROR_PCT), goal)
        text = f"{reduction.value:.1f}% fewer FLOPs (exact count)" + (
            f" (+NL {nl_fl.value:.1f} vs +RCCA R=2 {r2_fl.value:.2f} GFLOPs)" if nl_fl and r2_fl else ""
        )
        rows.append(claim_row(*flops, text, reduction.report, reduction.scale, reduction.hardware, verdict, TABLE5_COMMAND, published))
    else:
        rows.append(_not_measured(*flops) | ({"published": published.text} if published else {}))
    for key, label, paper_row in (("nonlocal", "+NL", "+NL (one block)"), ("rcca_r2", "+RCCA (R=2)", "+RCCA (R=2)")):
        for metric, unit, paper_metric, err in (
            ("gflops_increment", "GFLOPs", "GFLOPs", FLOPS_ERROR_PCT),
            ("memory_increment_mb", "MB", "memory", error),
        ):
            mine, goal = ours(reports, 5, key, metric), paper.value("efficiency", paper_row, paper_metric)
            claim = f"{label} adds {paper.text('efficiency', paper_row, paper_metric)} {unit} to the ResNet-50 network"
            if mine is None or goal is None or mine.scale != "full":
                paper_text = f"{paper.text('efficiency', paper_row, paper_metric)} {unit} (secondary)"
                rows.append(_not_measured(f"{key}_{metric}", claim, paper_text, "not measured at full scale yet"))
                continue
            low, high = band(mine.value, err)
            what = "exact count" if err == 0 else f"allocation model {error_text(err)}: {_band_text(low, high, ' MB')}"
            text = f"{mine.value:.1f} {unit} ({mine.value / goal - 1:+.0%}; {what})"
            rows.append(
                claim_row(
                    f"{key}_{metric}", claim, f"{goal:g} {unit} (secondary, summary A)", text, mine.report, mine.scale,
                    mine.hardware, efficiency_verdict(low, high, goal), TABLE5_COMMAND,
                )
            )  # fmt: skip
    return rows
