"""Run several mechanism experiments in one pool of worker processes, then write their reports.

    python -m experiments.mechanisms                          # all four, 2 workers
    python -m experiments.mechanisms stacking gamma_init --workers 4

Jobs go in the order the experiments are named, seed by seed; each study's ``late_arms`` come
after every other job. Runs done before are read back (same keys as the single-experiment commands).
"""

from __future__ import annotations

import argparse
import importlib
import sys
from pathlib import Path

from experiments.mechanisms import common

EXPERIMENTS = ("ccl_stability", "gamma_init", "stacking", "video_context")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m experiments.mechanisms", description=__doc__.splitlines()[0])
    parser.add_argument("experiments", nargs="*", help=f"any of {EXPERIMENTS} (default: all)")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--force", action="store_true")
    parser.add_argument("--runs", type=Path, default=common.RUNS)
    parser.add_argument("--reports", type=Path, default=common.REPORTS)
    args = parser.parse_args(argv)
    unknown = [name for name in args.experiments if name not in EXPERIMENTS]
    if unknown:
        parser.error(f"unknown experiment(s) {unknown}; expected any of {EXPERIMENTS}")
    studies = [importlib.import_module(f"experiments.mechanisms.{name}").STUDY for name in args.experiments or EXPERIMENTS]
    plans = [study.plan(study.settings, args.runs) for study in studies]
    early = [(i, item) for i, (e, _) in enumerate(plans) for item in e]
    late = [(i, item) for i, (_, lt) in enumerate(plans) for item in lt]
    ordered = early + late
    results = common.run_named([item for _, item in ordered], args.workers, args.force)
    for i, study in enumerate(studies):
        mine = [r for (j, _), r in zip(ordered, results, strict=True) if j == i]
        print(f"wrote {study.report(study.settings, mine, args.reports)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
