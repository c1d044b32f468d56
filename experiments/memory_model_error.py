"""How far the memory model's table 5 increments move when the allocator's reserve is modelled crudely.

    python -m experiments.memory_model_error [--out reports/data/memory_model_error.csv] [--crop 769]

The table 5 memory figures come from the fake-tensor tracker with the CUDA caching allocator's 512-byte
blocks (``max_memory_allocated``-like). A GPU's figure may include what that model leaves out: the
allocator's reserve (segments of 2 MiB for large blocks, fragmentation) and cuDNN workspaces. Without a
GPU, this measures the +NL and +RCCA (R=2) increments of the ResNet-50 network (769x769, one training
step) once with 512-byte and once with 2 MiB rounding of every live tensor; the largest relative shift
is the measured part of the error band that ``experiments/reports/verdicts.py`` declares for memory.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import pandas as pd

from cca._io import atomic_write_text
from cca.provenance import REPO_ROOT, provenance

BLOCKS = (("nonlocal", "+NL", 2), ("rcca", "+RCCA (R=2)", 2))  # (block, label, recurrence)
METHODS = ("fake_cuda", "fake_cuda_segments")
OUT = REPO_ROOT / "reports" / "data" / "memory_model_error.csv"


def measure(crop: int = 769) -> pd.DataFrame:
    """One row per block: the increment (MB = 10^6 B) under each rounding and the relative shift (%)."""
    from cca.profiling.network import network_increment

    shape = (1, 3, crop, crop)
    rows = {label: {"block": label, "input": "x".join(map(str, shape))} for _, label, _ in BLOCKS}
    for method in METHODS:
        baseline = None
        for block, label, recurrence in BLOCKS:
            result = network_increment(block, recurrence, input_shape=shape, memory_method=method, baseline=baseline)
            baseline = result["baseline"]
            rows[label][f"increment_mb_{method}"] = result["memory_increment_mb"]
    frame = pd.DataFrame(rows.values())
    frame["shift_pct"] = 100 * (frame["increment_mb_fake_cuda_segments"] / frame["increment_mb_fake_cuda"] - 1)
    prov = provenance()
    return frame.assign(commit=prov["commit"] or "", time_utc=prov["time_utc"], hardware=prov["hardware"])


def read_shift(path: str | Path = OUT) -> pd.DataFrame | None:
    """The measured shifts (None when the file is not there)."""
    path = Path(path)
    if not path.is_file():
        return None
    frame = pd.read_csv(path)
    missing = {"block", "shift_pct", "increment_mb_fake_cuda"} - set(frame.columns)
    if missing:
        raise ValueError(f"{path} lacks the column(s) {sorted(missing)}; regenerate it with python -m experiments.memory_model_error")
    return frame


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m experiments.memory_model_error", description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=OUT, help="CSV written (default: %(default)s)")
    parser.add_argument("--crop", type=int, default=769, help="crop side (default 769, the paper's)")
    args = parser.parse_args(argv)
    if args.crop < 33:
        parser.error(f"--crop must be at least 33, got {args.crop}")
    frame = measure(args.crop)
    atomic_write_text(args.out, frame.to_csv(index=False))
    print(frame.to_string(index=False))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
