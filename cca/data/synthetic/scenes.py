"""Scenes of the synthetic data sets, one per format, with each format's real raw label values:
Cityscapes labelIds (ignored ids 0/1/4/9 included), ADE20K 1..150 with 0 "other", LIP parts whose
left/right differ only by position, CamVid sequences with moving objects and void 11, COCO images
with polygons, RLE and uncompressed-RLE crowd regions."""

from __future__ import annotations

import warnings

import numpy as np

from cca.data.synthetic.draw import ellipse, noise_background, paint, rect, to_uint8, triangle

__all__ = [
    "ADE_STUFF",
    "ADE_THINGS",
    "COCO_CATEGORIES",
    "ade20k_scene",
    "camvid_sequence",
    "cityscapes_scene",
    "coco_image",
    "lip_scene",
]


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
