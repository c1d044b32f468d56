"""What the four mechanism experiments share: the command line, planning and running the seeds, the
per-variant bar figure with 95% intervals, and the report's provenance.

Runs are stored by key (:func:`experiments.mechanisms.settings.run_key`) under
``runs/mechanisms/<key>/``, so two experiments that train the same run (e.g. R=2 without the CCL in
the CCL study and in the stacking study) train it once.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
from pathlib import Path
from typing import Any

from experiments.mechanisms.settings import ROOT, MechanismSettings, Variant, run_key
from experiments.mechanisms.stats import mean_std, t_interval
from experiments.mechanisms.training import run_jobs

RUNS = Path("runs") / "mechanisms"
REPORTS = Path("reports")
CLAIMS = REPORTS / "claims"


def parse_args(
    prog: str, doc: str, argv: list[str] | None, *, variants: list[str] | None = None, runs: Path = RUNS
) -> argparse.Namespace:
    """The mechanism experiments' command line (``variants``: offer ``--variants`` over these names)."""
    parser = argparse.ArgumentParser(prog=prog, description=doc.splitlines()[0])
    if variants is not None:
        parser.add_argument("--variants", nargs="+", choices=variants, default=variants)
    parser.add_argument("--seeds", nargs="+", type=int, help="seeds (default: the experiment's)")
    parser.add_argument("--iterations", type=int, help="training iterations per run (default: the experiment's)")
    parser.add_argument(
        "--workers", type=int, default=2, help="runs trained in parallel processes, one thread each (default 2)"
    )
    parser.add_argument("--force", action="store_true", help="re-train runs whose results exist")
    parser.add_argument("--dry-run", action="store_true", help="print the settings and the planned runs only")
    parser.add_argument("--runs", type=Path, default=runs, help=f"where runs are stored (default {runs})")
    parser.add_argument("--reports", type=Path, default=REPORTS, help=f"where the report goes (default {REPORTS})")
    return parser.parse_args(argv)


def apply_args(settings: MechanismSettings, args: argparse.Namespace) -> MechanismSettings:
    if args.seeds:
        settings = dataclasses.replace(settings, seeds=tuple(args.seeds))
    if args.iterations:
        settings = dataclasses.replace(settings, iterations=args.iterations)
    return settings


def planned_jobs(
    module: Any, settings: MechanismSettings, runs: Path
) -> tuple[list[tuple[str, tuple]], list[tuple[str, tuple]]]:
    """``(early, late)`` lists of ``(arm name, job)`` for an experiment module (``arms()``, ``LATE_ARMS``):
    seed by seed (an interrupted study has every arm at about the same number of seeds), the arms in
    ``LATE_ARMS`` after all the others."""
    arms = module.arms()
    late_names = tuple(getattr(module, "LATE_ARMS", ()))

    late_seeds = tuple(getattr(module, "LATE_SEEDS", settings.seeds))

    def jobs(names: list[str], seeds: tuple[int, ...]) -> list[tuple[str, tuple]]:
        return [
            (n, (settings, arms[n], seed, runs / run_key(settings, arms[n], seed))) for seed in seeds for n in names
        ]

    early = jobs([n for n in arms if n not in late_names], settings.seeds)
    return early, jobs([n for n in arms if n in late_names], tuple(s for s in settings.seeds if s in late_seeds))


def run_named(planned: list[tuple[str, tuple]], workers: int, force: bool) -> list[dict[str, Any]]:
    """Train (or read back) every planned job; each result gets ``name``, its arm."""
    results = run_jobs([job for _, job in planned], workers=workers, force=force)
    for (name, _), result in zip(planned, results, strict=True):
        result["name"] = name
    return results


def experiment_main(module: Any, prog: str, argv: list[str] | None) -> int:
    """The command line of one experiment module (``SETTINGS``, ``arms()``, ``report()``, optional ``LATE_ARMS``)."""
    args = parse_args(prog, module.__doc__, argv)
    settings = apply_args(module.SETTINGS, args)
    if args.dry_run:
        return dry_run(settings, module.arms())
    os.chdir(ROOT)
    early, late = planned_jobs(module, settings, args.runs)
    results = run_named(early + late, args.workers, args.force)
    print(f"wrote {module.report(settings, module.arms(), results, args.reports)}")
    return 0


def dry_run(settings: MechanismSettings, variants: dict[str, Variant]) -> int:
    for key, value in dataclasses.asdict(settings).items():
        print(f"{key} = {value!r}")
    for name, variant in variants.items():
        print(f"variant {name}: {variant}")
    print(f"runs: {len(variants)} variants x {len(settings.seeds)} seeds = {len(variants) * len(settings.seeds)}")
    return 0


def bar_figure(
    results: list[dict[str, Any]],
    names: list[str],
    path: Path,
    title: str,
    threshold_pct: float | None = None,
    paper: dict[str, float] | None = None,
) -> Path:
    """One bar per variant at the mean val mIoU, its 95% t interval, every seed as a dot; optional success line."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from cca.reports.render import save_figure

    fig, ax = plt.subplots(figsize=(1.5 * len(names) + 2.5, 3.4), dpi=120)
    for i, name in enumerate(names):
        values = [float(r["miou"]) for r in results if r["name"] == name]
        if not values:
            continue
        mean, _ = mean_std(values)
        lo, hi = t_interval(values)
        ax.bar(i, mean, color="tab:blue", alpha=0.55)
        ax.errorbar(i, mean, yerr=[[mean - lo], [hi - mean]], color="black", capsize=5)
        ax.scatter([i + 0.12 * ((j % 5) - 2) / 2 for j in range(len(values))], values, color="black", s=10, zorder=3)
    if threshold_pct is not None:
        ax.axhline(
            threshold_pct, color="tab:red", linestyle="--", linewidth=1, label=f"success threshold {threshold_pct:g}%"
        )
        ax.legend(fontsize=7, loc="lower right")
    ax.set_xticks(range(len(names)))
    ax.set_xticklabels(names, fontsize=8)
    ax.set_ylabel("val mIoU (%)")
    ax.set_ylim(0, 105)
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    return save_figure(fig, path)


def provenance_now() -> dict[str, Any]:
    from cca.reports.provenance import provenance

    return provenance("cpu")


def settings_text(settings: MechanismSettings) -> str:
    """The settings as one Markdown line per group (for a report's "Setup" section)."""
    data = dataclasses.asdict(settings)
    return ", ".join(f"`{k}={v}`" for k, v in data.items())
