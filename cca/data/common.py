"""Shared pieces of the dataset readers: safe image/label reading, label look-up tables, the base class.

Bad-data policy (every reader follows it; never a silent wrong mIoU):

* a missing root or split directory: ``FileNotFoundError`` naming the path and the expected layout;
* a split without any image: ``FileNotFoundError`` naming the directory and the file pattern;
* an image without its label: ``FileNotFoundError`` listing the missing label files
  (``missing_labels="error"``, the default), or, with ``missing_labels="skip"``, the image is left out,
  its path kept in ``dataset.skipped`` and a warning logged with the count;
* a truncated or unreadable image or label, a label with several channels, a label whose size differs
  from its image, a label value outside the class range that is not an ignore value:
  :class:`DataFileError` (a ``ValueError``) naming the file, raised when the sample is read.
  ``dataset.find_bad_samples()`` reads everything once and lists such files up front.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from torch.utils.data import Dataset

log = logging.getLogger("cca.data")

IGNORE_INDEX = 255
MISSING_LABEL_POLICIES = ("error", "skip")


class DataFileError(ValueError):
    """A data file that exists but cannot be used (truncated, wrong mode, wrong size, bad values)."""


def require_dir(path: str | Path, what: str, layout: str) -> Path:
    """``Path(path)`` if it is a directory, else ``FileNotFoundError`` naming it and the expected ``layout``."""
    path = Path(path)
    if not path.is_dir():
        raise FileNotFoundError(f"{what} not found: {path} is not a directory. Expected layout:\n{layout}")
    return path


def require_file(path: str | Path, what: str, layout: str) -> Path:
    """``Path(path)`` if it is a file, else ``FileNotFoundError`` naming it and the expected ``layout``."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{what} not found: {path} is not a file. Expected layout:\n{layout}")
    return path


def _open_fully(path: Path) -> Image.Image:
    """Open and decode ``path`` completely (a truncated file fails here, not later)."""
    try:
        with Image.open(path) as img:
            img.load()
            return img.copy()
    except FileNotFoundError:
        raise
    except (OSError, UnidentifiedImageError, SyntaxError, ValueError) as exc:
        raise DataFileError(f"cannot read {path}: {exc} (truncated or corrupt file?)") from exc


def read_rgb(path: str | Path) -> np.ndarray:
    """The image at ``path`` as RGB ``uint8 (H, W, 3)`` (grey or palette images are converted to RGB)."""
    path = Path(path)
    img = _open_fully(path)
    if img.mode != "RGB":
        img = img.convert("RGB")
    return np.asarray(img, dtype=np.uint8).copy()


def read_label(path: str | Path) -> np.ndarray:
    """The raw values of a single-channel label image as ``int64 (H, W)``.

    Modes ``L``, ``P`` (the palette indices, not the colours), ``I;16`` and ``I`` are accepted; an RGB
    or RGBA label is a :class:`DataFileError` (a colour-coded label would need a colour table).
    """
    path = Path(path)
    img = _open_fully(path)
    if img.mode not in ("L", "P", "I", "I;16", "I;16L", "I;16B"):
        raise DataFileError(
            f"label {path} has mode {img.mode!r} ({len(img.getbands())} channels); "
            "expected a single-channel PNG (mode 'L', 'P', 'I;16' or 'I') holding class ids"
        )
    return np.asarray(img).astype(np.int64)


def label_lut(mapping: Mapping[int, int], size: int = 256) -> np.ndarray:
    """A look-up table ``int64 (size,)``: ``lut[raw] = mapping[raw]``, ``-1`` (invalid) elsewhere."""
    lut = np.full(size, -1, dtype=np.int64)
    for raw, value in mapping.items():
        lut[int(raw)] = int(value)
    return lut


