"""Small synthetic data sets in each official layout, so every experiment runs end to end on a fresh machine.

Scenes are noisy coloured shapes whose class fixes their colour and stripe texture (a model can learn
them); labels use each format's real raw values (Cityscapes labelIds such as 7 road, 26 car, plus
ignored ids 0/1/4/9; ADE20K 1..150 with 0 "other"; LIP parts whose left/right differ only by position;
CamVid with void 11 and objects moving across the frames of a sequence; COCO with polygons, RLE,
uncompressed-RLE crowd regions, gapped category ids and images without annotations)::

    python -m cca.data.synthetic --format cityscapes --out data/synthetic/cityscapes
    python -m cca.data.synthetic --format all --out data/synthetic     # one sub-directory per format

Writing is idempotent: the data and a manifest (``cca_synthetic.json``: arguments and file list) are
written to a temporary sibling directory and renamed into place; running again with the same arguments
is a no-op, with other arguments an error unless ``overwrite``. A non-empty directory without a
manifest (real data, say) is never written into.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import warnings
import zlib
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
from PIL import Image
from tqdm.auto import tqdm

FORMATS = ("cityscapes", "ade20k", "lip", "camvid", "coco")
DEFAULT_SIZE = {"cityscapes": (64, 128), "ade20k": (64, 64), "lip": (64, 48), "camvid": (48, 64), "coco": (64, 80)}
MANIFEST = "cca_synthetic.json"
VERSION = 1
JPEG_QUALITY = 95


# --- drawing ---------------------------------------------------------------------------------------


def _grid(h: int, w: int) -> tuple[np.ndarray, np.ndarray]:
    """Pixel-centre coordinates ``(y, x)``, each ``(h, w)``."""
    y, x = np.mgrid[0:h, 0:w].astype(np.float64)
    return y + 0.5, x + 0.5


def rect(h: int, w: int, y0: float, x0: float, y1: float, x1: float) -> np.ndarray:
    y, x = _grid(h, w)
    return (y >= y0) & (y < y1) & (x >= x0) & (x < x1)


def ellipse(h: int, w: int, cy: float, cx: float, ry: float, rx: float) -> np.ndarray:
    y, x = _grid(h, w)
    return ((y - cy) / max(ry, 0.5)) ** 2 + ((x - cx) / max(rx, 0.5)) ** 2 <= 1.0


def triangle(h: int, w: int, points: Sequence[tuple[float, float]]) -> np.ndarray:
    """Pixels whose centre is inside the triangle of ``(x, y)`` points."""
    y, x = _grid(h, w)
    (ax, ay), (bx, by), (cx, cy) = points
    d1 = (x - bx) * (ay - by) - (ax - bx) * (y - by)
    d2 = (x - cx) * (by - cy) - (bx - cx) * (y - cy)
    d3 = (x - ax) * (cy - ay) - (cx - ax) * (y - ay)
    neg = (d1 < 0) | (d2 < 0) | (d3 < 0)
    pos = (d1 > 0) | (d2 > 0) | (d3 > 0)
    return ~(neg & pos)


def style(key: str | int, colour: Sequence[int] | None = None) -> tuple[np.ndarray, float, float]:
    """``(colour (3,), stripe period, stripe angle)`` of a class, fixed by its key."""
    rng = np.random.default_rng(zlib.crc32(str(key).encode()))
    base = rng.integers(30, 226, size=3) if colour is None else np.asarray(colour)
    return base.astype(np.float64), float(rng.uniform(4.0, 10.0)), float(rng.uniform(0.0, np.pi))


def paint(image: np.ndarray, label: np.ndarray | None, mask: np.ndarray, value: int, key, rng, colour=None) -> None:
    """Fill ``mask`` with the class's colour, its stripes and noise; write ``value`` into ``label``."""
    if not mask.any():
        return
    base, period, angle = style(key, colour)
    y, x = _grid(*mask.shape)
    stripes = 18.0 * np.sin(2 * np.pi * (x[mask] * np.cos(angle) + y[mask] * np.sin(angle)) / period)
    image[mask] = base + stripes[:, None] + rng.normal(0.0, 8.0, size=(int(mask.sum()), 3))
    if label is not None:
        label[mask] = value


