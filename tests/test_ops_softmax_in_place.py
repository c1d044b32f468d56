"""The softmax of :func:`cca.criss_cross_attention` on the compiled CPU kernels runs in place: in the
energy buffer forward, in the incoming gradient backward (``cca.ops.criss_cross._SoftmaxInPlace``).

Checked: results and gradients against the float64 reference (float32 and float64, simd and
generic kernels), bitwise equality with PyTorch's out-of-place softmax and softmax backward on a
paper-sized map (guards against a PyTorch kernel that would not tolerate the aliasing), that the
forward and the backward each allocate one attention-sized buffer (two without the in-place
softmax), that the caller's gradient is left untouched, and ``create_graph=True``.
"""

from __future__ import annotations

import pytest
import torch
from torch._C._profiler import _EventType
from torch.profiler import ProfilerActivity, profile

import cca
from cca.ops import reference
from cca.ops.criss_cross import _SoftmaxInPlace

SHAPES = [(2, 4, 6, 9, 20), (1, 8, 16, 40, 45)]  # (N, C', C, H, W)


@pytest.fixture(params=["simd", "generic"])
def cpu_path(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch, extension) -> str:
    monkeypatch.setenv("CCA_CPU_SIMD", "1" if request.param == "simd" else "0")
    return request.param


def _qkv(shape, make_tensor, dtype):
    n, cq, c, h, w = shape
    return [make_tensor(s, dtype, requires_grad=True) for s in ((n, cq, h, w), (n, cq, h, w), (n, c, h, w))]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
def test_matches_the_float64_reference(cpu_path, make_tensor, check_close, shape, dtype):
    q, k, v = _qkv(shape, make_tensor, dtype)
    q64, k64, v64 = (t.detach().double().requires_grad_() for t in (q, k, v))
    grad_out = make_tensor(v.shape, dtype)
    kept = grad_out.clone()
    out = cca.criss_cross_attention(q, k, v)
    grads = torch.autograd.grad(out, (q, k, v), grad_out)
    out64 = reference.criss_cross_attention_2d(q64, k64, v64)
    grads64 = torch.autograd.grad(out64, (q64, k64, v64), grad_out.double())
    check_close(out, out64)
    for actual, expected in zip(grads, grads64, strict=True):
        check_close(actual, expected)
    assert torch.equal(grad_out, kept), "the caller's gradient was modified"


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_bitwise_equal_to_the_out_of_place_softmax(make_tensor, dtype):
    """A paper-sized map (H = W = 97, 193 slots) and a 2-sample one through PyTorch's vectorised
    softmax kernels: writing into the input must give exactly what a fresh output gets."""
    for shape in ((1, 193, 97, 97), (2, 20, 11, 10)):
        energy = make_tensor(shape, dtype, scale=4.0)
        grad = make_tensor(shape, dtype)
        expected = torch.softmax(energy, dim=1)
        expected_grad = torch._softmax_backward_data(grad, expected, 1, dtype)
        leaf = energy.clone().requires_grad_()
        attention = _SoftmaxInPlace.apply(leaf.clone())
        (actual_grad,) = torch.autograd.grad(attention, leaf, grad.clone())
        assert torch.equal(attention, expected)
        assert torch.equal(actual_grad, expected_grad)


def _attention_sized_allocations(fn, nbytes: int) -> int:
    """How many CPU allocations of exactly ``nbytes`` happen during ``fn()``."""
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        fn()
    stack, count = list(prof.profiler.kineto_results.experimental_event_tree()), 0
    while stack:
        node = stack.pop()
        stack.extend(node.children)
        if node.tag == _EventType.Allocation and node.extra_fields.alloc_size == nbytes:
            count += 1
    return count


@pytest.mark.parametrize("in_place", [True, False])
def test_one_attention_buffer_each_way(extension, make_tensor, monkeypatch, in_place):
    """Forward: the energy buffer becomes the attention (one allocation of its size, two out of
    place); backward: ca_map's gradient becomes the energy's (one more, two more out of place)."""
    monkeypatch.setenv("CCA_CPU_SIMD", "1")
    if not in_place:
        monkeypatch.setattr(torch.compiler, "is_compiling", lambda: True)  # takes the functional path
    n, cq, c, h, w = 1, 4, 8, 23, 29
    q, k, v = _qkv((n, cq, c, h, w), make_tensor, torch.float32)
    nbytes = n * (h + w - 1) * h * w * 4
    out = {}
    forward = _attention_sized_allocations(lambda: out.setdefault("y", cca.criss_cross_attention(q, k, v)), nbytes)
    backward = _attention_sized_allocations(lambda: out["y"].backward(torch.ones_like(out["y"])), nbytes)
    assert (forward, backward) == ((1, 1) if in_place else (2, 2))


def test_create_graph(extension, make_tensor, check_close):
    """With create_graph the backward stays out of place (``out=`` has no derivative): same gradients."""
    q, k, v = _qkv((1, 3, 5, 7, 11), make_tensor, torch.float32)
    grad_out = make_tensor(v.shape, torch.float32)
    grads = torch.autograd.grad(cca.criss_cross_attention(q, k, v), (q, k, v), grad_out, create_graph=True)
    q64, k64, v64 = (t.detach().double().requires_grad_() for t in (q, k, v))
    grads64 = torch.autograd.grad(reference.criss_cross_attention_2d(q64, k64, v64), (q64, k64, v64), grad_out.double())
    for actual, expected in zip(grads, grads64, strict=True):
        check_close(actual, expected)
