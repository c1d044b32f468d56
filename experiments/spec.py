"""What a table entry declares: :class:`Table` (settings at both scales, rows, runner), :class:`Row`,
and the command line's :class:`Options`; the paths every part of ``experiments/`` shares."""

from __future__ import annotations

import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
PAPER_DIR = ROOT / "experiments" / "paper"
# Relative to the working directory, which `experiments/run.py` sets to the repository root: the
# settings, results and reports then name portable paths (runs/..., reports/...).
RUNS_DIR = Path("runs")
REPORTS_DIR = Path("reports")
SCALES = ("smoke", "full")
SYNTHETIC_AUTO = "runs/data/synthetic/auto"  # smoke data root: resolved per row to runs/data/synthetic/<params>
KINDS = ("train", "profile", "detection")

if str(ROOT) not in sys.path:  # so `python experiments/run.py` imports the entries as `experiments.*`
    sys.path.insert(0, str(ROOT))


@dataclass(frozen=True)
class Row:
    """One row of the paper's table that our code produces."""

    key: str  # results go to runs/tableNN/<scale>/<key>/; paper rows name it in their `ours_row` column
    label: str  # what the row is at full scale, e.g. "RCCA R=2" (the backbone is renamed at smoke scale)
    changes: Mapping[str, Any] = field(default_factory=dict)  # settings changed from the table's base


@dataclass(frozen=True)
class Options:
    """What the command line asks for (see ``experiments/run.py --help``)."""

    scale: str = "smoke"
    data_root: str | None = None
    pretrained: str | None = None
    device: str | None = None
    nproc: int = 1
    dry_run: bool = False
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

    A training table (the default ``kind``) needs only its full-scale settings: its smoke scale defaults
    to :func:`experiments.settings.smoke_of` of them, its runner to the engine's
    :func:`experiments.rows.train_runner`.
    """

    number: int
    topic: str  # file topic: experiments/tableNN_<topic>.py, experiments/paper/tableNN_<topic>.csv
    title: str
    metrics: tuple[str, ...]  # metric columns compared with the paper (the paper's units), primary first
    rows: tuple[Row, ...]
    full: Any  # the paper's setting (a settings dataclass, usually a named preset of cca.engine.presets)
    shows_full: str  # what the table shows at full scale
    shows_smoke: str  # what a smoke run shows (never a reproduction of the paper's numbers)
    notes: tuple[str, ...] = ()  # settings not found in the paper, deviations, caveats
    kind: str = "train"  # "train" (engine), "profile" (profiling harness), "detection" (Mask R-CNN loop)
    smoke: Any = None  # derived from `full` (None: smoke_of(full), training tables only)
    runner: Runner | None = None  # how one row runs (None: the engine's train_runner, training tables only)
    # metrics measured at a fixed setting whatever the scale (metric -> the setting, shown in the Scale column)
    metric_scales: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"kind must be one of {KINDS}, got {self.kind!r}")
        keys = [r.key for r in self.rows]
        if len(set(keys)) != len(keys):
            raise ValueError(f"table {self.number}: duplicate row keys {keys}")
        if self.kind != "train" and (self.smoke is None or self.runner is None):
            raise ValueError(f"table {self.number}: a {self.kind!r} table needs its smoke settings and its runner")
        if self.smoke is None:
            from experiments.settings import smoke_of

            object.__setattr__(self, "smoke", smoke_of(self.full))
        if self.runner is None:
            from experiments.rows import train_runner

            object.__setattr__(self, "runner", train_runner)

    @property
    def paper_csv(self) -> Path:
        return PAPER_DIR / f"table{self.number:02d}_{self.topic}.csv"

    def base(self, scale: str) -> Any:
        return self.full if scale == "full" else self.smoke
