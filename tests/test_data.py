"""Dataset readers on generated data in the official layouts, transforms, and the bad-data policy.

Every loader is checked against reading the files directly (PIL + the documented label mapping).
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from cca.data import DATASETS, build_dataset, synthetic, transforms
from cca.data.common import DataFileError

SEGMENTATION = ("cityscapes", "ade20k", "lip", "camvid")


@pytest.fixture(scope="module")
def roots(tmp_path_factory) -> dict[str, Path]:
    base = tmp_path_factory.mktemp("synthetic")
    synthetic.write("all", base, num_train=6, num_val=3, seed=1)
    return {name: base / name for name in DATASETS}


@pytest.fixture
def copy_of(roots, tmp_path):
    """A private copy of one format's data (for tests that damage files)."""

    def make(name: str) -> Path:
        return Path(shutil.copytree(roots[name], tmp_path / name))

    return make


def imagenet_normalised(pixels: np.ndarray) -> torch.Tensor:
    """float64 reference of the normalisation: ``(x / 255 - mean) / std`` with torchvision's ImageNet stats."""
    from torchvision.models import ResNet50_Weights

    preset = ResNet50_Weights.IMAGENET1K_V2.transforms()
    mean = np.asarray(preset.mean, dtype=np.float64)
    std = np.asarray(preset.std, dtype=np.float64)
    return torch.from_numpy(((pixels.astype(np.float64) / 255.0 - mean) / std).transpose(2, 0, 1).copy())


def expected_label(name: str, raw: np.ndarray) -> np.ndarray:
    """The documented raw -> train id mapping, written out independently of the readers' tables."""
    if name == "cityscapes":
        from cityscapesscripts.helpers.labels import id2label

        def one(v):
            t = id2label[int(v)].trainId
            return 255 if t in (-1, 255) else t

        return np.vectorize(one)(raw).astype(np.int64)
    if name == "ade20k":
        return np.where(raw == 0, 255, raw - 1).astype(np.int64)
    if name == "lip":
        return raw.astype(np.int64)
    if name == "camvid":
        return np.where(raw == 11, 255, raw).astype(np.int64)
    raise AssertionError(name)


def read_pil(path: Path) -> np.ndarray:
    return np.array(Image.open(path))


# --- loading -------------------------------------------------------------------------------------------


def test_registry():
    assert DATASETS == ("cityscapes", "ade20k", "lip", "camvid", "coco")
    with pytest.raises(ValueError, match="known datasets: cityscapes, ade20k, lip, camvid, coco"):
        build_dataset("pascal", "x", "train")


@pytest.mark.parametrize("name", SEGMENTATION)
@pytest.mark.parametrize("split", ["train", "val"])
def test_loader_returns_the_files_pixels(roots, name, split):
    data = build_dataset(name, roots[name], split)
    assert len(data) == (6 if split == "train" else 3)
    assert data.ignore_index == 255 and len(data.class_names) == data.num_classes
    assert data.num_classes == {"cityscapes": 19, "ade20k": 150, "lip": 20, "camvid": 11}[name]
    seen = set()
    for i in range(len(data)):
        image_path, label_path = data.samples[i]
        pixels = np.array(Image.open(image_path).convert("RGB"))
        raw = read_pil(label_path)
        expected = expected_label(name, raw)
        image, label = data[i]
        assert image.dtype == torch.float32 and label.dtype == torch.int64
        assert image.shape == (3, *raw.shape) and label.shape == raw.shape
        torch.testing.assert_close(image.double(), imagenet_normalised(pixels), rtol=0, atol=1e-5)
        assert torch.equal(label, torch.from_numpy(expected))
        loaded_image, loaded_label = data.load(i)
        assert np.array_equal(loaded_image, pixels) and np.array_equal(loaded_label, expected)
        valid = expected[expected != 255]
        assert valid.size and valid.min() >= 0 and valid.max() < data.num_classes
        seen.update(np.unique(raw).tolist())
    if name == "cityscapes":  # real labelIds, some of them ignored in training
        assert {7, 26} <= seen and {0, 1} <= seen
        assert all(0 <= v <= 33 for v in seen)
    if name == "ade20k":
        assert 0 in seen  # "other" -> ignore
    if name == "camvid":
        assert 11 in seen  # void -> ignore


