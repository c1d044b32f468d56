"""The paper's training augmentation and the evaluation transform, on tensors.

Inputs are an image ``uint8 (3, H, W)`` (or a clip ``(3, T, H, W)``: every frame gets the same
geometry) and a label ``int64 (H, W)`` of train ids with ``255`` ignore. Outputs are the image
``float32`` normalised with the torchvision ImageNet statistics (RGB) and the label ``int64``.

:class:`TrainTransform`, in the order of the released CCNet code:

1. random scale ``s ~ U(scale_range)``: image bilinear, label nearest (``nearest-exact``), size
   ``H * s x W * s`` rounded half up;
2. normalise ``(x / 255 - mean) / std``;
3. pad bottom/right up to the crop: image with 0 (the mean colour after normalisation), label with
   ``ignore_index``;
4. random crop ``crop_size``;
5. horizontal flip with probability 0.5; with ``flip_pairs`` (LIP) the paired left/right classes of
   the label are swapped, so "left arm" stays the person's left arm.

Randomness comes from ``generator`` when given, else from torch's global RNG, which the trainer
seeds per sample from ``(seed, epoch, index)`` (:class:`cca.engine.sampling.SeededSamples`) and which
data-loader workers seed per worker: results are reproducible either way.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from cca._checks import finite_number
from cca.data.common import IGNORE_INDEX

FlipPairs = Sequence[tuple[int, int]]


@functools.lru_cache(maxsize=1)
def imagenet_mean_std() -> tuple[tuple[float, ...], tuple[float, ...]]:
    """``(mean, std)`` (RGB, for ``[0, 1]`` pixels) of the torchvision ImageNet weights' preprocessing."""
    from torchvision.models import ResNet101_Weights

    preset = ResNet101_Weights.IMAGENET1K_V1.transforms()  # builds the preset only, downloads nothing
    return tuple(float(m) for m in preset.mean), tuple(float(s) for s in preset.std)


def _pair(value: int | Sequence[int], name: str) -> tuple[int, int]:
    if isinstance(value, int) and not isinstance(value, bool):
        value = (value, value)
    if not (isinstance(value, Sequence) and len(value) == 2 and all(isinstance(v, int) for v in value)):
        raise TypeError(f"{name} must be an int or a pair of ints (H, W), got {value!r}")
    if min(value) <= 0:
        raise ValueError(f"{name} must be positive, got {tuple(value)}")
    return int(value[0]), int(value[1])


def _stats(mean: Sequence[float] | None, std: Sequence[float] | None) -> tuple[torch.Tensor, torch.Tensor]:
    default_mean, default_std = imagenet_mean_std()
    mean = tuple(default_mean if mean is None else mean)
    std = tuple(default_std if std is None else std)
    if len(mean) != 3 or len(std) != 3:
        raise ValueError(f"mean and std must have 3 values (RGB), got mean={mean}, std={std}")
    if min(std) <= 0:
        raise ValueError(f"std must be positive, got {std}")
    return torch.tensor(mean, dtype=torch.float32), torch.tensor(std, dtype=torch.float32)


def check_flip_pairs(flip_pairs: FlipPairs | None) -> tuple[tuple[int, int], ...] | None:
    """``flip_pairs`` as a tuple of ``(a, b)`` class pairs (each class in at most one pair), or ``None``."""
    if flip_pairs is None:
        return None
    pairs = tuple((int(a), int(b)) for a, b in flip_pairs)
    classes = [c for pair in pairs for c in pair]
    if (
        len(set(classes)) != len(classes)
        or any(not 0 <= c < IGNORE_INDEX for c in classes)
        or any(a == b for a, b in pairs)
    ):
        raise ValueError(f"flip_pairs must be pairs of distinct classes in 0..254, each at most once, got {flip_pairs}")
    return pairs


def swap_pairs(label: torch.Tensor, flip_pairs: FlipPairs) -> torch.Tensor:
    """``label`` with the classes of each ``(a, b)`` pair exchanged (other values, 255 included, kept)."""
    table = torch.arange(256, dtype=label.dtype, device=label.device)
    for a, b in flip_pairs:
        table[a], table[b] = b, a
    return table[label.long()]


