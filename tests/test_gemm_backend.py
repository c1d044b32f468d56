"""The GEMM backend (:mod:`cca.ops.gemm_backend`) on the CPU against the float64 reference: forward,
gradients (gradcheck in float64, every dtype against the reference's float64 gradients), tails
(H != W, H or W = 1, batch 2), non-contiguous inputs and non-finite inputs behaving as the reference."""

from __future__ import annotations

import pytest
import torch

from cca.ops import gemm_backend, reference

SHAPES = [(2, 3, 5, 4, 6), (1, 4, 3, 7, 2), (1, 2, 3, 1, 5), (2, 2, 3, 4, 1), (1, 1, 1, 1, 1), (1, 8, 16, 9, 9)]
DTYPES = [torch.float64, torch.float32, torch.float16, torch.bfloat16]


def _inputs(make_tensor, shape, dtype=torch.float64, requires_grad=False):
    n, cq, c, h, w = shape
    q, k = (make_tensor((n, cq, h, w), scale=0.7) for _ in range(2))
    v = make_tensor((n, c, h, w))
    return [t.to(dtype).requires_grad_(requires_grad) for t in (q, k, v)]


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_forward_matches_reference(make_tensor, check_close, shape, dtype):
    q, k, v = _inputs(make_tensor, shape)
    out = gemm_backend.criss_cross_attention(q.to(dtype), k.to(dtype), v.to(dtype))
    assert out.dtype == dtype and out.shape == v.shape and out.is_contiguous()
    check_close(out, reference.criss_cross_attention_2d(q, k, v))


@pytest.mark.parametrize("shape", [(2, 3, 4, 3, 5), (1, 2, 3, 1, 4), (1, 2, 2, 4, 1), (1, 2, 3, 1, 1)], ids=str)
def test_gradcheck_float64(make_tensor, shape):
    q, k, v = _inputs(make_tensor, shape, requires_grad=True)
    assert torch.autograd.gradcheck(gemm_backend.criss_cross_attention, (q, k, v))


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("shape", [(2, 3, 5, 4, 6), (1, 4, 3, 6, 1), (1, 2, 4, 7, 9)], ids=str)
def test_gradients_match_reference(make_tensor, check_close, shape, dtype):
    q, k, v = _inputs(make_tensor, shape, requires_grad=True)
    grad = make_tensor(v.shape)
    expected = torch.autograd.grad(reference.criss_cross_attention_2d(q, k, v), (q, k, v), grad)
    leaves = [t.detach().to(dtype).requires_grad_(True) for t in (q, k, v)]
    actual = torch.autograd.grad(gemm_backend.criss_cross_attention(*leaves), leaves, grad.to(dtype))
    for got, want in zip(actual, expected, strict=True):
        assert got.dtype == dtype
        check_close(got, want, tol=None if dtype != torch.float16 else 2e-2)


@pytest.mark.parametrize("needs", [(True, False, False), (False, True, False), (False, False, True), (True, True, False)])
def test_partial_gradients(make_tensor, needs):
    q, k, v = _inputs(make_tensor, (1, 3, 4, 5, 4))
    leaves = [t.requires_grad_(need) for t, need in zip((q, k, v), needs, strict=True)]
    wanted = [t for t in leaves if t.requires_grad]
    grad = make_tensor(v.shape)
    expected = torch.autograd.grad(reference.criss_cross_attention_2d(*leaves), wanted, grad)
    actual = torch.autograd.grad(gemm_backend.criss_cross_attention(*leaves), wanted, grad)
    for got, want in zip(actual, expected, strict=True):
        torch.testing.assert_close(got, want)


def test_non_contiguous_inputs(make_tensor, check_close):
    q = make_tensor((1, 3, 3, 4)).transpose(2, 3)  # (1, 3, 4, 3), transposed
    k = make_tensor((1, 3, 4, 3, 2))[..., 0]  # (1, 3, 4, 3), stride 2 along x
    v = make_tensor((1, 4, 6, 3)).permute(0, 3, 1, 2)[:, :, :, ::2]  # (1, 3, 4, 3) sliced channels-last
    assert not (q.is_contiguous() or k.is_contiguous() or v.is_contiguous())
    check_close(gemm_backend.criss_cross_attention(q, k, v), reference.criss_cross_attention_2d(q, k, v))


def _same_nonfinite(actual: torch.Tensor, expected: torch.Tensor) -> None:
    """NaN where the reference has NaN, the same infinities, the finite entries close."""
    assert torch.equal(actual.isnan(), expected.isnan()), "NaN pattern differs from the reference"
    infinite = expected.isinf()
    assert torch.equal(actual.isinf(), infinite) and torch.equal(actual[infinite], expected[infinite])
    finite = expected.isfinite()
    torch.testing.assert_close(actual[finite], expected[finite])


@pytest.mark.parametrize("where", ["inf_value_self", "neg_inf_value", "nan_value", "neg_inf_query", "nan_key"])
def test_non_finite_inputs_like_reference(make_tensor, where):
    q, k, v = _inputs(make_tensor, (2, 3, 4, 5, 6))
    target = {"inf_value_self": (v, float("inf")), "neg_inf_value": (v, float("-inf")), "nan_value": (v, float("nan")),
              "neg_inf_query": (q, float("-inf")), "nan_key": (k, float("nan"))}[where]
    tensor, bad = target
    tensor[1, 2, 3, 4] = bad
    _same_nonfinite(gemm_backend.criss_cross_attention(q, k, v), reference.criss_cross_attention_2d(q, k, v))


