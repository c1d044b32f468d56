"""Criss-cross attention operator: ours (compiled kernels) vs the einsum formulation vs our reference.

Cases: the paper's setting (query/key ``1x64x97x97``, value ``1x512x97x97``: a 769x769 crop at output
stride 8, C' = C/8) in float32 and float64, and a map twice as large per side (``194x194``) in
float32. Each (case, pass) is one test that times the three implementations **interleaved in one
process** (ours, einsum, reference; the next round einsum, reference, ours; ...) for ``rounds`` rounds
after a checked warm-up call of each, and
reports the median of the per-round ratios with their min-max spread: a noisy, shared machine slows
every implementation of a round alike. Every implementation's result (and gradients) is checked
against a float64 reference; the forward+backward tests also record each implementation's peak
memory. A session-wide ``torch.mm`` of two 2048x2048 float32 matrices gives the machine's practical
GEMM rate (measured once per session, in the timed run only), against which the GFLOP/s of each implementation is reported;
a 64 MiB copy right before each case's rounds gives the memory bandwidth the machine had then. ::

    pytest tests/benchmarks --benchmark-only      # timed: results/benchmarks/runs/<time>.json
    python -m cca.reports.operator                # renders reports/operator.md from those results

The ordinary test run (``--benchmark-disable``) runs one round of each as a test, checked, untimed
(the float64 and the large case on small maps).
"""

from __future__ import annotations

import functools
import statistics
import time

import pytest
import torch
from torch._C._profiler import _EventType
from torch.profiler import ProfilerActivity, profile

import cca
from cca.ops import reference

# name: (query shape, value shape, dtype, timed rounds)
CASES = {
    "paper float32": ((1, 64, 97, 97), (1, 512, 97, 97), torch.float32, 5),
    "paper float64": ((1, 64, 97, 97), (1, 512, 97, 97), torch.float64, 5),
    "2x map float32": ((1, 64, 194, 194), (1, 512, 194, 194), torch.float32, 5),
}
# --benchmark-disable runs every case once as a test; all but the paper's float32 case on a small map.
UNTIMED_SHAPES = {
    "paper float64": ((1, 8, 33, 29), (1, 64, 33, 29)),
    "2x map float32": ((1, 8, 45, 45), (1, 64, 45, 45)),
}
IMPLS = ("extension", "einsum", "reference")
GEMM_SIZE = 2048


def einsum_criss_cross(query: torch.Tensor, key: torch.Tensor, value: torch.Tensor) -> torch.Tensor:
    """What users write without custom ops (mmcv's and most ports' formulation), ``(N, C, H, W)``:
    column and row energies by ``einsum``, one softmax over the concatenated H + W slots with the
    pixel's own column slot masked by -inf (so it is counted once), aggregation by ``einsum``."""
    height = query.shape[2]
    energy_col = torch.einsum("ncyx,ncjx->nyxj", query, key)  # (N, H, W, H)
    self_slot = torch.eye(height, dtype=torch.bool, device=query.device).view(1, height, 1, height)
    energy_col = energy_col.masked_fill(self_slot, float("-inf"))
    energy_row = torch.einsum("ncyx,ncyi->nyxi", query, key)  # (N, H, W, W)
    attention = torch.softmax(torch.cat([energy_col, energy_row], dim=3), dim=3)
    out = torch.einsum("nyxj,ncjx->ncyx", attention[..., :height], value)
    return out + torch.einsum("nyxi,ncyi->ncyx", attention[..., height:], value)


def _implementation(name: str):
    if name == "extension":
        return cca.criss_cross_attention  # the compiled kernels (CCA_BACKEND=extension, see the fixture)
    if name == "einsum":
        return einsum_criss_cross
    return reference.criss_cross_attention_2d


def gemm_equivalent_flop(query_shape, value_shape) -> float:
    """Multiply-adds x 2 of the forward: every pixel's H + W row and column partners, for the
    energies (C' channels) and the aggregation (C channels); the backward does twice as much."""
    n, c_qk, h, w = query_shape
    return 2.0 * n * h * w * (h + w) * (c_qk + value_shape[1])


def _sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


