"""``reports/claims.md``: the paper's claims (the paper's figure, our evidence, published runs, verdicts), then
the mechanism checks, under decision rules declared once in :mod:`experiments.reports.verdicts`.

    python -m experiments.reports.claims [--reports reports] [--paper experiments/paper]

(``python -m experiments.reports.index`` / ``nox -s report`` rebuild it too.) The paper's claims are the
abstract's three merits (11x less memory than non-local, ~85% fewer FLOPs, the state-of-the-art mIoU
figures), the val figures published runs bear on, and each table's headline; the paper's figures come from
``experiments/paper/claims.csv`` and ``tables_tpami.csv``, our evidence from the generated reports
(``reports/tableN.csv``), the published runs from ``official_code.csv`` and ``third_party.csv``. The
mechanism checks are recomputed from the per-run CSVs on disk (:mod:`experiments.reports.mechanism_checks`);
they have verdict words of their own and are never counted with the claims.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import pandas as pd

from cca.provenance import REPO_ROOT, provenance
from cca.reports.render import Report, markdown_table, write_report
from experiments.reports.claims_accuracy import accuracy_rows
from experiments.reports.claims_efficiency import CLAIM_COLUMNS, claim_row, efficiency_rows, load_paper, memory_error
from experiments.reports.mechanism_checks import mechanism_checks, report_hardware
from experiments.reports.published import load_sources
from experiments.reports.verdicts import CLAIM_VERDICTS, MECHANISM_VERDICTS, memory_error_text, rules_text

__all__ = ["CLAIM_COLUMNS", "build_claims", "claim_inputs", "refresh_claims", "stale_inputs", "write_claims"]


def build_claims(reports_dir: str | Path, paper_dir: str | Path) -> pd.DataFrame:
    """The claims table (columns :data:`CLAIM_COLUMNS`): the paper's claims, then the mechanism checks."""
    reports, paper_dir = Path(reports_dir), Path(paper_dir)
    paper, sources = load_paper(paper_dir), load_sources(paper_dir)
    rows = efficiency_rows(paper, reports, sources) + accuracy_rows(paper, reports, paper_dir, sources)
    for check in mechanism_checks(reports):
        hardware = report_hardware(reports / check.report)
        rows.append(
            claim_row(
                check.check_id, check.claim, check.paper, check.ours, check.report, "cpu-mechanism", hardware,
                check.verdict, check.command, section="mechanism check",
            )
        )  # fmt: skip
    frame = pd.DataFrame(rows, columns=list(CLAIM_COLUMNS))
    for section, allowed in (("paper claim", CLAIM_VERDICTS), ("mechanism check", MECHANISM_VERDICTS)):
        bad = set(frame.loc[frame["section"] == section, "verdict"]) - set(allowed)
        if bad:
            raise ValueError(f"a {section} verdict must be one of {allowed}, got {sorted(bad)}")
    return frame


def claim_inputs(reports_dir: str | Path, paper_dir: str | Path) -> list[Path]:
    """The files claims.md is built from (to tell whether it is older than one of them)."""
    reports, paper_dir = Path(reports_dir), Path(paper_dir)
    names = [f"table{n}.csv" for n in range(1, 10)] + ["longrange.csv", "data/memory_model_error.csv"]
    names += [f"mechanism_{m}_runs.csv" for m in ("ccl", "gamma", "stacking", "video")]
    paper = [paper_dir / n for n in ("claims.csv", "tables_tpami.csv", "official_code.csv", "third_party.csv")]
    return [p for p in [reports / n for n in names] + paper if p.is_file()]


def stale_inputs(reports_dir: str | Path, paper_dir: str | Path) -> list[Path]:
    """The inputs modified after ``claims.md`` was written (all of them when there is no claims.md)."""
    page = Path(reports_dir) / "claims.md"
    inputs = claim_inputs(reports_dir, paper_dir)
    if not page.is_file():
        return inputs
    written = page.stat().st_mtime
    return [p for p in inputs if p.stat().st_mtime > written]


def _tally(verdicts: pd.Series, words: tuple[str, ...]) -> str:
    counts = verdicts.value_counts()
    return ", ".join(f"{w}: {int(counts.get(w, 0))}" for w in words)


def _link(report: str) -> str:
    return f"[{report}]({report})" if report else "—"


