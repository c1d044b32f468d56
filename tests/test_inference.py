"""Inference modes against direct computations: whole, sliding window, multi-scale, flip (+ LIP swap)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from cca.engine.inference import predict, window_starts


class WindowModel(nn.Module):
    """Output depends on the window: channel 0 = window mean of input channel 0, channel 1 = the
    column inside the window / 10, channel 2 = input channel 1 (pointwise), as a dict with "out"."""

    def forward(self, x):
        mean = x[:, 0].mean(dim=(-2, -1), keepdim=True).expand_as(x[:, 0])
        col = torch.arange(x.shape[-1], dtype=x.dtype).expand_as(x[:, 0]) / 10
        return {"out": torch.stack([mean, col, x[:, 1]], dim=1), "aux": None}


def brute_force_slide(x: np.ndarray, crop: tuple[int, int], stride: tuple[int, int]) -> np.ndarray:
    """float64 reference for WindowModel: pad, enumerate windows, average per pixel."""
    n, _, h, w = x.shape
    ph, pw = max(crop[0], h), max(crop[1], w)
    padded = np.zeros((n, x.shape[1], ph, pw))
    padded[:, :, :h, :w] = x
    total = np.zeros((n, 3, ph, pw))
    count = np.zeros((ph, pw))
    tops = sorted(set(range(0, ph - crop[0], stride[0])) | {ph - crop[0]})
    lefts = sorted(set(range(0, pw - crop[1], stride[1])) | {pw - crop[1]})
    for top in tops:
        for left in lefts:
            win = padded[:, :, top : top + crop[0], left : left + crop[1]]
            out = np.stack([
                np.broadcast_to(win[:, 0].mean(axis=(-2, -1), keepdims=True), win[:, 0].shape),
                np.broadcast_to(np.arange(crop[1]) / 10, win[:, 0].shape),
                win[:, 1],
            ], axis=1)  # fmt: skip
            total[:, :, top : top + crop[0], left : left + crop[1]] += out
            count[top : top + crop[0], left : left + crop[1]] += 1
    assert count.min() >= 1
    return (total / count)[:, :, :h, :w]


def test_window_starts():
    assert window_starts(100, 40, 30) == [0, 30, 60]
    assert window_starts(101, 40, 30) == [0, 30, 60, 61]
    assert window_starts(40, 40, 30) == [0]
    assert window_starts(2048, 769, 513) == [0, 513, 1026, 1279]


def test_whole_is_the_model_output():
    torch.manual_seed(0)
    x = torch.randn(2, 3, 13, 17)
    conv = nn.Conv2d(3, 5, 3, padding=1)
    torch.testing.assert_close(predict(conv, x), conv(x))
    torch.testing.assert_close(predict(WindowModel(), x), WindowModel()(x)["out"])


@pytest.mark.parametrize("size,crop,stride", [((23, 31), (10, 12), (7, 5)), ((20, 20), (10, 10), (10, 10)),
                                              ((9, 30), (12, 16), (8, 11))])  # fmt: skip
def test_slide_matches_brute_force(size, crop, stride):
    torch.manual_seed(1)
    x = torch.randn(2, 3, *size, dtype=torch.float64)
    got = predict(WindowModel(), x, mode="slide", crop=crop, stride=stride)
    assert got.shape == (2, 3, *size) and got.dtype == torch.float32
    np.testing.assert_allclose(got.numpy(), brute_force_slide(x.numpy(), crop, stride), rtol=1e-5, atol=1e-5)


def test_slide_equals_whole_for_a_pointwise_model():
    torch.manual_seed(2)
    x = torch.randn(1, 3, 37, 53)
    model = nn.Conv2d(3, 4, 1)
    torch.testing.assert_close(predict(model, x, mode="slide", crop=16, stride=11), model(x), rtol=1e-5, atol=1e-5)


def test_slide_pads_an_image_smaller_than_the_crop():
    """Zero padding bottom/right equals a zero-padded convolution's own border."""
    torch.manual_seed(3)
    x = torch.randn(1, 3, 11, 14)
    model = nn.Conv2d(3, 4, 3, padding=1)
    out = predict(model, x, mode="slide", crop=(16, 20), stride=(8, 8))
    torch.testing.assert_close(out, model(x), rtol=1e-5, atol=1e-5)


def test_lower_resolution_output_is_resized_to_the_input():
    x = torch.randn(1, 3, 16, 24)
    model = nn.Sequential(nn.Conv2d(3, 2, 1), nn.AvgPool2d(4))
    out = predict(model, x, mode="slide", crop=8, stride=8)
    assert out.shape == (1, 2, 16, 24)
    torch.testing.assert_close(predict(model, x), F.interpolate(model(x), size=(16, 24), mode="bilinear"))


