"""The CUDA kernels' own source, run on the CPU, against the float64 reference.

``torch.ops.cca_cuda_emulated.*`` (``tests/cuda_emulation.py``) is ``csrc/cuda/kernels.h`` compiled
as ordinary C++ under ``csrc/testing/cuda_emulation.h``, composed by the same
``csrc/cuda/ops_composition.h`` and sized by the same ``csrc/cuda/launch_config.h`` as the CUDA
extension; every block and thread of each grid runs in turn. Each numerical test of
``TestCuda`` (tests/test_cuda.py) that needs no real device has a twin here, at the same tolerances
(``TOLERANCE`` in conftest.py), plus tests of the grid-stride loop (a capped grid, one thread covering
many elements) and of float32 accumulation for half precision. Outputs start as NaN in the
emulation, so an element that no thread writes fails ``check_close``.

What only a GPU can show (launch errors, the current stream, CUDA graphs, device guards, atomics
or races if a kernel ever had them, speed) stays in ``TestCuda``.
"""

from __future__ import annotations

import cuda_emulation
import pytest
import torch
from test_cuda import CUDA_SHAPES, DTYPES, OP_NAMES, as_tuple, dim_of, op_inputs, reference_op, strided_copy

from cca.ops import _extension, reference


@pytest.fixture(scope="module")
def emulated():
    """``torch.ops.cca_cuda_emulated`` (built on first use; a build failure fails the tests)."""
    return cuda_emulation.load()


def cpu_inputs(make_tensor, name, shape, dtype, scale=1.0):
    return op_inputs(make_tensor, name, shape, dtype, device="cpu", scale=scale)


# ---------------------------------------------------------------- each op vs float64
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("name, shape", [(n, s) for n in OP_NAMES for s in CUDA_SHAPES[dim_of(n)]], ids=str)
def test_op_matches_float64_reference(emulated, make_tensor, check_close, name, shape, dtype):
    inputs = cpu_inputs(make_tensor, name, shape, dtype)
    results = as_tuple(getattr(emulated, name)(*inputs))
    expected = as_tuple(reference_op(name, inputs))
    assert len(results) == len(expected)
    for result, want in zip(results, expected, strict=True):
        assert result.dtype == dtype and result.is_contiguous()
        check_close(result, want)


@pytest.mark.parametrize("name", OP_NAMES)
def test_large_values(emulated, make_tensor, check_close, name):
    """Every input scaled by 100 (affinities ~1e4 and more): float32 keeps its relative accuracy."""
    shape = (2, 8, 4, 9, 11) if dim_of(name) == "2d" else (1, 8, 4, 3, 6, 7)
    inputs = cpu_inputs(make_tensor, name, shape, torch.float32, scale=100.0)
    for result, want in zip(as_tuple(getattr(emulated, name)(*inputs)), as_tuple(reference_op(name, inputs)), strict=True):
        check_close(result, want)


# ---------------------------------------------------------------- the grid: launch sizes, grid-stride loop
GRID_SHAPES = {"2d": (2, 6, 5, 7, 9), "3d": (2, 3, 4, 3, 5, 6)}  # every launch has more than 512 elements


@pytest.mark.parametrize("total, max_blocks", [(1, 65535), (255, 65535), (256, 65535), (257, 65535),
                                               (256 * 65535, 65535), (256 * 65535 + 1, 65535), (10**10, 65535),
                                               (1000, 1), (1000, 3), (1000, 4)])
