"""Cityscapes fine annotations, read from the official layout: ``*_gtFine_labelTrainIds.png`` or
``*_gtFine_labelIds.png``.

Either label file works. ``*_labelTrainIds.png`` (written by cityscapesscripts' ``createTrainIdLabelImgs``)
already holds the 19 train ids and 255 (ignore); when every image of the split has one, it is read.
Otherwise the raw ``*_labelIds.png`` is read and mapped with ``cityscapesscripts.helpers.labels`` (the
dataset's own package): every labelId ``0..33`` maps to its ``trainId``; those with trainId 255 or -1 (void,
parking, rail track, guard rail, bridge, tunnel, polegroup, caravan, trailer, ...) become ignore 255.
``dataset.label_format`` says which was used (``"labelTrainIds"`` or ``"labelIds"``); any other value in a
label file is a :class:`~cca.data.common.DataFileError`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

import numpy as np

from cca.data.common import label_lut
from cca.data.segmentation import SegmentationDataset

LAYOUT = """\
  ROOT/leftImg8bit/{split}/{city}/{city}_{seq}_{frame}_leftImg8bit.png
  ROOT/gtFine/{split}/{city}/{city}_{seq}_{frame}_gtFine_labelTrainIds.png  (or ..._gtFine_labelIds.png)
  (split: train, val or test)"""

IMAGE_SUFFIX = "_leftImg8bit.png"
LABEL_SUFFIX = "_gtFine_labelIds.png"
TRAIN_ID_SUFFIX = "_gtFine_labelTrainIds.png"
log = logging.getLogger("cca.data")


def _labels():
    from cityscapesscripts.helpers import labels

    return labels


def label_id_to_train_id() -> dict[int, int]:
    """``{labelId: trainId}`` for every labelId >= 0 of ``cityscapesscripts``; void classes -> 255."""
    return {lab.id: (lab.trainId if 0 <= lab.trainId < 255 else 255) for lab in _labels().labels if lab.id >= 0}


def train_id_to_label_id() -> np.ndarray:
    """``int64 (19,)``: the labelId of each train id (``cityscapesscripts``' ``trainId2label``), to write
    predictions in the format of the official evaluation."""
    table = _labels().trainId2label
    return np.array([table[t].id for t in range(19)], dtype=np.int64)


def class_names() -> tuple[str, ...]:
    table = _labels().trainId2label
    return tuple(table[t].name for t in range(19))


class Cityscapes(SegmentationDataset):
    """Cityscapes ``split`` (``train``/``val``/``test``) under ``root`` (see ``LAYOUT``).

    ``dataset[i] -> (image float32 (3, H, W), label int64 (H, W))`` with 19 classes, ignore 255.
    """

    NAME = "Cityscapes"
    LAYOUT = LAYOUT

    def find_files(self) -> None:
        split = self.split
        image_dir = self.require_dir(self.root / "leftImg8bit" / split, "images")
        label_dir = self.require_dir(self.root / "gtFine" / split, "labels")
        images = sorted(image_dir.glob(f"*/*{IMAGE_SUFFIX}"))

        def label_for(suffix: str) -> Callable[[Path], Path]:
            return lambda image: label_dir / image.parent.name / f"{image.name[: -len(IMAGE_SUFFIX)]}{suffix}"

        train_ids = all(label_for(TRAIN_ID_SUFFIX)(image).is_file() for image in images)
        self.label_format = "labelTrainIds" if train_ids else "labelIds"
        suffix = TRAIN_ID_SUFFIX if train_ids else LABEL_SUFFIX
        self.pair_files(images, label_for(suffix), f"{image_dir}/*/*{IMAGE_SUFFIX}")
        self.class_names = class_names()
        self.lut = label_lut({**{t: t for t in range(19)}, 255: 255}) if train_ids else label_lut(label_id_to_train_id())
        log.info("Cityscapes %s: reading *%s (%d images)", split, suffix, len(self.samples))
