"""Paper vs ours: one long table per paper table, written as Markdown and CSV.

A paper table is a CSV (``experiments/paper/tableNN_<topic>.csv``) with one row per row of the
paper's table: ``row`` (key), ``method``, metric columns (empty where the value was not found),
``ours_row`` (the key of the run of ours that reproduces it; empty for rows quoted from the paper
only), ``source`` and ``confidence`` (``verbatim``/``secondary``/``uncertain``; a column
``confidence_<metric>`` overrides it for one metric).

Our results are a mapping ``{ours_row: OursResult}``. :func:`compare` aligns them: one line per
(paper row, metric), plus one line per result of ours that no paper row names. Nothing is dropped:
a missing paper value reads "not found", a missing result of ours "not run".
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from cca.reports import render
from cca.reports.render import Report, markdown_table

PAPER_REQUIRED = ("row", "method", "ours_row", "source", "confidence")
CONFIDENCES = ("verbatim", "secondary", "uncertain")
COLUMNS = (
    "row",
    "method",
    "metric",
    "paper",
    "confidence",
    "source",
    "ours_row",
    "ours",
    "diff",
    "status",
    "scale",
    "dataset",
    "hardware",
    "commit",
    "command",
)
NOT_FOUND = "not found"
NOT_RUN = "not run"
QUOTED = "quoted from the paper (not run by us)"
NOT_IN_PAPER = "not in the paper's table"


@dataclass
class OursResult:
    """One row of ours: metric values and what produced them."""

    label: str
    metrics: dict[str, float] = field(default_factory=dict)
    status: str = "done"  # "done", "not run", "failed: <reason>"
    scale: str = ""  # "smoke" or "full"
    dataset: str = ""  # e.g. "synthetic cityscapes-format" or "cityscapes (real)"
    hardware: str = ""
    commit: str = ""
    command: str = ""


def _blank(value: Any) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value)) or (isinstance(value, str) and not value.strip())


def load_paper_table(path: str | Path) -> pd.DataFrame:
    """Read a paper table CSV as strings (values keep their printed digits, ``""`` where empty)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"paper table not found: {path}")
    frame = pd.read_csv(path, dtype=str, keep_default_na=False)
    missing = [c for c in PAPER_REQUIRED if c not in frame.columns]
    if missing:
        raise ValueError(f"{path} lacks the column(s) {missing}; a paper table needs {list(PAPER_REQUIRED)}")
    if frame["row"].duplicated().any():
        raise ValueError(f"{path} has duplicate row keys: {sorted(frame['row'][frame['row'].duplicated()])}")
    bad = sorted(set(frame["confidence"]) - set(CONFIDENCES) - {""})
    if bad:
        raise ValueError(f"{path}: confidence must be one of {CONFIDENCES} or empty, got {bad}")
    return frame


def paper_value(row: Mapping[str, Any], metric: str) -> tuple[float | None, str, str]:
    """``(value, printed, confidence)`` of ``metric`` in a paper row (``(None, "", "")`` when empty)."""
    text = row.get(metric, "")
    if _blank(text):
        return None, "", ""
    try:
        value = float(text)
    except ValueError as err:
        raise ValueError(f"paper row {row.get('row')!r}: {metric}={text!r} is not a number") from err
    confidence = row.get(f"confidence_{metric}", "") or row.get("confidence", "")
    return value, str(text).strip(), str(confidence)


def format_number(value: float | None) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    magnitude = abs(value)
    if magnitude >= 1000:
        return f"{value:.0f}"
    if magnitude >= 100:
        return f"{value:.1f}"
    return f"{value:.2f}"


def compare(paper: pd.DataFrame, ours: Mapping[str, OursResult], metrics: Sequence[str], command: str = "") -> pd.DataFrame:
    """Align ``ours`` with the paper rows; columns :data:`COLUMNS` (values as numbers or ``None``).

    A (paper row, metric) line is kept when either side has a value; a paper row with no value on
    either side still appears once, on the first (primary) metric of ``metrics``.
    """
    if not metrics:
        raise ValueError("metrics must name at least one metric column")
    lines: list[dict[str, Any]] = []
    referenced: set[str] = set()

    def ours_fields(key: str, metric: str, reference: float | None) -> dict[str, Any]:
        if not key:
            return {"ours_row": "", "ours": None, "diff": None, "status": QUOTED}
        referenced.add(key)
        result = ours.get(key)
        if result is None:
            return {"ours_row": key, "ours": None, "diff": None, "status": NOT_RUN}
        value = result.metrics.get(metric)
        value = None if value is None or (isinstance(value, float) and math.isnan(value)) else float(value)
        return _our_columns(key, result, value, reference, command)

    for _, prow in paper.iterrows():
        row = prow.to_dict()
        key = str(row.get("ours_row", "")).strip()
        candidates = []
        for metric in metrics:
            value, printed, confidence = paper_value(row, metric) if metric in row else (None, "", "")
            mine = ours_fields(key, metric, value)
            candidates.append(
                {
                    "row": row["row"],
                    "method": row["method"],
                    "metric": metric,
                    "paper": value,
                    "paper_text": printed,
                    "confidence": confidence,
                    "source": row.get("source", "") if value is not None else NOT_FOUND,
                    **mine,
                }
            )
        kept = [c for c in candidates if c["paper"] is not None or c.get("ours") is not None]
        lines.extend(kept or candidates[:1])  # every paper row appears at least once (its primary metric)
    for key, result in ours.items():
        if key in referenced:
            continue
        for i, metric in enumerate(metrics):
            value = result.metrics.get(metric)
            if value is None and i > 0:
                continue
            lines.append(
                {
                    "row": key,
                    "method": result.label,
                    "metric": metric,
                    "paper": None,
                    "paper_text": "",
                    "confidence": "",
                    "source": NOT_IN_PAPER,
                    **_our_columns(key, result, None if value is None else float(value), None, command),
                }
            )
    frame = pd.DataFrame(lines)
    for column in (*COLUMNS, "paper_text"):
        if column not in frame.columns:
            frame[column] = None
    frame = frame[[*COLUMNS, "paper_text"]].astype(object)
    return frame.where(frame.notna(), None)  # missing stays None (not NaN) in every column