def normalize(image: torch.Tensor, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    """``uint8`` or float ``[0, 255]`` image ``(3, ...)`` -> ``float32 (x / 255 - mean) / std``."""
    view = (3,) + (1,) * (image.dim() - 1)
    return (image.float() / 255.0 - mean.view(view)) / std.view(view)


def resize_image(image: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Bilinear resize of the last two dims of a float ``(C, H, W)`` or ``(C, T, H, W)`` image."""
    lead = image.shape[:-2]
    out = F.interpolate(image.reshape(1, -1, *image.shape[-2:]), size=size, mode="bilinear", align_corners=False)
    return out.reshape(*lead, *size)


def resize_label(label: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Nearest (``nearest-exact``, pixel centres) resize of an ``int64 (H, W)`` label."""
    out = F.interpolate(label[None, None].float(), size=size, mode="nearest-exact")
    return out[0, 0].long()


class PairTransform:
    """Base of the image/label transforms; datasets pass their ``flip_pairs`` to ``__call__``."""

    def __call__(self, image: torch.Tensor, label: torch.Tensor, *, flip_pairs: FlipPairs | None = None):
        raise NotImplementedError


def _check_inputs(image: torch.Tensor, label: torch.Tensor) -> None:
    if not isinstance(image, torch.Tensor) or not isinstance(label, torch.Tensor):
        raise TypeError(f"image and label must be tensors, got {type(image).__name__} and {type(label).__name__}")
    if image.dim() not in (3, 4) or image.shape[0] != 3:
        raise ValueError(f"image must be (3, H, W) or (3, T, H, W), got shape {tuple(image.shape)}")
    if label.dim() != 2 or tuple(label.shape) != tuple(image.shape[-2:]):
        raise ValueError(f"label must be (H, W) matching the image {tuple(image.shape)}, got {tuple(label.shape)}")


@dataclass
class EvalTransform(PairTransform):
    """Normalisation only: ``(image float32 (3, [T,] H, W), label int64 (H, W))``."""

    mean: Sequence[float] | None = None  # None: torchvision ImageNet mean
    std: Sequence[float] | None = None

    def __post_init__(self) -> None:
        self._mean, self._std = _stats(self.mean, self.std)

    def __call__(self, image: torch.Tensor, label: torch.Tensor, *, flip_pairs: FlipPairs | None = None):
        _check_inputs(image, label)
        return normalize(image, self._mean, self._std), label.long()


@dataclass
class TrainTransform(PairTransform):
    """Random scale, normalise, pad, random crop, random flip (see the module docstring).

    ``flip_pairs`` given here take precedence over the dataset's.
    """

    crop_size: int | tuple[int, int]
    scale_range: tuple[float, float] = (0.5, 2.0)
    flip: bool = True
    mean: Sequence[float] | None = None  # None: torchvision ImageNet mean
    std: Sequence[float] | None = None
    ignore_index: int = IGNORE_INDEX
    flip_pairs: FlipPairs | None = None
    generator: torch.Generator | None = None

    def __post_init__(self) -> None:
        self._crop = _pair(self.crop_size, "crop_size")
        if len(self.scale_range) != 2:
            raise ValueError(f"scale_range must be (low, high), got scale_range={self.scale_range!r}")
        lo, hi = (finite_number(f"scale_range[{i}]", v) for i, v in enumerate(self.scale_range))
        if not 0 < lo <= hi:
            raise ValueError(f"scale_range must be (low, high) with 0 < low <= high, got {self.scale_range}")
        self._scales = (lo, hi)
        self._mean, self._std = _stats(self.mean, self.std)
        self._pairs = check_flip_pairs(self.flip_pairs)
        if self.generator is not None and not isinstance(self.generator, torch.Generator):
            raise TypeError(f"generator must be a torch.Generator or None, got {type(self.generator).__name__}")

    def _rand(self) -> float:
        return float(torch.rand((), generator=self.generator))

    def _randint(self, high: int) -> int:
        """Uniform in ``0..high`` (inclusive)."""
        return int(torch.randint(high + 1, (), generator=self.generator))

    def __call__(self, image: torch.Tensor, label: torch.Tensor, *, flip_pairs: FlipPairs | None = None):
        _check_inputs(image, label)
        pairs = self._pairs if self._pairs is not None else check_flip_pairs(flip_pairs)
        height, width = image.shape[-2:]
        lo, hi = self._scales
        scale = lo + (hi - lo) * self._rand()
        size = (max(1, math.floor(height * scale + 0.5)), max(1, math.floor(width * scale + 0.5)))
        image = normalize(resize_image(image.float(), size), self._mean, self._std)
        label = resize_label(label, size)

        crop_h, crop_w = self._crop
        pad_h, pad_w = max(crop_h - size[0], 0), max(crop_w - size[1], 0)
        if pad_h or pad_w:
            image = F.pad(image, (0, pad_w, 0, pad_h), value=0.0)
            label = F.pad(label, (0, pad_w, 0, pad_h), value=self.ignore_index)
        top = self._randint(image.shape[-2] - crop_h)
        left = self._randint(image.shape[-1] - crop_w)
        image = image[..., top : top + crop_h, left : left + crop_w]
        label = label[top : top + crop_h, left : left + crop_w]

        if self.flip and self._rand() < 0.5:
            image = image.flip(-1)
            label = label.flip(-1)
            if pairs:
                label = swap_pairs(label, pairs)
        return image.contiguous(), label.contiguous()


@dataclass
class DetectionTransform:
    """COCO: image ``uint8 (3, H, W)`` -> ``float32`` in ``[0, 1]`` (the detector normalises and resizes
    itself), with an optional random horizontal flip (p=0.5) of image, ``boxes`` and ``masks``."""

    flip: bool = False
    generator: torch.Generator | None = None

    def __call__(self, image: torch.Tensor, target: dict):
        image = image.float() / 255.0
        if self.flip and float(torch.rand((), generator=self.generator)) < 0.5:
            width = image.shape[-1]
            image = image.flip(-1)
            target = dict(target)
            boxes = target["boxes"].clone()
            boxes[:, 0], boxes[:, 2] = width - target["boxes"][:, 2], width - target["boxes"][:, 0]
            target["boxes"] = boxes
            target["masks"] = target["masks"].flip(-1)
        return image, target
