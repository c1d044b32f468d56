"""``reports/README.md``: every paper table with its status (full / smoke / not run) and every figure,
linking ``reports/claims.md`` first (rebuilt by the same command).

    python -m experiments.reports.index [--reports reports] [--paper experiments/paper]

The tables are those with a paper CSV ``tableNN_<topic>.csv`` in the paper directory; the status of
table N comes from the ``scale`` column of ``reports/tableN.csv`` (written by ``python -m experiments.run``).
"""

from __future__ import annotations

import argparse
import re
import sys
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from cca.provenance import REPO_ROOT, provenance
from cca.reports.render import Report, write_report

TABLE_FILE = re.compile(r"table(\d+)_(\w+)\.csv")


@dataclass(frozen=True)
class TableStatus:
    number: int
    topic: str
    title: str
    status: str  # "full", "smoke", "smoke + full", "not run"
    data: str  # datasets of our rows
    rows_done: int
    rows_total: int
    report: str | None  # file name of the Markdown report, if any


def discover_tables(paper_dir: str | Path) -> list[tuple[int, str]]:
    """``[(number, topic), ...]`` from the ``tableNN_<topic>.csv`` files of ``paper_dir``."""
    paper_dir = Path(paper_dir)
    if not paper_dir.is_dir():
        raise FileNotFoundError(f"paper directory not found: {paper_dir}")
    found = []
    for path in sorted(paper_dir.glob("table[0-9]*_*.csv")):
        match = TABLE_FILE.fullmatch(path.name)
        if match:
            found.append((int(match.group(1)), match.group(2)))
    return sorted(found)


def table_status(number: int, topic: str, reports_dir: str | Path) -> TableStatus:
    reports_dir = Path(reports_dir)
    md, csv = reports_dir / f"table{number}.md", reports_dir / f"table{number}.csv"
    title = topic.replace("_", " ")
    if md.is_file():
        first = md.read_text().splitlines()[:1]
        if first and first[0].startswith("# "):
            title = re.sub(r"^Table \d+:\s*", "", first[0][2:].strip())
    if not csv.is_file():
        return TableStatus(number, topic, title, "not run", "—", 0, 0, md.name if md.is_file() else None)
    frame = pd.read_csv(csv, dtype=str, keep_default_na=False)
    ours = frame[frame["ours_row"] != ""] if "ours_row" in frame.columns else frame.iloc[0:0]
    keys = sorted(set(ours["ours_row"])) if len(ours) else []
    done = ours[ours["ours"] != ""] if len(ours) else ours
    done_keys = sorted(set(done["ours_row"])) if len(done) else []
    scales = sorted(set(done["scale"]) - {""}) if len(done) else []
    status = " + ".join(scales) if scales else "not run"
    data = ", ".join(sorted(set(done["dataset"]) - {""})) if len(done) else "—"
    return TableStatus(number, topic, title, status, data or "—", len(done_keys), len(keys), md.name if md.is_file() else None)


def _links(reports_dir: Path, pattern: str) -> list[str]:
    return [p.relative_to(reports_dir).as_posix() for p in sorted(reports_dir.glob(pattern))]


