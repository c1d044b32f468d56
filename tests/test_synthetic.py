"""The synthetic writer: every format, the CLI, idempotent writing, determinism, learnable content."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from cca.data import DATASETS, build_dataset, synthetic


@pytest.fixture(scope="module")
def root(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("syn") / "all"
    assert (
        synthetic.main(["--format", "all", "--out", str(out), "--num-train", "5", "--num-val", "2", "--seed", "3"]) == 0
    )
    return out


def _mtimes(root: Path) -> dict[str, int]:
    return {str(p): p.stat().st_mtime_ns for p in root.rglob("*") if p.is_file()}


def test_every_format_is_written_in_its_layout(root):
    assert sorted(p.name for p in root.iterdir()) == sorted(DATASETS)
    for name in DATASETS:
        manifest = json.loads((root / name / synthetic.MANIFEST).read_text())
        assert manifest["params"] == {"format": name, "num_train": 5, "num_val": 2,
                                      "size": list(synthetic.DEFAULT_SIZE[name]), "seed": 3}  # fmt: skip
        assert all((root / name / f).is_file() for f in manifest["files"])
        train = build_dataset(name, root / name, "train", skip_empty=False) if name == "coco" else None
        train = train or build_dataset(name, root / name, "train")
        assert len(train) == 5 and len(build_dataset(name, root / name, "val")) == 2
    assert len(build_dataset("camvid", root / "camvid", "test")) == 2
    cs = root / "cityscapes"
    assert len(list((cs / "leftImg8bit" / "train").glob("*/*_leftImg8bit.png"))) == 5
    assert len(list((cs / "gtFine" / "val").glob("*/*_gtFine_labelIds.png"))) == 2
    h, w = synthetic.DEFAULT_SIZE["cityscapes"]
    assert Image.open(next((cs / "leftImg8bit" / "train").glob("*/*.png"))).size == (w, h)
    assert next((root / "ade20k" / "ADEChallengeData2016" / "images" / "training").glob("*.jpg")).suffix == ".jpg"
    assert len((root / "lip" / "train_id.txt").read_text().split()) == 5


def test_cli_in_a_fresh_process(tmp_path):
    out = tmp_path / "cs"
    cmd = [sys.executable, "-m", "cca.data.synthetic", "--format", "cityscapes", "--out", str(out),
           "--num-train", "2", "--num-val", "1", "--size", "32", "48"]  # fmt: skip
    env = {**os.environ, "CCA_BACKEND": "reference"}
    done = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode == 0, done.stderr
    image, label = build_dataset("cityscapes", out, "train")[0]
    assert image.shape == (3, 32, 48) and label.shape == (32, 48)


def test_cli_rejects_bad_arguments(tmp_path, capsys):
    with pytest.raises(SystemExit) as info:
        synthetic.main(["--format", "pascal", "--out", str(tmp_path / "x")])
    assert info.value.code == 2 and "invalid choice: 'pascal'" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        synthetic.main(["--format", "lip", "--out", str(tmp_path / "x"), "--size", "8", "8"])
    assert "size must be" in capsys.readouterr().err


def test_cityscapes_uses_real_label_ids(root):
    from cityscapesscripts.helpers.labels import id2label

    seen = set()
    for path in (root / "cityscapes" / "gtFine").rglob("*_gtFine_labelIds.png"):
        seen |= set(np.unique(np.array(Image.open(path))).tolist())
    assert seen <= set(id2label) and {7, 8, 11, 23, 26} <= seen  # road, sidewalk, building, sky, car
    assert any(id2label[v].trainId in (255, -1) for v in seen)  # ignored ids occur


@pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")
def test_coco_json_exercises_the_format(root):
    from pycocotools.coco import COCO

    gt = COCO(str(root / "coco" / "annotations" / "instances_train2017.json"))
    anns = gt.dataset["annotations"]
    assert sorted(gt.getCatIds()) == [1, 3, 18, 44, 62]  # gapped ids -> contiguous labels
    kinds = {"polygon" if isinstance(a["segmentation"], list)
             else "rle" if isinstance(a["segmentation"]["counts"], str) else "uncompressed" for a in anns}  # fmt: skip
    assert {"polygon", "uncompressed"} <= kinds
    assert all(a["iscrowd"] == 1 for a in anns if not isinstance(a["segmentation"], list)
               and isinstance(a["segmentation"]["counts"], list))  # fmt: skip
    assert any(not gt.imgToAnns[i] for i in gt.imgs)  # images without annotations
    for a in anns:  # bbox and area agree with the decoded mask
        mask = gt.annToMask(a)
        ys, xs = np.nonzero(mask)
        assert a["area"] == mask.sum() > 0
        assert a["bbox"] == [xs.min(), ys.min(), xs.max() - xs.min() + 1, ys.max() - ys.min() + 1]


def test_writing_is_idempotent(tmp_path):
    out = tmp_path / "lip"
    synthetic.write("lip", out, num_train=2, num_val=1, seed=0)
    before = _mtimes(out)
    synthetic.write("lip", out, num_train=2, num_val=1, seed=0)  # same arguments: nothing rewritten
    assert _mtimes(out) == before
    with pytest.raises(FileExistsError, match="written with"):
        synthetic.write("lip", out, num_train=3, num_val=1, seed=0)
    synthetic.write("lip", out, num_train=3, num_val=1, seed=0, overwrite=True)
    assert len(build_dataset("lip", out, "train")) == 3
    victim = next((out / "train_images").glob("*.jpg"))
    victim.unlink()  # an incomplete copy is rewritten
    synthetic.write("lip", out, num_train=3, num_val=1, seed=0)
    assert victim.is_file()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary directory left


def test_never_writes_into_foreign_data(tmp_path):
    (tmp_path / "real").mkdir()
    (tmp_path / "real" / "precious.png").write_bytes(b"x")
    with pytest.raises(FileExistsError, match="not empty"):
        synthetic.write("cityscapes", tmp_path / "real", num_train=1, num_val=1)
    assert os.listdir(tmp_path / "real") == ["precious.png"]
    (tmp_path / "empty").mkdir()
    synthetic.write("camvid", tmp_path / "empty", num_train=2, num_val=1)  # an empty directory is fine
    assert (tmp_path / "empty" / synthetic.MANIFEST).is_file()


def test_deterministic_per_seed(tmp_path):
    def blob(seed, name):
        out = synthetic.write("ade20k", tmp_path / name, num_train=1, num_val=1, seed=seed)
        return b"".join(p.read_bytes() for p in sorted(out.rglob("*.png")) + sorted(out.rglob("*.jpg")))

    assert blob(0, "a") == blob(0, "b") != blob(1, "c")


@pytest.mark.parametrize(
    "kwargs,error",
    [
        ({"fmt": "pascal"}, ValueError),
        ({"num_train": 0}, ValueError),
        ({"num_val": 1.5}, TypeError),
        ({"seed": -1}, ValueError),
        ({"seed": True}, TypeError),
        ({"size": (8, 8)}, ValueError),
        ({"size": (32,)}, ValueError),
    ],
)
def test_bad_arguments(tmp_path, kwargs, error):
    args = {"fmt": "cityscapes", "out_dir": tmp_path / "x", "num_train": 1, "num_val": 1, **kwargs}
    with pytest.raises(error):
        synthetic.write(**args)


def _colour_features(data):
    xs, ys = [], []
    for i in range(len(data)):
        image, label = data.load(i)
        x = F.avg_pool2d(torch.from_numpy(image).permute(2, 0, 1)[None].float(), 3, 1, 1)  # 3x3 mean colour
        xs.append(x[0].permute(1, 2, 0).reshape(-1, 3).numpy())
        ys.append(label.reshape(-1))
    return np.concatenate(xs), np.concatenate(ys)


@pytest.mark.parametrize("name", ["cityscapes", "ade20k", "lip", "camvid"])
def test_classes_are_learnable_from_colour(root, name):
    """A nearest-class-mean colour classifier fit on train pixels beats the majority class on val by far
    (LIP: body parts only, with left/right merged, since they differ by position, not colour)."""
    xt, yt = _colour_features(build_dataset(name, root / name, "train"))
    xv, yv = _colour_features(build_dataset(name, root / name, "val"))
    if name == "lip":
        merge = np.arange(256)
        merge[[15, 17, 19]] = [14, 16, 18]
        yt, yv = merge[yt], merge[yv]
        yt[yt == 0], yv[yv == 0] = 255, 255
    classes = [c for c in np.unique(yt) if c != 255]
    centroids = np.stack([xt[yt == c].mean(0) for c in classes])
    keep = np.isin(yv, classes)
    pred = np.array(classes)[((xv[keep, None] - centroids[None]) ** 2).sum(-1).argmin(1)]
    accuracy = (pred == yv[keep]).mean()
    majority = max((yv[keep] == c).mean() for c in classes)
    assert accuracy > 0.6 and accuracy > majority + 0.15, (accuracy, majority)