def test_cityscapes_mapping_is_cityscapesscripts(roots):
    from cityscapesscripts.helpers.labels import labels, trainId2label

    data = build_dataset("cityscapes", roots["cityscapes"], "val")
    assert data.class_names == tuple(trainId2label[t].name for t in range(19))
    for lab in labels:
        if lab.id >= 0:
            assert data.lut[lab.id] == (lab.trainId if lab.trainId not in (-1, 255) else 255), lab.name
    assert (data.lut[34:] == -1).all()  # not a labelId: an error, not a class


def test_ade20k_class_names_come_from_object_info(roots):
    data = build_dataset("ade20k", roots["ade20k"], "validation")
    assert data.class_names[0] == "wall" and data.class_names[149] == "flag" and len(data.class_names) == 150
    root = roots["ade20k"] / "ADEChallengeData2016"  # ROOT may be the ADEChallengeData2016 directory itself
    assert len(build_dataset("ade20k", root, "val")) == len(data)


def test_ade20k_object_info_parsing(tmp_path):
    from cca.data.ade20k import read_object_info

    rows = ["Idx\tRatio\tTrain\tVal\tName"] + [f"{i} \t0.1\t1\t1\tname{i}, alias \n" for i in range(1, 151)]
    (tmp_path / "objectInfo150.txt").write_text("\n".join(rows))
    names = read_object_info(tmp_path / "objectInfo150.txt")
    assert names[0] == "name1" and names[-1] == "name150"


def test_lip_classes_and_flip_pairs(roots):
    data = build_dataset("lip", roots["lip"], "train")
    names = data.class_names
    assert names[0] == "background" and names[13] == "face" and len(names) == 20
    assert data.flip_pairs == ((14, 15), (16, 17), (18, 19))
    for a, b in data.flip_pairs:
        assert names[a].startswith("left-") and names[b] == "right-" + names[a][len("left-") :]
    ids = (roots["lip"] / "train_id.txt").read_text().split()
    assert [p.stem for p, _ in data.samples] == ids


def test_lip_official_nesting(roots, tmp_path):
    src = roots["lip"]
    root = tmp_path / "LIP"
    (root / "TrainVal_images").mkdir(parents=True)
    (root / "TrainVal_parsing_annotations").mkdir()
    shutil.copytree(src / "val_images", root / "TrainVal_images" / "val_images")
    shutil.copy(src / "val_id.txt", root / "TrainVal_images" / "val_id.txt")
    shutil.copytree(src / "val_segmentations", root / "TrainVal_parsing_annotations" / "val_segmentations")
    a, b = build_dataset("lip", root, "val"), build_dataset("lip", src, "val")
    assert len(a) == len(b) == 3 and torch.equal(a[1][1], b[1][1])


def test_camvid_clips(roots):
    frames = build_dataset("camvid", roots["camvid"], "train")
    clips = build_dataset("camvid", roots["camvid"], "train", clip_length=3)
    assert clips.label_frame == 1 and len(clips) == len(frames)
    for i in range(len(clips)):
        indices = clips.clip_indices(i)
        assert indices[1] == i
        names = [clips.samples[j][0].name for j in indices]
        assert len({n.split("_")[0] for n in names}) == 1  # one sequence
        assert names == sorted(names)  # in frame order, ends repeated
        clip, label = clips[i]
        assert clip.shape == (3, 3, 48, 64) and label.shape == (48, 64)
        assert torch.equal(label, frames[i][1])  # the centre frame's label
        for t, j in enumerate(indices):
            torch.testing.assert_close(clip[:, t], frames[j][0], rtol=0, atol=0)
    # inside a sequence the neighbours are the previous and next available frames
    members = clips.sequences[clips.samples[0][0].name.split("_")[0]]
    assert clips.clip_indices(members[1]) == members[0:3]
    assert clips.clip_indices(members[0]) == [members[0], members[0], members[1]]
    with pytest.raises(ValueError, match="clip_length must be an int >= 1, got clip_length=0"):
        build_dataset("camvid", roots["camvid"], "train", clip_length=0)
    with pytest.raises(TypeError, match=r"clip_length must be an int, got clip_length=2.0 \(float\)"):
        build_dataset("camvid", roots["camvid"], "train", clip_length=2.0)