def noise_background(h: int, w: int, rng: np.random.Generator) -> np.ndarray:
    """A float image ``(h, w, 3)``: a random grey level plus strong noise."""
    return rng.uniform(60, 190) + rng.normal(0.0, 25.0, size=(h, w, 3))


def to_uint8(image: np.ndarray) -> np.ndarray:
    return np.clip(np.rint(image), 0, 255).astype(np.uint8)


def save_png(path: Path, array: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path, format="PNG")


def save_jpeg(path: Path, array: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path, format="JPEG", quality=JPEG_QUALITY)


# --- scenes ----------------------------------------------------------------------------------------


def cityscapes_scene(rng: np.random.Generator, h: int, w: int) -> tuple[np.ndarray, np.ndarray]:
    """A street: sky, buildings/vegetation, sidewalk, road, cars, people, poles with signs; ignored
    labelIds 0 (unlabeled), 1 (ego vehicle), 4 (static), 9 (parking). Returns RGB and labelIds (uint8)."""
    from cityscapesscripts.helpers.labels import name2label

    def put(mask, name):
        lab = name2label[name]
        paint(image, label, mask, lab.id, f"cityscapes/{name}", rng, colour=lab.color)

    image = noise_background(h, w, rng)
    label = np.zeros((h, w), dtype=np.uint8)
    horizon = h * rng.uniform(0.4, 0.55)
    put(rect(h, w, 0, 0, h, w), "road")
    put(rect(h, w, 0, 0, horizon * 0.45, w), "sky")
    x = 0.0
    while x < w:  # skyline of buildings and trees
        seg = w * rng.uniform(0.15, 0.35)
        top = horizon * rng.uniform(0.2, 0.5)
        put(rect(h, w, top, x, horizon, x + seg), "building" if rng.random() < 0.65 else "vegetation")
        x += seg
    walk = horizon + h * rng.uniform(0.06, 0.1)
    put(rect(h, w, horizon, 0, walk, w), "sidewalk")
    if rng.random() < 0.5:
        px = rng.uniform(0, w * 0.7)
        put(rect(h, w, walk, px, walk + h * 0.06, px + w * 0.2), "parking")
    for _ in range(int(rng.integers(1, 4))):  # cars on the road
        cw, ch = w * rng.uniform(0.12, 0.22), h * rng.uniform(0.1, 0.18)
        cx, cy = rng.uniform(0, w - cw), rng.uniform(walk, h * 0.9 - ch)
        put(rect(h, w, cy, cx, cy + ch, cx + cw), "car")
    for _ in range(int(rng.integers(0, 3))):  # people on the sidewalk
        px, py = rng.uniform(0.05, 0.95) * w, walk - h * 0.02
        put(ellipse(h, w, py - h * 0.09, px, h * 0.09, w * 0.025), "person")
    for _ in range(int(rng.integers(0, 3))):  # poles with a sign
        px = rng.uniform(0.05, 0.95) * w
        put(rect(h, w, horizon * 0.3, px, walk, px + max(1.5, w * 0.012)), "pole")
        put(rect(h, w, horizon * 0.3, px - w * 0.02, horizon * 0.3 + h * 0.05, px + w * 0.03), "traffic sign")
    if rng.random() < 0.5:
        sx = rng.uniform(0, w * 0.8)
        put(rect(h, w, horizon - h * 0.08, sx, horizon, sx + w * 0.08), "static")
    uy, ux = rng.uniform(0, h * 0.8), rng.uniform(0, w * 0.9)
    put(rect(h, w, uy, ux, uy + h * 0.05, ux + w * 0.05), "unlabeled")
    put(rect(h, w, h - max(2.0, h / 16), 0, h, w), "ego vehicle")
    return to_uint8(image), label


