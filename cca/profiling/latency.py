"""Latency of a block: median of repeated runs after warm-up.

Forward: eval mode under ``torch.no_grad()``. Forward + backward: training mode (BatchNorm on running
statistics, as for memory), backward of ones, parameter gradients reset to ``None`` before each run.
On CUDA the time is taken with CUDA events around each run (synchronised); on the CPU with
``time.perf_counter``.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Sequence

import torch
from torch import Tensor, nn

from cca.profiling.memory import set_training_mode

__all__ = ["LATENCY_MODES", "latency"]

LATENCY_MODES = ("forward", "forward_backward")


def _step(module: nn.Module, x: Tensor, mode: str) -> Callable[[], None]:
    if mode == "forward":

        def forward() -> None:
            with torch.no_grad():
                module(x)

        return forward

    def forward_backward() -> None:
        module.zero_grad(set_to_none=True)
        x.grad = None
        out = module(x)
        out.backward(torch.ones_like(out))

    return forward_backward


def _time_once(step: Callable[[], None], device: torch.device) -> float:
    """Milliseconds of one ``step()``."""
    if device.type == "cuda":
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        torch.cuda.synchronize(device)
        start.record()
        step()
        end.record()
        torch.cuda.synchronize(device)
        return float(start.elapsed_time(end))
    begin = time.perf_counter()
    step()
    return (time.perf_counter() - begin) * 1e3


def latency(
    module: nn.Module,
    input_shape: Sequence[int],
    *,
    mode: str = "forward",
    device: str | torch.device = "cpu",
    warmup: int = 1,
    repeats: int = 3,
    dtype: torch.dtype = torch.float32,
) -> dict:
    """Median milliseconds of ``mode`` (``"forward"`` or ``"forward_backward"``) of ``module``.

    Returns:
        dict with ``median_ms``, ``min_ms``, ``times_ms`` (every timed run), ``warmup``,
        ``repeats``, ``timer`` (``"cuda_events"`` or ``"perf_counter"``), ``mode``, ``device``.
    """
    if mode not in LATENCY_MODES:
        raise ValueError(f"mode must be one of {LATENCY_MODES}, got mode={mode!r}")
    if not isinstance(repeats, int) or repeats < 1:
        raise ValueError(f"repeats must be an int >= 1, got repeats={repeats!r}")
    if not isinstance(warmup, int) or warmup < 0:
        raise ValueError(f"warmup must be an int >= 0, got warmup={warmup!r}")
    device = torch.device(device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError("device='cuda' but torch.cuda.is_available() is False")
    module = module.to(device)
    if mode == "forward":
        module.eval()
    else:
        set_training_mode(module)
    x = torch.randn(tuple(input_shape), dtype=dtype, device=device, requires_grad=mode == "forward_backward")
    step = _step(module, x, mode)
    for _ in range(warmup):
        step()
    times = [_time_once(step, device) for _ in range(repeats)]
    return {
        "median_ms": statistics.median(times),
        "min_ms": min(times),
        "times_ms": times,
        "warmup": warmup,
        "repeats": repeats,
        "timer": "cuda_events" if device.type == "cuda" else "perf_counter",
        "mode": mode,
        "device": str(device),
    }