def claims_report(frame: pd.DataFrame, reports: Path) -> Report:
    claims = frame[frame["section"] == "paper claim"]
    checks = frame[frame["section"] == "mechanism check"]
    claim_table = pd.DataFrame(
        {
            "Claim": claims["claim"],
            "Paper": claims["paper"],
            "Ours": claims["ours"],
            "Report": [_link(r) for r in claims["report"]],
            "Scale": [s or "—" for s in claims["scale"]],
            "Hardware": [h or "—" for h in claims["hardware"]],
            "Verdict (ours)": [f"**{v}**" for v in claims["verdict"]],
            "Published runs (others' runs, not ours)": [p or "—" for p in claims["published"]],
            "Verdict (published)": [f"**{v}**" if v else "—" for v in claims["published_verdict"]],
            "Full-scale test": [f"`{c}`" if c else "—" for c in claims["command"]],
        }
    )
    check_table = pd.DataFrame(
        {
            "Mechanism check (what the task can and cannot show)": checks["claim"],
            "Paper (related)": checks["paper"],
            "Ours": checks["ours"],
            "Report": [_link(r) for r in checks["report"]],
            "Hardware": [h or "—" for h in checks["hardware"]],
            "Verdict": [f"**{v}**" for v in checks["verdict"]],
            "Command": [f"`{c}`" for c in checks["command"]],
        }
    )
    error, shifts = memory_error(reports)
    published = claims[claims["published_verdict"] != ""]
    summary = "\n\n".join(
        [
            rules_text(error, memory_error_text(shifts)),
            "**The paper's claims** (CCNet, TPAMI 2020): the paper's figure with its confidence (verbatim from the "
            "abstract, or secondary from two public summaries of its tables, see `experiments/paper/README.md`), our "
            "evidence and, where others published full-scale runs, theirs. *Full* scale is the paper's setting "
            "(network, crop, and for accuracy the real dataset); a *smoke* run only shows that the pipeline runs. "
            f"Our evidence: {_tally(claims['verdict'], CLAIM_VERDICTS)}. Published runs: "
            f"{_tally(published['published_verdict'], CLAIM_VERDICTS[:3])} (of {len(published)} claims they bear on).",
        ]
    )
    check_intro = (
        "Small CPU tasks built so that the paper's mechanism decides the result, recomputed from the per-run CSVs "
        "(`reports/*_runs.csv`, `reports/longrange.csv`). They test a mechanism, not the paper's numbers: "
        f"{_tally(checks['verdict'], MECHANISM_VERDICTS)}."
    )
    older = sorted(
        {
            r
            for r in checks["report"]
            if r.startswith("mechanism_") and (reports / r).is_file() and "verdicts.py" not in (reports / r).read_text()
        }
    )
    if older:
        check_intro += (
            " Mechanism reports written before these rules (their wording, e.g. medians, spreads and verdict words, "
            "is older) and not re-rendered since: "
            + ", ".join(f"[{r}]({r})" for r in older)
            + "; where their wording differs, the checks here, recomputed from their per-run CSVs, apply."
        )
    return Report(
        title="Claims of the paper: do they hold?",
        provenance=provenance(),
        regenerate="nox -s report",
        summary=summary,
        tables=[("The paper's claims", claim_table)],
        sections=[("Mechanism checks (not claims of the paper)", check_intro + "\n\n" + markdown_table(check_table))],
        notes=[
            "Efficiency rows compare increments over the ResNet-50 network (769x769, output stride 8), the paper's "
            "methodology; why our non-local memory is below the paper's is worked out in efficiency.md (section 'The "
            "paper's methodology'). MB = 10^6 bytes, as the paper prints.",
            "Accuracy claims need the real datasets and GPUs, which this machine has not: their rows say 'not "
            "testable here' and give the full-scale command. Published runs are others' full-scale GPU runs with "
            "their own settings (named in each cell), evidence beside ours, never counted as ours.",
        ],
    )


def write_claims(reports_dir: str | Path, paper_dir: str | Path) -> Path:
    """Write ``claims.md`` + ``claims.csv`` under ``reports_dir``; returns the Markdown path."""
    reports = Path(reports_dir)
    frame = build_claims(reports, paper_dir)
    return write_report(claims_report(frame, reports), reports / "claims.md", {reports / "claims.csv": frame})


def refresh_claims(reports_dir: str | Path, paper_dir: str | Path) -> Path | None:
    """Rebuild ``claims.md`` after a report it cites was written (None, writing nothing, when ``paper_dir``
    lacks the paper's claims: a test's or a user's own table directory)."""
    if not all((Path(paper_dir) / name).is_file() for name in ("claims.csv", "tables_tpami.csv")):
        return None
    return write_claims(reports_dir, paper_dir)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m experiments.reports.claims", description=__doc__.splitlines()[0])
    parser.add_argument(
        "--reports", default=str(REPO_ROOT / "reports"), help="reports directory (default: %(default)s)"
    )
    parser.add_argument("--paper", default=str(REPO_ROOT / "experiments" / "paper"), help="paper CSV directory")
    parser.add_argument(
        "--check", action="store_true", help="write nothing; exit 1 naming each input newer than claims.md"
    )
    args = parser.parse_args(argv)
    if args.check:
        newer = stale_inputs(args.reports, args.paper)
        for path in newer:
            print(f"claims.md is older than {path}: run nox -s report")
        return 1 if newer else 0
    print(f"wrote {write_claims(args.reports, args.paper)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