ADE_STUFF = {"wall": 1, "sky": 3, "floor": 4}
ADE_THINGS = {"tree": 5, "person": 13, "chair": 20, "car": 21, "flag": 150}


def ade20k_scene(rng: np.random.Generator, h: int, w: int) -> tuple[np.ndarray, np.ndarray]:
    """Wall or sky over floor, 2-4 objects, sometimes an unlabeled (0) patch. Labels are raw 0..150."""
    image = noise_background(h, w, rng)
    label = np.zeros((h, w), dtype=np.uint8)
    split = h * rng.uniform(0.45, 0.7)
    top = "wall" if rng.random() < 0.6 else "sky"
    paint(image, label, rect(h, w, 0, 0, split, w), ADE_STUFF[top], f"ade/{top}", rng)
    paint(image, label, rect(h, w, split, 0, h, w), ADE_STUFF["floor"], "ade/floor", rng)
    names = list(ADE_THINGS)
    for _ in range(int(rng.integers(2, 5))):
        name = names[int(rng.integers(len(names)))]
        oh, ow = h * rng.uniform(0.15, 0.4), w * rng.uniform(0.12, 0.35)
        oy, ox = rng.uniform(0, h - oh), rng.uniform(0, w - ow)
        shape = rng.integers(3)
        if shape == 0:
            mask = rect(h, w, oy, ox, oy + oh, ox + ow)
        elif shape == 1:
            mask = ellipse(h, w, oy + oh / 2, ox + ow / 2, oh / 2, ow / 2)
        else:
            mask = triangle(h, w, [(ox, oy + oh), (ox + ow, oy + oh), (ox + ow / 2, oy)])
        paint(image, label, mask, ADE_THINGS[name], f"ade/{name}", rng)
    if rng.random() < 0.6:
        uy, ux = rng.uniform(0, h * 0.85), rng.uniform(0, w * 0.85)
        paint(image, label, rect(h, w, uy, ux, uy + h * 0.12, ux + w * 0.12), 0, "ade/other", rng)
    return to_uint8(image), label


def lip_scene(rng: np.random.Generator, h: int, w: int) -> tuple[np.ndarray, np.ndarray]:
    """A front-facing person on a noisy background: the person's right arm/leg/shoe (15/17/19) are on the
    image's left, the left ones (14/16/18) on its right, each pair with the same look."""
    image = noise_background(h, w, rng)
    label = np.zeros((h, w), dtype=np.uint8)
    s = rng.uniform(0.85, 1.0)
    cx = w / 2 + rng.uniform(-0.08, 0.08) * w
    top = h * rng.uniform(0.02, 0.06)
    u = h * 0.9 * s / 8  # body unit
    tw = w * 0.18 * s  # half torso width

    def put(mask, value, key):
        paint(image, label, mask, value, f"lip/{key}", rng)

    head_cy = top + u * 0.8
    put(ellipse(h, w, head_cy - u * 0.25, cx, u * 0.6, tw * 0.55), 2, "hair")
    put(ellipse(h, w, head_cy + u * 0.15, cx, u * 0.5, tw * 0.42), 13, "face")
    if rng.random() < 0.4:
        put(rect(h, w, top - u * 0.3, cx - tw * 0.5, top + u * 0.2, cx + tw * 0.5), 1, "hat")
    torso_top, torso_bottom = top + u * 1.6, top + u * 4.2
    arm_w = tw * 0.45
    put(rect(h, w, torso_top, cx - tw - arm_w, torso_bottom, cx - tw), 15, "arm")  # person's right, image left
    put(rect(h, w, torso_top, cx + tw, torso_bottom, cx + tw + arm_w), 14, "arm")
    leg_top, leg_bottom = top + u * 5.2, top + u * 7.4
    put(rect(h, w, leg_top, cx - tw * 0.9, leg_bottom, cx - tw * 0.1), 17, "leg")
    put(rect(h, w, leg_top, cx + tw * 0.1, leg_bottom, cx + tw * 0.9), 16, "leg")
    put(rect(h, w, leg_bottom, cx - tw * 1.0, leg_bottom + u * 0.5, cx - tw * 0.05), 19, "shoe")
    put(rect(h, w, leg_bottom, cx + tw * 0.05, leg_bottom + u * 0.5, cx + tw * 1.0), 18, "shoe")
    lower = (9, "pants") if rng.random() < 0.7 else (12, "skirt")
    put(rect(h, w, torso_bottom, cx - tw, leg_top + (0 if lower[0] == 9 else u * 0.6), cx + tw), *lower)
    put(rect(h, w, torso_top, cx - tw, torso_bottom, cx + tw), 5, "upper-clothes")
    return to_uint8(image), label


