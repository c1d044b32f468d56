"""The pure-PyTorch reference against a pixel-by-pixel brute force written from the paper's
definition (float64), including infinite values (``inf`` in ``value``), on both backends."""

from __future__ import annotations

import pytest
import torch

import cca
from cca.ops import reference


def shape_id(shape) -> str:
    return "x".join(map(str, shape))


# --------------------------------------------------------------------------- brute force
def brute_positions(t: int, y: int, x: int, T: int, H: int, W: int) -> list[tuple[int, int, int]]:
    """The criss-cross set of u = (t, y, x) in slot order: its row, the other pixels of its
    column, then the other frames (u itself once, in the row)."""
    positions = [(t, y, i) for i in range(W)]
    positions += [(t, j, x) for j in range(H) if j != y]
    positions += [(s, y, x) for s in range(T) if s != t]
    return positions


def brute_force(query, key, value, attention=None):
    """Pixel-by-pixel criss-cross attention on (N, C, T, H, W) float64 volumes.

    Returns the affinity, the softmaxed attention and the output; with ``attention`` given, the
    output aggregates ``value`` with it instead of the softmax."""
    n_batch, _, T, H, W = query.shape
    length = W + H - 1 + T - 1
    energy = torch.zeros(n_batch, length, T, H, W, dtype=torch.float64)
    out = torch.zeros(value.shape, dtype=torch.float64)
    for n in range(n_batch):
        for t in range(T):
            for y in range(H):
                for x in range(W):
                    positions = brute_positions(t, y, x, T, H, W)
                    assert len(positions) == length and len(set(positions)) == length
                    for i, (s, j, k) in enumerate(positions):
                        energy[n, i, t, y, x] = (query[n, :, t, y, x] * key[n, :, s, j, k]).sum()
                    weights = (
                        torch.softmax(energy[n, :, t, y, x], dim=0) if attention is None else attention[n, :, t, y, x]
                    )
                    for i, (s, j, k) in enumerate(positions):
                        out[n, :, t, y, x] += weights[i] * value[n, :, s, j, k]
    return energy, torch.softmax(energy, dim=1), out