def _our_columns(key: str, result: Any, value: float | None, reference: float | None, command: str) -> dict[str, Any]:
    """The columns of our result ``result`` (row ``key``) for one metric ``value``, against the paper's ``reference``."""
    return {
        "ours_row": key,
        "ours": value,
        "diff": value - reference if value is not None and reference is not None else None,
        "status": result.status if value is not None or result.status != "done" else "done (metric not produced)",
        "scale": result.scale,
        "dataset": result.dataset,
        "hardware": result.hardware,
        "commit": result.commit,
        "command": result.command or command,
    }


def display_frame(frame: pd.DataFrame) -> pd.DataFrame:
    """The comparison as printed: missing paper values "not found", missing results "not run"."""
    shown = []
    first_row: dict[tuple[str, str], str] = {}  # (our row, metric) -> the first paper row showing it
    for _, line in frame.iterrows():
        if line["paper"] is None or (isinstance(line["paper"], float) and math.isnan(line["paper"])):
            paper = "—" if line["source"] == NOT_IN_PAPER else NOT_FOUND
        else:
            paper = f"{line['paper_text'] or format_number(line['paper'])} ({line['confidence'] or 'no confidence given'})"
        ours_value = line["ours"]
        if ours_value is None or (isinstance(ours_value, float) and math.isnan(ours_value)):
            ours_text = line["status"] if line["status"] != "done" else NOT_RUN
        else:
            ours_text = format_number(float(ours_value))
            shown_at = first_row.setdefault((str(line["ours_row"]), str(line["metric"])), str(line["row"]))
            if shown_at != str(line["row"]):  # one run quoted beside several paper rows: not another result
                ours_text += f" (same run as `{shown_at}`)"
        diff = line["diff"]
        if diff is None or (isinstance(diff, float) and math.isnan(diff)):
            diff_text = "—"
        elif line["scale"] == "smoke":
            diff_text = "n/a (smoke)"  # a smoke number is not compared with the paper's
        else:
            diff_text = f"{float(diff):+.2f}"
        commit = "" if _blank(line["commit"]) else str(line["commit"])[:10]
        shown.append(
            {
                "Row": line["row"],
                "Method": line["method"],
                "Metric": line["metric"],
                "Paper (confidence)": paper,
                "Ours": ours_text,
                "Ours − paper": diff_text,
                "Scale": "—" if _blank(line["scale"]) else line["scale"],
                "Data": "—" if _blank(line["dataset"]) else line["dataset"],
                "Hardware": "—" if _blank(line["hardware"]) else line["hardware"],
                "Commit": f"`{commit}`" if commit else "—",
            }
        )
    return pd.DataFrame(shown)


def to_markdown(frame: pd.DataFrame) -> str:
    """The comparison as a Markdown table (see :func:`display_frame`)."""
    return markdown_table(display_frame(frame))


def write_report(
    frame: pd.DataFrame,
    md_path: str | Path,
    csv_path: str | Path,
    *,
    title: str,
    provenance: Mapping[str, Any],
    regenerate: str,
    summary: str,
    notes: Iterable[str] = (),
    sections: Iterable[tuple[str, str]] = (),
    displayed: Sequence[tuple[str, pd.DataFrame]] | None = None,
) -> tuple[Path, Path]:
    """Write ``frame`` (from :func:`compare`) to ``md_path`` (with header, summary, notes) and ``csv_path``;
    ``displayed``: the tables the Markdown shows instead of the long comparison (the CSV is the same)."""
    out = frame.drop(columns=["paper_text"]).copy()
    out["paper"] = [t if t else "" for t in frame["paper_text"]]
    out.loc[out["scale"] == "smoke", "diff"] = None  # as the Markdown's "n/a (smoke)": not compared
    out["command"] = [c or regenerate for c in out["command"]]
    report = Report(
        title=title,
        provenance=provenance,
        regenerate=regenerate,
        summary=summary,
        tables=list(displayed) if displayed is not None else [("", display_frame(frame))],
        notes=list(notes),
        sections=list(sections),
    )
    return render.write_report(report, md_path, {csv_path: out}), Path(csv_path)