def camvid_sequence(rng: np.random.Generator, h: int, w: int, frames: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """``frames`` frames of one drive: a fixed street and cars/pedestrians moving steadily across it.
    Labels are 0..10 with void 11."""
    horizon = h * rng.uniform(0.4, 0.5)
    walk = horizon + h * 0.08
    blocks = []
    x = 0.0
    while x < w:
        seg = w * rng.uniform(0.2, 0.4)
        blocks.append((x, seg, horizon * rng.uniform(0.2, 0.5), 1 if rng.random() < 0.6 else 5))
        x += seg
    pole_x = rng.uniform(0.1, 0.9) * w
    movers = []
    for _ in range(int(rng.integers(1, 4))):
        kind = int(rng.choice([8, 8, 9, 10]))
        movers.append((kind, rng.uniform(0, w), rng.uniform(-0.12, 0.12) * w, rng.uniform(walk, h * 0.85)))
    out = []
    for t in range(frames):
        image = noise_background(h, w, rng)
        label = np.full((h, w), 3, dtype=np.uint8)

        def put(mask, value, image=image, label=label):
            paint(image, label, mask, value, f"camvid/{value}", rng)

        put(rect(h, w, 0, 0, h, w), 3)
        put(rect(h, w, 0, 0, horizon, w), 0)
        for bx, seg, btop, kind in blocks:
            put(rect(h, w, btop, bx, horizon, bx + seg), kind)
        put(rect(h, w, horizon, 0, walk, w), 4)
        put(rect(h, w, horizon - h * 0.06, 0, horizon, w * 0.3), 7)
        put(rect(h, w, horizon * 0.3, pole_x, walk, pole_x + max(1.5, w * 0.015)), 2)
        put(rect(h, w, horizon * 0.3, pole_x - w * 0.02, horizon * 0.3 + h * 0.05, pole_x + w * 0.03), 6)
        for kind, x0, vx, y0 in movers:
            mx = (x0 + vx * t) % w
            if kind == 8:
                put(rect(h, w, y0 - h * 0.14, mx, y0, mx + w * 0.2), 8)
            else:
                put(ellipse(h, w, y0 - h * 0.1, mx, h * 0.1, w * 0.03), kind)
        put(rect(h, w, 0, 0, h * 0.06, w * 0.1), 11)  # a void corner (the camera's overlay)
        out.append((to_uint8(image), label))
    return out


COCO_CATEGORIES = ((1, "person", "person"), (3, "car", "vehicle"), (18, "dog", "animal"),
                   (44, "bottle", "kitchen"), (62, "chair", "furniture"))  # fmt: skip


def _uncompressed_rle(mask: np.ndarray) -> dict:
    """COCO's uncompressed RLE (used by crowd annotations): run lengths of the column-major mask, from 0s."""
    flat = mask.flatten(order="F").astype(np.uint8)
    change = np.flatnonzero(np.diff(flat)) + 1
    bounds = np.concatenate([[0], change, [flat.size]])
    counts = np.diff(bounds).tolist()
    if flat[0] == 1:
        counts = [0, *counts]
    return {"counts": [int(c) for c in counts], "size": [int(mask.shape[0]), int(mask.shape[1])]}


def coco_image(rng: np.random.Generator, h: int, w: int, kind: str) -> tuple[np.ndarray, list[dict]]:
    """One image and its annotation dicts (no ids yet). ``kind``: ``"objects"``, ``"empty"`` (no
    annotation) or ``"crowd"`` (only a crowd region). Objects sit in separate columns (no overlap)."""
    from pycocotools import mask as mask_util

    image = noise_background(h, w, rng)
    anns = []

    def add(segmentation, category, iscrowd=0):
        if isinstance(segmentation, list):
            rle = mask_util.merge(mask_util.frPyObjects(segmentation, h, w))
        elif isinstance(segmentation["counts"], list):
            rle = mask_util.frPyObjects(segmentation, h, w)
        else:
            rle = segmentation
        with warnings.catch_warnings():  # pycocotools' decode warns about numpy 2's copy keyword
            warnings.filterwarnings("ignore", category=DeprecationWarning, module="pycocotools")
            mask = mask_util.decode(rle).astype(bool)
        paint(image, None, mask, 0, f"coco/{category}", rng)
        anns.append({
            "category_id": category,
            "segmentation": segmentation,
            "area": float(mask_util.area(rle)),
            "bbox": [float(v) for v in mask_util.toBbox(rle)],
            "iscrowd": iscrowd,
        })  # fmt: skip

    if kind == "crowd":
        crowd = np.zeros((h, w), dtype=bool)
        for k in range(4):
            crowd |= ellipse(h, w, h * 0.7, w * (0.2 + 0.2 * k), h * 0.15, w * 0.06)
        add(_uncompressed_rle(crowd), 1, iscrowd=1)
    if kind != "objects":
        return to_uint8(image), anns
    n = int(rng.integers(1, 4))
    slot = w / n
    for k in range(n):
        cat = COCO_CATEGORIES[int(rng.integers(len(COCO_CATEGORIES)))][0]
        x0, x1 = k * slot + slot * rng.uniform(0.05, 0.2), (k + 1) * slot - slot * rng.uniform(0.05, 0.2)
        y0, y1 = h * rng.uniform(0.05, 0.35), h * rng.uniform(0.65, 0.95)
        if cat == 1:  # person: an ellipse as compressed RLE
            mask = ellipse(h, w, (y0 + y1) / 2, (x0 + x1) / 2, (y1 - y0) / 2, (x1 - x0) / 2)
            rle = mask_util.encode(np.asfortranarray(mask.astype(np.uint8)))
            add({"counts": rle["counts"].decode("ascii"), "size": [h, w]}, cat)
        elif cat == 18:  # dog: a triangle
            add([[x0, y1, x1, y1, (x0 + x1) / 2, y0]], cat)
        elif cat == 44:  # bottle: a narrow box
            xm, half = (x0 + x1) / 2, (x1 - x0) / 6
            add([[xm - half, y0, xm + half, y0, xm + half, y1, xm - half, y1]], cat)
        elif cat == 62:  # chair: an L-shaped polygon
            xm, ym = (x0 + x1) / 2, (y0 + y1) / 2
            add([[x0, y0, xm, y0, xm, ym, x1, ym, x1, y1, x0, y1]], cat)
        else:  # car: a box
            add([[x0, y0, x1, y0, x1, y1, x0, y1]], cat)
    return to_uint8(image), anns


# --- writers ---------------------------------------------------------------------------------------


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


# --- entry points ----------------------------------------------------------------------------------


def _check_args(fmt: str, num_train: int, num_val: int, size, seed: int) -> tuple[int, int] | None:
    if fmt not in (*FORMATS, "all"):
        raise ValueError(f"format must be one of {', '.join(FORMATS)} or 'all', got {fmt!r}")
    for name, value in (("num_train", num_train), ("num_val", num_val), ("seed", seed)):
        if not isinstance(value, int) or isinstance(value, bool):
            raise TypeError(f"{name} must be an int, got {type(value).__name__}")
    if num_train < 1 or num_val < 1:
        raise ValueError(f"num_train and num_val must be >= 1, got num_train={num_train}, num_val={num_val}")
    if size is None:
        return None
    if len(size) != 2 or not all(isinstance(v, int) and v >= 16 for v in size):
        raise ValueError(f"size must be (height, width) with ints >= 16, got {size!r}")
    return int(size[0]), int(size[1])


def _listing(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file() and p.name != MANIFEST)


def write(
    fmt: str,
    out_dir: str | Path,
    num_train: int = 8,
    num_val: int = 3,
    size: tuple[int, int] | None = None,
    seed: int = 0,
    overwrite: bool = False,
) -> Path:
    """Write a synthetic ``fmt`` data set (one of ``FORMATS``, or ``"all"``: each in ``out_dir/<fmt>``)
    with ``num_train``/``num_val`` images of ``size = (H, W)`` (default ``DEFAULT_SIZE[fmt]``) to
    ``out_dir``; returns ``out_dir``. CamVid's test split gets ``num_val`` frames too.

    A no-op when ``out_dir`` already holds this data set (same arguments, all files present). Raises
    ``FileExistsError`` when it is a non-empty directory without a manifest, or a synthetic data set
    written with other arguments (unless ``overwrite``, which replaces it).
    """
    size = _check_args(fmt, num_train, num_val, size, seed)
    out = Path(out_dir)
    if fmt == "all":
        for name in FORMATS:
            write(name, out / name, num_train, num_val, size, seed, overwrite)
        return out
    size = size or DEFAULT_SIZE[fmt]
    params = {"format": fmt, "num_train": num_train, "num_val": num_val, "size": list(size), "seed": seed}
    manifest = out / MANIFEST
    if manifest.is_file():
        recorded = json.loads(manifest.read_text())
        if recorded.get("params") == params and recorded.get("version") == VERSION:
            if all((out / f).is_file() for f in recorded.get("files", [])):
                return out
        elif not overwrite:
            raise FileExistsError(
                f"{out} holds synthetic data written with {recorded.get('params')} (version {recorded.get('version')}), "
                f"not {params} (version {VERSION}); choose another directory or pass overwrite=True (--overwrite)"
            )
    elif out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise FileExistsError(
            f"refusing to write synthetic data into {out}: it exists, is not empty and has no {MANIFEST}"
        )

    tmp = out.with_name(f".{out.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        WRITERS[fmt](tmp, num_train, num_val, size, np.random.default_rng([seed, FORMATS.index(fmt)]))
        record = {"generator": "cca.data.synthetic", "version": VERSION, "params": params, "files": _listing(tmp)}
        (tmp / MANIFEST).write_text(json.dumps(record, indent=1) + "\n")
        if out.exists():  # ours (stale or overwritten) or empty
            if manifest.is_file():
                shutil.rmtree(out)
            else:
                out.rmdir()
        os.replace(tmp, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m cca.data.synthetic", description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--format", required=True, choices=(*FORMATS, "all"), help="layout to write ('all': each in OUT/<format>)"
    )
    parser.add_argument("--out", required=True, type=Path, help="output directory")
    parser.add_argument("--num-train", type=int, default=8, help="training images (default 8)")
    parser.add_argument("--num-val", type=int, default=3, help="validation images (default 3)")
    parser.add_argument("--size", type=int, nargs=2, metavar=("H", "W"), help="image size (default per format)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--overwrite", action="store_true", help="replace synthetic data written with other arguments")
    args = parser.parse_args(argv)
    try:
        out = write(args.format, args.out, args.num_train, args.num_val, tuple(args.size) if args.size else None,
                    args.seed, args.overwrite)  # fmt: skip
    except (FileExistsError, ValueError) as exc:
        parser.error(str(exc))
    print(f"synthetic {args.format} data in {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