@pytest.mark.parametrize("shape", [(1, 2, 3, 3, 4), (2, 3, 2, 1, 3), (1, 1, 1, 4, 1), (1, 2, 2, 1, 1)], ids=shape_id)
def test_reference_2d_matches_brute_force(make_tensor, shape):
    n, cq, c, h, w = shape
    q, k = make_tensor((n, cq, h, w)), make_tensor((n, cq, h, w))
    v, a = make_tensor((n, c, h, w)), make_tensor((n, h + w - 1, h, w))
    energy, attention, out = brute_force(q.unsqueeze(2), k.unsqueeze(2), v.unsqueeze(2))
    *_, out_given_a = brute_force(q.unsqueeze(2), k.unsqueeze(2), v.unsqueeze(2), a.unsqueeze(2))

    torch.testing.assert_close(reference.ca_weight_2d(q, k), energy.squeeze(2), rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(reference.ca_map_2d(a, v), out_given_a.squeeze(2), rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(reference.criss_cross_attention_2d(q, k, v), out.squeeze(2), rtol=1e-12, atol=1e-12)
    assert attention.shape == (n, h + w - 1, 1, h, w)


@pytest.mark.parametrize(
    "shape", [(1, 2, 3, 3, 2, 4), (2, 1, 2, 1, 3, 2), (1, 2, 1, 4, 1, 1), (1, 3, 2, 2, 3, 3)], ids=shape_id
)
def test_reference_3d_matches_brute_force(make_tensor, shape):
    n, cq, c, t, h, w = shape
    q, k = make_tensor((n, cq, t, h, w)), make_tensor((n, cq, t, h, w))
    v, a = make_tensor((n, c, t, h, w)), make_tensor((n, t + h + w - 2, t, h, w))
    energy, _, out = brute_force(q, k, v)
    *_, out_given_a = brute_force(q, k, v, a)

    torch.testing.assert_close(reference.ca_weight_3d(q, k), energy, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(reference.ca_map_3d(a, v), out_given_a, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(reference.criss_cross_attention_3d(q, k, v), out, rtol=1e-12, atol=1e-12)


def test_brute_force_counts_self_once():
    """With all keys equal, every slot gets the same weight 1 / (H + W - 1): u is not doubled."""
    q, k = torch.ones(1, 1, 1, 3, 4, dtype=torch.float64), torch.ones(1, 1, 1, 3, 4, dtype=torch.float64)
    v = torch.zeros(1, 1, 1, 3, 4, dtype=torch.float64)
    v[0, 0, 0, 1, 2] = 1.0  # only u = (1, 2) has value 1
    _, attention, out = brute_force(q, k, v)
    torch.testing.assert_close(attention, torch.full_like(attention, 1 / 6))
    assert out[0, 0, 0, 1, 2].item() == pytest.approx(1 / 6)  # u sees itself once
    assert out[0, 0, 0, 0, 2].item() == pytest.approx(1 / 6)  # column neighbour sees u once
    assert out[0, 0, 0, 0, 0].item() == 0.0  # not in u's row or column
    torch.testing.assert_close(reference.criss_cross_attention_3d(q, k, v), out)


# --------------------------------------------------------------------------- infinite values
INF_CASES = {  # (N, C', C, T, H, W); T = 1 runs the 2D function
    "2d": (1, 2, 3, 1, 4, 5),
    "2d-H1": (1, 2, 4, 1, 1, 5),
    "2d-W1": (1, 2, 4, 1, 4, 1),
    "3d": (1, 2, 3, 3, 4, 5),
    "3d-H1": (1, 2, 2, 3, 1, 4),
}


def _with_infinities(value: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """``value`` (N, C, T, H, W) with +inf at a random pixel of channel 0 (so some outputs are inf),
    -inf at a random pixel of channel 1, and in the last channel +inf and -inf at two random pixels
    (some sums there are inf - inf = NaN, as the brute force says)."""
    value = value.clone()
    pixels = value[0, 0].numel()
    for channel, sign in ((0, 1.0), (1, -1.0)):
        value[0, channel].view(-1)[torch.randint(pixels, (1,), generator=generator)] = sign * float("inf")
    last = value[0, -1].view(-1)
    picks = torch.randperm(pixels, generator=generator)[:2]
    last[picks[0]], last[picks[-1]] = float("inf"), float("-inf")
    return value


@pytest.mark.parametrize("case", list(INF_CASES))
def test_infinite_value_matches_brute_force(backend, make_tensor, case):
    """inf in ``value`` gives inf (or NaN for inf - inf) exactly where the sum over the criss-cross
    set does, never NaN from ``0 x inf`` at the pixel itself."""
    n, cq, c, t, h, w = INF_CASES[case]
    q, k = make_tensor((n, cq, t, h, w)), make_tensor((n, cq, t, h, w))
    generator = torch.Generator().manual_seed(int(make_tensor((1,)).abs().item() * 1e6))
    v = _with_infinities(make_tensor((n, c, t, h, w)), generator)
    _, attention, expected = brute_force(q, k, v)
    *_, expected_given_a = brute_force(q, k, v, attention)
    assert torch.isinf(expected).any() and torch.isfinite(expected).any()
    if t == 1:
        out = cca.criss_cross_attention(q.squeeze(2), k.squeeze(2), v.squeeze(2)).unsqueeze(2)
        out_map = cca.ca_map(attention.squeeze(2), v.squeeze(2)).unsqueeze(2)
    else:
        out, out_map = cca.criss_cross_attention_3d(q, k, v), cca.ca_map(attention, v)
    torch.testing.assert_close(out, expected, rtol=1e-12, atol=1e-12, equal_nan=True)
    torch.testing.assert_close(out_map, expected_given_a, rtol=1e-12, atol=1e-12, equal_nan=True)
