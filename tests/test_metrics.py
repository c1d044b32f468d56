"""Confusion-matrix metrics against direct computations and against cityscapesscripts; COCO AP."""

from __future__ import annotations

import copy
import json
import math
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch
from PIL import Image

from cca.data import build_dataset, synthetic
from cca.engine.metrics import ConfusionMatrix, evaluate_coco, to_coco_results


def direct_metrics(pred: np.ndarray, target: np.ndarray, k: int, ignore: int = 255) -> dict:
    """float64 per-class loops: IoU over classes present in gt or pred, accuracies."""
    keep = target != ignore
    p, t = pred[keep], target[keep]
    iou, acc = [], []
    for c in range(k):
        inter = np.sum((p == c) & (t == c))
        union = np.sum((p == c) | (t == c))
        iou.append(inter / union if union else math.nan)
        acc.append(inter / np.sum(t == c) if np.sum(t == c) else math.nan)
    return {
        "iou": iou,
        "acc": acc,
        "miou": float(np.nanmean(iou)),
        "mean_acc": float(np.nanmean(acc)),
        "pixel_acc": float(np.mean(p == t)),
    }


def random_batch(g: torch.Generator, k: int, shape=(2, 17, 23)) -> tuple[torch.Tensor, torch.Tensor]:
    target = torch.randint(0, k, shape, generator=g)
    target[torch.rand(shape, generator=g) < 0.2] = 255
    pred = torch.where(
        torch.rand(shape, generator=g) < 0.6, target.clamp(max=k - 1), torch.randint(0, k, shape, generator=g)
    )
    return pred, target


def test_matches_direct_computation():
    g = torch.Generator().manual_seed(0)
    k = 7
    matrix = ConfusionMatrix(k)
    preds, targets = [], []
    for _ in range(3):
        pred, target = random_batch(g, k - 2)  # classes 5, 6 never occur in gt...
        pred[0, 0, :4] = 6  # ...6 is predicted (IoU 0), 5 is absent from both (NaN)
        target[0, 0, :4] = torch.where(target[0, 0, :4] == 255, 0, target[0, 0, :4])
        matrix.update(pred, target)
        preds.append(pred.numpy().ravel())
        targets.append(target.numpy().ravel())
    got = matrix.compute()
    want = direct_metrics(np.concatenate(preds), np.concatenate(targets), k)
    assert math.isnan(got["iou"][5]) and got["iou"][6] == 0.0
    np.testing.assert_allclose(got["iou"], want["iou"], rtol=1e-12)
    np.testing.assert_allclose(got["acc"], want["acc"], rtol=1e-12)
    for key in ("miou", "mean_acc", "pixel_acc"):
        assert got[key] == pytest.approx(want[key], rel=1e-12), key
    assert got["miou"] == pytest.approx(np.mean([v for v in want["iou"] if not math.isnan(v)]), rel=1e-12)
    assert got["num_pixels"] == int(sum((t != 255).sum() for t in targets))


def test_update_accepts_any_layout_and_reset():
    g = torch.Generator().manual_seed(1)
    pred, target = random_batch(g, 4)
    a, b = ConfusionMatrix(4), ConfusionMatrix(4)
    a.update(pred, target)
    b.update(pred.flatten(), target.flatten().to(torch.uint8))
    assert torch.equal(a.matrix, b.matrix)
    a.reset()
    assert a.matrix.sum() == 0 and math.isnan(a.compute()["miou"])


@pytest.mark.parametrize(
    "pred,target,error,match",
    [
        (torch.zeros(2, 3, dtype=torch.long), torch.zeros(3, 2, dtype=torch.long), ValueError, "same shape"),
        (torch.zeros(2, 3), torch.zeros(2, 3, dtype=torch.long), TypeError, "argmax"),
        (torch.zeros(4, dtype=torch.long), torch.tensor([0, 1, 9, 255]), ValueError, r"target has values \[9\]"),
        (torch.tensor([0, 5, 1, 1]), torch.tensor([0, 1, 2, 255]), ValueError, r"pred has values \[5\]"),
    ],
)
def test_bad_input(pred, target, error, match):
    with pytest.raises(error, match=match):
        ConfusionMatrix(4).update(pred, target)


def test_prediction_on_ignored_pixels_counts_nowhere():
    matrix = ConfusionMatrix(3)
    matrix.update(torch.tensor([0, 2, 2]), torch.tensor([0, 255, 255]))
    result = matrix.compute()
    assert result["iou"][0] == 1.0 and math.isnan(result["iou"][2]) and result["miou"] == 1.0


