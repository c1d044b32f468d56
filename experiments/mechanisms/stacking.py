"""Row/column stacking vs criss-cross: horizontal attention then vertical (+HV), both orders summed
(+HV&VH), and criss-cross R=2, on the long-range task (``cca.data.long_range``), 5 seeds each.

    python -m experiments.mechanisms.stacking            # nox -s mechanism_stacking: ~5 minutes on 2 CPU cores
    python -m experiments.mechanisms.stacking --dry-run

The paper's context table has +HV and +HV&VH rows beside +RCCA (values not in our sources). On the
long-range task the cue shares no row or column with the blob: one direction cannot reach it, two
steps (row then column, or criss-cross twice) can. Report: ``reports/mechanism_stacking.md``.
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from experiments.mechanisms.settings import MechanismSettings, Variant  # noqa: E402

NAME = "mechanism_stacking"
SUCCESS_MIOU_PCT = 90.0  # as the CCL study: val mIoU >= 90% and no NaN/inf loss
SETTINGS = MechanismSettings(
    batch_size=8, iterations=400, seeds=tuple(range(5))
)  # the CCL study's settings: its r2 runs are reused
VARIANTS = {
    "r2": Variant("criss-cross RCCA R=2"),
    "hv": Variant("+HV: row attention, then column attention", block="hv"),
    "hv_vh": Variant("+HV&VH: row-then-column + column-then-row, summed", block="hv_vh"),
}


def arms() -> dict[str, Variant]:
    return dict(VARIANTS)


def report(settings: MechanismSettings, arms: dict[str, Variant], results: list, reports: Path) -> Path:
    from experiments.mechanisms.reports import write_stacking

    return write_stacking(settings, arms, results, reports)


def main(argv: list[str] | None = None) -> int:
    from experiments.mechanisms import common

    return common.experiment_main(sys.modules[__name__], "python -m experiments.mechanisms.stacking", argv)


if __name__ == "__main__":
    sys.exit(main())
