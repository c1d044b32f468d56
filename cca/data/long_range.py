"""A synthetic segmentation task that only full-image context can solve (beyond the paper).

Each ``(size, size)`` image holds one grey object blob and one coloured cue patch. The blob's class
is the colour of the cue (``1..num_colours``; everything else is background 0). The cue is placed so
that it shares no row and no column with the blob, with ``margin`` extra rows and columns of gap:
for every blob pixel, its row and column (and a band of ``margin`` pixels around them) carry no
evidence of the class. Hence

* a model whose receptive field radius is below ``margin`` (a small conv stem, R=0) can find the
  blob but only guess its class;
* one criss-cross attention loop (R=1) sees only the pixel's own row and column: it cannot either;
* two loops (R=2) reach the cue through the pixel in the blob's row and the cue's column, as does a
  non-local block, directly.

::

    task = LongRangeTask(size=32, num_colours=4)
    data = LongRangeDataset(256, task, seed=0)
    image, label = data[0]          # (3, 32, 32) float32, (32, 32) int64
    sample = data.sample(0)         # + blob / cue boxes and the class
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch.utils.data import Dataset

from cca.data.common import IGNORE_INDEX

# Saturated cue colours in [-1, 1] (R, G, B); the blob is grey, the background dark noise.
PALETTE = (
    (1.0, -0.6, -0.6),  # red
    (-0.6, 1.0, -0.6),  # green
    (-0.6, -0.6, 1.0),  # blue
    (1.0, 1.0, -0.6),  # yellow
    (1.0, -0.6, 1.0),  # magenta
    (-0.6, 1.0, 1.0),  # cyan
    (1.0, 0.3, -0.6),  # orange
    (0.3, -0.6, 1.0),  # violet
)
COLOUR_NAMES = ("red", "green", "blue", "yellow", "magenta", "cyan", "orange", "violet")
BLOB_GREY = 0.5


@dataclass(frozen=True)
class LongRangeTask:
    """Geometry and appearance of the task (all sizes in pixels)."""

    size: int = 32  # images are (size, size)
    num_colours: int = 4  # object classes 1..num_colours (background is 0)
    blob_min: int = 5  # blob side lengths are drawn from [blob_min, blob_max]
    blob_max: int = 8
    cue_size: int = 3  # the cue is a (cue_size, cue_size) patch
    margin: int = 4  # rows/columns of gap between the blob's band and the cue
    noise: float = 0.15  # standard deviation of the pixel noise
    cue_contrast: float = 1.0  # the cue's colour is PALETTE[c] * cue_contrast

    def __post_init__(self) -> None:
        if not 1 <= self.num_colours <= len(PALETTE):
            raise ValueError(f"num_colours must be in [1, {len(PALETTE)}], got {self.num_colours}")
        if not 1 <= self.blob_min <= self.blob_max:
            raise ValueError(f"need 1 <= blob_min <= blob_max, got blob_min={self.blob_min}, blob_max={self.blob_max}")
        if self.cue_size < 1 or self.margin < 0 or self.noise < 0 or self.cue_contrast <= 0:
            raise ValueError(
                f"cue_size must be >= 1, margin >= 0, noise >= 0 and cue_contrast > 0, got cue_size={self.cue_size}, "
                f"margin={self.margin}, noise={self.noise}, cue_contrast={self.cue_contrast}"
            )
        # The blob's band (blob + margin) and the cue must fit side by side along each axis.
        need = self.blob_max + self.margin + self.cue_size
        if self.size < need:
            raise ValueError(
                f"size={self.size} is too small: blob_max + margin + cue_size = {need} pixels must fit along each axis"
            )

    @property
    def num_classes(self) -> int:
        return self.num_colours + 1


@dataclass(frozen=True)
class LongRangeSample:
    image: torch.Tensor  # (3, H, W) float32
    label: torch.Tensor  # (H, W) int64: 0 background, 1..num_colours the blob's class
    blob: tuple[int, int, int, int]  # (top, left, height, width)
    cue: tuple[int, int, int, int]  # (top, left, height, width)
    cls: int  # the blob's class (1-based colour index)


def _free_starts(length: int, size: int, band_lo: int, band_hi: int) -> list[int]:
    """Starts ``s`` of ``[s, s + size)`` inside ``[0, length)`` that avoid ``[band_lo, band_hi)``."""
    return [s for s in range(length - size + 1) if s + size <= band_lo or s >= band_hi]


def _pick(options: list[int], generator: torch.Generator) -> int:
    return options[int(torch.randint(len(options), (1,), generator=generator))]


def make_sample(task: LongRangeTask, generator: torch.Generator, cls: int | None = None) -> LongRangeSample:
    """One sample drawn with ``generator``; ``cls`` fixes the class (else uniform over the colours).

    The class is drawn last, so the same generator state with a different ``cls`` gives the same
    image except for the cue's colour (used to show that the blob's row and column do not decide).
    """
    if cls is not None and not 1 <= cls <= task.num_colours:
        raise ValueError(f"cls must be in [1, {task.num_colours}], got {cls}")
    size, m, cs = task.size, task.margin, task.cue_size
    while True:
        bh = int(torch.randint(task.blob_min, task.blob_max + 1, (1,), generator=generator))
        bw = int(torch.randint(task.blob_min, task.blob_max + 1, (1,), generator=generator))
        by = int(torch.randint(0, size - bh + 1, (1,), generator=generator))
        bx = int(torch.randint(0, size - bw + 1, (1,), generator=generator))
        rows = _free_starts(size, cs, by - m, by + bh + m)
        cols = _free_starts(size, cs, bx - m, bx + bw + m)
        if rows and cols:
            break
    cy, cx = _pick(rows, generator), _pick(cols, generator)
    image = torch.randn((3, size, size), generator=generator) * task.noise
    drawn = 1 + int(torch.randint(task.num_colours, (1,), generator=generator))
    cls = drawn if cls is None else cls

    image[:, by : by + bh, bx : bx + bw] += BLOB_GREY
    colour = torch.tensor(PALETTE[cls - 1]).view(3, 1, 1) * task.cue_contrast
    image[:, cy : cy + cs, cx : cx + cs] += colour
    label = torch.zeros((size, size), dtype=torch.long)
    label[by : by + bh, bx : bx + bw] = cls
    return LongRangeSample(image.float(), label, (by, bx, bh, bw), (cy, cx, cs, cs), cls)


class GeneratedDataset(Dataset):
    """``length`` samples of a synthetic ``task`` (a :attr:`task_type`, its defaults when None); sample
    ``i`` is a pure function of ``(seed, i)``, drawn by :meth:`make`. ``dataset[i]`` is the sample's
    input and its label ``(H, W)`` int64, with ``num_classes``, ``ignore_index`` and ``class_names``."""

    ignore_index = IGNORE_INDEX
    task_type: type
    input_field = "image"  # the sample's input: "image" (3, H, W) or "clip" (3, T, H, W)

    def __init__(self, length: int, task: Any = None, seed: int = 0) -> None:
        if isinstance(length, bool) or not isinstance(length, int) or length < 1:
            raise ValueError(f"length must be a positive int, got length={length!r}")
        self.length = length
        self.task = task or self.task_type()
        self.seed = int(seed)
        self.num_classes = self.task.num_classes
        self.class_names = ("background", *COLOUR_NAMES[: self.task.num_colours])

    def __len__(self) -> int:
        return self.length

    def make(self, generator: torch.Generator, cls: int | None) -> Any:
        """One sample of :attr:`task` drawn with ``generator`` (``cls``: its class, else drawn)."""
        raise NotImplementedError(f"{type(self).__name__} must implement make()")

    def generator(self, index: int) -> torch.Generator:
        return torch.Generator().manual_seed(self.seed * 1_000_003 + index)

    def sample(self, index: int, cls: int | None = None) -> Any:
        if not 0 <= index < self.length:
            raise IndexError(f"index {index} out of range for a dataset of {self.length} samples")
        return self.make(self.generator(index), cls)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        s = self.sample(index)
        return getattr(s, self.input_field), s.label

    def tensors(self) -> tuple[torch.Tensor, torch.Tensor]:
        """All samples stacked: ``(N, 3, H, W)`` images (``(N, 3, T, H, W)`` clips) and ``(N, H, W)`` labels."""
        items = [self[i] for i in range(self.length)]
        return torch.stack([x for x, _ in items]), torch.stack([lab for _, lab in items])


class LongRangeDataset(GeneratedDataset):
    """``length`` samples of ``task`` (:class:`LongRangeTask`); sample ``i`` is a pure function of ``(seed, i)``.

    Returns ``(image (3, H, W) float32, label (H, W) int64)`` like the other segmentation datasets,
    with ``num_classes``, ``ignore_index`` and ``class_names``.
    """

    task_type = LongRangeTask

    def make(self, generator: torch.Generator, cls: int | None) -> LongRangeSample:
        return make_sample(self.task, generator, cls=cls)


def cross_content(image: torch.Tensor, y: int, x: int, band: int = 0) -> torch.Tensor:
    """The pixels of ``image (C, H, W)`` in rows ``y±band`` and columns ``x±band`` (flattened).

    With ``band=0`` this is the criss-cross set of ``(y, x)``; a band models a receptive field.
    """
    _, h, w = image.shape
    mask = torch.zeros((h, w), dtype=torch.bool)
    mask[max(0, y - band) : y + band + 1, :] = True
    mask[:, max(0, x - band) : x + band + 1] = True
    return image[:, mask]