def test_multiscale_and_flip_equal_direct_averages():
    torch.manual_seed(4)
    x = torch.randn(2, 3, 20, 28)
    model = nn.Sequential(nn.Conv2d(3, 6, 3, padding=1), nn.ReLU(), nn.Conv2d(6, 5, 3, padding=1))
    scales = (0.5, 1.0, 1.5)

    def at(s, flipped):
        size = (round(20 * s), round(28 * s))
        xs = F.interpolate(x, size=size, mode="bilinear", align_corners=False)
        out = model(xs.flip(-1)).flip(-1) if flipped else model(xs)
        return F.interpolate(out, size=(20, 28), mode="bilinear", align_corners=False)

    expected = sum(at(s, False) for s in scales) / 3
    torch.testing.assert_close(predict(model, x, scales=scales), expected, rtol=1e-5, atol=1e-5)
    expected_flip = sum(at(s, f) for s in scales for f in (False, True)) / 6
    torch.testing.assert_close(predict(model, x, scales=scales, flip=True), expected_flip, rtol=1e-5, atol=1e-5)


def test_flip_swaps_the_paired_channels():
    torch.manual_seed(5)
    x = torch.randn(1, 3, 12, 18)
    model = nn.Conv2d(3, 20, 3, padding=1)
    pairs = ((14, 15), (16, 17), (18, 19))
    perm = list(range(20))
    for a, b in pairs:
        perm[a], perm[b] = b, a
    mirrored = model(x.flip(-1)).flip(-1)[:, perm]
    expected = (model(x) + mirrored) / 2
    got = predict(model, x, flip=True, flip_pairs=pairs)
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)
    assert not torch.allclose(got, predict(model, x, flip=True), atol=1e-3)


def test_flip_test_keeps_a_side_aware_model_consistent():
    """A model that calls the image's left half 'right arm' (15) and the right half 'left arm' (14):
    the flipped pass, flipped back and swapped, agrees with it, so the average keeps the same argmax."""

    class SideModel(nn.Module):
        def forward(self, x):
            w = x.shape[-1]
            out = torch.zeros(x.shape[0], 20, *x.shape[-2:])
            left_half = torch.arange(w) < w // 2
            out[:, 15, :, left_half] = 1.0
            out[:, 14, :, ~left_half] = 1.0
            return out

    x = torch.randn(1, 3, 8, 16)
    plain = predict(SideModel(), x).argmax(1)
    assert torch.equal(predict(SideModel(), x, flip=True, flip_pairs=((14, 15),)).argmax(1), plain)
    assert not torch.equal(predict(SideModel(), x, flip=True).argmax(1), plain)  # without the swap: wrong


def test_video_clips():
    torch.manual_seed(6)
    x = torch.randn(1, 3, 4, 19, 23)
    model = nn.Conv3d(3, 5, 1)
    whole = predict(model, x)
    assert whole.shape == (1, 5, 4, 19, 23)
    torch.testing.assert_close(whole, model(x))
    torch.testing.assert_close(predict(model, x, mode="slide", crop=10, stride=7), whole, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(predict(model, x, flip=True), whole, rtol=1e-5, atol=1e-5)  # pointwise: flip-invariant


@pytest.mark.parametrize(
    "kwargs,error,match",
    [
        ({"mode": "tiles"}, ValueError, "mode"),
        ({"mode": "slide", "crop": 8, "stride": 9}, ValueError, "stride must not exceed crop"),
        ({"crop": (8, 8, 8)}, TypeError, "crop"),
        ({"scales": ()}, ValueError, "scales"),
        ({"scales": (0.0,)}, ValueError, "scales"),
        ({"flip": True, "flip_pairs": ((1, 7),)}, ValueError, "flip_pairs"),
    ],
)
def test_bad_arguments(kwargs, error, match):
    with pytest.raises(error, match=match):
        predict(nn.Conv2d(3, 4, 1), torch.randn(1, 3, 8, 8), **kwargs)


def test_bad_model_output_and_image():
    with pytest.raises(TypeError, match="without 'out'"):
        predict(lambda x: {"logits": x}, torch.randn(1, 3, 8, 8))
    with pytest.raises(ValueError, match=r"\(N, 3, H, W\)"):
        predict(nn.Conv2d(3, 4, 1), torch.randn(3, 8, 8))
