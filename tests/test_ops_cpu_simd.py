"""The vectorised CPU kernels (``csrc/cpu/simd*.{h,cpp}``: 2D, float32/float64, AVX2 + FMA)
against the float64 reference and against the generic CPU kernels (``CCA_CPU_SIMD=0``).

Shapes cover every tail of the kernels: widths below, at and past a 16-lane block (1, 8, 16, 17,
33, 97), heights 1 (no column part), 2 and 3 (one partial row tile) and odd, channel counts that are
not multiples of the 4-channel tile, batch 2, and channel counts past one 64-channel chunk of the
affinity's column part.
"""

from __future__ import annotations

import pytest
import torch

import cca
from cca.ops import _extension, reference

# (N, C', C, H, W)
SHAPES = [
    (1, 1, 1, 1, 1),
    (2, 3, 5, 1, 17),
    (1, 4, 7, 9, 1),
    (1, 2, 3, 2, 8),
    (2, 5, 13, 3, 16),
    (1, 7, 9, 11, 33),
    (1, 70, 66, 6, 97),
    (2, 4, 6, 33, 8),
]
OPS = ("ca_weight_2d", "ca_weight_2d_backward", "ca_map_2d", "ca_map_2d_backward")


def shape_id(shape) -> str:
    return "x".join(map(str, shape))


@pytest.fixture(params=["simd", "generic"])
def cpu_path(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch, compiled_kernels) -> str:
    """Runs a test on the vectorised kernels and on the generic ones (``CCA_CPU_SIMD=0``)."""
    monkeypatch.setenv("CCA_BACKEND", "extension")
    monkeypatch.setenv("CCA_CPU_SIMD", "1" if request.param == "simd" else "0")
    return request.param


def _inputs(op: str, shape, make_tensor, dtype):
    """The op's inputs in ``dtype`` (attention inputs are softmaxed, as in the network)."""
    n, cq, c, h, w = shape
    length = h + w - 1
    if op == "ca_weight_2d":
        return [make_tensor((n, cq, h, w), dtype), make_tensor((n, cq, h, w), dtype)]
    if op == "ca_weight_2d_backward":
        return [make_tensor((n, length, h, w), dtype)] + [make_tensor((n, cq, h, w), dtype) for _ in range(2)]
    attention = torch.softmax(make_tensor((n, length, h, w)), dim=1).to(dtype)
    if op == "ca_map_2d":
        return [attention, make_tensor((n, c, h, w), dtype)]
    return [make_tensor((n, c, h, w), dtype), attention, make_tensor((n, c, h, w), dtype)]


def _as_tuple(x):
    return x if isinstance(x, tuple) else (x,)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=str)
@pytest.mark.parametrize("shape", SHAPES, ids=shape_id)
@pytest.mark.parametrize("op", OPS)
def test_matches_float64_reference(cpu_path, make_tensor, check_close, op, shape, dtype):
    inputs = _inputs(op, shape, make_tensor, dtype)
    actual = _as_tuple(getattr(torch.ops.cca, op)(*inputs))
    expected = _as_tuple(getattr(reference, op)(*[t.double() for t in inputs]))
    assert len(actual) == len(expected)
    for a, e in zip(actual, expected, strict=True):
        assert a.dtype == dtype and a.shape == e.shape
        check_close(a, e)


@pytest.mark.parametrize("op", OPS)
def test_vectorised_equals_generic_kernels(monkeypatch, make_tensor, compiled_kernels, op):
    """Both CPU paths on the same float64 inputs agree to rounding (the switch really switches:
    the generic kernels sum in another order, so the results are close but not all identical)."""
    monkeypatch.setenv("CCA_BACKEND", "extension")
    inputs = _inputs(op, (2, 6, 10, 13, 21), make_tensor, torch.float64)
    results = {}
    for flag in ("1", "0"):
        monkeypatch.setenv("CCA_CPU_SIMD", flag)
        results[flag] = _as_tuple(getattr(torch.ops.cca, op)(*inputs))
    for simd, generic in zip(results["1"], results["0"], strict=True):
        torch.testing.assert_close(simd, generic, rtol=1e-12, atol=1e-12)


def test_gradcheck_through_the_vectorised_kernels(cpu_path, make_tensor):
    """Gradients of the whole operator (both kernels, both backward ops) by finite differences,
    on a map with a partial lane block and a partial row tile."""
    q, k = make_tensor((1, 3, 5, 19), requires_grad=True), make_tensor((1, 3, 5, 19), requires_grad=True)
    v = make_tensor((1, 5, 5, 19), requires_grad=True)
    assert torch.autograd.gradcheck(cca.criss_cross_attention, (q, k, v))


def test_non_contiguous_inputs(cpu_path, make_tensor, check_close):
    """Channels-last and transposed views give the contiguous result (the kernels copy first)."""
    q, k, v = (make_tensor(s, torch.float32) for s in ((2, 4, 9, 20), (2, 4, 9, 20), (2, 6, 9, 20)))
    expected = reference.criss_cross_attention_2d(q.double(), k.double(), v.double())
    strided = [t.contiguous(memory_format=torch.channels_last) for t in (q, k, v)]
    check_close(cca.criss_cross_attention(*strided), expected)
    transposed = [t.transpose(2, 3).contiguous().transpose(2, 3) for t in (q, k, v)]
    check_close(cca.criss_cross_attention(*transposed), expected)


def test_switch_is_read_per_call(monkeypatch, compiled_kernels):
    """``CCA_CPU_SIMD=0`` is honoured without a restart (tests and benchmarks flip it in-process)."""
    assert _extension.has_kernel("cpu")
    for flag in ("0", "1", "0"):
        monkeypatch.setenv("CCA_CPU_SIMD", flag)
        out = torch.ops.cca.ca_weight_2d(torch.ones(1, 1, 2, 3), torch.ones(1, 1, 2, 3))
        assert out.shape == (1, 4, 2, 3) and bool((out == 1).all())