def test_to_json(tmp_path):
    matrix = ConfusionMatrix(3)
    matrix.update(torch.tensor([0, 1, 1]), torch.tensor([0, 1, 0]))
    path = matrix.to_json(tmp_path / "out" / "m.json", ["a", "b", "c"])
    data = json.loads(path.read_text())
    assert data["iou"] == {"a": 0.5, "b": 0.5, "c": None} and data["miou"] == 0.5
    assert data["pixel_acc"] == pytest.approx(2 / 3) and data["num_pixels"] == 3
    with pytest.raises(ValueError, match="class_names has 2 names"):
        matrix.to_json(tmp_path / "x.json", ["a", "b"])


def test_all_reduce_without_distributed_is_a_no_op():
    matrix = ConfusionMatrix(3)
    matrix.update(torch.tensor([0, 1]), torch.tensor([0, 1]))
    before = matrix.matrix.clone()
    matrix.all_reduce()
    assert torch.equal(matrix.matrix, before)


ALL_REDUCE_SCRIPT = textwrap.dedent(
    """
    import sys, torch, torch.distributed as dist, torch.multiprocessing as mp
    from cca.engine.metrics import ConfusionMatrix

    def worker(rank, world, init, out):
        dist.init_process_group("gloo", init_method=init, rank=rank, world_size=world)
        matrix = ConfusionMatrix(3)
        if rank == 0:
            matrix.update(torch.tensor([0, 1, 2]), torch.tensor([0, 1, 1]))
        else:
            matrix.update(torch.tensor([2, 2]), torch.tensor([2, 0]))
        matrix.all_reduce()
        torch.save(matrix.matrix, f"{out}.{rank}")
        dist.destroy_process_group()

    if __name__ == "__main__":
        init, out = sys.argv[1], sys.argv[2]
        mp.start_processes(worker, args=(2, init, out), nprocs=2, start_method="fork")
    """
)


def test_all_reduce_sums_over_processes(tmp_path):
    script = tmp_path / "reduce.py"
    script.write_text(ALL_REDUCE_SCRIPT)
    out = tmp_path / "matrix.pt"
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")
    }
    cmd = [sys.executable, str(script), f"file://{tmp_path / 'store'}", str(out)]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=180, env={**env, "CCA_BACKEND": "reference"})
    assert done.returncode == 0, done.stderr[-2000:]
    expected = torch.zeros(3, 3, dtype=torch.long)
    for t, p in [(0, 0), (1, 1), (1, 2), (2, 2), (0, 2)]:
        expected[t, p] += 1
    for rank in range(2):  # every rank holds the sum
        assert torch.equal(torch.load(f"{out}.{rank}"), expected)


def test_all_reduce_in_a_single_process_group(tmp_path):
    import torch.distributed as dist

    assert not dist.is_initialized()
    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'store'}", rank=0, world_size=1)
    try:
        matrix = ConfusionMatrix(2)
        matrix.update(torch.tensor([0, 1, 1]), torch.tensor([0, 1, 0]))
        before = matrix.matrix.clone()
        matrix.all_reduce()
        assert torch.equal(matrix.matrix, before)
        idle = ConfusionMatrix(2)  # a rank without data still takes part, with zeros
        idle.all_reduce()
        assert idle.matrix.sum() == 0 and math.isnan(idle.compute()["miou"])
    finally:
        dist.destroy_process_group()


# --- against cityscapesscripts --------------------------------------------------------------------------


