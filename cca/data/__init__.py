"""Datasets in their official on-disk layouts, the paper's transforms and a synthetic data writer.

::

    from cca.data import build_dataset, transforms
    train = build_dataset("cityscapes", "data/cityscapes", "train",
                          transform=transforms.TrainTransform(crop_size=769))
    image, label = train[0]            # float32 (3, 769, 769) normalised, int64 (769, 769), 255 ignore
    train.num_classes, train.ignore_index, train.class_names

Segmentation datasets (``cityscapes``, ``ade20k``, ``lip``, ``camvid``) return ``(image, label)``;
``coco`` returns ``(image, target)`` for torchvision's Mask R-CNN. ``python -m cca.data.synthetic``
writes small data sets in every layout. The bad-data policy is in :mod:`cca.data.common`.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from pathlib import Path

DATASETS = ("cityscapes", "ade20k", "lip", "camvid", "coco")

_CLASSES = {
    "cityscapes": ("cca.data.cityscapes", "Cityscapes"),
    "ade20k": ("cca.data.ade20k", "ADE20K"),
    "lip": ("cca.data.lip", "LIP"),
    "camvid": ("cca.data.camvid", "CamVid"),
    "coco": ("cca.data.coco", "COCODetection"),
}


def dataset_class(name: str) -> type:
    """The dataset class registered as ``name`` (one of ``DATASETS``)."""
    if name not in _CLASSES:
        raise ValueError(f"unknown dataset {name!r}; known datasets: {', '.join(DATASETS)}")
    module, attr = _CLASSES[name]
    return getattr(importlib.import_module(module), attr)


def build_dataset(name: str, root: str | Path, split: str, transform: Callable | None = None, **kwargs):
    """``name``'s dataset of ``split`` under ``root``; ``kwargs`` go to its class (e.g. ``clip_length``
    for CamVid, ``missing_labels="skip"``, ``skip_empty`` for COCO)."""
    return dataset_class(name)(root, split, transform=transform, **kwargs)


__all__ = ["DATASETS", "build_dataset", "dataset_class"]
