"""Writers of the synthetic data sets in each official on-disk layout (file names, folders, index
files, COCO's JSON), one per format in ``WRITERS``."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

from tqdm.auto import tqdm

from cca.data.synthetic.draw import save_jpeg, save_png
from cca.data.synthetic.scenes import (
    ADE_STUFF,
    ADE_THINGS,
    COCO_CATEGORIES,
    ade20k_scene,
    camvid_sequence,
    cityscapes_scene,
    coco_image,
    lip_scene,
)

__all__ = [
    "DEFAULT_SIZE",
    "FORMATS",
    "VERSION",
    "WRITERS",
    "write_ade20k",
    "write_camvid",
    "write_cityscapes",
    "write_coco",
    "write_lip",
]

FORMATS = ("cityscapes", "ade20k", "lip", "camvid", "coco")
DEFAULT_SIZE = {"cityscapes": (64, 128), "ade20k": (64, 64), "lip": (64, 48), "camvid": (48, 64), "coco": (64, 80)}
VERSION = 1  # of the generator: recorded in each manifest (and COCO's info); bump when the output changes


def _progress(n: int, desc: str):
    return tqdm(range(n), desc=desc, leave=False, disable=n < 50)


def write_cityscapes(out: Path, num_train: int, num_val: int, size: tuple[int, int], rng) -> None:
    cities = {"train": ("aachen", "bochum"), "val": ("frankfurt", "lindau")}
    for split, n in (("train", num_train), ("val", num_val)):
        for i in _progress(n, f"cityscapes {split}"):
            city = cities[split][i % 2]
            stem = f"{city}_{i:06d}_{19 + 30 * i:06d}"
            image, label = cityscapes_scene(rng, *size)
            save_png(out / "leftImg8bit" / split / city / f"{stem}_leftImg8bit.png", image)
            save_png(out / "gtFine" / split / city / f"{stem}_gtFine_labelIds.png", label)


def write_ade20k(out: Path, num_train: int, num_val: int, size: tuple[int, int], rng) -> None:
    base = out / "ADEChallengeData2016"
    for split, folder, n in (("train", "training", num_train), ("val", "validation", num_val)):
        for i in _progress(n, f"ade20k {split}"):
            image, label = ade20k_scene(rng, *size)
            stem = f"ADE_{split}_{i + 1:08d}"
            save_jpeg(base / "images" / folder / f"{stem}.jpg", image)
            save_png(base / "annotations" / folder / f"{stem}.png", label)
    known = {v: k for k, v in {**ADE_STUFF, **ADE_THINGS}.items()}
    rows = ["Idx\tRatio\tTrain\tVal\tName"]
    rows += [f"{i}\t0.0\t0\t0\t{known.get(i, f'synthetic class {i}')}" for i in range(1, 151)]
    (base / "objectInfo150.txt").write_text("\n".join(rows) + "\n")


def write_lip(out: Path, num_train: int, num_val: int, size: tuple[int, int], rng) -> None:
    for split, n in (("train", num_train), ("val", num_val)):
        ids = []
        for i in _progress(n, f"lip {split}"):
            ident = f"{100 + i}_{rng.integers(100000, 999999)}"
            image, label = lip_scene(rng, *size)
            save_jpeg(out / f"{split}_images" / f"{ident}.jpg", image)
            save_png(out / f"{split}_segmentations" / f"{ident}.png", label)
            ids.append(ident)
        (out / f"{split}_id.txt").write_text("".join(f"{i}\n" for i in ids))


def write_camvid(out: Path, num_train: int, num_val: int, size: tuple[int, int], rng) -> None:
    # (sequence, frame-name format): both naming styles of the release
    sequences = {
        "train": (("0001TP", "{:06d}"), ("0006R0", "f{:05d}")),
        "val": (("0016E5", "{:05d}"),),
        "test": (("Seq05VD", "f{:05d}"),),
    }
    for split, n in (("train", num_train), ("val", num_val), ("test", num_val)):
        seqs = sequences[split]
        counts = [n // len(seqs) + (k < n % len(seqs)) for k in range(len(seqs))]
        for (seq, fmt), count in zip(seqs, counts, strict=True):
            start = 30 * int(rng.integers(1, 300))
            for t, (image, label) in enumerate(camvid_sequence(rng, *size, count)):
                name = f"{seq}_{fmt.format(start + 30 * t)}.png"
                save_png(out / split / name, image)
                save_png(out / f"{split}annot" / name, label)


def write_coco(out: Path, num_train: int, num_val: int, size: tuple[int, int], rng) -> None:
    h, w = size
    ann_id = 1
    for split, n in (("train", num_train), ("val", num_val)):
        images, annotations = [], []
        for i in _progress(n, f"coco {split}"):
            kind = {3: "empty", 2: "crowd"}.get(i % 4, "objects")
            image, anns = coco_image(rng, h, w, kind)
            if kind == "objects" and i % 3 == 0:  # some images get a crowd region too
                _, crowd = coco_image(rng, h, w, "crowd")
                anns += crowd
            image_id = 1000 * (split == "val") + i + 1
            file_name = f"{image_id:012d}.jpg"
            save_jpeg(out / f"{split}2017" / file_name, image)
            images.append({"id": image_id, "file_name": file_name, "height": h, "width": w})
            for ann in anns:
                annotations.append({"id": ann_id, "image_id": image_id, **ann})
                ann_id += 1
        data = {
            "info": {"description": "cca synthetic COCO-format data", "version": str(VERSION)},
            "licenses": [],
            "images": images,
            "annotations": annotations,
            "categories": [{"id": c, "name": name, "supercategory": sup} for c, name, sup in COCO_CATEGORIES],
        }
        path = out / "annotations" / f"instances_{split}2017.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(data))


WRITERS: dict[str, Callable] = {
    "cityscapes": write_cityscapes,
    "ade20k": write_ade20k,
    "lip": write_lip,
    "camvid": write_camvid,
    "coco": write_coco,
}
