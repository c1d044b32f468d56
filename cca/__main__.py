"""``python -m cca <command>``: the command-line entry point (also installed as ``cca``).

    python -m cca train --config smoke
    python -m cca train --config ccnet_r101-d8_4xb2-60k_cityscapes-769x769 --set pretrained=weights/r101.pth --out runs/cs
    python -m cca train --config smoke --resume
    torchrun --nproc_per_node 4 -m cca train --config ccnet_r101-d8_4xb2-60k_cityscapes-769x769
    python -m cca evaluate --checkpoint runs/smoke/best.pt --set eval_flip=true
    python -m cca info

Commands live in ``COMMANDS`` (name -> :class:`Command`); a new one is one more entry. Metrics are printed
in percent (keys ``*_pct``); the run's files hold fractions in [0, 1]. Errors a user can fix (a busy run
directory, an unreadable checkpoint, a full disk, a read-only directory, weights that do not fit, Ctrl-C)
are one line on stderr, not a traceback.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True)
class Command:
    help: str
    add_arguments: Callable[[argparse.ArgumentParser], None]
    run: Callable[[argparse.Namespace, argparse.ArgumentParser], int]


def _add_set(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--set",
        dest="overrides",
        metavar="KEY=VALUE",
        nargs="+",
        action="extend",
        default=[],
        help="override settings, e.g. --set iterations=100 crop_size=512,1024 amp=bf16 (an unknown key lists the valid ones)",
    )


# --- train -------------------------------------------------------------------------------------


def _train_arguments(parser: argparse.ArgumentParser) -> None:
    from cca.engine.presets import PRESETS

    parser.add_argument(
        "--config", required=True, metavar="NAME", help=f"a preset ({', '.join(PRESETS)}) or a path to a config.json"
    )
    _add_set(parser)
    parser.add_argument("--resume", action="store_true", help="continue from OUT/last.pt")
    parser.add_argument("--out", metavar="DIR", help="run directory (default: runs/<config name>)")
    parser.add_argument("--print-config", action="store_true", help="print the resolved settings as JSON and exit")


def _train(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    from cca.engine import config as config_mod
    from cca.engine.presets import get_config

    try:
        cfg = get_config(args.config)
        overrides = list(args.overrides) + ([f"output_dir={args.out}"] if args.out else [])
        cfg = config_mod.apply_overrides(cfg, overrides)
    except (ValueError, TypeError) as err:
        parser.error(str(err))
    if args.print_config:
        print(json.dumps(cfg.to_dict(), indent=2))
        return 0
    from cca.engine.checkpoint import CheckpointError
    from cca.engine.distributed import DeviceUnavailableError
    from cca.engine.lock import RunLockedError
    from cca.engine.train import TrainingInterrupted, train

    try:
        summary = train(cfg, resume=args.resume)
    except TrainingInterrupted as stop:
        again = "the same command" if args.resume else "the same command with --resume"
        print(f"interrupted at iteration {stop.iteration}; run {again} to resume"
              + ("" if stop.saved_iteration is not None else " (no checkpoint was written yet: it starts over)"),
              file=sys.stderr)
        return 130
    except KeyboardInterrupt:
        print("interrupted before training started; nothing to resume", file=sys.stderr)
        return 130
    except (FileExistsError, FileNotFoundError, FloatingPointError, CheckpointError, RunLockedError,
            DeviceUnavailableError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    except (OSError, ValueError) as err:  # a full disk, a read-only directory, weights or data that do not fit
        print(f"error: {_one_line(err)}", file=sys.stderr)
        return 1
    if int(os.environ.get("RANK", "0")) == 0:
        final = summary.get("final_metrics") or {}
        print(json.dumps({
            **{k: summary[k] for k in ("run_dir", "iteration", "last_checkpoint", "best_checkpoint")},
            "best_miou_pct": _pct(summary.get("best_miou")),
            "final_miou_pct": _pct(final.get("miou")),
        }))
    return 0


def _one_line(err: BaseException) -> str:
    """What went wrong, on one line: an OS error's reason and file, any other error's message."""
    if isinstance(err, OSError) and err.strerror:
        return f"{err.strerror}: {err.filename}" if err.filename else err.strerror
    return " ".join(str(err).split()) or type(err).__name__


def _pct(fraction: float | None) -> float | None:
    return None if fraction is None else round(100.0 * float(fraction), 2)


# --- evaluate ----------------------------------------------------------------------------------


def _evaluate_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--checkpoint", required=True, metavar="PATH", help="last.pt or best.pt of a run")
    _add_set(parser)
    parser.add_argument("--out", metavar="DIR", help="where metrics.json goes (default: the checkpoint's directory)")


def _evaluate(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    from cca.engine.config import ExperimentConfig, apply_overrides

    try:  # check the overrides before loading anything heavy
        apply_overrides(ExperimentConfig(), args.overrides)
    except (ValueError, TypeError) as err:
        parser.error(str(err))
    from cca.engine.checkpoint import CheckpointError
    from cca.engine.evaluate import evaluate

    try:
        payload = evaluate(args.checkpoint, overrides=args.overrides, output_dir=args.out)
    except (FileNotFoundError, CheckpointError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    except (OSError, ValueError) as err:
        print(f"error: {_one_line(err)}", file=sys.stderr)
        return 1
    if int(os.environ.get("RANK", "0")) == 0:
        print(json.dumps({**{f"{k}_pct": _pct(payload[k]) for k in ("miou", "pixel_acc", "mean_acc")},
                          "num_images": payload["num_images"]}))
    return 0


# --- info --------------------------------------------------------------------------------------


def _info_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of text")


def _info(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    from cca import info

    return info.main(["--json"] if args.json else [])


COMMANDS: dict[str, Command] = {
    "train": Command("train a model from a preset or config.json (torchrun for several processes)", _train_arguments, _train),
    "evaluate": Command("evaluate a checkpoint and write metrics.json", _evaluate_arguments, _evaluate),
    "info": Command("which criss-cross kernels are active on CPU and CUDA, and why", _info_arguments, _info),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m cca", description="CCNet: criss-cross attention for segmentation.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, command in COMMANDS.items():
        p = sub.add_parser(name, help=command.help, description=command.help)
        command.add_arguments(p)
        p.set_defaults(_command=command, _parser=p)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    rank = int(os.environ.get("RANK", "0") or 0)
    from cca._env import quiet_cpu_toolchain_notice

    quiet_cpu_toolchain_notice()
    logging.basicConfig(level=logging.INFO if rank == 0 else logging.WARNING, format="%(message)s")
    return args._command.run(args, args._parser)


if __name__ == "__main__":
    sys.exit(main())