def test_cityscapes_miou_equals_cityscapesscripts(tmp_path):
    from cityscapesscripts.evaluation import evalPixelLevelSemanticLabeling as cs_eval

    from cca.data.cityscapes import train_id_to_label_id

    root = synthetic.write("cityscapes", tmp_path / "cityscapes", num_train=1, num_val=4, seed=5)
    data = build_dataset("cityscapes", root, "val")
    to_label_id = train_id_to_label_id()
    g = torch.Generator().manual_seed(0)
    matrix = ConfusionMatrix(19)
    pred_files, gt_files = [], []
    for i in range(len(data)):
        _, target = data[i]
        # mostly right, some pixels wrong, classes absent from the gt predicted here and there,
        # arbitrary predictions on ignored pixels (which must count nowhere)
        pred = torch.where(target == 255, torch.randint(0, 19, target.shape, generator=g), target)
        wrong = torch.rand(target.shape, generator=g) < 0.25
        pred[wrong] = torch.randint(0, 19, (int(wrong.sum()),), generator=g)
        matrix.update(pred, target)
        gt_path = data.samples[i][1]
        stem = gt_path.name[: -len("_gtFine_labelIds.png")]
        pred_path = tmp_path / "pred" / f"{stem}_pred.png"
        pred_path.parent.mkdir(exist_ok=True)
        Image.fromarray(to_label_id[pred.numpy()].astype(np.uint8)).save(pred_path)
        pred_files.append(str(pred_path))
        gt_files.append(str(gt_path))

    args = copy.copy(cs_eval.args)
    args.cityscapesPath = str(root)
    args.predictionPath = str(tmp_path / "pred")
    args.evalInstLevelScore = False
    args.evalPixelAccuracy = False
    args.JSONOutput = False
    args.quiet = True
    args.colorized = False
    args.bold = args.nocol = ""
    result = cs_eval.evaluateImgLists(pred_files, gt_files, args)

    ours = matrix.compute()
    theirs = result["classScores"]
    nan_classes = 0
    for train_id, name in enumerate(data.class_names):
        if math.isnan(theirs[name]):
            assert math.isnan(ours["iou"][train_id]), name
            nan_classes += 1
        else:
            assert ours["iou"][train_id] == pytest.approx(theirs[name], abs=1e-12), name
    assert 0 < nan_classes < 19 or all(not math.isnan(v) for v in ours["iou"])
    assert ours["miou"] == pytest.approx(result["averageScoreClasses"], abs=1e-12)
    assert 0.1 < ours["miou"] < 0.95  # a non-trivial case


# --- COCO AP --------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def coco(tmp_path_factory):
    root = synthetic.write("coco", tmp_path_factory.mktemp("coco") / "coco", num_train=8, num_val=2, seed=2)
    return build_dataset("coco", root, "train", skip_empty=False)


def _perfect(data) -> dict[int, dict]:
    outputs = {}
    for i in range(len(data)):
        target = data.target(data.ids[i])
        k = len(target["labels"])
        outputs[data.ids[i]] = {
            "boxes": target["boxes"],
            "labels": target["labels"],
            "scores": torch.linspace(1.0, 0.5, k),
            "masks": target["masks"][:, None].float() * 0.9,  # (K, 1, H, W) probabilities
        }
    return outputs


@pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")
def test_coco_ap_of_perfect_predictions_is_one(coco):
    result = evaluate_coco(_perfect(coco), coco.coco, coco.label_to_cat_id)
    assert result["bbox_ap"] == pytest.approx(1.0) and result["segm_ap"] == pytest.approx(1.0)
    assert result["bbox_ap50"] == pytest.approx(1.0) and result["num_detections"] > 0


@pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")
def test_coco_ap_without_one_category(coco):
    """Dropping every detection of one category: its AP is 0, the others 1; the mean is direct."""
    outputs = _perfect(coco)
    present = sorted({int(label) for o in outputs.values() for label in o["labels"]})
    dropped = present[0]
    for out in outputs.values():
        keep = out["labels"] != dropped
        for key in ("boxes", "labels", "scores", "masks"):
            out[key] = out[key][keep]
    result = evaluate_coco(outputs, coco.coco, coco.label_to_cat_id)
    expected = (len(present) - 1) / len(present)
    assert result["bbox_ap"] == pytest.approx(expected) and result["segm_ap"] == pytest.approx(expected)


@pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")
def test_coco_results_format_and_empty_predictions(coco):
    outputs = [{"image_id": 7, "boxes": torch.tensor([[1.0, 2.0, 11.0, 22.0]]), "scores": torch.tensor([0.5]),
                "labels": torch.tensor([2])}]  # fmt: skip
    results = to_coco_results(outputs, [0, 1, 3])
    assert results == [{"image_id": 7, "category_id": 3, "bbox": [1.0, 2.0, 10.0, 20.0], "score": 0.5}]
    empty = evaluate_coco({}, coco.coco, coco.label_to_cat_id)
    assert empty["bbox_ap"] == 0.0 and empty["segm_ap"] == 0.0 and empty["num_detections"] == 0
    with pytest.raises(ValueError, match="no 'masks'"):
        evaluate_coco(outputs, coco.coco, [0, 1, 3])
    with pytest.raises(ValueError, match="iou_types"):
        evaluate_coco({}, coco.coco, iou_types=("keypoints",))