def test_camvid_clip_with_train_transform(roots):
    data = build_dataset(
        "camvid", roots["camvid"], "train", clip_length=4,
        transform=transforms.TrainTransform(crop_size=32, generator=torch.Generator().manual_seed(0)),
    )  # fmt: skip
    clip, label = data[2]
    assert clip.shape == (3, 4, 32, 32) and label.shape == (32, 32) and data.label_frame == 2


# --- COCO ----------------------------------------------------------------------------------------------


@pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")
def test_coco_targets_match_pycocotools(roots):
    from pycocotools.coco import COCO

    gt = COCO(str(roots["coco"] / "annotations" / "instances_train2017.json"))
    data = build_dataset("coco", roots["coco"], "train", skip_empty=False)
    assert data.num_classes == 6 and data.label_to_cat_id == [0, 1, 3, 18, 44, 62]
    assert len(data) == len(gt.imgs)
    empty = [i for i in gt.imgs if not [a for a in gt.imgToAnns[i] if not a["iscrowd"]]]
    assert data.num_without_annotations == len(empty) > 0
    crowd_seen = 0
    for index in range(len(data)):
        image, target = data[index]
        image_id = target["image_id"]
        info = gt.imgs[image_id]
        pixels = np.array(Image.open(roots["coco"] / "train2017" / info["file_name"]).convert("RGB"))
        torch.testing.assert_close(image, torch.from_numpy(pixels).permute(2, 0, 1).float() / 255, rtol=0, atol=0)
        anns = [a for a in gt.imgToAnns[image_id] if not a["iscrowd"]]
        crowd_seen += len(gt.imgToAnns[image_id]) - len(anns)
        assert target["boxes"].dtype == torch.float32 and target["masks"].dtype == torch.uint8
        assert target["masks"].shape == (len(anns), info["height"], info["width"])
        for k, ann in enumerate(anns):
            x, y, w, h = ann["bbox"]
            torch.testing.assert_close(target["boxes"][k], torch.tensor([x, y, x + w, y + h], dtype=torch.float32))
            assert data.label_to_cat_id[int(target["labels"][k])] == ann["category_id"]
            assert np.array_equal(target["masks"][k].numpy(), gt.annToMask(ann))
    assert crowd_seen > 0  # crowd annotations exist and were left out

    train = build_dataset("coco", roots["coco"], "train")  # default: skip images without annotations
    assert len(train) == len(gt.imgs) - len(empty) and sorted(train.skipped_ids) == sorted(empty)
    val = build_dataset("coco", roots["coco"], "val")  # default: keep every image for evaluation
    assert len(val) == 3 and val.skipped_ids == []


def test_detection_flip_moves_boxes_with_masks(roots):
    data = build_dataset("coco", roots["coco"], "train")
    plain_image, plain = data[0]
    for seed in range(20):
        flip = transforms.DetectionTransform(flip=True, generator=torch.Generator().manual_seed(seed))
        image, target = flip(*_raw_coco(data, 0))
        if not torch.equal(image, plain_image):
            break
    else:
        pytest.fail("no flip in 20 seeds")
    assert torch.equal(image, plain_image.flip(-1)) and torch.equal(target["masks"], plain["masks"].flip(-1))
    for box, mask in zip(target["boxes"], target["masks"], strict=True):
        cols = torch.nonzero(mask.any(0)).flatten()
        rows = torch.nonzero(mask.any(1)).flatten()
        # the mask's extent lies inside its box, touching it to within a pixel
        assert box[0] <= cols.min() + 1 and cols.max() + 1 <= box[2] + 1
        assert box[1] <= rows.min() + 1 and rows.max() + 1 <= box[3] + 1
        assert abs(float(box[0]) - float(cols.min())) <= 1 and abs(float(box[2]) - float(cols.max() + 1)) <= 1


