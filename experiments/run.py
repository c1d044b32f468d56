"""Reproduce the paper's tables: ``python experiments/run.py N|all [options]`` (smoke scale by default).

The nox sessions call it with the project's environment (``nox -s reproduce_table2 -- ARGS`` is
``.nox/cca-env/bin/python experiments/run.py 2 ARGS``; plain ``python`` works only where torch and cca
are installed)::

    .nox/cca-env/bin/python experiments/run.py --list   # the tables: number, topic, kind, rows
    nox -s reproduce_table2                             # table 2 at smoke scale (CPU, synthetic data, minutes)
    nox -s reproduce_table2 -- --dry-run                # resolved settings, data found, planned iterations
    nox -s reproduce_all                                # every table at smoke scale
    nox -s reproduce_table2 -- --scale full --data-root data/cityscapes --pretrained weights/resnet101.pth \\
        --device cuda --nproc 4                         # the paper's setting (torchrun, 4 GPUs)
    nox -s reproduce_table2 -- --set iterations=2       # any setting of the table's settings object

Results: ``runs/tableNN/<scale>/<row>/result.json`` (a row is skipped when its result exists for the same
settings and commit; ``--force`` re-runs it). Reports: ``reports/tableN.md`` + ``.csv`` (the scale that ran,
from every result of that scale on disk), ``reports/README.md``. Errors a user can fix are one line; Ctrl-C
prints where the run stopped.
"""

from __future__ import annotations

import argparse
import importlib
import os
import re
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from experiments.common import ROOT, Options, Table, row_settings, run_table, selected_rows  # noqa: E402

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
            raise TypeError(f"{path} must define TABLE = experiments.common.Table(...)")
        if table.number != int(match.group(1)) or table.topic != match.group(2):
            raise ValueError(f"{path}: TABLE says table {table.number} ({table.topic}), the file name disagrees")
        found[table.number] = table
    return found


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python experiments/run.py", description=__doc__.splitlines()[0], formatter_class=argparse.RawDescriptionHelpFormatter,
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
    if Path.cwd().resolve() != ROOT:  # keep user paths valid after moving to the repository root
        for name in ("data_root", "pretrained", "runs_dir", "reports_dir"):
            value = getattr(args, name)
            setattr(args, name, str(Path(value).resolve()) if value else None)
    previous = Path.cwd()
    os.chdir(ROOT)  # runs/, reports/ and the synthetic data paths are relative to the repository root
    try:
        return _main(parser, args)
    finally:
        os.chdir(previous)


def _main(parser: argparse.ArgumentParser, args: argparse.Namespace) -> int:
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
            nproc=args.nproc, dry_run=args.dry_run, force=args.force, overrides=tuple(args.overrides),
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
