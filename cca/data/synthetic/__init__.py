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

Modules: :mod:`~cca.data.synthetic.draw` (shapes, styles, saving), :mod:`~cca.data.synthetic.scenes`
(one scene per format), :mod:`~cca.data.synthetic.layouts` (the on-disk layouts); this module holds
the entry points (:func:`write`, :func:`main`) and re-exports their public names.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from cca._checks import non_negative_int, positive_int
from cca.data.synthetic.draw import (
    JPEG_QUALITY,
    ellipse,
    noise_background,
    paint,
    rect,
    save_jpeg,
    save_png,
    style,
    to_uint8,
    triangle,
)
from cca.data.synthetic.layouts import (
    DEFAULT_SIZE,
    FORMATS,
    VERSION,
    WRITERS,
    write_ade20k,
    write_camvid,
    write_cityscapes,
    write_coco,
    write_lip,
)
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
    "ADE_STUFF",
    "ADE_THINGS",
    "COCO_CATEGORIES",
    "DEFAULT_SIZE",
    "FORMATS",
    "JPEG_QUALITY",
    "MANIFEST",
    "VERSION",
    "WRITERS",
    "ade20k_scene",
    "camvid_sequence",
    "cityscapes_scene",
    "coco_image",
    "ellipse",
    "lip_scene",
    "main",
    "noise_background",
    "paint",
    "rect",
    "save_jpeg",
    "save_png",
    "style",
    "to_uint8",
    "triangle",
    "write",
    "write_ade20k",
    "write_camvid",
    "write_cityscapes",
    "write_coco",
    "write_lip",
]

MANIFEST = "cca_synthetic.json"
MIN_SIZE = 16  # smallest height and width of a synthetic image (room for the scenes' shapes)


def _check_args(fmt: str, num_train: int, num_val: int, size, seed: int) -> tuple[int, int] | None:
    if fmt not in (*FORMATS, "all"):
        raise ValueError(f"format must be one of {', '.join(FORMATS)} or 'all', got {fmt!r}")
    positive_int("num_train", num_train)
    positive_int("num_val", num_val)
    non_negative_int("seed", seed)  # numpy's generators take seeds >= 0
    if size is None:
        return None
    if len(size) != 2 or not all(isinstance(v, int) and v >= MIN_SIZE for v in size):
        raise ValueError(f"size must be (height, width) with ints >= {MIN_SIZE}, got {size!r}")
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