def _raw_coco(data, index):
    from cca.data.common import image_to_tensor

    image, target = data.load(index)
    return image_to_tensor(image), target


# --- transforms ----------------------------------------------------------------------------------------


def _blocks(h: int = 24, w: int = 32) -> tuple[torch.Tensor, torch.Tensor]:
    """An image whose pixels encode their label: 4x4 blocks of class c have all channels 10 * c."""
    g = torch.Generator().manual_seed(7)
    coarse = torch.randint(0, 20, (h // 4, w // 4), generator=g)
    label = coarse.repeat_interleave(4, 0).repeat_interleave(4, 1)
    image = (label * 10).to(torch.uint8).expand(3, h, w).clone()
    return image, label


def _denormalise(image: torch.Tensor) -> torch.Tensor:
    mean, std = transforms.imagenet_mean_std()
    view = (3,) + (1,) * (image.dim() - 1)
    return (image * torch.tensor(std).view(view) + torch.tensor(mean).view(view)) * 255


def test_imagenet_stats_are_torchvisions():
    assert transforms.imagenet_mean_std() == ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))


def test_train_transform_same_geometry_for_image_and_label():
    image, label = _blocks()
    for seed in range(6):
        t = transforms.TrainTransform(
            crop_size=(16, 20), scale_range=(1.0, 1.0), generator=torch.Generator().manual_seed(seed)
        )
        out_image, out_label = t(image, label)
        assert out_image.shape == (3, 16, 20) and out_label.shape == (16, 20)
        torch.testing.assert_close(
            _denormalise(out_image), (out_label * 10).float().expand(3, 16, 20), atol=1e-3, rtol=0
        )


def test_train_transform_scaling_keeps_image_and_label_aligned():
    image, label = _blocks()
    t = transforms.TrainTransform(
        crop_size=(30, 40), scale_range=(1.3, 2.0), generator=torch.Generator().manual_seed(3)
    )
    out_image, out_label = t(image, label)
    pixels = _denormalise(out_image)[0]
    padded = torch.nn.functional.pad(out_label[None, None].float(), (1, 1, 1, 1), mode="replicate")[0, 0]
    uniform = torch.ones_like(out_label, dtype=torch.bool)
    for dy in range(3):
        for dx in range(3):
            uniform &= padded[dy : dy + 30, dx : dx + 40] == out_label.float()
    inside = uniform & (out_label != 255)
    assert inside.sum() > 300  # most pixels are block interiors
    torch.testing.assert_close(pixels[inside], out_label[inside].float() * 10, atol=1e-3, rtol=0)


def test_train_transform_scale_and_ignore_padding():
    image, label = _blocks(24, 32)
    t = transforms.TrainTransform(crop_size=(40, 40), scale_range=(0.5, 0.5), flip=False,
                                  generator=torch.Generator().manual_seed(0))  # fmt: skip
    out_image, out_label = t(image, label)
    valid = out_label != 255
    assert valid[:12, :16].all() and not valid[12:].any() and not valid[:, 16:].any()  # 12x16 top-left
    assert (out_image[:, ~valid] == 0).all()  # padding is 0 after normalisation (the mean colour)


def test_train_transform_is_reproducible_and_random():
    image, label = _blocks()

    def run(seed):
        t = transforms.TrainTransform(crop_size=16, generator=torch.Generator().manual_seed(seed))
        return t(image, label)

    a, b, c = run(1), run(1), run(2)
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    assert not torch.equal(a[0], c[0])
    torch.manual_seed(5)  # without a generator: torch's global RNG
    t = transforms.TrainTransform(crop_size=16)
    first = t(image, label)
    torch.manual_seed(5)
    assert torch.equal(first[1], t(image, label)[1])


