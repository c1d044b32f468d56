"""The zero-initialised gamma: RCCA R=2 with gamma = 0 at init (the paper) vs 1, val mIoU and gamma
against the iteration, on the long-range task (``cca.data.long_range``), 5 seeds each.

    python -m experiments.mechanisms.gamma_init            # nox -s mechanism_gamma
    python -m experiments.mechanisms.gamma_init --dry-run

With gamma = 0 the block starts as the identity, and the signal that travels two hops (cue -> pixel in
the cue's column and the blob's row -> blob pixel) is second order in gamma: its gradient vanishes at
init. Each run evaluates every ``eval_every`` iterations and stops once two evaluations in a row reach
the success threshold (or at ``iterations``): the report gives the iterations each init needs.
Report: ``reports/mechanism_gamma.md``.
"""

from __future__ import annotations

import sys

from experiments.mechanisms.common import Study
from experiments.mechanisms.reports import write_gamma
from experiments.mechanisms.settings import MechanismSettings, Variant

SUCCESS_MIOU_PCT = 90.0  # "learned": val mIoU >= 90% at two evaluations in a row
STUDY = Study(
    module="gamma_init",
    name="mechanism_gamma",
    doc=__doc__,
    settings=MechanismSettings(
        batch_size=8, seeds=tuple(range(5)), iterations=800, eval_every=50, stop_miou_pct=SUCCESS_MIOU_PCT
    ),
    variants={
        "gamma0": Variant("RCCA R=2, gamma init 0 (paper)", gamma_init=0.0),
        "gamma1": Variant("RCCA R=2, gamma init 1", gamma_init=1.0),
    },
    writer=write_gamma,
    success_miou_pct=SUCCESS_MIOU_PCT,
)

main = STUDY.main

if __name__ == "__main__":
    sys.exit(main())
