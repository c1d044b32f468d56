"""Row/column stacking vs criss-cross: horizontal attention then vertical (+HV), both orders summed
(+HV&VH), and criss-cross R=2, on the long-range task (``cca.data.long_range``), 5 seeds each.

    python -m experiments.mechanisms.stacking            # nox -s mechanism_stacking
    python -m experiments.mechanisms.stacking --dry-run

The paper's context table has +HV and +HV&VH rows beside +RCCA (values not in our sources). On the
long-range task the cue shares no row or column with the blob: one direction cannot reach it, two
steps (row then column, or criss-cross twice) can. Report: ``reports/mechanism_stacking.md``.
"""

from __future__ import annotations

import sys

from experiments.mechanisms.common import Study
from experiments.mechanisms.reports import write_stacking
from experiments.mechanisms.settings import MechanismSettings, Variant

STUDY = Study(
    module="stacking",
    name="mechanism_stacking",
    doc=__doc__,
    settings=MechanismSettings(batch_size=8, iterations=400, seeds=tuple(range(5))),  # the CCL study's: its r2 runs are reused
    variants={
        "r2": Variant("criss-cross RCCA R=2"),
        "hv": Variant("+HV: row attention, then column attention", block="hv"),
        "hv_vh": Variant("+HV&VH: row-then-column + column-then-row, summed", block="hv_vh"),
    },
    writer=write_stacking,
    success_miou_pct=90.0,  # as the CCL study: val mIoU >= 90% and no NaN/inf loss
)

main = STUDY.main

if __name__ == "__main__":
    sys.exit(main())
