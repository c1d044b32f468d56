"""CamVid in the SegNet layout: 11 classes, void (11) -> ignore 255; frame or clip samples.

Frame mode (``clip_length=None``): ``(image float32 (3, H, W), label int64 (H, W))`` per labelled frame.

Clip mode (``clip_length=T``, for the 3D model): ``(clip float32 (3, T, H, W), label int64 (H, W))``,
one sample per labelled frame of the split, the label being that of the **centre** frame
``clip[:, label_frame]`` with ``label_frame = T // 2``: the clip holds the ``T // 2`` frames before it
and the ``T - 1 - T // 2`` after it, so the labelled frame sees past and future context. Frames belong to
the same sequence (the file-name prefix before the first ``_``: ``0001TP_006690.png`` is frame
``006690`` of ``0001TP``), ordered by name, taken from the same split directory. The SegNet release keeps
only the labelled frames (1 fps, every 30th frame of the 30 fps video), so "consecutive" means
consecutive *available* frames of the sequence, about one second apart, not adjacent video frames.
At a sequence's ends the first/last frame is repeated to fill the clip (``clip_indices`` tells which).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np

from cca._checks import positive_int
from cca.data.common import DataFileError, label_lut
from cca.data.segmentation import SegmentationDataset

CLASS_NAMES = (
    "sky", "building", "pole", "road", "pavement", "tree", "sign_symbol", "fence", "car", "pedestrian", "bicyclist",
)  # fmt: skip
VOID = 11
SPLITS = ("train", "val", "test")
LAYOUT = """\
  ROOT/{split}/{seq}_{frame}.png          RGB frames, e.g. 0001TP_006690.png
  ROOT/{split}annot/{seq}_{frame}.png     class ids 0..10, 11 void
  (split: train, val or test)"""


def sequence_of(path: Path) -> str:
    """The sequence name of a frame file: the stem before the first ``_``."""
    return path.stem.partition("_")[0]


class CamVid(SegmentationDataset):
    """CamVid ``split`` under ``root`` (see ``LAYOUT``); ``clip_length`` switches to clips (module docstring)."""

    NAME = "CamVid"
    LAYOUT = LAYOUT
    SPLITS = SPLITS

    def __init__(
        self,
        root: str | Path,
        split: str = "train",
        transform: Callable | None = None,
        clip_length: int | None = None,
        missing_labels: str = "error",
    ) -> None:
        if clip_length is not None:
            positive_int("clip_length", clip_length)
        super().__init__(root, split, transform, missing_labels)
        self.clip_length = clip_length
        self.label_frame = None if clip_length is None else clip_length // 2
        if clip_length is not None:
            bad = [p for p, _ in self.samples if "_" not in p.stem]
            if bad:
                raise DataFileError(f"CamVid clip mode needs frame names '<sequence>_<frame>.png', got {bad[0]}")
        self.sequences: dict[str, list[int]] = {}
        for i, (image, _) in enumerate(self.samples):
            self.sequences.setdefault(sequence_of(image), []).append(i)
        self._position = {i: (seq, k) for seq, members in self.sequences.items() for k, i in enumerate(members)}

    def find_files(self) -> None:
        image_dir = self.require_dir(self.root / self.split, "frames")
        label_dir = self.require_dir(self.root / f"{self.split}annot", "annotations")
        images = sorted(image_dir.glob("*.png"), key=lambda p: (sequence_of(p), p.name))
        self.pair_files(images, lambda p: label_dir / p.name, f"{image_dir}/*.png")
        self.class_names = CLASS_NAMES
        self.lut = label_lut({**{i: i for i in range(len(CLASS_NAMES))}, VOID: 255, 255: 255})

    def clip_indices(self, index: int) -> list[int]:
        """Sample indices of the clip centred on ``index`` (``clip_length`` of them, ends repeated)."""
        if self.clip_length is None:
            raise ValueError("clip_indices needs clip_length, got clip_length=None (frame mode)")
        seq, k = self._position[self._index(index)]
        members = self.sequences[seq]
        return [members[min(max(k + j - self.label_frame, 0), len(members) - 1)] for j in range(self.clip_length)]

    def load(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        """Frame mode: ``(uint8 (H, W, 3), int64 (H, W))``; clip mode: ``(uint8 (T, H, W, 3), int64 (H, W))``."""
        if self.clip_length is None:
            return super().load(index)
        indices = self.clip_indices(index)
        frames, label = [], None
        for j, i in enumerate(indices):
            image, frame_label = super().load(i)
            if frames and image.shape != frames[0].shape:
                raise DataFileError(
                    f"CamVid clip frames differ in size: {self.samples[i][0]} is {image.shape[:2]}, "
                    f"{self.samples[indices[0]][0]} is {frames[0].shape[:2]}"
                )
            frames.append(image)
            if j == self.label_frame:
                label = frame_label
        return np.stack(frames), label