def test_inf_gradient_like_reference(make_tensor):
    """An infinite output gradient at a pixel reaches its own value through its shared (nonzero) weight."""
    q, k, v = _inputs(make_tensor, (1, 3, 2, 4, 5), requires_grad=True)
    grad = make_tensor(v.shape)
    grad[0, 1, 2, 3] = float("inf")
    expected = torch.autograd.grad(reference.criss_cross_attention_2d(q, k, v), v, grad)[0]
    actual = torch.autograd.grad(gemm_backend.criss_cross_attention(q, k, v), v, grad)[0]
    assert actual[0, 1, 2, 3] == float("inf")
    _same_nonfinite(actual, expected)


def test_slot_attention_sums_to_one_with_self_shared(make_tensor):
    q, k, _ = _inputs(make_tensor, (1, 3, 1, 4, 5))
    attention = gemm_backend.slot_attention(q, k)  # (N, H, W, W + H)
    assert attention.shape == (1, 4, 5, 9)
    torch.testing.assert_close(attention.sum(-1), torch.ones(1, 4, 5, dtype=torch.float64))
    expected = torch.softmax(reference.ca_weight_2d(q, k), dim=1)  # slot x of the row is u itself
    for y in range(4):
        for x in range(5):
            assert attention[0, y, x, x] == attention[0, y, x, 5 + y]  # half each
            torch.testing.assert_close(2 * attention[0, y, x, x], expected[0, x, y, x])


def test_can_run_and_errors(make_tensor):
    q, k, v = _inputs(make_tensor, (1, 2, 3, 4, 5))
    assert gemm_backend.can_run(q, k, v) is None
    volume = make_tensor((1, 2, 2, 4, 5))
    assert gemm_backend.can_run(volume, volume, volume) is None
    flat = make_tensor((2, 4, 5))
    reason = gemm_backend.can_run(flat, flat, flat)
    assert reason is not None and "query.dim()=3" in reason
    with pytest.raises(ValueError, match=r"needs \(N, C', H, W\) or \(N, C', T, H, W\)"):
        gemm_backend.criss_cross_attention(flat, flat, flat)


SHAPES_3D = [(2, 3, 5, 3, 4, 6), (1, 2, 3, 1, 5, 4), (1, 2, 3, 4, 1, 5), (1, 2, 3, 3, 4, 1), (1, 1, 1, 1, 1, 1)]


def _volumes(make_tensor, shape, requires_grad=False):
    n, cq, c, t, h, w = shape
    tensors = (make_tensor((n, cq, t, h, w), scale=0.7), make_tensor((n, cq, t, h, w), scale=0.7),
               make_tensor((n, c, t, h, w)))
    return [x.requires_grad_(requires_grad) for x in tensors]


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("shape", SHAPES_3D, ids=str)
def test_3d_forward_and_gradients_match_reference(make_tensor, check_close, shape, dtype):
    q, k, v = _volumes(make_tensor, shape, requires_grad=True)
    grad = make_tensor(v.shape)
    expected = [reference.criss_cross_attention_3d(q, k, v)]
    expected += torch.autograd.grad(expected[0], (q, k, v), grad)
    leaves = [t.detach().to(dtype).requires_grad_(True) for t in (q, k, v)]
    out = gemm_backend.criss_cross_attention(*leaves)
    assert out.shape == v.shape and out.dtype == dtype and out.is_contiguous()
    actual = [out, *torch.autograd.grad(out, leaves, grad.to(dtype))]
    for got, want in zip(actual, expected, strict=True):
        check_close(got, want, tol=None if dtype != torch.float16 else 2e-2)


@pytest.mark.parametrize("shape", [(1, 2, 3, 2, 3, 4), (2, 2, 2, 3, 1, 2), (1, 2, 2, 1, 3, 2)], ids=str)
def test_3d_gradcheck_float64(make_tensor, shape):
    from cca.ops import gemm_backend_3d

    assert torch.autograd.gradcheck(gemm_backend_3d.criss_cross_attention_3d, tuple(_volumes(make_tensor, shape, True)))


@pytest.mark.parametrize("where", ["inf_value_self", "neg_inf_value", "nan_key"])
def test_3d_non_finite_inputs_like_reference(make_tensor, where):
    q, k, v = _volumes(make_tensor, (1, 2, 3, 3, 4, 5))
    tensor, bad = {"inf_value_self": (v, float("inf")), "neg_inf_value": (v, float("-inf")),
                   "nan_key": (k, float("nan"))}[where]
    tensor[0, 1, 2, 3, 4] = bad
    _same_nonfinite(gemm_backend.criss_cross_attention(q, k, v), reference.criss_cross_attention_3d(q, k, v))


@pytest.mark.cuda
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_cuda_matches_reference(make_tensor, check_close, dtype):
    """On a GPU (cuBLAS, strided outputs written in place): forward and gradients."""
    q, k, v = _inputs(make_tensor, (2, 8, 32, 13, 17), requires_grad=True)
    grad = make_tensor(v.shape)
    expected = [reference.criss_cross_attention_2d(q, k, v)]
    expected += torch.autograd.grad(expected[0], (q, k, v), grad)
    leaves = [t.detach().to("cuda", dtype).requires_grad_(True) for t in (q, k, v)]
    out = gemm_backend.criss_cross_attention(*leaves)
    actual = [out, *torch.autograd.grad(out, leaves, grad.to("cuda", dtype))]
    for got, want in zip(actual, expected, strict=True):
        check_close(got, want, tol=None if dtype in (torch.float64, torch.float32) else 5e-2)
