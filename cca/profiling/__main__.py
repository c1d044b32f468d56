"""``python -m cca.profiling BLOCK``: FLOPs, parameters, peak training memory and latency of one block.

    python -m cca.profiling rcca --recurrence 2 --json
    python -m cca.profiling nonlocal --input 1,512,97,97 --repeats 0
    python -m cca.profiling psp --memory-method fake_cuda
    python -m cca.profiling --network resnet50 rcca --recurrence 2 --input 1,3,769,769 --json
    python -m cca.profiling --network resnet50 nonlocal --count 2 --step inference

With ``--network NAME`` the command measures the paper's way instead: what BLOCK (``--count`` of them in
sequence) adds to the whole segmentation network (NAME dilated at output stride 8 + CCNet's head + the
auxiliary head; default input one 769 x 769 crop) over the same network without it, see
:func:`cca.profiling.network.network_increment`. Memory is MB (10^6 B) as the paper prints, and MiB.

The default input 1,512,97,97 is the paper's efficiency setting (a 769 x 769 crop at output stride 8,
512 channels after the head's 3 x 3 reduction conv; the author's answer in speedinghzl/CCNet issue #2).
FLOPs are 2 x multiply-adds (the paper's convention). Without a GPU memory comes from the fake-tensor
tracker (no real allocation) and latency from the CPU; ``memory_method`` says which.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence

from cca.profiling.blocks import PAPER_INPUT, REQUIRED_BLOCKS, block_names, profile_block
from cca.profiling.memory import MEMORY_METHODS, MEMORY_STEPS
from cca.profiling.network import NETWORK_INPUT, NETWORKS

__all__ = ["JSON_KEYS", "NETWORK_JSON_KEYS", "main", "parse_input"]

JSON_KEYS = ("block", "input", "gflops", "params", "peak_memory_mib", "memory_method", "latency_ms", "device")
NETWORK_JSON_KEYS = (
    "block", "network", "input", "gflops_increment", "memory_increment_mb", "memory_increment_mib", "memory_method",
    "baseline_gflops", "baseline_memory_mib", "step",
)  # fmt: skip


def parse_input(text: str) -> tuple[int, int, int, int]:
    """``"N,C,H,W"`` -> ``(N, C, H, W)`` of positive ints."""
    parts = text.replace("x", ",").split(",")
    try:
        shape = tuple(int(p) for p in parts)
    except ValueError:
        shape = ()
    if len(shape) != 4 or min(shape) < 1:
        raise argparse.ArgumentTypeError(f"--input must be N,C,H,W (4 positive ints), got {text!r}")
    return shape


def _names() -> tuple[str, ...]:
    try:
        return block_names()
    except ImportError:  # cca.nn missing: still list what the paper compares
        return REQUIRED_BLOCKS


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m cca.profiling", description=__doc__.split("\n\n")[0])
    parser.add_argument("block", help=f"one of: {', '.join(_names())}")
    parser.add_argument("--recurrence", type=int, default=2, help="RCCA loops R (rcca only; default 2)")
    parser.add_argument(
        "--input",
        type=parse_input,
        default=None,
        metavar="N,C,H,W",
        help="input shape (default 1,512,97,97 for a block; 1,3,769,769 with --network)",
    )
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu", help="latency/memory device (default cpu)")
    parser.add_argument(
        "--memory-method",
        choices=MEMORY_METHODS,
        default="auto",
        help="auto: cuda_max_memory_allocated on --device cuda, else the fake-tensor tracker",
    )
    parser.add_argument(
        "--criss-cross",
        choices=("op", "backend"),
        default="op",
        help="memory of the criss-cross attention as the cca ops allocate (op) or as the active backend runs (backend)",
    )
    parser.add_argument("--warmup", type=int, default=1, help="latency warm-up runs (default 1)")
    parser.add_argument(
        "--repeats", type=int, default=3, help="timed runs, median reported; 0 skips latency (default 3)"
    )
    parser.add_argument(
        "--network",
        choices=NETWORKS,
        default=None,
        help="measure what BLOCK adds to this whole segmentation network (the paper's efficiency methodology)",
    )
    parser.add_argument("--count", type=int, default=1, help="--network: BLOCK repeated in sequence (+NL x2: 2)")
    parser.add_argument(
        "--step", choices=MEMORY_STEPS, default="training", help="--network: training (forward + backward) or inference"
    )
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    return parser


def _network_human(result: dict) -> str:
    return "\n".join(
        [
            f"block            {result['block']}" + (f" (R={result['recurrence']})" if result["recurrence"] else "")
            + (f" x{result['count']}" if result["count"] > 1 else ""),
            f"network          {result['network']}",
            f"input            {'x'.join(map(str, result['input']))}, {result['step']} step",
            f"GFLOPs added     {result['gflops_increment']:.3f}  (baseline network {result['baseline_gflops']:.2f})",
            f"memory added     {result['memory_increment_mb']:.1f} MB = {result['memory_increment_mib']:.1f} MiB "
            f"(baseline network {result['baseline_memory_mib']:.1f} MiB)  [{result['memory_method']}]",
        ]
    )


def _main_network(parser: argparse.ArgumentParser, args: argparse.Namespace) -> int:
    from cca.profiling.network import network_increment

    if args.count < 1:
        parser.error(f"--count must be >= 1, got {args.count}")
    shape = NETWORK_INPUT if args.input is None else args.input
    if shape[1] != 3:
        parser.error(f"--network takes an image input N,3,H,W, got --input {','.join(map(str, shape))}")
    try:
        result = network_increment(
            None if args.block == "fcn" else args.block,
            args.recurrence,
            backbone=args.network,
            input_shape=shape,
            count=args.count,
            step=args.step,
            device=args.device,
            memory_method="auto" if args.memory_method == "auto" else args.memory_method,
        )
    except ValueError as exc:
        parser.error(str(exc))
    summary = {k: v for k, v in result.items() if k not in ("baseline", "with_block")}
    print(json.dumps(summary) if args.json else _network_human(result))
    return 0


def _human(result: dict) -> str:
    latency = result["latency_ms"]
    lines = [
        f"block            {result['block']}" + (f" (R={result['recurrence']})" if result["recurrence"] else ""),
        f"input            {'x'.join(map(str, result['input']))}",
        f"GFLOPs           {result['gflops']:.3f}  (2 x multiply-adds)",
        f"params           {result['params']:,}",
        f"peak memory      {result['peak_memory_mib']:.1f} MiB  [{result['memory_method']}]",
        "latency          "
        + (
            "skipped (--repeats 0)"
            if latency is None
            else f"forward {latency['forward']:.1f} ms, forward+backward {latency['forward_backward']:.1f} ms"
        )
        + f"  [{result['device']}: {result['hardware']}]",
        f"ignored ops      {', '.join(f'{k} x{v}' for k, v in result['ignored_ops'].items()) or 'none'}",
    ]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    names = _names()
    if args.block not in names:
        parser.error(f"unknown block {args.block!r}; valid blocks: {', '.join(names)}")
    if args.recurrence < 1:
        parser.error(f"--recurrence must be >= 1, got {args.recurrence}")
    if args.warmup < 0 or args.repeats < 0:
        parser.error(f"--warmup and --repeats must be >= 0, got {args.warmup} and {args.repeats}")
    if args.network is not None:
        return _main_network(parser, args)
    try:
        result = profile_block(
            args.block,
            PAPER_INPUT if args.input is None else args.input,
            args.recurrence,
            args.device,
            memory_method=args.memory_method,
            criss_cross=args.criss_cross,
            warmup=args.warmup,
            repeats=args.repeats,
        )
    except ValueError as exc:
        parser.error(str(exc))
    print(json.dumps(result) if args.json else _human(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