def test_launch_config(emulated, total, max_blocks):
    """``grid_blocks`` of the real launchers: one thread per element up to the cap, never 0 blocks."""
    threads, cap, blocks = emulated.launch_config(total, max_blocks)
    assert (threads, cap) == (256, 65535)
    assert blocks == max(1, min(-(-total // threads), max_blocks))
    assert 1 <= blocks <= min(max_blocks, 65535)
    if blocks < max_blocks:
        assert blocks * threads >= total  # uncapped: every element has its own thread


@pytest.mark.parametrize("blocks", [1, 2])
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("name", OP_NAMES)
def test_grid_stride_loop(emulated, make_tensor, check_close, name, dtype, blocks):
    """Grid capped at 1 or 2 blocks of 256 threads: each thread covers several elements, and the
    result is still every element, right (outputs start as NaN)."""
    inputs = cpu_inputs(make_tensor, name, GRID_SHAPES[dim_of(name)], dtype)
    with cuda_emulation.max_blocks(blocks):
        results = as_tuple(getattr(emulated, name)(*inputs))
        launched_blocks, launched_threads, total = emulated.last_launch()
    assert launched_blocks == blocks and launched_threads == blocks * 256
    assert total > launched_threads, "the shape is too small to exercise the grid-stride loop"
    for result, want in zip(results, as_tuple(reference_op(name, inputs)), strict=True):
        check_close(result, want)


@pytest.mark.parametrize("name", OP_NAMES)
def test_result_does_not_depend_on_the_grid(emulated, make_tensor, name):
    """Each output is summed by one thread in a fixed order, whatever the grid: bitwise equal
    results for 1, 2 and 65535 blocks (the kernels' determinism by construction)."""
    inputs = cpu_inputs(make_tensor, name, GRID_SHAPES[dim_of(name)], torch.float32)
    op = getattr(emulated, name)
    full = as_tuple(op(*inputs))
    for blocks in (1, 2):
        with cuda_emulation.max_blocks(blocks):
            assert all(torch.equal(a, b) for a, b in zip(full, as_tuple(op(*inputs)), strict=True))


def test_max_blocks_must_be_positive(emulated):
    with pytest.raises(RuntimeError, match="max_blocks must be a positive block count, got 0"):
        emulated.set_max_blocks(0)


# ---------------------------------------------------------------- reduced precision: float32 accumulation
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=str)
@pytest.mark.parametrize("dim", ["2d", "3d"])
def test_half_precision_accumulates_in_float32(emulated, check_close, dim, dtype):
    """Sums of 3000 ones: a float16 accumulator stalls at 2048 (bfloat16 at 256); the kernels
    accumulate in float32 (at::opmath_type) and round once, so they get 3000 (to the dtype's ulp)."""
    n = 3000
    lead = () if dim == "2d" else (1,)
    ones = dict(dtype=dtype)
    q = torch.ones(1, n, *lead, 1, 2, **ones)  # C' = 3000: ca_weight sums 3000 channel products
    weight = getattr(emulated, f"ca_weight_{dim}")(q, q)
    check_close(weight, torch.full(weight.shape, float(n), dtype=torch.float64))
    v = torch.ones(1, 1, *lead, 1, n, **ones)  # W = 3000: ca_map sums 3000 row slots
    a = torch.ones(1, n, *lead, 1, n, **ones)
    out = getattr(emulated, f"ca_map_{dim}")(a, v)
    check_close(out, torch.full(out.shape, float(n), dtype=torch.float64))
    da, dv = getattr(emulated, f"ca_map_{dim}_backward")(torch.ones_like(v), a, v)  # dv sums 3000 row terms
    check_close(dv, torch.full(dv.shape, float(n), dtype=torch.float64))
    check_close(da, torch.ones(da.shape, dtype=torch.float64))


# ---------------------------------------------------------------- the whole attention
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("ndim", [2, 3])
def test_attention_matches_float64_reference(emulated, make_tensor, check_close, ndim, dtype):
    """Forward and input gradients of the whole attention (softmax included), autograd through the
    emulated ``*_backward`` ops."""
    spatial = (13, 17) if ndim == 2 else (3, 7, 6)
    ref = reference.criss_cross_attention_2d if ndim == 2 else reference.criss_cross_attention_3d
    q, k = (make_tensor((2, 8, *spatial), dtype=dtype, scale=8**-0.5) for _ in range(2))
    v = make_tensor((2, 16, *spatial), dtype=dtype)
    grad_out = make_tensor(v.shape, dtype=dtype)
    inputs = [t.requires_grad_(True) for t in (q, k, v)]
    inputs64 = [t.detach().double().requires_grad_(True) for t in inputs]
    out = cuda_emulation.attention(*inputs)
    expected = ref(*inputs64)
    check_close(out.detach(), expected.detach())
    grads = torch.autograd.grad(out, inputs, grad_out)
    expected_grads = torch.autograd.grad(expected, inputs64, grad_out.double())
    for grad, want in zip(grads, expected_grads, strict=True):
        assert grad.dtype == dtype
        check_close(grad, want)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=str)
@pytest.mark.parametrize("ndim", [2, 3])
def test_softmax_of_large_logits(emulated, make_tensor, check_close, ndim, dtype):
    """Query and key scaled by 30 (logits in the thousands): finite, and as accurate as the rounding
    of the logits allows (eps * sum_c |q_c k_c|)."""
    spatial = (9, 11) if ndim == 2 else (3, 6, 7)
    ref = reference.criss_cross_attention_2d if ndim == 2 else reference.criss_cross_attention_3d
    weight = reference.ca_weight_2d if ndim == 2 else reference.ca_weight_3d
    q, k = (make_tensor((2, 8, *spatial), dtype=dtype, scale=30.0) for _ in range(2))
    v = make_tensor((2, 4, *spatial), dtype=dtype)
    magnitude = weight(q.double().abs(), k.double().abs()).max().item()
    assert magnitude > 1000.0
    tol = (1e-4 if dtype == torch.float32 else 1e-10) + 4 * torch.finfo(dtype).eps * magnitude
    out = cuda_emulation.attention(q, k, v)
    assert torch.isfinite(out).all()
    check_close(out, ref(q.double(), k.double(), v.double()), tol)


# ---------------------------------------------------------------- gradcheck through the emulated backward ops
@pytest.mark.parametrize("seed", range(3))
@pytest.mark.parametrize(
    "fn, shapes",
    [
        (cuda_emulation.ca_weight, [(2, 3, 4, 5), (2, 3, 4, 5)]),
        (cuda_emulation.ca_map, [(2, 8, 4, 5), (2, 3, 4, 5)]),
        (cuda_emulation.attention, [(2, 2, 3, 4), (2, 2, 3, 4), (2, 3, 3, 4)]),
        (cuda_emulation.ca_weight, [(1, 2, 3, 3, 4), (1, 2, 3, 3, 4)]),
        (cuda_emulation.ca_map, [(1, 8, 3, 3, 4), (1, 2, 3, 3, 4)]),
        (cuda_emulation.attention, [(1, 2, 2, 3, 2), (1, 2, 2, 3, 2), (1, 3, 2, 3, 2)]),
    ],
    ids=["weight2d", "map2d", "attention2d", "weight3d", "map3d", "attention3d"],
)
def test_gradcheck(emulated, fn, shapes, seed):
    generator = torch.Generator().manual_seed(seed)
    inputs = [torch.randn(s, generator=generator, dtype=torch.float64, requires_grad=True) for s in shapes]
    assert torch.autograd.gradcheck(fn, inputs)


# ---------------------------------------------------------------- layouts, agreement, checks, registration
@pytest.mark.parametrize("how", ["sliced", "channels_last", "transposed"])
@pytest.mark.parametrize("name", OP_NAMES)
def test_non_contiguous_inputs(emulated, make_tensor, name, how):
    shape = (2, 3, 4, 5, 6) if dim_of(name) == "2d" else (1, 3, 2, 3, 4, 5)
    inputs = cpu_inputs(make_tensor, name, shape, torch.float32)
    strided = [strided_copy(t, how) for t in inputs]
    assert all(not t.is_contiguous() for t in strided)
    op = getattr(emulated, name)
    for result, want in zip(as_tuple(op(*strided)), as_tuple(op(*inputs)), strict=True):
        assert torch.equal(result, want)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=str)
