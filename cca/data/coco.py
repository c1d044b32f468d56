"""COCO instance segmentation (``instances_{train,val}2017.json``) as torchvision detection targets.

``dataset[i] -> (image float32 (3, H, W) in [0, 1], target)`` with ``target``:

* ``boxes`` ``float32 (K, 4)`` xyxy in pixels (COCO's xywh converted, clipped to the image);
* ``labels`` ``int64 (K,)`` contiguous ``1..C`` (``C = 80`` on COCO) from the sorted category ids,
  0 being the background (``num_classes = C + 1``, torchvision's convention);
* ``masks`` ``uint8 (K, H, W)`` decoded by pycocotools (polygons, RLE or uncompressed RLE);
* ``image_id`` ``int`` (the COCO image id), ``area`` ``float32 (K,)``, ``iscrowd`` ``int64 (K,)`` zeros.

Crowd annotations (``iscrowd=1``) are never in the targets (``COCOeval`` handles them from the ground
truth); annotations whose box is empty after clipping are dropped too (as torchvision's reference
scripts do). Images without any remaining annotation are counted in ``num_without_annotations``; with
``skip_empty`` (default: on for ``train``, off otherwise, so evaluation sees every image) they are
left out of the index and their ids kept in ``skipped_ids`` (logged).
"""

from __future__ import annotations

import contextlib
import io
import logging
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from cca.data.common import DataFileError, image_to_tensor, read_rgb, require_dir, require_file
from cca.data.transforms import DetectionTransform

log = logging.getLogger("cca.data")

LAYOUT = """\
  ROOT/annotations/instances_{split}2017.json
  ROOT/{split}2017/{image file_name}.jpg
  (split: train or val)"""


def load_coco(path: str | Path):
    """``pycocotools.coco.COCO(path)`` without its progress prints."""
    from pycocotools.coco import COCO

    with contextlib.redirect_stdout(io.StringIO()):
        return COCO(str(path))


class COCODetection(Dataset):
    """COCO ``split`` under ``root`` (see ``LAYOUT``) with torchvision Mask R-CNN targets."""

    LAYOUT = LAYOUT

    def __init__(
        self,
        root: str | Path,
        split: str = "train",
        transform: Callable | None = None,
        skip_empty: bool | None = None,
        year: int = 2017,
    ) -> None:
        self.root = Path(root)
        self.split = split
        require_dir(self.root, "COCO root", LAYOUT)
        self.ann_file = require_file(
            self.root / "annotations" / f"instances_{split}{year}.json", f"COCO {split!r} annotations", LAYOUT
        )
        self.image_dir = require_dir(self.root / f"{split}{year}", f"COCO {split!r} images", LAYOUT)
        self.transform = DetectionTransform() if transform is None else transform
        if not callable(self.transform):
            raise TypeError(f"transform must be callable or None, got {type(transform).__name__}")
        self.coco = load_coco(self.ann_file)
        self.cat_ids = sorted(self.coco.getCatIds())
        self.cat_id_to_label = {cat: i + 1 for i, cat in enumerate(self.cat_ids)}
        self.label_to_cat_id = [0, *self.cat_ids]  # index 0: background (no category)
        self.class_names = ("__background__", *(self.coco.cats[c]["name"] for c in self.cat_ids))

        all_ids = sorted(self.coco.imgs)
        empty = [i for i in all_ids if not self._usable(i)]
        self.num_without_annotations = len(empty)
        self.skip_empty = split == "train" if skip_empty is None else bool(skip_empty)
        self.skipped_ids = empty if self.skip_empty else []
        skip = set(self.skipped_ids)
        self.ids = [i for i in all_ids if i not in skip]
        if empty:
            log.info(
                "COCO %s: %d of %d images have no usable annotation%s",
                split, len(empty), len(all_ids), " (skipped)" if self.skip_empty else "",
            )  # fmt: skip

    @property
    def num_classes(self) -> int:
        """Categories + 1 (background), as torchvision detectors count them."""
        return len(self.cat_ids) + 1

    def __len__(self) -> int:
        return len(self.ids)

    def __repr__(self) -> str:
        return f"COCODetection(root={str(self.root)!r}, split={self.split!r}, images={len(self)})"

    def _annotations(self, image_id: int) -> list[dict]:
        """Non-crowd annotations with a non-empty box (clipped to the image)."""
        info = self.coco.imgs[image_id]
        keep = []
        for ann in self.coco.imgToAnns.get(image_id, []):
            if ann.get("iscrowd", 0):
                continue
            x, y, w, h = ann["bbox"]
            x1, y1 = max(x, 0.0), max(y, 0.0)
            x2, y2 = min(x + w, info["width"]), min(y + h, info["height"])
            if x2 > x1 and y2 > y1:
                keep.append(ann)
        return keep

    def _usable(self, image_id: int) -> bool:
        return bool(self._annotations(image_id))

    def target(self, image_id: int) -> dict:
        """The detection target of ``image_id`` (module docstring), read from the annotations only."""
        info = self.coco.imgs[image_id]
        height, width = info["height"], info["width"]
        anns = self._annotations(image_id)
        boxes = np.array([a["bbox"] for a in anns], dtype=np.float32).reshape(-1, 4)
        boxes[:, 2:] += boxes[:, :2]
        boxes[:, 0::2] = boxes[:, 0::2].clip(0, width)
        boxes[:, 1::2] = boxes[:, 1::2].clip(0, height)
        unknown = [a["category_id"] for a in anns if a["category_id"] not in self.cat_id_to_label]
        if unknown:
            raise DataFileError(f"{self.ann_file}: image {image_id} has annotations of unknown categories {unknown}")
        masks = np.zeros((len(anns), height, width), dtype=np.uint8)
        with warnings.catch_warnings():  # pycocotools' decode warns about numpy 2's copy keyword
            warnings.filterwarnings("ignore", category=DeprecationWarning, module="pycocotools")
            for k, ann in enumerate(anns):
                masks[k] = self.coco.annToMask(ann)
        return {
            "boxes": torch.from_numpy(boxes),
            "labels": torch.tensor([self.cat_id_to_label[a["category_id"]] for a in anns], dtype=torch.int64),
            "masks": torch.from_numpy(masks),
            "image_id": int(image_id),
            "area": torch.tensor([float(a["area"]) for a in anns], dtype=torch.float32),
            "iscrowd": torch.zeros(len(anns), dtype=torch.int64),
        }

    def load(self, index: int) -> tuple[np.ndarray, dict]:
        """``(image uint8 (H, W, 3), target)`` without the transform."""
        image_id = self.ids[index]
        info = self.coco.imgs[image_id]
        path = self.image_dir / info["file_name"]
        if not path.is_file():
            raise FileNotFoundError(f"COCO image {path} (id {image_id}, listed in {self.ann_file}) not found")
        image = read_rgb(path)
        if image.shape[:2] != (info["height"], info["width"]):
            raise DataFileError(
                f"{path} is {image.shape[0]}x{image.shape[1]} (HxW) but {self.ann_file} says "
                f"{info['height']}x{info['width']}"
            )
        return image, self.target(image_id)

    def __getitem__(self, index: int):
        image, target = self.load(index)
        return self.transform(image_to_tensor(image), target)


def collate(batch):
    """Detection batches: ``(list of images, list of targets)`` (images differ in size)."""
    images, targets = zip(*batch, strict=True)
    return list(images), list(targets)
