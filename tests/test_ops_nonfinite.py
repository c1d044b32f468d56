"""The compiled CPU kernels mask the pixel's own column slot instead of multiplying it by zero:
with inf in ``value`` (or in the output gradient) they match a brute-force sum over the criss-cross set,
where ``0 * inf`` would give NaN at the pixel itself."""

from __future__ import annotations

import pytest
import torch

from cca.ops import reference


def brute_force_map(attention: torch.Tensor, value: torch.Tensor) -> torch.Tensor:
    """``out[n, c, y, x] = sum_i attention[n, i, y, x] value[n, c, pos_i(y, x)]`` by explicit loops, each
    partner once (slot order of cca/ops/reference.py)."""
    n, c, h, w = value.shape
    out = torch.zeros_like(value)
    for y in range(h):
        for x in range(w):
            partners = [(y, i) for i in range(w)] + [(j, x) for j in range(h) if j != y]
            for slot, (py, px) in enumerate(partners):
                out[:, :, y, x] += attention[:, slot, y, x, None] * value[:, :, py, px]
    return out


def brute_force_map_grad_value(attention: torch.Tensor, grad: torch.Tensor) -> torch.Tensor:
    """``grad_value[n, c, p] = sum_{u : p in cross(u)} attention[n, slot_u(p), u] grad[n, c, u]`` by loops."""
    n, c, h, w = grad.shape
    out = torch.zeros_like(grad)
    for y in range(h):
        for x in range(w):
            partners = [(y, i) for i in range(w)] + [(j, x) for j in range(h) if j != y]
            for slot, (py, px) in enumerate(partners):
                out[:, :, py, px] += attention[:, slot, y, x, None] * grad[:, :, y, x]
    return out


def _same(actual: torch.Tensor, expected: torch.Tensor) -> None:
    assert not actual.isnan().any(), f"NaN at {actual.isnan().nonzero().tolist()}"
    infinite = expected.isinf()
    assert torch.equal(actual.isinf(), infinite) and torch.equal(actual[infinite], expected[infinite])
    finite = expected.isfinite()
    torch.testing.assert_close(actual[finite], expected[finite])


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_inf_value_matches_brute_force(extension, dtype) -> None:
    generator = torch.Generator().manual_seed(5)
    q, k = (torch.randn(2, 4, 5, 6, generator=generator, dtype=dtype) for _ in range(2))
    value = torch.randn(2, 3, 5, 6, generator=generator, dtype=dtype)
    value[0, 1, 2, 3] = float("inf")
    value[1, 2, 4, 0] = float("-inf")
    attention = torch.softmax(reference.ca_weight_2d(q, k), dim=1)
    out = torch.ops.cca.ca_map_2d(attention, value)
    expected = brute_force_map(attention, value)
    assert expected[0, 1, 2, 3] == float("inf")  # the pixel itself: inf, not NaN
    _same(out, expected)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_inf_grad_matches_brute_force(extension, dtype) -> None:
    generator = torch.Generator().manual_seed(6)
    q, k = (torch.randn(1, 4, 5, 6, generator=generator, dtype=dtype) for _ in range(2))
    value = torch.randn(1, 3, 5, 6, generator=generator, dtype=dtype)
    grad = torch.randn(1, 3, 5, 6, generator=generator, dtype=dtype)
    grad[0, 0, 1, 4] = float("inf")
    attention = torch.softmax(reference.ca_weight_2d(q, k), dim=1)
    _, grad_value = torch.ops.cca.ca_map_2d_backward(grad, attention, value)
    _same(grad_value, brute_force_map_grad_value(attention, grad))


def test_brute_force_agrees_with_reference_on_finite_input() -> None:
    generator = torch.Generator().manual_seed(7)
    q, k = (torch.randn(1, 4, 4, 3, generator=generator, dtype=torch.float64) for _ in range(2))
    value = torch.randn(1, 2, 4, 3, generator=generator, dtype=torch.float64)
    attention = torch.softmax(reference.ca_weight_2d(q, k), dim=1)
    torch.testing.assert_close(brute_force_map(attention, value), reference.ca_map_2d(attention, value))
