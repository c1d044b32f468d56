"""Context modules at the paper's setting: RCCA (R=1, R=2) vs the non-local block, forward and forward+backward.

Input ``1x512x97x97`` float32 (a 769x769 crop at output stride 8), the module alone, as the paper's
efficiency comparison. Grouped per (pass, device) so each group compares the three modules; warm-up
rounds first, the device synchronised inside every timed call. Every benchmark also checks its
result: the float32 output against the same module in float64, and (forward+backward) finite
gradients for every parameter. ::

    pytest --benchmark-only tests/benchmarks/test_bench_modules.py

The ordinary test run (``--benchmark-disable``) runs each once as a test, on a smaller input
(1x64x33x33) to stay fast; ``--benchmark-only`` uses the paper's input.
"""

from __future__ import annotations

import copy

import pytest
import torch

PAPER_SHAPE = (1, 512, 97, 97)
TEST_SHAPE = (1, 64, 33, 33)
MODULES = {
    "rcca_r1": ("rcca", {"recurrence": 1}),
    "rcca_r2": ("rcca", {"recurrence": 2}),
    "nonlocal": ("nonlocal", {}),
}
DEVICES = ["cpu", pytest.param("cuda", marks=pytest.mark.cuda)]


def _build(name: str, channels: int, seed: int) -> torch.nn.Module:
    """The block with every parameter random (gamma and zero-initialised outputs too, so outputs are non-trivial)."""
    from cca.nn import build_context_block

    block_name, kwargs = MODULES[name]
    module = build_context_block(block_name, channels, **kwargs)
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn(p.shape, generator=generator) * (0.5 if p.dim() == 0 or p.numel() == 1 else 0.05))
    return module.eval()


def _sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def _setup(benchmark, name: str, device: str):
    shape = TEST_SHAPE if benchmark.disabled else PAPER_SHAPE
    module = _build(name, shape[1], seed=hash(name) % 1000).to(device)
    x = torch.randn(shape, generator=torch.Generator().manual_seed(0)).to(device)
    return shape, module, x


def _check_output(module: torch.nn.Module, x: torch.Tensor, out: torch.Tensor) -> None:
    assert out.shape == x.shape and torch.isfinite(out).all()
    assert not torch.allclose(out, x), "the module returned its input unchanged"
    reference = copy.deepcopy(module).double().cpu()
    with torch.no_grad():
        expected = reference(x.double().cpu())
    scale = max(1.0, expected.abs().max().item())
    torch.testing.assert_close(out.double().cpu(), expected, rtol=1e-3, atol=1e-4 * scale)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("name", list(MODULES))
def test_forward(benchmark, name: str, device: str, record_result) -> None:
    shape, module, x = _setup(benchmark, name, device)
    benchmark.group = f"module forward {'x'.join(map(str, shape))} {device}"
    benchmark.extra_info.update({"module": name, "input": list(shape), "device": device})

    def run():
        with torch.no_grad():
            out = module(x)
        _sync(device)
        return out

    out = benchmark.pedantic(run, rounds=5, warmup_rounds=1, iterations=1)
    record_result(benchmark.group, name, benchmark)
    _check_output(module, x, out)


@pytest.mark.bench_full  # the long sweep (--full): the non-local block's backward alone takes about a minute
@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("name", list(MODULES))
def test_forward_backward(benchmark, name: str, device: str, record_result) -> None:
    shape, module, x = _setup(benchmark, name, device)
    module.train()
    benchmark.group = f"module forward+backward {'x'.join(map(str, shape))} {device}"
    benchmark.extra_info.update({"module": name, "input": list(shape), "device": device})
    x = x.requires_grad_(True)

    def run():
        module.zero_grad(set_to_none=True)
        x.grad = None
        out = module(x)
        out.square().mean().backward()
        _sync(device)
        return out

    out = benchmark.pedantic(run, rounds=3, warmup_rounds=1, iterations=1)
    record_result(benchmark.group, name, benchmark)
    assert out.shape == x.shape and torch.isfinite(out).all()
    assert x.grad is not None and torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0
    for pname, p in module.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), f"{name}: parameter {pname} got no finite gradient"
