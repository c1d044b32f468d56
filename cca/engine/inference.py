"""Test-time inference: whole image or sliding window, multi-scale and flip, logits at the input size.

``predict(model, image)`` with ``image (N, 3, H, W)`` (or a clip ``(N, 3, T, H, W)`` for the 3D model)
returns float32 logits ``(N, K, H, W)`` (``(N, K, T, H, W)``). The model may return a tensor or a dict
with ``"out"``; output at another size than its input is resized (bilinear) to it.

* ``mode="slide"``: the (scaled) image is zero-padded bottom/right to at least ``crop`` (0 is the mean
  colour after normalisation), windows of ``crop`` start every ``stride`` pixels, the last one flush with
  the border (``ceil((H - crop_h) / stride_h) + 1`` rows of windows, likewise columns), overlapping logits
  are averaged with a count map, and the padding is cut off. The paper's Cityscapes setting is
  ``crop=769, stride=513``.
* ``scales``: the image is resized (bilinear, ``align_corners=False``) to ``s * H x s * W`` (rounded half
  up),
  predicted, and the logits resized back to ``H x W``.
* ``flip``: the horizontally flipped image is predicted too; its logits are flipped back and, with
  ``flip_pairs`` (LIP's left/right classes), the paired class channels swapped.

All predictions (scales x flips) are averaged as logits, as in the released CCNet evaluation code.
Put the model in ``eval()`` mode first.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import nn

MODES = ("whole", "slide")


def _pair(value: int | Sequence[int], name: str) -> tuple[int, int]:
    if isinstance(value, int) and not isinstance(value, bool):
        value = (value, value)
    if not (isinstance(value, Sequence) and len(value) == 2 and all(isinstance(v, int) for v in value)):
        raise TypeError(f"{name} must be an int or a pair of ints (H, W), got {value!r}")
    if min(value) < 1:
        raise ValueError(f"{name} must be positive, got {tuple(value)}")
    return int(value[0]), int(value[1])


def resize(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Bilinear resize (``align_corners=False``) of the last two dims of ``(N, C, H, W)`` or ``(N, C, T, H, W)``."""
    if tuple(x.shape[-2:]) == tuple(size):
        return x
    lead = x.shape[:-2]
    out = F.interpolate(x.reshape(lead[0], -1, *x.shape[-2:]), size=size, mode="bilinear", align_corners=False)
    return out.reshape(*lead, *size)


def forward_logits(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """``model(x)`` (or its ``"out"``) as float32, resized to ``x``'s spatial size if needed."""
    out = model(x)
    if isinstance(out, Mapping):
        if "out" not in out:
            raise TypeError(f"model returned a dict without 'out' (keys: {sorted(out)})")
        out = out["out"]
    if not isinstance(out, torch.Tensor):
        raise TypeError(f"model must return a tensor or a dict with 'out', got {type(out).__name__}")
    if out.dim() != x.dim() or out.shape[0] != x.shape[0]:
        raise ValueError(f"model output {tuple(out.shape)} does not match its input {tuple(x.shape)} (N, K, ..., H, W)")
    return resize(out.float(), tuple(x.shape[-2:]))


def window_starts(length: int, crop: int, stride: int) -> list[int]:
    """Start offsets of the windows along one axis of ``length >= crop`` pixels (the last flush with the end)."""
    count = math.ceil(max(length - crop, 0) / stride) + 1
    return [min(i * stride, length - crop) for i in range(count)]


def slide(model: nn.Module, x: torch.Tensor, crop: tuple[int, int], stride: tuple[int, int]) -> torch.Tensor:
    """Sliding-window logits of ``x (N, 3, [T,] H, W)`` at its own size (see the module docstring)."""
    height, width = x.shape[-2:]
    crop_h, crop_w = crop
    padded = F.pad(x, (0, max(crop_w - width, 0), 0, max(crop_h - height, 0)), value=0.0)
    full_h, full_w = padded.shape[-2:]
    total = None
    count = torch.zeros(full_h, full_w, dtype=torch.float32, device=x.device)
    for top in window_starts(full_h, crop_h, stride[0]):
        for left in window_starts(full_w, crop_w, stride[1]):
            logits = forward_logits(model, padded[..., top : top + crop_h, left : left + crop_w])
            if total is None:
                total = logits.new_zeros((*logits.shape[:-2], full_h, full_w))
            total[..., top : top + crop_h, left : left + crop_w] += logits
            count[top : top + crop_h, left : left + crop_w] += 1
    return (total / count)[..., :height, :width]


def swap_channels(logits: torch.Tensor, flip_pairs: Sequence[tuple[int, int]]) -> torch.Tensor:
    """``logits (N, K, ...)`` with the channels of each ``(a, b)`` pair exchanged."""
    k = logits.shape[1]
    perm = list(range(k))
    for a, b in flip_pairs:
        if not (0 <= a < k and 0 <= b < k):
            raise ValueError(f"flip_pairs {tuple(flip_pairs)} name classes outside 0..{k - 1}")
        perm[a], perm[b] = b, a
    return logits[:, perm]


@torch.no_grad()
def predict(
    model: nn.Module,
    image: torch.Tensor,
    mode: str = "whole",
    crop: int | Sequence[int] = (769, 769),
    stride: int | Sequence[int] = (513, 513),
    scales: Sequence[float] = (1.0,),
    flip: bool = False,
    flip_pairs: Sequence[tuple[int, int]] | None = None,
) -> torch.Tensor:
    """Logits ``float32 (N, K, [T,] H, W)`` of ``image (N, 3, [T,] H, W)``, averaged over ``scales`` and,
    with ``flip``, the mirrored image (module docstring). ``crop``/``stride`` are used by ``mode="slide"``."""
    if not isinstance(image, torch.Tensor) or image.dim() not in (4, 5):
        got = tuple(image.shape) if isinstance(image, torch.Tensor) else type(image).__name__
        raise ValueError(f"image must be a tensor (N, 3, H, W) or (N, 3, T, H, W), got {got}")
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    crop = _pair(tuple(crop) if isinstance(crop, Sequence) else crop, "crop")
    stride = _pair(tuple(stride) if isinstance(stride, Sequence) else stride, "stride")
    if mode == "slide" and (stride[0] > crop[0] or stride[1] > crop[1]):
        raise ValueError(
            f"stride must not exceed crop (windows must cover the image), got stride={stride}, crop={crop}"
        )
    scales = tuple(float(s) for s in scales)
    if not scales or min(scales) <= 0:
        raise ValueError(f"scales must be a non-empty sequence of positive numbers, got {scales}")

    height, width = image.shape[-2:]

    def run(x: torch.Tensor) -> torch.Tensor:
        return slide(model, x, crop, stride) if mode == "slide" else forward_logits(model, x)

    total, terms = None, 0
    for scale in scales:
        size = (max(1, math.floor(height * scale + 0.5)), max(1, math.floor(width * scale + 0.5)))
        x = resize(image.float(), size)
        outputs = [run(x)]
        if flip:
            mirrored = run(x.flip(-1)).flip(-1)
            outputs.append(swap_channels(mirrored, flip_pairs) if flip_pairs else mirrored)
        for logits in outputs:
            logits = resize(logits, (height, width))
            total = logits if total is None else total + logits
            terms += 1
    return total / terms
