"""A synthetic clip task whose centre-frame label needs another frame at the same pixel (beyond the paper).

Each clip holds ``frames`` frames of ``(size, size)`` pixels. A grey object blob sits at the same place
in every frame; in exactly one frame other than the centre one (the *cue frame*) the blob is drawn in
its class colour instead of grey. The label is the blob's class in the **centre frame** only, where
the blob is grey: nothing in the centre frame tells the class, the same pixel in the cue frame does.
This is the time axis of the 3D criss-cross attention (each position attends to the same pixel in
the other frames, :class:`cca.nn.CrissCrossAttention3d`), the mechanism of the paper's CCNet3D:

* a 2D model applied per frame, and a clip of one frame (T=1), can find the blob but only guess its
  class (chance on the blob classes);
* a 3D criss-cross block over the whole clip (T = ``frames``) reaches the cue frame in one hop.

::

    task = TemporalCueTask(size=16, frames=5, num_colours=3)
    data = TemporalCueDataset(256, task, seed=0)
    clip, label = data[0]           # (3, T, 16, 16) float32, (16, 16) int64 (centre frame)
    sample = data.sample(0)         # + blob box, cue frame and class
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from cca.data.long_range import BLOB_GREY, PALETTE, GeneratedDataset

__all__ = ["TemporalCueDataset", "TemporalCueSample", "TemporalCueTask", "make_clip"]


@dataclass(frozen=True)
class TemporalCueTask:
    """Clip geometry and appearance (sizes in pixels, ``frames`` odd so that a centre frame exists)."""

    size: int = 16  # frames are (size, size)
    frames: int = 5  # clip length T (odd); the label belongs to frame T // 2
    num_colours: int = 3  # object classes 1..num_colours (background 0)
    blob_min: int = 3
    blob_max: int = 6
    noise: float = 0.15
    cue_contrast: float = 1.0  # the cue frame's blob is PALETTE[c] * cue_contrast (+ grey)

    def __post_init__(self) -> None:
        if isinstance(self.frames, bool) or not isinstance(self.frames, int) or self.frames < 1 or self.frames % 2 == 0:
            raise ValueError(f"frames must be an odd int >= 1, got frames={self.frames!r}")
        if not 1 <= self.num_colours <= len(PALETTE):
            raise ValueError(f"num_colours must be in [1, {len(PALETTE)}], got num_colours={self.num_colours}")
        if not 1 <= self.blob_min <= self.blob_max <= self.size:
            raise ValueError(
                f"need 1 <= blob_min <= blob_max <= size, got blob_min={self.blob_min}, blob_max={self.blob_max}, size={self.size}"
            )
        if self.noise < 0 or self.cue_contrast <= 0:
            raise ValueError(
                f"need noise >= 0 and cue_contrast > 0, got noise={self.noise}, cue_contrast={self.cue_contrast}"
            )

    @property
    def num_classes(self) -> int:
        return self.num_colours + 1

    @property
    def centre(self) -> int:
        return self.frames // 2


@dataclass(frozen=True)
class TemporalCueSample:
    clip: torch.Tensor  # (3, T, H, W) float32
    label: torch.Tensor  # (H, W) int64: the centre frame's labels
    blob: tuple[int, int, int, int]  # (top, left, height, width), the same in every frame
    cue_frame: int  # the frame where the blob shows its class colour (never the centre; -1 when T = 1)
    cls: int  # the blob's class (1-based colour index)


def make_clip(task: TemporalCueTask, generator: torch.Generator, cls: int | None = None) -> TemporalCueSample:
    """One clip drawn with ``generator``; ``cls`` fixes the class (drawn last: the same generator state
    with another ``cls`` gives the same clip except the cue frame's blob colour)."""
    if cls is not None and not 1 <= cls <= task.num_colours:
        raise ValueError(f"cls must be in [1, {task.num_colours}], got cls={cls}")
    size, t = task.size, task.frames
    bh = int(torch.randint(task.blob_min, task.blob_max + 1, (1,), generator=generator))
    bw = int(torch.randint(task.blob_min, task.blob_max + 1, (1,), generator=generator))
    by = int(torch.randint(0, size - bh + 1, (1,), generator=generator))
    bx = int(torch.randint(0, size - bw + 1, (1,), generator=generator))
    others = [f for f in range(t) if f != task.centre]
    cue_frame = others[int(torch.randint(len(others), (1,), generator=generator))] if others else -1
    clip = torch.randn((3, t, size, size), generator=generator) * task.noise
    drawn = 1 + int(torch.randint(task.num_colours, (1,), generator=generator))
    cls = drawn if cls is None else cls

    clip[:, :, by : by + bh, bx : bx + bw] += BLOB_GREY
    if cue_frame >= 0:
        colour = torch.tensor(PALETTE[cls - 1]).view(3, 1, 1) * task.cue_contrast
        clip[:, cue_frame, by : by + bh, bx : bx + bw] += colour
    label = torch.zeros((size, size), dtype=torch.long)
    label[by : by + bh, bx : bx + bw] = cls
    return TemporalCueSample(clip.float(), label, (by, bx, bh, bw), cue_frame, cls)


class TemporalCueDataset(GeneratedDataset):
    """``length`` clips of ``task`` (:class:`TemporalCueTask`); clip ``i`` is a pure function of ``(seed, i)``.

    Returns ``(clip (3, T, H, W) float32, label (H, W) int64)`` (the centre frame's labels), with
    ``num_classes``, ``ignore_index`` and ``class_names``.
    """

    task_type = TemporalCueTask
    input_field = "clip"

    def make(self, generator: torch.Generator, cls: int | None) -> TemporalCueSample:
        return make_clip(self.task, generator, cls=cls)
