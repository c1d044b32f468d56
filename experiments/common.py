"""Shared machinery of the table entries: run a whole table, its dry run, and the names entries import.

A table entry (``experiments/tableNN_<topic>.py``) defines one :class:`Table`: the paper's full-scale
settings (a named preset of :mod:`cca.engine.presets`), a smoke scale derived from them, the rows of the
paper's table that our code produces (each a few settings changed from the base), and how one row runs
(``runner``). :func:`run_table` does the rest:

* settings of a row: :mod:`experiments.settings`; running a row (resumable, locked, skipped when its
  result exists for the same settings and commit): :mod:`experiments.rows`;
* the report of the scale that ran, from every result on disk for that scale (rows not re-run keep
  their results, a failed row keeps its earlier one and is listed as failed on the console; a row whose
  run directory is not on this machine keeps the values of the report on disk, read back from its CSV):
  :mod:`experiments.report`. A run that produced no result at its scale leaves the report alone.
"""

from __future__ import annotations

import traceback
from pathlib import Path
from typing import Any

from experiments.report import committed_results, write_table_report
from experiments.rows import ENGINE_METRICS, as_percent, read_result, run_row, train_runner
from experiments.settings import (
    apply_changes,
    data_label,
    row_label,
    row_settings,
    run_dir,
    selected_rows,
    settings_dict,
    settings_hash,
    smoke_of,
    synthetic_root,
)
from experiments.spec import (
    KINDS,
    PAPER_DIR,
    REPORTS_DIR,
    ROOT,
    RUNS_DIR,
    SCALES,
    SYNTHETIC_AUTO,
    Options,
    Row,
    Table,
)

__all__ = [
    "ENGINE_METRICS", "KINDS", "PAPER_DIR", "REPORTS_DIR", "ROOT", "RUNS_DIR", "SCALES", "SYNTHETIC_AUTO",
    "Options", "Row", "Table", "apply_changes", "as_percent", "check_data", "data_label", "describe",
    "read_result", "row_label", "row_settings", "run_dir", "run_row", "run_table", "selected_rows",
    "settings_dict", "settings_hash", "smoke_of", "synthetic_root", "train_runner", "write_table_report",
]  # fmt: skip

# Errors a user can act on from their message alone: one line on the console, no traceback.
USER_ERRORS: tuple[type[BaseException], ...] = (
    FileNotFoundError, FileExistsError, ValueError, TypeError, FloatingPointError, NotImplementedError, OSError,
)  # fmt: skip


def _user_errors() -> tuple[type[BaseException], ...]:
    from cca.engine.lock import RunLockedError

    return (*USER_ERRORS, RunLockedError)


def dataset_sizes(cfg: Any, root_given: bool = False) -> str:
    """What data the settings find: split sizes, or what is missing / will be written.

    ``root_given``: the root came from ``--data-root`` (so a missing one is named, not asked for)."""
    dataset = getattr(cfg, "dataset", None)
    if dataset is None:
        return "no data needed"
    root = Path(cfg.data_root)
    if not (root.is_dir() and any(root.iterdir())):
        if getattr(cfg, "synthetic", False):
            return (
                f"{root} missing: synthetic {dataset}-format data will be written "
                f"({cfg.synthetic_num_train} train / {cfg.synthetic_num_val} val, {cfg.synthetic_size[0]}x{cfg.synthetic_size[1]})"
            )
        return f"{root} NOT FOUND (the --data-root given)" if root_given else f"{root} NOT FOUND: pass --data-root PATH"
    sizes = []
    try:
        from cca.data import build_dataset

        for split in (cfg.train_split, cfg.val_split):
            sizes.append(f"{split}: {len(build_dataset(dataset, str(root), split))} images")
    except Exception as err:  # report, do not fail a dry run
        sizes.append(f"could not read: {type(err).__name__}: {err}")
    return f"{root} ({dataset}): " + ", ".join(sizes)


def describe(table: Table, options: Options) -> str:
    """The dry-run text: resolved settings, data found, planned iterations."""
    lines = [f"Table {table.number} ({table.topic}): {table.title}", f"  kind: {table.kind}, scale: {options.scale}"]
    base = table.base(options.scale)
    lines.append(f"  base settings ({type(base).__name__}):")
    lines += [f"    {k} = {v!r}" for k, v in settings_dict(base).items()]
    total = 0
    for row in selected_rows(table, options):
        settings = row_settings(table, row, options)
        changed = {k: v for k, v in settings_dict(settings).items() if settings_dict(base).get(k) != v}
        lines.append(f"  row {row.key} ({row_label(row, settings)}):")
        lines.append(f"    changes: {changed or '{}'}")
        lines.append(f"    data: {dataset_sizes(settings, root_given=options.data_root is not None)}")
        iterations = settings_dict(settings).get("iterations")  # a profiling row trains nothing
        if iterations is not None:
            total += int(iterations)
            lines.append(f"    planned iterations: {iterations} (global batch {getattr(settings, 'batch_size', '?')})")
        lines.append(f"    results: {run_dir(table, row, options) / 'result.json'}")
    if total:
        lines.append(f"  planned iterations over all rows: {total}")
    if options.scale == "full":
        from experiments.full_scale_plan import plan_lines

        lines += plan_lines(table, options, row_settings(table, selected_rows(table, options)[0], options))
    return "\n".join(lines)