def test_flip_swaps_paired_classes():
    image, label = _blocks()
    pairs = ((1, 2), (5, 9))
    flipped = unflipped = 0
    for seed in range(16):
        t = transforms.TrainTransform(crop_size=(24, 32), scale_range=(1.0, 1.0),
                                      generator=torch.Generator().manual_seed(seed))  # fmt: skip
        out_image, out_label = t(image, label, flip_pairs=pairs)
        if torch.equal(out_label, label):
            unflipped += 1
            continue
        flipped += 1
        expected = label.flip(-1).clone()
        for a, b in pairs:
            expected[label.flip(-1) == a], expected[label.flip(-1) == b] = b, a
        assert torch.equal(out_label, expected)
        torch.testing.assert_close(
            _denormalise(out_image), (label.flip(-1) * 10).float().expand(3, 24, 32), atol=1e-3, rtol=0
        )
    assert flipped and unflipped


def test_lip_dataset_passes_its_flip_pairs(roots):
    data = build_dataset("lip", roots["lip"], "val")
    raw_label = torch.from_numpy(data.load(0)[1])
    swapped = 0
    for seed in range(12):
        t = transforms.TrainTransform(crop_size=(64, 48), scale_range=(1.0, 1.0),
                                      generator=torch.Generator().manual_seed(seed))  # fmt: skip
        data.transform = t
        _, label = data[0]
        if not torch.equal(label, raw_label):
            expected = transforms.swap_pairs(raw_label.flip(-1), data.flip_pairs)
            assert torch.equal(label, expected)
            # the person's right arm (15) stays on the image's left side after the flip
            cols = torch.nonzero(label == 15)[:, 1].float().mean()
            assert cols < 24
            swapped += 1
    assert swapped


def test_clip_frames_share_the_geometry():
    image, label = _blocks()
    clip = torch.stack([image, image, image], dim=1)
    t1 = transforms.TrainTransform(crop_size=16, generator=torch.Generator().manual_seed(4))
    t2 = transforms.TrainTransform(crop_size=16, generator=torch.Generator().manual_seed(4))
    out_clip, out_label = t1(clip, label)
    out_image, out_label2 = t2(image, label)
    assert out_clip.shape == (3, 3, 16, 16)
    for t in range(3):
        torch.testing.assert_close(out_clip[:, t], out_image)
    assert torch.equal(out_label, out_label2)


def test_eval_transform_normalises_only():
    image, label = _blocks()
    out_image, out_label = transforms.EvalTransform()(image, label)
    torch.testing.assert_close(
        out_image.double(), imagenet_normalised(image.permute(1, 2, 0).numpy()), rtol=0, atol=1e-5
    )
    assert torch.equal(out_label, label)


@pytest.mark.parametrize(
    "kwargs,error",
    [
        ({"crop_size": 0}, ValueError),
        ({"crop_size": (1, 2, 3)}, TypeError),
        ({"crop_size": 8, "scale_range": (2.0, 1.0)}, ValueError),
        ({"crop_size": 8, "scale_range": (1.0, float("inf"))}, ValueError),  # refused at once, not at the first crop
        ({"crop_size": 8, "scale_range": (float("nan"), 1.0)}, ValueError),
        ({"crop_size": 8, "scale_range": (0.5, 1.0, 2.0)}, ValueError),
        ({"crop_size": 8, "scale_range": ("0.5", 1.0)}, TypeError),
        ({"crop_size": 8, "flip_pairs": ((1, 1),)}, ValueError),
        ({"crop_size": 8, "flip_pairs": ((1, 2), (2, 3))}, ValueError),
        ({"crop_size": 8, "generator": 3}, TypeError),
        ({"crop_size": 8, "std": (0.0, 1.0, 1.0)}, ValueError),
    ],
)
def test_train_transform_rejects_bad_arguments(kwargs, error):
    with pytest.raises(error):
        transforms.TrainTransform(**kwargs)


def test_transform_rejects_mismatched_inputs():
    image, label = _blocks()
    with pytest.raises(ValueError, match="label must be"):
        transforms.EvalTransform()(image, label[:-1])


# --- bad data ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", DATASETS)
def test_missing_root_names_path_and_layout(tmp_path, name):
    with pytest.raises(FileNotFoundError, match="Expected layout") as info:
        build_dataset(name, tmp_path / "nowhere", "train")
    assert "nowhere" in str(info.value)


