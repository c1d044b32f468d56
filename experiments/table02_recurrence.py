"""Table 2: Cityscapes val, the number of recurrent loops R of the criss-cross attention (0, 1, 2, 3).

    nox -s reproduce_table2                                  # smoke: CPU, synthetic data, about 20 minutes
    nox -s reproduce_table2 -- --scale full --data-root data/cityscapes --pretrained weights/resnet101.pth \\
        --device cuda --nproc 4

Rows: R=0 (the same head without attention), R=1, R=2, R=3, and R=2 with OHEM (the released code's
recommended setting, whose val mIoU the official README reports).
"""

from __future__ import annotations

from cca.engine import presets
from experiments.common import Row, Table, smoke_of, train_runner

# The paper's Cityscapes setting, read top to bottom in cca/engine/presets.py
# (ccnet_r101-d8_4xb2-60k_cityscapes-769x769);
# the loop ablation is on RCCA alone (no CCL); rows change `recurrence`.
FULL = presets.CITYSCAPES

SMOKE = smoke_of(FULL)

ROWS = (
    Row("r0", "R=0 (no attention)", {"recurrence": 0}),
    Row("r1", "RCCA R=1", {"recurrence": 1}),
    Row("r2", "RCCA R=2", {"recurrence": 2}),
    Row("r3", "RCCA R=3", {"recurrence": 3}),
    Row("r2_ohem", "RCCA R=2 + OHEM", {"recurrence": 2, "ohem": True}),
)

TABLE = Table(
    number=2,
    topic="recurrence",
    title="Cityscapes val: number of recurrent loops R",
    kind="train",
    metrics=("miou", "gflops", "memory_mb"),
    rows=ROWS,
    full=FULL,
    smoke=SMOKE,
    runner=train_runner,
    shows_full="mIoU on Cityscapes val as the number of criss-cross loops grows, at the paper's setting.",
    shows_smoke="It shows that every row (R=0..3, OHEM) trains and evaluates end to end; synthetic images and 300 "
    "iterations of a tiny backbone cannot show the effect of R (see reports/longrange.md for a task built to show it on CPU).",
    notes=(
        "The paper's values for this table were not found in the sources searched; the rows `code_*` quote the "
        "released code's val mIoU (official README: best of three runs), a secondary source.",
        "The efficiency of the attention module alone per R (GFLOPs, memory) is in table 5 and reports/efficiency.md.",
    ),
)