@pytest.mark.parametrize("name", OP_NAMES)
def test_emulated_cuda_agrees_with_cpu_kernels(emulated, extension, make_tensor, name, dtype):
    """The twin of ``test_cuda_agrees_with_cpu_kernels``: CUDA kernel source vs the C++ CPU kernels."""
    assert _extension.has_kernel("cpu"), _extension.status()
    shape = (2, 8, 16, 13, 17) if dim_of(name) == "2d" else (1, 8, 16, 4, 9, 11)
    inputs = cpu_inputs(make_tensor, name, shape, dtype)
    on_cpu = as_tuple(getattr(torch.ops.cca, name)(*inputs))
    on_emulated = as_tuple(getattr(emulated, name)(*inputs))
    tol = 1e-12 if dtype == torch.float64 else 1e-5
    for emulated_result, cpu_result in zip(on_emulated, on_cpu, strict=True):
        torch.testing.assert_close(emulated_result, cpu_result, rtol=tol, atol=tol)


def test_kernel_checks_raise(emulated, make_tensor):
    """The TORCH_CHECKs of the shared composition (checks.h) in front of the kernels."""
    q = make_tensor((1, 2, 4, 5), dtype=torch.float32)
    a = make_tensor((1, 8, 4, 5), dtype=torch.float32)
    v = make_tensor((1, 3, 4, 5), dtype=torch.float32)
    with pytest.raises(RuntimeError, match=r"attention must have shape"):
        emulated.ca_map_2d(a[:, :7], v)
    with pytest.raises(RuntimeError, match=r"query and key must have the same dtype"):
        emulated.ca_weight_2d(q, q.double())
    with pytest.raises(RuntimeError, match=r"grad must have shape"):
        emulated.ca_weight_2d_backward(v, q, q)
    with pytest.raises(RuntimeError, match=r"grad must have the shape of value"):
        emulated.ca_map_2d_backward(a, a, v)
    with pytest.raises(RuntimeError, match=r"key must have 4 dims \(N, C, H, W\), got 3"):
        emulated.ca_weight_2d(q, q[0])


