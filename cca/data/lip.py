"""LIP (Look Into Person) human parsing: 20 classes, left/right pairs swapped on horizontal flip.

Labels hold the class ids ``0..19`` directly (0 is background, a real class); raw 255 is ignore.
Samples are the ids listed in ``{split}_id.txt``, in that order.
"""

from __future__ import annotations

from pathlib import Path

from cca.data.common import label_lut, require_dir, require_file
from cca.data.segmentation import SegmentationDataset

CLASS_NAMES = (
    "background", "hat", "hair", "glove", "sunglasses", "upper-clothes", "dress", "coat", "socks", "pants",
    "jumpsuits", "scarf", "skirt", "face", "left-arm", "right-arm", "left-leg", "right-leg", "left-shoe",
    "right-shoe",
)  # fmt: skip
# the person's left/right parts: a mirrored person has them exchanged
FLIP_PAIRS = (
    (CLASS_NAMES.index("left-arm"), CLASS_NAMES.index("right-arm")),
    (CLASS_NAMES.index("left-leg"), CLASS_NAMES.index("right-leg")),
    (CLASS_NAMES.index("left-shoe"), CLASS_NAMES.index("right-shoe")),
)
SPLITS = ("train", "val")
LAYOUT = """\
  ROOT/{split}_id.txt                    one image id per line
  ROOT/{split}_images/{id}.jpg
  ROOT/{split}_segmentations/{id}.png    class ids 0..19
  (split: train or val; the release's nesting ROOT/TrainVal_images/{split}_images, {split}_id.txt and
   ROOT/TrainVal_parsing_annotations/{split}_segmentations is accepted too)"""


def _find(root: Path, *candidates: str) -> Path:
    """The first existing ``root/candidate`` (or the first candidate, for the error message)."""
    for candidate in candidates:
        if (root / candidate).exists():
            return root / candidate
    return root / candidates[0]


class LIP(SegmentationDataset):
    """LIP ``split`` (``train``/``val``) under ``root`` (see ``LAYOUT``): 20 classes, ``flip_pairs`` set."""

    NAME = "LIP"
    LAYOUT = LAYOUT
    SPLITS = SPLITS
    flip_pairs = FLIP_PAIRS

    def find_files(self) -> None:
        split = self.split
        ids_file = require_file(
            _find(self.root, f"{split}_id.txt", f"TrainVal_images/{split}_id.txt"), f"LIP {split} id list", LAYOUT
        )
        image_dir = require_dir(
            _find(self.root, f"{split}_images", f"TrainVal_images/{split}_images"), f"LIP {split} images", LAYOUT
        )
        label_dir = require_dir(
            _find(self.root, f"{split}_segmentations", f"TrainVal_parsing_annotations/{split}_segmentations"),
            f"LIP {split} segmentations",
            LAYOUT,
        )
        ids = [line.strip() for line in ids_file.read_text().splitlines() if line.strip()]
        if not ids:
            raise FileNotFoundError(f"LIP id list {ids_file} is empty")
        images = [image_dir / f"{i}.jpg" for i in ids]
        absent = [p for p in images if not p.is_file()]
        if absent:
            raise FileNotFoundError(
                f"LIP {split}: {len(absent)} ids of {ids_file} have no image, first: {absent[0]}. Expected layout:\n{LAYOUT}"
            )
        self.pair_files(images, lambda p: label_dir / f"{p.stem}.png", f"listed in {ids_file}")
        self.class_names = CLASS_NAMES
        self.lut = label_lut({**{i: i for i in range(len(CLASS_NAMES))}, 255: 255})