def apply_lut(raw: np.ndarray, lut: np.ndarray, path: str | Path) -> np.ndarray:
    """``lut[raw]`` as ``int64``; any raw value the table marks invalid (``-1``) is a :class:`DataFileError`."""
    if raw.size and (raw.min() < 0 or raw.max() >= len(lut)):
        bad = np.unique(raw[(raw < 0) | (raw >= len(lut))])
        raise DataFileError(f"label {path} has values {bad[:10].tolist()} outside the valid range 0..{len(lut) - 1}")
    mapped = lut[raw]
    if (mapped < 0).any():
        bad = np.unique(raw[mapped < 0])
        valid = np.flatnonzero(lut >= 0)
        raise DataFileError(
            f"label {path} has values {bad[:10].tolist()} that are neither a class nor an ignore value "
            f"(valid raw values: {_ranges(valid)})"
        )
    return mapped


def _ranges(values: Iterable[int]) -> str:
    """``[0, 1, 2, 5, 255]`` -> ``"0-2, 5, 255"``."""
    out: list[str] = []
    values = sorted(int(v) for v in values)
    i = 0
    while i < len(values):
        j = i
        while j + 1 < len(values) and values[j + 1] == values[j] + 1:
            j += 1
        out.append(str(values[i]) if i == j else f"{values[i]}-{values[j]}")
        i = j + 1
    return ", ".join(out)


def check_policy(missing_labels: str) -> str:
    if missing_labels not in MISSING_LABEL_POLICIES:
        raise ValueError(f"missing_labels must be one of {MISSING_LABEL_POLICIES}, got {missing_labels!r}")
    return missing_labels


def pair_labels(
    images: Sequence[Path],
    label_for: Callable[[Path], Path],
    missing_labels: str,
    what: str,
) -> tuple[list[tuple[Path, Path]], list[Path]]:
    """``(pairs, skipped)``: each image with ``label_for(image)``; images whose label is missing are an
    error (``missing_labels="error"``) or left out and returned in ``skipped`` (``"skip"``, with a warning)."""
    pairs, skipped, missing = [], [], []
    for image in images:
        label = label_for(image)
        if label.is_file():
            pairs.append((image, label))
        else:
            skipped.append(image)
            missing.append(label)
    if missing and missing_labels == "error":
        shown = "\n  ".join(str(p) for p in missing[:5])
        more = f"\n  ... and {len(missing) - 5} more" if len(missing) > 5 else ""
        raise FileNotFoundError(
            f"{what}: {len(missing)} of {len(images)} images have no label file:\n  {shown}{more}\n"
            "(pass missing_labels='skip' to leave these images out, counted in dataset.skipped)"
        )
    if skipped:
        log.warning(
            "%s: skipped %d of %d images without a label (first: %s)", what, len(skipped), len(images), skipped[0]
        )
    return pairs, skipped


def check_same_size(image: np.ndarray, label: np.ndarray, image_path: Path, label_path: Path) -> None:
    if image.shape[:2] != label.shape[:2]:
        raise DataFileError(
            f"label {label_path} is {label.shape[0]}x{label.shape[1]} (HxW) but its image {image_path} "
            f"is {image.shape[0]}x{image.shape[1]}"
        )


def image_to_tensor(image: np.ndarray) -> torch.Tensor:
    """``uint8 (H, W, 3)`` -> ``uint8 (3, H, W)``; ``(T, H, W, 3)`` -> ``(3, T, H, W)``."""
    tensor = torch.from_numpy(np.ascontiguousarray(image))
    return tensor.movedim(-1, 0).contiguous()


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
            from cca.data.transforms import EvalTransform

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
        from cca.data.transforms import PairTransform

        if isinstance(self.transform, PairTransform):
            return self.transform(image, label, flip_pairs=self.flip_pairs)
        return self.transform(image, label)

    def __getitem__(self, index: int):
        image, label = self.load(index)
        return self.apply_transform(image_to_tensor(image), torch.from_numpy(label))

    def find_bad_samples(self) -> list[tuple[int, str]]:
        """Read every sample once; ``[(index, error message)]`` of those that fail (empty when all are fine)."""
        from tqdm.auto import tqdm

        bad = []
        for i in tqdm(range(len(self)), desc=f"checking {type(self).__name__} {self.split}", leave=False):
            try:
                self.load(i)
            except (DataFileError, FileNotFoundError) as exc:
                bad.append((i, str(exc)))
        return bad
