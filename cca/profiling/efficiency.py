"""Measurements behind ``reports/efficiency.md``: every context block alone on the paper's input, and
the scaling of non-local vs RCCA with the feature-map side (data only; :mod:`experiments.reports.efficiency`
renders them).

* :func:`efficiency_rows`: :func:`cca.profiling.blocks.profile_block` of each block on ``shape`` with
  the cross-checks (CUDA-equivalent and inference memory, the backend's own allocations, a full-size
  trace on real tensors, optionally a real CPU run under the tracker);
* :func:`scaling`: GFLOPs and CUDA-equivalent training memory per side, non-local and RCCA R = 1, 2, 3;
* :func:`fit_scaling`: least-squares fits of ``a HW + b (HW)^2`` (non-local) and ``a HW + b HW (H + W - 1)``
  (RCCA) to those points (``c +`` a constant for memory).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
import torch
from tqdm import tqdm

from cca.profiling.blocks import block_names, build_block, profile_block
from cca.profiling.flops import count_flops
from cca.profiling.memory import peak_memory

__all__ = ["SCALING_CHANNELS", "SCALING_SIDES", "block_rows", "efficiency_rows", "fit_scaling", "scaling"]

SCALING_SIDES = (32, 48, 64, 97, 128, 192, 256)
SCALING_CHANNELS = 512
SCALING_SERIES = (("nonlocal", None), ("rcca", 1), ("rcca", 2), ("rcca", 3))
SCALED_COLUMNS = {"gflops": False, "peak_memory_mib": True}  # column -> fit has a constant term


def block_rows() -> list[tuple[str, int | None]]:
    """``(block, recurrence)`` of every row: non-local, RCCA R = 1, 2, 3, then the other blocks."""
    rows: list[tuple[str, int | None]] = list(SCALING_SERIES)
    for name in block_names():
        if name not in ("nonlocal", "rcca", "cca", "fcn"):  # "cca" is RCCA with R = 1; "fcn" the identity
            rows.append((name, None))
    return rows


def efficiency_rows(shape: Sequence[int], *, warmup: int, repeats: int, live_check: bool) -> list[dict]:
    """Profile every block of :func:`block_rows` on ``shape``, with the cross-checks of the report."""
    results = []
    for name, recurrence in tqdm(block_rows(), desc="blocks", unit="block"):
        r = recurrence or 2
        result = profile_block(name, shape, r, "cpu", memory_method="fake", warmup=warmup, repeats=repeats)
        cuda_equivalent = peak_memory(build_block(name, shape[1], r), shape, method="fake_cuda")
        result["peak_memory_mib_cuda_equivalent"] = cuda_equivalent["peak_memory_mib"]
        result["memory_method_cuda_equivalent"] = cuda_equivalent["memory_method"]
        result["peak_memory_mib_inference"] = peak_memory(
            build_block(name, shape[1], r), shape, method="fake_cuda", step="inference"
        )["peak_memory_mib"]
        result["peak_memory_mib_backend"] = peak_memory(
            build_block(name, shape[1], r), shape, method="fake", criss_cross="backend"
        )["peak_memory_mib"]
        real = count_flops(build_block(name, shape[1], r), torch.randn(tuple(shape)))
        result["flops_real_trace"] = real["flops"]
        if live_check:
            result["peak_memory_mib_live"] = peak_memory(build_block(name, shape[1], r), shape, method="live")[
                "peak_memory_mib"
            ]
        results.append(result)
    return results


def scaling(sides: Sequence[int], channels: int = SCALING_CHANNELS) -> pd.DataFrame:
    """GFLOPs and fake-tracker peak memory of non-local and RCCA (R = 1, 2, 3) per feature-map side."""
    rows = []
    points = [(c, s) for c in SCALING_SERIES for s in sides]
    for (name, recurrence), side in tqdm(points, desc="scaling", unit="point"):
        shape = (1, channels, side, side)
        flops = count_flops(build_block(name, channels, recurrence or 2), torch.empty(shape, device="meta"))
        memory = peak_memory(build_block(name, channels, recurrence or 2), shape, method="fake_cuda")
        rows.append(
            {
                "block": name,
                "recurrence": recurrence,
                "side": side,
                "gflops": flops["gflops"],
                "peak_memory_mib": memory["peak_memory_mib"],
                "memory_method": memory["memory_method"],
                "flops_method": flops["flops_method"],
            }
        )
    return block_frame(rows)


def block_frame(records: Sequence[dict]) -> pd.DataFrame:
    """One row per measured block; ``recurrence`` as nullable ``Int64`` (empty for blocks without loops)."""
    frame = pd.DataFrame.from_records(records)
    frame["recurrence"] = frame["recurrence"].astype("Int64")
    return frame


def scaling_terms(name: str, side: np.ndarray, constant: bool) -> list[np.ndarray]:
    """Columns of the analytic form: ``[1,] HW, (HW)^2`` (non-local) or ``[1,] HW, HW (2 side - 1)`` (RCCA)."""
    hw = side.astype(np.float64) ** 2
    quad = hw**2 if name == "nonlocal" else hw * (2 * side - 1)
    return ([np.ones_like(hw)] if constant else []) + [hw, quad]


def series_label(name: str, recurrence) -> str:
    return "non-local" if name == "nonlocal" else f"RCCA R={int(recurrence)}"


def fit_scaling(frame: pd.DataFrame, dense_points: int = 100) -> dict:
    """Per (column, series): the fitted form, coefficients, max relative residual, and the measured and
    fitted curves (``side``, ``measured``, ``dense_side``, ``dense_fit``) for plotting."""
    fits = {}
    for column, constant in SCALED_COLUMNS.items():
        for (name, recurrence), group in frame.groupby(["block", frame["recurrence"].fillna(0)], sort=False):
            side = group["side"].to_numpy()
            y = group[column].to_numpy(dtype=np.float64)
            design = np.stack(scaling_terms(name, side, constant), axis=1)
            coef, *_ = np.linalg.lstsq(design, y, rcond=None)
            residual = float(np.max(np.abs(design @ coef / y - 1)))
            dense = np.geomspace(side.min(), side.max(), dense_points)
            form = "(HW)^2" if name == "nonlocal" else "HW(H+W-1)"
            fits[f"{column}:{series_label(name, recurrence)}"] = {
                "column": column,
                "series": series_label(name, recurrence),
                "form": f"{'c + ' if constant else ''}a*HW + b*{form}",
                "coef": coef.tolist(),
                "max_rel_residual": residual,
                "side": side.tolist(),
                "measured": y.tolist(),
                "dense_side": dense.tolist(),
                "dense_fit": (np.stack(scaling_terms(name, dense, constant), axis=1) @ coef).tolist(),
            }
    return fits
