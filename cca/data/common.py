"""Shared pieces of the dataset readers: safe image/label reading, label look-up tables (the readers' base
class is :class:`cca.data.segmentation.SegmentationDataset`).

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
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

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