@functools.cache
def gemm_rate_gflops() -> float:
    """The practical single-precision GEMM rate of this machine: median of 5 ``torch.mm`` calls."""
    a, b = torch.randn(GEMM_SIZE, GEMM_SIZE), torch.randn(GEMM_SIZE, GEMM_SIZE)
    torch.mm(a, b)
    times = []
    for _ in range(5):
        start = time.perf_counter()
        torch.mm(a, b)
        times.append(time.perf_counter() - start)
    return 2.0 * GEMM_SIZE**3 / statistics.median(times) / 1e9


def copy_bandwidth_gbs(mib: int = 64) -> float:
    """The memory bandwidth this machine gives right now: bytes read + written per second by a copy of
    ``mib`` MiB of float32 (median of 5, PyTorch's threads). A shared VM drifts between phases; our column
    passes are bound by memory traffic, so the ratios are read next to this figure."""
    src = torch.ones(mib * 2**20 // 4)
    dst = torch.empty_like(src)
    dst.copy_(src)
    times = []
    for _ in range(5):
        start = time.perf_counter()
        dst.copy_(src)
        times.append(time.perf_counter() - start)
    return 2.0 * src.nbytes / statistics.median(times) / 1e9


# The default timed set measures the paper's float32 case; the others are the long sweep (--full).
LONG_SWEEP = ("paper float64", "2x map float32")


@pytest.fixture(
    scope="module",
    params=[pytest.param(name, marks=pytest.mark.bench_full) if name in LONG_SWEEP else name for name in CASES],
)
def case(request: pytest.FixtureRequest) -> dict:
    """float64 inputs, the float64 reference output and gradients, and the case's settings."""
    query_shape, value_shape, dtype, rounds = CASES[request.param]
    return {"name": request.param, "query_shape": query_shape, "value_shape": value_shape, "dtype": dtype, "rounds": rounds}


def _inputs(case: dict, small: bool, device: str) -> dict:
    query_shape, value_shape = UNTIMED_SHAPES.get(case["name"], (case["query_shape"], case["value_shape"]))
    if not small:
        query_shape, value_shape = case["query_shape"], case["value_shape"]
    generator = torch.Generator().manual_seed(97)
    q, k = (torch.randn(query_shape, generator=generator, dtype=torch.float64) for _ in range(2))
    v = torch.randn(value_shape, generator=generator, dtype=torch.float64)
    grad_out = torch.randn(value_shape, generator=generator, dtype=torch.float64)
    inputs64 = [t.requires_grad_(True) for t in (q, k, v)]
    out64 = reference.criss_cross_attention_2d(*inputs64)
    grads64 = torch.autograd.grad(out64, inputs64, grad_out)
    return {
        "query_shape": query_shape,
        "value_shape": value_shape,
        "inputs": [t.detach().to(device, case["dtype"]).requires_grad_(True) for t in inputs64],
        "grad_out": grad_out.to(device, case["dtype"]),
        "out64": out64.detach(),
        "grads64": grads64,
    }


def _call(fn, data: dict, backward: bool, device: str):
    if not backward:
        with torch.no_grad():
            out = fn(*data["inputs"])
        _sync(device)
        return out, ()
    out = fn(*data["inputs"])
    grads = torch.autograd.grad(out, data["inputs"], data["grad_out"])
    _sync(device)
    return out, grads


def _check(actual: torch.Tensor, expected: torch.Tensor) -> None:
    scale = max(1.0, expected.abs().max().item())
    torch.testing.assert_close(actual.double().cpu(), expected, rtol=1e-4, atol=1e-4 * scale)


def peak_bytes(fn, device: str) -> int:
    """Peak of the memory allocated during ``fn()`` above what was live before it.

    CUDA: the caching allocator's peak. CPU: every allocation and free of the CPU allocator,
    seen by the profiler (also those inside the compiled kernels), summed in time order."""
    if device == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        before = torch.cuda.memory_allocated()
        fn()
        return torch.cuda.max_memory_allocated() - before
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        fn()
    events, stack = [], list(prof.profiler.kineto_results.experimental_event_tree())
    while stack:
        node = stack.pop()
        stack.extend(node.children)
        if node.tag == _EventType.Allocation and node.extra_fields.device.type == "cpu":
            events.append((node.start_time_ns, node.extra_fields.alloc_size))
    live = peak = 0
    for _, size in sorted(events):
        live += size
        peak = max(peak, live)
    return peak


def interleaved_times(calls: dict, rounds: int) -> dict[str, list[float]]:
    """Seconds per call of each of ``calls`` (name -> fn) in ``rounds`` rounds that call every
    implementation in turn, round ``r`` starting at the ``r``-th (so that none always runs right after
    the same other one); the caller has warmed each up."""
    times = {name: [] for name in calls}
    names = list(calls)
    for r in range(rounds):
        for name in names[r % len(names) :] + names[: r % len(names)]:
            fn = calls[name]
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    return times


def summarize(times: dict[str, list[float]], flop: float) -> dict[str, dict]:
    """Per implementation: median/min/max ms, GFLOP/s at the median; for ours, the per-round
    speed-up over each other implementation (median, min, max)."""
    out = {}
    for name, seconds in times.items():
        median = statistics.median(seconds)
        out[name] = {
            "median_ms": median * 1e3,
            "min_ms": min(seconds) * 1e3,
            "max_ms": max(seconds) * 1e3,
            "gflops": flop / median / 1e9,
            "rounds": len(seconds),
        }
    ours = times["extension"]
    for other in IMPLS[1:]:
        ratios = [theirs / mine for theirs, mine in zip(times[other], ours, strict=True)]
        out["extension"][f"speedup_vs_{other}"] = {
            "median": statistics.median(ratios),
            "min": min(ratios),
            "max": max(ratios),
        }
    return out


@pytest.mark.parametrize("device", ["cpu", pytest.param("cuda", marks=pytest.mark.cuda)])
@pytest.mark.parametrize("pass_", ["forward", "forward+backward"])
def test_operator(benchmark, extension, case, pass_, device, record_result) -> None:
    if device == "cuda" and not torch.cuda.is_available():
        pytest.skip("no CUDA GPU visible")
    backward = pass_ == "forward+backward"
    data = _inputs(case, small=benchmark.disabled, device=device)
    calls = {name: functools.partial(_call, _implementation(name), data, backward, device) for name in IMPLS}
    for call in calls.values():  # checked against the float64 reference (also the warm-up call)
        out, grads = call()
        _check(out, data["out64"])
        for grad, expected in zip(grads, data["grads64"] if backward else (), strict=True):
            _check(grad, expected)
    rounds = 1 if benchmark.disabled else case["rounds"]
    bandwidth = None if benchmark.disabled else copy_bandwidth_gbs()  # right before the timed rounds
    times = benchmark.pedantic(interleaved_times, args=(calls, rounds), rounds=1, iterations=1)
    if times is None:  # pytest-benchmark returns nothing when disabled in some versions
        times = interleaved_times(calls, rounds)
    flop = gemm_equivalent_flop(data["query_shape"], data["value_shape"]) * (3 if backward else 1)
    summary = summarize(times, flop)
    group = f"operator {pass_} {device} {case['name']}"
    setting = (
        f"q,k {'x'.join(map(str, data['query_shape']))} v {'x'.join(map(str, data['value_shape']))} "
        f"{str(case['dtype']).removeprefix('torch.')}"
    )
    for name in IMPLS:
        values = {**summary[name], "setting": setting, "pass": pass_, "device": device}
        if backward and not benchmark.disabled:
            values["peak_mib"] = peak_bytes(calls[name], device) / 2**20
        if name == "extension":
            values.update(
                gemm_rate_gflops=None if benchmark.disabled else gemm_rate_gflops(),
                gemm="torch.mm 2048x2048 float32, median of 5",
                copy_bandwidth_gbs=bandwidth,
            )
        record_result(group, name, **values)
    assert summary["extension"]["median_ms"] > 0


def test_interleaved_times_rotates_the_order() -> None:
    """Round r starts at the r-th implementation; every implementation gets one time per round."""
    order: list[str] = []
    calls = {name: (lambda name=name: order.append(name)) for name in ("ours", "einsum", "reference")}
    times = interleaved_times(calls, rounds=4)
    assert order == ["ours", "einsum", "reference", "einsum", "reference", "ours"] + [
        "reference", "ours", "einsum", "ours", "einsum", "reference"
    ]
    assert {name: len(seconds) for name, seconds in times.items()} == {"ours": 4, "einsum": 4, "reference": 4}