def test_missing_split_directory(copy_of):
    root = copy_of("cityscapes")
    shutil.rmtree(root / "gtFine" / "val")
    with pytest.raises(FileNotFoundError, match=r"gtFine/val is not a directory. Expected layout:\n  ROOT/leftImg8bit"):
        build_dataset("cityscapes", root, "val")


@pytest.mark.parametrize("name", SEGMENTATION)
def test_image_without_label_is_an_error_or_counted_skip(copy_of, name):
    root = copy_of(name)
    data = build_dataset(name, root, "val")
    image_path, label_path = data.samples[1]
    label_path.unlink()
    with pytest.raises(FileNotFoundError, match="1 of 3 images have no label") as info:
        build_dataset(name, root, "val")
    assert str(label_path) in str(info.value)
    skipping = build_dataset(name, root, "val", missing_labels="skip")
    assert len(skipping) == 2 and skipping.skipped == [image_path]
    with pytest.raises(ValueError, match="missing_labels"):
        build_dataset(name, root, "val", missing_labels="ignore")


@pytest.mark.parametrize("name,bad_value", [("cityscapes", 34), ("ade20k", 151), ("lip", 20), ("camvid", 12)])
def test_label_value_outside_the_classes_names_the_file(copy_of, name, bad_value):
    root = copy_of(name)
    data = build_dataset(name, root, "val")
    label_path = data.samples[0][1]
    raw = read_pil(label_path)
    raw[0, :3] = bad_value
    Image.fromarray(raw).save(label_path)
    with pytest.raises(DataFileError, match=rf"{label_path.name}.*\[{bad_value}\]"):
        data[0]
    assert [i for i, _ in data.find_bad_samples()] == [0]
    raw[0, :3] = 255  # raw 255 is ignore for ADE20K, LIP and CamVid; not a Cityscapes labelId
    Image.fromarray(raw).save(label_path)
    if name == "cityscapes":
        with pytest.raises(DataFileError, match=r"\[255\]"):
            data[0]
    else:
        assert (data[0][1][0, :3] == 255).all()


@pytest.mark.parametrize("which", ["image", "label"])
def test_truncated_png_names_the_file(copy_of, which):
    root = copy_of("cityscapes")
    data = build_dataset("cityscapes", root, "train")
    path = data.samples[2][0 if which == "image" else 1]
    blob = path.read_bytes()
    path.write_bytes(blob[: len(blob) // 2])
    with pytest.raises(DataFileError, match=rf"cannot read {path}.*truncated"):
        data[2]
    bad = data.find_bad_samples()
    assert [i for i, _ in bad] == [2] and str(path) in bad[0][1]


def test_rgb_label_and_size_mismatch_are_errors(copy_of):
    root = copy_of("camvid")
    data = build_dataset("camvid", root, "val")
    label_path = data.samples[0][1]
    raw = read_pil(label_path)
    Image.fromarray(np.stack([raw] * 3, -1)).save(label_path)
    with pytest.raises(DataFileError, match="mode 'RGB'"):
        data[0]
    Image.fromarray(raw[:-2]).save(label_path)
    with pytest.raises(DataFileError, match=r"is 46x64 \(HxW\) but its image"):
        data[0]


def test_coco_bad_data(copy_of):
    root = copy_of("coco")
    data = build_dataset("coco", root, "val")
    path = root / "val2017" / data.coco.imgs[data.ids[0]]["file_name"]
    path.unlink()
    with pytest.raises(FileNotFoundError, match=str(path.name)):
        data[0]
    (root / "annotations" / "instances_val2017.json").unlink()
    with pytest.raises(FileNotFoundError, match="instances_val2017.json"):
        build_dataset("coco", root, "val")


def test_lip_id_without_image(copy_of):
    root = copy_of("lip")
    ids = (root / "val_id.txt").read_text().split()
    (root / "val_images" / f"{ids[0]}.jpg").unlink()
    with pytest.raises(FileNotFoundError, match="have no image"):
        build_dataset("lip", root, "val")
