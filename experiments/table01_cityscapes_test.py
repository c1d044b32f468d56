"""Table 1: Cityscapes test set, comparison with the state of the art (CCNet, ResNet-101: 81.9 mIoU).

    nox -s reproduce_table1                                  # smoke: CPU, synthetic data
    nox -s reproduce_table1 -- --scale full --data-root data/cityscapes --pretrained weights/resnet101.pth \\
        --device cuda --nproc 4                              # the paper's setting on 4 GPUs

Our code produces the CCNet row; the other methods of the paper's table are quoted (where found).
Cityscapes test labels are not public: at full scale we evaluate on val (the paper submitted to the
benchmark server), so our number is compared with a test-set number only as a reference point.
"""

from __future__ import annotations

from cca.engine import presets
from experiments.segmentation import train_runner
from experiments.settings import smoke_of
from experiments.spec import Row, Table

# The paper's Cityscapes setting + the category consistent loss of the TPAMI model (its inner weights:
# experiments/paper/ccl.csv), read top to bottom in cca/engine/presets.py:
# ccnet-ccl_r101-d8_4xb2-60k_cityscapes-769x769.
FULL = presets.CITYSCAPES_CCL

ROWS = (Row("ccnet_r2", "CCNet (ResNet-101, RCCA R=2 + CCL)"),)

TABLE = Table(
    number=1,
    topic="cityscapes_test",
    title="Cityscapes test: comparison with the state of the art",
    metrics=("miou",),
    rows=ROWS,
    full=FULL,
    smoke=smoke_of(FULL),
    runner=train_runner,
    shows_full="Our CCNet trained at the paper's setting, evaluated on Cityscapes val (test labels are not public), "
    "beside the paper's test-set figures.",
    shows_smoke="It shows that the full CCNet pipeline (data, model, loss with CCL, training, sliding/whole evaluation) "
    "runs end to end on CPU; 300 iterations of a tiny backbone on synthetic images say nothing about Cityscapes.",
    notes=(
        "Our full-scale number is on val; the paper's is on the test server. The paper's test-time augmentation, "
        "training split (train or train+val) and CCL weight for this table were not found: our setting is single-scale, "
        "train split, CCL weight 1.",
        "The CCL acts on a 1x1-conv projection of the RCCA output to 16 channels with the paper's margins and weights "
        "(experiments/paper/settings_tpami.csv). Random scale 0.75-2.0 as the paper (the released code: 0.5-2.0).",
        "The paper's table lists other methods; only PSANet (the previous best, 80.1) is quoted in the summaries.",
    ),
)