def build_report(reports_dir: str | Path, paper_dir: str | Path) -> Report:
    """``reports/README.md`` as a :class:`~cca.reports.render.Report`."""
    reports_dir = Path(reports_dir)
    summary = "\n".join(
        [
            "**Which claims of the paper hold: [claims.md](claims.md)** (the paper's claims with our evidence, published "
            "full-scale runs of others and verdicts by declared rules; then the mechanism checks, counted apart).",
            "",
            "Every table of the CCNet paper (TPAMI 2020) that this project reproduces, with the paper's value beside",
            "ours. **Status** says what produced our numbers: *full* is the paper's setting (network, crop, schedule;",
            "for the accuracy tables also the real dataset; table 5 measures GFLOPs and memory and needs no dataset);",
            "*smoke* is a minutes-long CPU run on synthetic data in the dataset's format with a tiny backbone: it shows",
            "the pipeline runs end to end and nothing more; a smoke number is not a reproduction of the paper's.",
        ]
    )
    lines = [
        "| Table | Topic | Status | Our data | Rows run | Report | Regenerate |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for number, topic in discover_tables(paper_dir):
        s = table_status(number, topic, reports_dir)
        report = f"[{s.report}]({s.report})" if s.report else "—"
        rows = f"{s.rows_done}/{s.rows_total}" if s.rows_total else "—"
        lines.append(
            f"| {number} | {s.title} | {s.status} | {s.data} | {rows} | {report} | `nox -s reproduce_table{number}` |"
        )
    summary += "\n\n" + "\n".join(lines)
    extras = [
        ("Claims of the paper and their verdicts", ["claims.md"], "nox -s report"),
        ("Long-range context ablation (beyond the paper)", ["longrange.md", "longrange*.png"], "nox -s reproduce_longrange"),
        ("CCL stability over 10 seeds (mechanism, CPU)", ["mechanism_ccl.md"], "nox -s mechanism_ccl"),
        ("3D temporal context for video (mechanism, CPU)", ["mechanism_video.md"], "nox -s mechanism_video"),
        ("Row/column stacking vs criss-cross (mechanism, CPU)", ["mechanism_stacking.md"], "nox -s mechanism_stacking"),
        ("Zero-initialised gamma (mechanism, CPU)", ["mechanism_gamma.md"], "nox -s mechanism_gamma"),
        ("Attention maps (R=1 and composed R=2)", ["attention*.md", "attention*.png"], "nox -s attention_maps"),
        ("Efficiency of the context blocks alone (profiling harness)", ["efficiency.md", "efficiency*.png", "operator*.md"], "nox -s profile"),
        ("Scaling plots (profiling harness)", ["scaling_*.png"], "nox -s profile"),
        ("GPU performance model of the CUDA backends (a model, no GPU)", ["gpu_model.md"], "nox -s gpu_model"),
        ("CUDA check on a GPU (measured)", ["gpu.md"], "nox -s gpu_check"),
    ]
    other = []
    for heading, patterns, command in extras:
        found = [link for pattern in patterns for link in _links(reports_dir, pattern)]
        listed = ", ".join(f"[{f}]({f})" for f in found) if found else "not generated yet"
        other.append(f"- **{heading}** (`{command}`): {listed}")
    curves = _links(reports_dir, "curves/*.png")
    if curves:
        curve_text = "Loss and val mIoU against iteration for each training run (from the engine's `metrics.jsonl`):\n\n"
        curve_text += "\n".join(f"- [{Path(c).stem}]({c})" for c in curves)
    else:
        curve_text = "No training curves yet (they appear when a table is run)."
    return Report(
        title="Reports",
        provenance=provenance(),
        regenerate="nox -s report",
        summary=summary,
        sections=[("Other reports and figures", "\n".join(other)), ("Training curves", curve_text)],
    )


def build_index(reports_dir: str | Path, paper_dir: str | Path) -> str:
    """The Markdown text of ``reports/README.md``."""
    return build_report(reports_dir, paper_dir).markdown()


def write_index(reports_dir: str | Path, paper_dir: str | Path) -> Path:
    """Write ``reports/README.md`` (atomically); returns its path."""
    return write_report(build_report(reports_dir, paper_dir), Path(reports_dir) / "README.md")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m experiments.reports.index", description=__doc__.splitlines()[0])
    parser.add_argument("--reports", default=str(REPO_ROOT / "reports"), help="reports directory (default: %(default)s)")
    parser.add_argument("--paper", default=str(REPO_ROOT / "experiments" / "paper"), help="paper CSV directory")
    args = parser.parse_args(argv)
    from experiments.reports import claims

    written = claims.write_claims(args.reports, args.paper)
    out = write_index(args.reports, args.paper)
    print(f"wrote {written} and {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
