"""ADE20K SceneParsing (ADEChallengeData2016): 150 classes; label 0 ("other") -> ignore, 1..150 -> 0..149.

Class names come from the dataset's own ``objectInfo150.txt`` (first name of the ``Name`` column);
without that file they are ``class_001`` .. ``class_150``. A raw value 255 is accepted as ignore too;
any other value above 150 is a :class:`~cca.data.common.DataFileError`.
"""

from __future__ import annotations

import logging
from pathlib import Path

from cca.data.common import label_lut
from cca.data.segmentation import SegmentationDataset

log = logging.getLogger("cca.data")

NUM_CLASSES = 150
SPLITS = {"train": "training", "training": "training", "val": "validation", "validation": "validation"}
LAYOUT = """\
  ROOT/ADEChallengeData2016/images/{training,validation}/ADE_*.jpg
  ROOT/ADEChallengeData2016/annotations/{training,validation}/ADE_*.png
  ROOT/ADEChallengeData2016/objectInfo150.txt   (optional: class names)
  (ROOT may also be the ADEChallengeData2016 directory itself; split 'train'/'training', 'val'/'validation')"""


def read_object_info(path: Path) -> tuple[str, ...]:
    """Class names from ``objectInfo150.txt`` (tab separated ``Idx Ratio Train Val Name``), ordered by Idx."""
    names: dict[int, str] = {}
    with open(path, encoding="utf-8") as f:
        header = f.readline()
        if "Name" not in header:
            raise ValueError(f"{path}: expected a header 'Idx Ratio Train Val Name', got {header.strip()!r}")
        for line_no, line in enumerate(f, start=2):
            if not line.strip():
                continue
            fields = line.rstrip("\n").split("\t")
            if len(fields) < 5:
                raise ValueError(f"{path}:{line_no}: expected 5 tab-separated fields, got {line.strip()!r}")
            names[int(fields[0])] = fields[4].split(",")[0].strip()
    if sorted(names) != list(range(1, NUM_CLASSES + 1)):
        raise ValueError(f"{path}: expected class indices 1..{NUM_CLASSES}, got {len(names)} entries")
    return tuple(names[i] for i in range(1, NUM_CLASSES + 1))


def dataset_dir(root: Path) -> Path:
    """``root/ADEChallengeData2016`` if it exists, else ``root`` (which must hold ``images/``)."""
    nested = root / "ADEChallengeData2016"
    return nested if nested.is_dir() else root


class ADE20K(SegmentationDataset):
    """ADE20K ``split`` under ``root`` (see ``LAYOUT``): 150 classes, ignore 255."""

    NAME = "ADE20K"
    LAYOUT = LAYOUT
    SPLITS = SPLITS

    def find_files(self) -> None:
        base = dataset_dir(self.root)
        folder = SPLITS[self.split]
        image_dir = self.require_dir(base / "images" / folder, "images")
        label_dir = self.require_dir(base / "annotations" / folder, "annotations")
        images = sorted(image_dir.glob("*.jpg"))
        self.pair_files(images, lambda p: label_dir / f"{p.stem}.png", f"{image_dir}/*.jpg")
        info = base / "objectInfo150.txt"
        if info.is_file():
            self.class_names = read_object_info(info)
        else:
            log.warning("ADE20K: %s not found; class names are class_001..class_150", info)
            self.class_names = tuple(f"class_{i:03d}" for i in range(1, NUM_CLASSES + 1))
        self.lut = label_lut({0: 255, 255: 255, **{i: i - 1 for i in range(1, NUM_CLASSES + 1)}})
