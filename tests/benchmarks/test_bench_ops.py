"""Criss-cross attention at the paper's setting: ours (compiled kernels) vs the einsum reference.

Query/key ``1x64x97x97``, value ``1x512x97x97`` (a 769x769 crop at output stride 8, C' = C/8),
float32. Each benchmark also checks its result against a float64 reference, and the
forward+backward ones record the peak memory (``extra_info``). Timings:

    pytest --benchmark-only tests/benchmarks            # ratios printed at the end

The ordinary test run (``--benchmark-disable``) executes each once, as a test.
"""

from __future__ import annotations

import pytest
import torch
from torch._C._profiler import _EventType
from torch.profiler import ProfilerActivity, profile

import cca
from cca.ops import reference

QUERY_SHAPE, VALUE_SHAPE = (1, 64, 97, 97), (1, 512, 97, 97)
SETTING = "q,k 1x64x97x97 v 1x512x97x97 float32"


def _sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


@pytest.fixture(scope="module", params=["cpu", pytest.param("cuda", marks=pytest.mark.cuda)])
def paper_case(request: pytest.FixtureRequest) -> dict:
    """float32 inputs on the device, plus the float64 reference output and gradients (CPU)."""
    generator = torch.Generator().manual_seed(97)
    q, k = (torch.randn(QUERY_SHAPE, generator=generator, dtype=torch.float64) for _ in range(2))
    v = torch.randn(VALUE_SHAPE, generator=generator, dtype=torch.float64)
    grad_out = torch.randn(VALUE_SHAPE, generator=generator, dtype=torch.float64)
    inputs64 = [t.requires_grad_(True) for t in (q, k, v)]
    out64 = reference.criss_cross_attention_2d(*inputs64)
    grads64 = torch.autograd.grad(out64, inputs64, grad_out)
    device = request.param
    return {
        "device": device,
        "inputs": [t.detach().to(device, torch.float32).requires_grad_(True) for t in inputs64],
        "grad_out": grad_out.to(device, torch.float32),
        "out64": out64.detach(),
        "grads64": grads64,
    }


def _forward(case: dict):
    def run():
        with torch.no_grad():
            out = cca.criss_cross_attention(*case["inputs"])
        _sync(case["device"])
        return out

    return run


def _forward_backward(case: dict):
    def run():
        out = cca.criss_cross_attention(*case["inputs"])
        grads = torch.autograd.grad(out, case["inputs"], case["grad_out"])
        _sync(case["device"])
        return out, grads

    return run


def saved_tensor_bytes(fn) -> int:
    """Bytes of the distinct storages autograd saves for backward during ``fn()``."""
    storages: dict[int, int] = {}

    def pack(tensor: torch.Tensor) -> torch.Tensor:
        storage = tensor.untyped_storage()
        storages[storage.data_ptr()] = storage.nbytes()
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        fn()
    return sum(storages.values())


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


def _check(actual: torch.Tensor, expected: torch.Tensor) -> None:
    scale = max(1.0, expected.abs().max().item())
    torch.testing.assert_close(actual.double().cpu(), expected, rtol=1e-4, atol=1e-4 * scale)


def _timed(benchmark, fn):
    if not benchmark.disabled:
        fn()  # warm-up: first-call allocations, lazy init
    return benchmark(fn)


def test_forward(benchmark, backend, paper_case, record_result):
    benchmark.group = f"criss_cross_attention forward {paper_case['device']} {SETTING}"
    benchmark.extra_info.update(backend=backend, device=paper_case["device"])
    out = _timed(benchmark, _forward(paper_case))
    _check(out, paper_case["out64"])
    record_result(benchmark.group, backend, benchmark)


def test_forward_backward(benchmark, backend, paper_case, record_result):
    benchmark.group = f"criss_cross_attention forward+backward {paper_case['device']} {SETTING}"
    run = _forward_backward(paper_case)
    out, grads = _timed(benchmark, run)
    _check(out, paper_case["out64"])
    for grad, expected in zip(grads, paper_case["grads64"], strict=True):
        _check(grad, expected)
    memory = {"peak_bytes": peak_bytes(run, paper_case["device"]), "saved_bytes": saved_tensor_bytes(run)}
    benchmark.extra_info.update(backend=backend, device=paper_case["device"], **memory)
    record_result(benchmark.group, backend, benchmark, **memory)
