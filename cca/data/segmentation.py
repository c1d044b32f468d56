"""The base class of the segmentation dataset readers (Cityscapes, ADE20K, LIP, CamVid): files, labels and
the bad-data policy of :mod:`cca.data.common`, samples through a transform of :mod:`cca.data.transforms`."""

from __future__ import annotations

from collections.abc import Callable, Collection, Sequence
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset
from tqdm.auto import tqdm

from cca.data.common import (
    IGNORE_INDEX,
    DataFileError,
    apply_lut,
    check_policy,
    check_same_size,
    image_to_tensor,
    pair_labels,
    read_label,
    read_rgb,
    require_dir,
)
from cca.data.transforms import EvalTransform, PairTransform


class SegmentationDataset(Dataset):
    """Base of the semantic segmentation readers: ``(image, label)`` pairs of files plus a label table.

    Subclasses name themselves (``NAME``), their ``LAYOUT`` and ``SPLITS`` (None: any split the layout
    has), and implement :meth:`find_files`, which sets ``samples`` (list of ``(image_path, label_path)``,
    with :meth:`pair_files`), ``class_names``, ``lut`` (raw label value -> train id, ``255`` ignore,
    ``-1`` invalid) and optionally ``flip_pairs``.

    ``dataset[i]`` is ``transform(image uint8 (3, H, W), label int64 (H, W))``; with ``transform=None``
    it is :class:`cca.data.transforms.EvalTransform` (ImageNet normalisation only), giving
    ``(image float32 (3, H, W), label int64 (H, W))``. The transforms of :mod:`cca.data.transforms` also
    receive the dataset's ``flip_pairs`` (LIP's left/right classes); any other callable gets
    ``(image, label)`` only. ``load(i)`` gives the untransformed arrays.
    """

    NAME: str = ""  # the dataset's name in messages
    LAYOUT: str = ""  # the expected files, shown when something is missing
    SPLITS: Collection[str] | None = None  # accepted split names (None: whatever the layout has)
    ignore_index: int = IGNORE_INDEX
    flip_pairs: tuple[tuple[int, int], ...] | None = None
    class_names: tuple[str, ...] = ()
    samples: list[tuple[Path, Path]]
    skipped: list[Path]
    lut: np.ndarray

    def __init__(
        self, root: str | Path, split: str = "train", transform: Callable | None = None, missing_labels: str = "error"
    ) -> None:
        self.root = Path(root)
        self.split = split
        self.missing_labels = check_policy(missing_labels)
        if transform is None:
            transform = EvalTransform()
        if not callable(transform):
            raise TypeError(f"transform must be callable or None, got {type(transform).__name__}")
        self.transform = transform
        self.skipped = []
        if self.SPLITS is not None and split not in self.SPLITS:
            raise ValueError(f"{self.NAME} split must be one of {sorted(self.SPLITS)}, got {split!r}")
        require_dir(self.root, f"{self.NAME} root", self.LAYOUT)
        self.find_files()

    def find_files(self) -> None:
        """Set ``samples`` (:meth:`pair_files`), ``class_names`` and ``lut`` from the files under ``root``."""
        raise NotImplementedError(f"{type(self).__name__} must implement find_files()")

    def require_dir(self, path: Path, what: str) -> Path:
        """``path``, or ``FileNotFoundError`` naming the split's ``what`` and the expected layout."""
        return require_dir(path, f"{self.NAME} {self.split!r} {what}", self.LAYOUT)

    def pair_files(self, images: Sequence[Path], label_for: Callable[[Path], Path], pattern: str) -> None:
        """``samples``: each of ``images`` (found by ``pattern``, which a message names if there is none)
        with ``label_for(image)``; missing labels follow the ``missing_labels`` policy."""
        if not images:
            raise FileNotFoundError(f"no {self.NAME} images {pattern}. Expected layout:\n{self.LAYOUT}")
        self.samples, self.skipped = pair_labels(images, label_for, self.missing_labels, f"{self.NAME} {self.split}")

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def __len__(self) -> int:
        return len(self.samples)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(root={str(self.root)!r}, split={self.split!r}, images={len(self)})"

    def _index(self, index: int) -> int:
        if not -len(self) <= index < len(self):
            raise IndexError(f"index {index} out of range for {len(self)} samples")
        return index % len(self)

    def load(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        """``(image uint8 (H, W, 3), label int64 (H, W))``: the files' pixels, label mapped to train ids."""
        image_path, label_path = self.samples[self._index(index)]
        image = read_rgb(image_path)
        label = apply_lut(read_label(label_path), self.lut, label_path)
        check_same_size(image, label, image_path, label_path)
        return image, label

    def apply_transform(self, image: torch.Tensor, label: torch.Tensor):
        if isinstance(self.transform, PairTransform):
            return self.transform(image, label, flip_pairs=self.flip_pairs)
        return self.transform(image, label)

    def __getitem__(self, index: int):
        image, label = self.load(index)
        return self.apply_transform(image_to_tensor(image), torch.from_numpy(label))

    def find_bad_samples(self) -> list[tuple[int, str]]:
        """Read every sample once; ``[(index, error message)]`` of those that fail (empty when all are fine)."""
        bad = []
        for i in tqdm(range(len(self)), desc=f"checking {type(self).__name__} {self.split}", leave=False):
            try:
                self.load(i)
            except (DataFileError, FileNotFoundError) as exc:
                bad.append((i, str(exc)))
        return bad
