"""Cityscapes labels: the loader reads `*_labelTrainIds.png` or `*_labelIds.png` and says which (README agrees)."""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image

from cca.data import build_dataset, synthetic


def test_cityscapes_reads_label_train_ids_when_present(tmp_path):
    root = tmp_path / "cityscapes"
    synthetic.write("cityscapes", root, num_train=2, num_val=2, size=(32, 64), seed=3)
    raw_ids = build_dataset("cityscapes", root, "val")
    assert raw_ids.label_format == "labelIds"
    want = [raw_ids[i][1] for i in range(len(raw_ids))]
    for _, label_path in raw_ids.samples:  # the train-id files cityscapesscripts' createTrainIdLabelImgs writes
        train_ids = raw_ids.lut[np.array(Image.open(label_path))].astype(np.uint8)
        Image.fromarray(train_ids).save(str(label_path).replace("_labelIds.png", "_labelTrainIds.png"))
        Image.fromarray(np.full_like(train_ids, 33)).save(label_path)  # raw ids now disagree: must not be read
    data = build_dataset("cityscapes", root, "val")
    assert data.label_format == "labelTrainIds" and all(p.name.endswith("_labelTrainIds.png") for _, p in data.samples)
    for i in range(len(data)):
        assert torch.equal(data[i][1], want[i])


def test_readme_names_both_label_files():
    from pathlib import Path

    text = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    assert "_labelTrainIds.png" in text and "_labelIds.png" in text
