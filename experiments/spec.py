"""Declare: what a table entry declares (:class:`Table`: settings at both scales, rows, runner; :class:`Row`),
the command line's :class:`Options` and the rows it selects; the paths every part of ``experiments/`` shares.

The driver's other roles: resolve (a row's settings at a scale, :mod:`experiments.settings`), run (one row,
its cache, :mod:`experiments.rows`; a whole table, :mod:`experiments.run`), report (:mod:`experiments.report`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
PAPER_DIR = ROOT / "experiments" / "paper"
# Relative to the working directory, the repository root (`python -m experiments.run` runs from there): the
# settings, results and reports then name portable paths (runs/..., reports/...).
RUNS_DIR = Path("runs")
REPORTS_DIR = Path("reports")
SCALES = ("smoke", "full")
SYNTHETIC_AUTO = "runs/data/synthetic/auto"  # smoke data root: resolved per row to runs/data/synthetic/<params>
KINDS = ("train", "profile", "detection")


@dataclass(frozen=True)
class Row:
    """One row of the paper's table that our code produces."""

    key: str  # results go to runs/tableNN/<scale>/<key>/; paper rows name it in their `ours_row` column
    label: str  # what the row is at full scale, e.g. "RCCA R=2" (the backbone is renamed at smoke scale)
    changes: Mapping[str, Any] = field(default_factory=dict)  # settings changed from the table's base


@dataclass(frozen=True)
class Options:
    """What the command line asks for (see ``python -m experiments.run --help``)."""

    scale: str = "smoke"
    data_root: str | None = None
    pretrained: str | None = None
    device: str | None = None
    nproc: int = 1
    dry_run: bool = False
    report_only: bool = False  # re-render the report from the results on disk, train nothing
    force: bool = False
    overrides: tuple[str, ...] = ()  # --set key=value
    rows: tuple[str, ...] = ()  # --rows: only these rows (our keys or the paper CSV's row names; default: all)
    runs_dir: Path = RUNS_DIR
    reports_dir: Path = REPORTS_DIR
    command: str = ""  # the command line that regenerates the report

    def __post_init__(self) -> None:
        if self.scale not in SCALES:
            raise ValueError(f"scale must be one of {SCALES}, got {self.scale!r}")
        if not isinstance(self.nproc, int) or self.nproc < 1:
            raise ValueError(f"nproc must be a positive int, got {self.nproc!r}")
        if self.device not in (None, "cpu", "cuda", "auto"):
            raise ValueError(f"device must be 'cpu', 'cuda' or 'auto', got {self.device!r}")


Runner = Callable[["Table", Row, Any, Options, Path], dict[str, float]]


@dataclass(frozen=True)
class Table:
    """One paper table: settings at both scales, our rows, how a row runs, what the report says.

    Every table names its smoke settings and its runner; a training table (the default ``kind``) usually
    takes :func:`experiments.settings.smoke_of` of its full-scale settings and the engine's
    :func:`experiments.segmentation.train_runner`.
    """

    number: int
    topic: str  # file topic: experiments/tableNN_<topic>.py, experiments/paper/tableNN_<topic>.csv
    title: str
    metrics: tuple[str, ...]  # metric columns compared with the paper (the paper's units), primary first
    rows: tuple[Row, ...]
    full: Any  # the paper's setting (a settings dataclass, usually a named preset of cca.engine.presets)
    smoke: Any  # the smoke scale (for a training table usually smoke_of(full))
    runner: Runner  # how one row runs (for a training table usually the engine's train_runner)
    shows_full: str  # what the table shows at full scale
    shows_smoke: str  # what a smoke run shows (never a reproduction of the paper's numbers)
    notes: tuple[str, ...] = ()  # settings not found in the paper, deviations, caveats
    kind: str = "train"  # "train" (engine), "profile" (profiling harness), "detection" (Mask R-CNN loop)
    # metrics measured at a fixed setting whatever the scale (metric -> the setting, shown in the Scale column)
    metric_scales: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"kind must be one of {KINDS}, got {self.kind!r}")
        keys = [r.key for r in self.rows]
        if len(set(keys)) != len(keys):
            raise ValueError(f"table {self.number}: duplicate row keys {keys}")
        if self.smoke is None or not callable(self.runner):
            raise ValueError(f"table {self.number}: needs its smoke settings and its runner (a function), got "
                             f"smoke={self.smoke!r}, runner={self.runner!r}")

    @property
    def paper_csv(self) -> Path:
        return PAPER_DIR / f"table{self.number:02d}_{self.topic}.csv"

    def base(self, scale: str) -> Any:
        return self.full if scale == "full" else self.smoke


def paper_row_names(table: Table) -> dict[str, str]:
    """``{paper CSV row name: our row key}`` for the paper rows that name one of ours."""
    import pandas as pd

    path = table.paper_csv
    if not path.is_file():
        return {}
    frame = pd.read_csv(path, dtype=str, keep_default_na=False)
    if "ours_row" not in frame.columns or "row" not in frame.columns:
        return {}
    return {r: k for r, k in zip(frame["row"], frame["ours_row"], strict=True) if k}


def selected_rows(table: Table, options: Options) -> list[Row]:
    """The rows ``--rows`` names (our keys, or the paper CSV's row names shown in the report); all by default."""
    if not options.rows:
        return list(table.rows)
    known = {r.key: r for r in table.rows}
    aliases = paper_row_names(table)
    chosen: list[Row] = []
    unknown = []
    for name in options.rows:
        key = name if name in known else aliases.get(name)
        if key not in known:
            unknown.append(name)
        elif known[key] not in chosen:
            chosen.append(known[key])
    if unknown:
        named = ", ".join(f"{a} (= {k})" for a, k in aliases.items() if a not in known)
        raise ValueError(f"table {table.number} has no row(s) {unknown}; rows: {', '.join(known)}"
                         + (f"; the report's row names also work: {named}" if named else ""))
    return chosen
