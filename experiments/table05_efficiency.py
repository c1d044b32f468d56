"""Table 5: non-local block vs RCCA, the module alone: GFLOPs, memory (and the abstract's 11x / 85% claims).

    nox -s reproduce_table5                                  # the paper's input on CPU (memory modelled)
    nox -s reproduce_table5 -- --scale full --device cuda    # GPU: measured CUDA memory, GPU latency

No data and no training: the profiling harness (``cca.profiling.profile_block``) measures each block
on the paper's exact input, 1 x 512 x 97 x 97 (a 769 x 769 crop at output stride 8), at both scales.
FLOPs are 2 x multiply-adds, as the author's recipe (speedinghzl/CCNet issue #2).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from cca._io import atomic_write_json
from experiments.common import Options, Row, Table, run_dir


@dataclass(frozen=True)
class EfficiencySettings:
    """One block profiled alone on one input (read top to bottom)."""

    block: str = "rcca"  # a name of cca.nn.CONTEXT_BLOCKS; rows set it ("ratio": derived from two rows)
    input_shape: tuple[int, int, int, int] = (1, 512, 97, 97)  # the paper's setting
    recurrence: int = 2  # loops of "rcca"
    device: str = "cuda"  # the paper's memory is GPU memory
    memory_method: str = "auto"  # "cuda" (measured) on GPU; "fake" (modelled allocations) on CPU
    warmup: int = 2  # latency runs before timing
    repeats: int = 10  # timed latency runs (median reported)


FULL = EfficiencySettings()
SMOKE = EfficiencySettings(device="cpu", warmup=1, repeats=1)  # same input: the paper's setting, even at smoke scale


def profile_runner(table: Table, row: Row, settings: EfficiencySettings, options: Options, directory: Path) -> dict:
    if settings.block == "ratio":
        return _ratio(table, options)
    from cca.profiling import profile_block

    device = settings.device
    if device == "auto":
        import torch

        device = "cuda" if torch.cuda.is_available() else "cpu"
    result = profile_block(
        settings.block,
        settings.input_shape,
        recurrence=settings.recurrence,
        device=device,
        memory_method=settings.memory_method,
        warmup=settings.warmup,
        repeats=settings.repeats,
    )
    atomic_write_json(directory / "profile.json", result)
    metrics = {
        "gflops": float(result["gflops"]),
        "memory_mb": float(result["peak_memory_mib"]),
        "params_m": float(result["params"]) / 1e6,
    }
    if result.get("latency_ms"):
        metrics["latency_forward_ms"] = float(result["latency_ms"]["forward"])
        metrics["latency_forward_backward_ms"] = float(result["latency_ms"]["forward_backward"])
    return metrics


def _ratio(table: Table, options: Options) -> dict:
    """Memory ratio and FLOPs reduction of RCCA (R=2) against the non-local block, from those rows' results."""
    rows = {r.key: r for r in table.rows}
    found = {}
    for key in ("nonlocal", "rcca_r2"):
        path = run_dir(table, rows[key], options) / "result.json"
        if not path.is_file():
            raise FileNotFoundError(f"the ratio row needs the {key} row's result first: {path}")
        found[key] = json.loads(path.read_text())["metrics"]
    nl, rcca = found["nonlocal"], found["rcca_r2"]
    return {
        "memory_ratio": nl["memory_mb"] / rcca["memory_mb"],
        "flops_reduction_pct": 100.0 * (1.0 - rcca["gflops"] / nl["gflops"]),
    }


ROWS = (
    Row("nonlocal", "non-local block", {"block": "nonlocal"}),
    Row("rcca_r1", "RCCA (R=1)", {"block": "rcca", "recurrence": 1}),
    Row("rcca_r2", "RCCA (R=2)", {"block": "rcca", "recurrence": 2}),
    Row("ratio", "RCCA (R=2) vs non-local", {"block": "ratio"}),
)

TABLE = Table(
    number=5,
    topic="efficiency",
    title="Non-local block vs RCCA: GFLOPs and memory on a 1x512x97x97 input",
    kind="profile",
    metrics=(
        "gflops",
        "memory_mb",
        "memory_ratio",
        "flops_reduction_pct",
        "params_m",
        "latency_forward_ms",
        "latency_forward_backward_ms",
    ),
    rows=ROWS,
    full=FULL,
    smoke=SMOKE,
    runner=profile_runner,
    shows_full="FLOPs (exact count, 2 x multiply-adds), peak CUDA memory of forward + backward and latency of each block "
    "alone on the paper's 1x512x97x97 input, beside the paper's numbers.",
    shows_smoke="The input is the paper's (1x512x97x97) at both scales, so the GFLOPs are directly comparable with the "
    "paper's. On CPU the memory is the harness's model of the forward + backward allocations (not a GPU "
    "measurement) and the latency is a single CPU run.",
    notes=(
        "GFLOPs follow the author's recipe (issue #2 of speedinghzl/CCNet): the three 1x1 convolutions, the affinity "
        "and the aggregation, 2 x multiply-adds; softmax and additions ignored. See reports/efficiency.md for the "
        "profiling harness's full report and scaling plots.",
        "Memory (MiB) is peak forward + backward memory of the block alone; on CPU it is modelled, on CUDA measured.",
    ),
)
