"""Reproduce the paper's tables: ``python -m experiments.run N|all [options]`` (smoke scale by default),
from the repository root.

The nox sessions call it with the project's environment (``nox -s reproduce_table2 -- ARGS`` is
``.nox/cca-env/bin/python -m experiments.run 2 ARGS``; plain ``python`` works only where torch and cca
are installed)::

    .nox/cca-env/bin/python -m experiments.run --list   # the tables: number, topic, kind, rows
    nox -s reproduce_table2                             # table 2 at smoke scale (CPU, synthetic data, minutes)
    nox -s reproduce_table2 -- --dry-run                # resolved settings, data found, planned iterations
    nox -s reproduce_all                                # every table at smoke scale
    nox -s reproduce_table2 -- --scale full --data-root data/cityscapes --pretrained weights/resnet101.pth \\
        --device cuda --nproc 4                         # the paper's setting (torchrun, 4 GPUs)
    nox -s reproduce_table2 -- --set iterations=2       # any setting of the table's settings object

Results: ``runs/tableNN/<scale>/<row>/result.json`` (a row is skipped when its result exists for the same
settings and code version; ``--force`` re-runs it). Reports: ``reports/tableN.md`` + ``.csv`` (the scale that
ran, from every result of that scale on disk), ``reports/README.md``. Errors a user can fix are one line;
Ctrl-C prints where the run stopped.

A whole table (:func:`run_table`): every selected row's settings (:mod:`experiments.settings`) run or skipped
(:mod:`experiments.rows`), then the report of the scale that ran, from every result on disk for that scale
(rows not re-run keep their results, a failed row keeps its earlier one and is listed as failed on the
console; a row whose run directory is not on this machine keeps the values of the report on disk, read back
from its CSV): :mod:`experiments.report`. A run that produced no result at its scale leaves the report alone.
"""

from __future__ import annotations

import argparse
import importlib
import re
import sys
import traceback
from pathlib import Path
from typing import Any

from experiments.report import committed_results, row_label, write_table_report
from experiments.rows import read_result, run_row
from experiments.settings import device_of, row_settings, run_dir, settings_dict
from experiments.spec import ROOT, Options, Table, selected_rows

ENTRY = re.compile(r"table(\d+)_(\w+)\.py")