def _reads_data(table: Table, options: Options) -> bool:
    """Whether a selected row of the table reads a real dataset (not synthetic data, not a profile)."""
    for row in selected_rows(table, options):
        settings = row_settings(table, row, options)
        if getattr(settings, "dataset", None) is not None and not getattr(settings, "synthetic", False):
            return True
    return False


def refuse_full_scale_on_cpu(table: Table, options: Options) -> None:
    """A full-scale training run on the CPU only when asked for explicitly (``--device cpu``, or ``device='cpu'``
    in the settings); ``device='auto'`` without a GPU is refused before anything runs."""
    if options.scale != "full" or table.kind == "profile":
        return
    from experiments.rows import device_of

    for row in selected_rows(table, options):
        settings = row_settings(table, row, options)
        if getattr(settings, "device", "auto") == "auto" and device_of(settings) == "cpu":
            raise ValueError(
                f"table {table.number} row {row.key} at full scale would train {settings_dict(settings).get('iterations')} "
                "iterations on the CPU (no CUDA GPU visible): weeks of CPU time; run it on GPUs (--device cuda --nproc N), "
                "or pass --device cpu to run it on the CPU anyway (--dry-run prints the plan)"
            )


def check_data(table: Table, options: Options) -> None:
    """Real data must be there and readable: fail before any training (no traceback, the layout in the message)."""
    from cca.data import build_dataset

    checked = set()
    for row in selected_rows(table, options):
        settings = row_settings(table, row, options)
        dataset = getattr(settings, "dataset", None)
        if dataset is None or getattr(settings, "synthetic", False):
            continue
        root = Path(settings.data_root)
        if not root.is_dir():
            raise FileNotFoundError(
                f"table {table.number} row {row.key}: {dataset} not found at {root}; pass --data-root PATH "
                "(no dataset is ever downloaded)"
            )
        for split in (settings.train_split, settings.val_split):
            if (dataset, str(root), split) in checked:
                continue
            checked.add((dataset, str(root), split))
            try:
                build_dataset(dataset, str(root), split)
            except (FileNotFoundError, ValueError) as err:
                raise FileNotFoundError(f"table {table.number} row {row.key}: {dataset} {split!r} split unusable at {root}: {err}") from None


def _metric_line(table: Table, record: dict[str, Any]) -> str:
    metrics = record.get("metrics", {})
    shown = [f"{m} {metrics[m]:.2f}" for m in table.metrics if isinstance(metrics.get(m), (int, float))]
    return ", ".join(shown) or "no metric"


def run_table(table: Table, options: Options) -> dict[str, Any]:
    """Run (or skip) every selected row, then write the report of the scale from every result on disk.

    Returns ``{"report": path or None, "failed": [row keys], "ran": [row keys]}``. A failing row is printed
    (one line for errors a user can act on) and keeps its earlier result; when no row of this scale has a
    result, the report on disk is left as it is.
    """
    if options.dry_run:
        print(describe(table, options))
        if options.data_root is not None and not Path(options.data_root).is_dir() and _reads_data(table, options):
            raise FileNotFoundError(f"--data-root {options.data_root}: not found (table {table.number} reads its dataset "
                                    "there; nothing is ever downloaded)")
        return {"report": None, "failed": [], "ran": []}
    check_data(table, options)
    refuse_full_scale_on_cpu(table, options)
    ran: list[str] = []
    failed: list[str] = []
    for row in selected_rows(table, options):
        try:
            run_row(table, row, options)
            ran.append(row.key)
        except KeyboardInterrupt as stop:
            stop.where = f"table {table.number} row {row.key}"  # type: ignore[attr-defined]
            raise
        except Exception as err:
            if not isinstance(err, _user_errors()):
                traceback.print_exc()
            print(f"[table {table.number}] {row.key}: FAILED: {type(err).__name__}: {err}")
            failed.append(row.key)
    results = {row.key: record for row in table.rows if (record := read_result(table, row, options))}
    for key in ran:
        print(f"[table {table.number}] {key}: {_metric_line(table, results[key])} ({options.scale} scale)")
    if failed:
        print(f"[table {table.number}] failed: {', '.join(failed)} (earlier results, if any, kept in the report)")
    if not results:
        print(f"[table {table.number}] no result at {options.scale} scale: "
              f"{Path(options.reports_dir) / f'table{table.number}.md'} left as it is")
        return {"report": None, "failed": failed, "ran": ran}
    results.update(committed_results(table, options, have=list(results)))  # rows whose runs/ are not here
    report = write_table_report(table, results, options, ran=ran, failed=failed)
    return {"report": report, "failed": failed, "ran": ran}