@pytest.mark.parametrize("name", OP_NAMES)
def test_opcheck(emulated, make_tensor, name):
    """Schema, fake impl and (forward ops) autograd registration of the emulated ops."""
    shape = (2, 3, 4, 5, 6) if dim_of(name) == "2d" else (1, 3, 2, 3, 4, 5)
    inputs = cpu_inputs(make_tensor, name, shape, torch.float64)
    if not name.endswith("_backward"):
        inputs = [t.requires_grad_(True) for t in inputs]
    torch.library.opcheck(getattr(emulated, name), tuple(inputs))


# ---------------------------------------------------------------- the emulation itself
@pytest.mark.parametrize("grid, block", [((3, 1, 1), (4, 1, 1)), ((2, 3, 2), (3, 2, 2)), ((1, 1, 1), (1024, 1, 1))])
def test_every_thread_of_the_grid_runs_once(emulated, grid, block):
    """``emulate_launch`` runs each (blockIdx, threadIdx) of a 3D grid exactly once, with the built-ins set."""
    seen = emulated.record_builtins(list(grid), list(block))
    expected = torch.cartesian_prod(*(torch.arange(n) for n in (*grid, *block))).reshape(-1, 6)
    assert torch.equal(torch.unique(seen, dim=0), torch.unique(expected, dim=0))
    assert seen.shape[0] == expected.shape[0] == torch.unique(seen, dim=0).shape[0]


def test_a_barrier_is_refused_not_run_wrong(emulated):
    """Threads run to completion one after another, so ``__syncthreads()`` cannot be honoured: it raises."""
    with pytest.raises(RuntimeError, match=r"__syncthreads\(\) is not modelled"):
        emulated.launch_barrier_kernel()


# ---------------------------------------------------------------- infinite values
@pytest.mark.parametrize("case", ["2d", "2d-W1", "3d"])
def test_infinite_value_matches_brute_force(emulated, make_tensor, case):
    """inf in ``value`` through the CUDA kernels' aggregation: inf (or NaN for inf - inf) exactly where
    the sum over the criss-cross set has it, never NaN from ``0 x inf`` at the pixel itself."""
    from test_ops_reference import INF_CASES, _with_infinities, brute_force

    n, cq, c, t, h, w = INF_CASES[case]
    q, k = make_tensor((n, cq, t, h, w)), make_tensor((n, cq, t, h, w))
    v = _with_infinities(make_tensor((n, c, t, h, w)), torch.Generator().manual_seed(7))
    *_, attention, _ = brute_force(q, k, v)
    *_, expected = brute_force(q, k, v, attention)
    assert torch.isinf(expected).any()
    if t == 1:
        out = emulated.ca_map_2d(attention.squeeze(2), v.squeeze(2)).unsqueeze(2)
    else:
        out = emulated.ca_map_3d(attention, v)
    torch.testing.assert_close(out, expected, rtol=1e-12, atol=1e-12, equal_nan=True)