def tables() -> dict[int, Table]:
    """Every ``experiments/tableNN_<topic>.py`` entry's ``TABLE``, by number."""
    found: dict[int, Table] = {}
    for path in sorted((ROOT / "experiments").glob("table*_*.py")):
        match = ENTRY.fullmatch(path.name)
        if not match:
            continue
        module = importlib.import_module(f"experiments.{path.stem}")
        table = getattr(module, "TABLE", None)
        if not isinstance(table, Table):
            raise TypeError(f"{path} must define TABLE = experiments.spec.Table(...)")
        if table.number != int(match.group(1)) or table.topic != match.group(2):
            raise ValueError(f"{path}: TABLE says table {table.number} ({table.topic}), the file name disagrees")
        found[table.number] = table
    return found


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
    ran: list[str] = []
    failed: list[str] = []
    if not options.report_only:
        check_data(table, options)
        refuse_full_scale_on_cpu(table, options)
    for row in () if options.report_only else selected_rows(table, options):
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
    if results or options.report_only:
        results.update(committed_results(table, options, have=list(results)))  # rows whose runs/ are not here
    if not results:
        print(f"[table {table.number}] no result at {options.scale} scale: "
              f"{Path(options.reports_dir) / f'table{table.number}.md'} left as it is")
        return {"report": None, "failed": failed, "ran": ran}
    report = write_table_report(table, results, options, ran=ran, failed=failed)
    return {"report": report, "failed": failed, "ran": ran}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m experiments.run", description=__doc__.splitlines()[0], formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="\n".join(__doc__.splitlines()[1:]),
    )
    parser.add_argument("table", nargs="?", help="table number, or 'all'")
    parser.add_argument("--list", action="store_true", help="list the tables (number, topic, kind) and exit")
    parser.add_argument("--scale", choices=("smoke", "full"), default="smoke", help="smoke (default) or the paper's full setting")
    parser.add_argument("--data-root", metavar="PATH", help="the real dataset (default: synthetic data at smoke scale)")
    parser.add_argument("--pretrained", metavar="PATH", help="local ImageNet backbone weights (never downloaded)")
    parser.add_argument("--device", choices=("cpu", "cuda", "auto"), help="device (default: the scale's setting)")
    parser.add_argument("--nproc", type=int, default=1, metavar="N", help="processes (GPUs) per run via torchrun")
    parser.add_argument("--dry-run", action="store_true", help="print settings, data found and planned iterations; run nothing")
    parser.add_argument("--report-only", action="store_true",
                        help="re-render the report from the results on disk (runs/, else the committed report's CSV); run nothing")
    parser.add_argument("--force", action="store_true", help="re-run rows whose results exist")
    parser.add_argument("--rows", nargs="+", default=[], metavar="ROW", help="only these rows of the table")
    parser.add_argument("--runs-dir", type=Path, default=None, metavar="DIR", help="results directory (default: runs/)")
    parser.add_argument("--reports-dir", type=Path, default=None, metavar="DIR", help="reports directory (default: reports/)")
    parser.add_argument(
        "--set", dest="overrides", nargs="+", action="extend", default=[], metavar="KEY=VALUE",
        help="override settings of every row, e.g. --set iterations=2 (an unknown key lists the valid ones)",
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    from cca._env import quiet_cpu_toolchain_notice

    quiet_cpu_toolchain_notice()
    known = tables()
    if args.list:
        print(f"{'table':>5}  {'topic':<18} {'kind':<10} title (rows)")
        for number, table in sorted(known.items()):
            print(f"{number:>5}  {table.topic:<18} {table.kind:<10} {table.title} ({', '.join(r.key for r in table.rows)})")
        return 0
    if args.table is None:
        parser.error("give a table number or 'all' (see --list)")
    if args.table == "all":
        chosen = [known[n] for n in sorted(known)]
        if args.rows:
            parser.error("--rows needs a single table")
    else:
        try:
            number = int(args.table)
        except ValueError:
            parser.error(f"table must be a number or 'all', got {args.table!r}")
        if number not in known:
            parser.error(f"no table {number}; tables: {', '.join(str(n) for n in sorted(known))}")
        chosen = [known[number]]
    try:
        options = Options(
            scale=args.scale, data_root=args.data_root, pretrained=args.pretrained, device=args.device,
            nproc=args.nproc, dry_run=args.dry_run, report_only=args.report_only, force=args.force, overrides=tuple(args.overrides),
            rows=tuple(args.rows),
            **({"runs_dir": Path(args.runs_dir)} if args.runs_dir else {}),
            **({"reports_dir": Path(args.reports_dir)} if args.reports_dir else {}),
        )
        for table in chosen:  # settings errors are usage errors: caught here, before anything runs
            for row in selected_rows(table, options):
                row_settings(table, row, options)
    except (ValueError, TypeError, FileNotFoundError) as err:
        parser.error(str(err))
    if args.device == "cuda" and not args.dry_run:
        import torch

        if not torch.cuda.is_available():
            print("error: --device cuda: no CUDA GPU is visible (torch.cuda.is_available() is False); run on a GPU "
                  "machine, or drop --device (smoke scale runs on the CPU)", file=sys.stderr)
            return 2
    failed = []
    try:
        for table in chosen:
            outcome = run_table(table, options)
            failed += [f"table {table.number} row {key}" for key in outcome["failed"]]
    except KeyboardInterrupt as stop:
        where = getattr(stop, "where", None)
        at = getattr(stop, "iteration", None)
        print(f"interrupted{f' at iteration {at}' if at is not None else ''}{f' ({where})' if where else ''}; "
              "run the same command again to resume", file=sys.stderr)
        return 130
    except (ValueError, TypeError, OSError) as err:  # data missing or unreadable, a busy run directory, ...
        print(f"error: {err}", file=sys.stderr)
        return 2
    if failed:
        print("FAILED: " + ", ".join(failed), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
