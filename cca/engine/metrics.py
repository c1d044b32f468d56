"""Segmentation metrics from a confusion matrix (on the device, summed over processes) and COCO AP.

:class:`ConfusionMatrix` counts ``matrix[gt, pred]`` over every pixel whose ground truth is not
``ignore_index`` (predictions on ignored pixels count nowhere, as in ``cityscapesscripts``). From it:

* ``iou[c] = tp / (tp + fp + fn)``; a class absent from both the ground truth and the predictions has
  ``0 / 0``: it is reported as NaN and left out of ``miou`` (the mean over the other classes). A class
  predicted but absent from the ground truth has IoU 0 and counts. This is exactly the rule of
  ``cityscapesscripts.evaluation.evalPixelLevelSemanticLabeling`` (NaN scores skipped in the average).
* ``acc[c] = tp / (tp + fn)`` (NaN for a class absent from the ground truth), ``mean_acc`` its nan-mean;
  ``pixel_acc = sum(tp) / labelled pixels``.

:func:`evaluate_coco` runs ``pycocotools.cocoeval.COCOeval`` on detector outputs.
"""

from __future__ import annotations

import contextlib
import io
import math
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from cca._io import atomic_write_json


class ConfusionMatrix:
    """``(num_classes, num_classes)`` int64 counts, rows ground truth, columns prediction.

    ``update(pred, target)`` takes class indices of the same shape (e.g. ``(N, H, W)``: ``logits.argmax(1)``);
    the matrix lives on the device of the first update (or ``device``).
    """

    def __init__(self, num_classes: int, ignore_index: int = 255, device: torch.device | str | None = None) -> None:
        if not isinstance(num_classes, int) or num_classes < 1:
            raise ValueError(f"num_classes must be a positive int, got {num_classes!r}")
        self.num_classes = num_classes
        self.ignore_index = ignore_index
        self.matrix: torch.Tensor | None = None
        if device is not None:
            self.matrix = torch.zeros(num_classes, num_classes, dtype=torch.int64, device=device)

    def reset(self) -> None:
        if self.matrix is not None:
            self.matrix.zero_()

    def _counts(self) -> torch.Tensor:
        if self.matrix is None:
            return torch.zeros(self.num_classes, self.num_classes, dtype=torch.int64)
        return self.matrix

    @torch.no_grad()
    def update(self, pred: torch.Tensor, target: torch.Tensor) -> None:
        """Add the pixels of ``pred`` and ``target`` (integer tensors of one shape, any layout)."""
        if not isinstance(pred, torch.Tensor) or not isinstance(target, torch.Tensor):
            raise TypeError(f"pred and target must be tensors, got {type(pred).__name__} and {type(target).__name__}")
        if pred.is_floating_point() or target.is_floating_point():
            raise TypeError(
                f"pred and target must hold class indices (integer dtype), got {pred.dtype} and {target.dtype}; "
                "pass logits.argmax(1)"
            )
        if pred.shape != target.shape:
            raise ValueError(
                f"pred and target must have the same shape, got {tuple(pred.shape)} and {tuple(target.shape)}"
            )
        if self.matrix is None:
            self.matrix = torch.zeros(self.num_classes, self.num_classes, dtype=torch.int64, device=target.device)
        k = self.num_classes
        target = target.to(self.matrix.device).reshape(-1).long()
        pred = pred.to(self.matrix.device).reshape(-1).long()
        keep = target != self.ignore_index
        target, pred = target[keep], pred[keep]
        if target.numel() == 0:
            return
        bad_t = (target < 0) | (target >= k)
        bad_p = (pred < 0) | (pred >= k)
        if bool((bad_t | bad_p).any()):  # one device sync per update
            which, values = ("target", target[bad_t]) if bool(bad_t.any()) else ("pred", pred[bad_p])
            raise ValueError(
                f"{which} has values {torch.unique(values)[:10].tolist()} outside 0..{k - 1} "
                f"(num_classes={k}, ignore_index={self.ignore_index})"
            )
        self.matrix += torch.bincount(target * k + pred, minlength=k * k).reshape(k, k)

    def all_reduce(self) -> None:
        """Sum the counts over all processes (``torch.distributed``); nothing to do when not initialised."""
        import torch.distributed as dist

        if not (dist.is_available() and dist.is_initialized()):
            return
        if self.matrix is None:  # a rank that saw no data still has to take part
            device = torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else "cpu"
            self.matrix = torch.zeros(self.num_classes, self.num_classes, dtype=torch.int64, device=device)
        dist.all_reduce(self.matrix, op=dist.ReduceOp.SUM)

    def compute(self) -> dict[str, Any]:
        """``{"miou", "iou" (list, NaN: class absent from gt and pred), "pixel_acc", "acc" (list),
        "mean_acc", "num_pixels"}`` as Python floats (see the module docstring)."""
        m = self._counts().double().cpu()
        tp = m.diag()
        gt = m.sum(1)
        pred = m.sum(0)
        union = gt + pred - tp
        nan = torch.tensor(float("nan"), dtype=torch.float64)
        iou = torch.where(union > 0, tp / union.clamp_min(1), nan)
        acc = torch.where(gt > 0, tp / gt.clamp_min(1), nan)
        total = float(m.sum())
        return {
            "miou": _nanmean(iou),
            "iou": iou.tolist(),
            "pixel_acc": float(tp.sum()) / total if total > 0 else math.nan,
            "acc": acc.tolist(),
            "mean_acc": _nanmean(acc),
            "num_pixels": int(total),
        }

    def to_json(self, path: str | Path, class_names: Sequence[str] | None = None) -> Path:
        """Write ``compute()`` to ``path`` with per-class values keyed by ``class_names`` (NaN -> null)."""
        result = self.compute()
        names = list(class_names) if class_names is not None else [str(i) for i in range(self.num_classes)]
        if len(names) != self.num_classes:
            raise ValueError(f"class_names has {len(names)} names, expected num_classes={self.num_classes}")
        payload = {
            "miou": _json_float(result["miou"]),
            "pixel_acc": _json_float(result["pixel_acc"]),
            "mean_acc": _json_float(result["mean_acc"]),
            "num_pixels": result["num_pixels"],
            "iou": {n: _json_float(v) for n, v in zip(names, result["iou"], strict=True)},
            "acc": {n: _json_float(v) for n, v in zip(names, result["acc"], strict=True)},
        }
        return atomic_write_json(path, payload)


def _nanmean(values: torch.Tensor) -> float:
    valid = values[~torch.isnan(values)]
    return float(valid.mean()) if valid.numel() else math.nan


def _json_float(value: float) -> float | None:
    return None if math.isnan(value) else float(value)


# --- COCO --------------------------------------------------------------------------------------------

COCO_STAT_NAMES = ("ap", "ap50", "ap75", "ap_small", "ap_medium", "ap_large",
                   "ar1", "ar10", "ar100", "ar_small", "ar_medium", "ar_large")  # fmt: skip


def to_coco_results(
    predictions: Mapping[int, Mapping[str, torch.Tensor]] | Iterable[Mapping[str, Any]],
    label_to_cat_id: Sequence[int] | None = None,
    mask_threshold: float = 0.5,
) -> list[dict]:
    """Detector outputs -> COCO result dicts (``bbox`` xywh, ``segmentation`` compressed RLE, ``score``).

    ``predictions``: ``{image_id: output}`` or outputs carrying ``"image_id"``; each output holds
    torchvision's ``boxes (K, 4)`` xyxy, ``scores (K,)``, ``labels (K,)`` (contiguous, mapped back through
    ``label_to_cat_id``; ``None``: labels are category ids) and optionally ``masks (K, 1, H, W)`` or
    ``(K, H, W)``, probabilities thresholded at ``mask_threshold`` (binary masks pass unchanged).
    """
    from pycocotools import mask as mask_util

    items = predictions.items() if isinstance(predictions, Mapping) else ((p["image_id"], p) for p in predictions)
    results = []
    for image_id, out in items:
        boxes = out["boxes"].detach().double().cpu().reshape(-1, 4)
        scores = out["scores"].detach().double().cpu().reshape(-1)
        labels = out["labels"].detach().cpu().reshape(-1).tolist()
        masks = out.get("masks")
        if masks is not None:
            masks = masks.detach().cpu()
            if masks.dim() == 4:
                masks = masks[:, 0]
            masks = (masks > mask_threshold if masks.is_floating_point() else masks > 0).numpy().astype(np.uint8)
        for k, label in enumerate(labels):
            x1, y1, x2, y2 = boxes[k].tolist()
            cat = int(label_to_cat_id[label]) if label_to_cat_id is not None else int(label)
            entry = {"image_id": int(image_id), "category_id": cat, "bbox": [x1, y1, x2 - x1, y2 - y1],
                     "score": float(scores[k])}  # fmt: skip
            if masks is not None:
                rle = mask_util.encode(np.asfortranarray(masks[k]))
                rle["counts"] = rle["counts"].decode("ascii")
                entry["segmentation"] = rle
            results.append(entry)
    return results


def evaluate_coco(
    predictions: Mapping[int, Mapping[str, torch.Tensor]] | Iterable[Mapping[str, Any]],
    coco_gt,
    label_to_cat_id: Sequence[int] | None = None,
    iou_types: Sequence[str] = ("bbox", "segm"),
    mask_threshold: float = 0.5,
) -> dict[str, float]:
    """COCO AP of detector outputs (see :func:`to_coco_results`) against ``coco_gt`` (a pycocotools
    ``COCO``, e.g. ``dataset.coco``), over the images of ``coco_gt``.

    Returns ``{"bbox_ap", "bbox_ap50", "bbox_ap75", "bbox_ap_small", ..., "bbox_ar100", ..., "segm_ap", ...}``
    (``COCOeval.stats``, fractions in [0, 1]; -1 where COCO defines no value, e.g. no object of that size)
    and ``num_detections``. No detection at all gives AP 0 where the ground truth has objects (pycocotools'
    ``loadRes`` cannot take an empty list; an empty result set is built instead).
    """
    from pycocotools.cocoeval import COCOeval

    for iou_type in iou_types:
        if iou_type not in ("bbox", "segm"):
            raise ValueError(f"iou_types must contain 'bbox' and/or 'segm', got {iou_type!r}")
    results = to_coco_results(predictions, label_to_cat_id, mask_threshold)
    if "segm" in iou_types and results and "segmentation" not in results[0]:
        raise ValueError("iou_types has 'segm' but the predictions have no 'masks'")
    out: dict[str, float] = {"num_detections": float(len(results))}
    for iou_type in iou_types:
        with contextlib.redirect_stdout(io.StringIO()):
            coco_dt = coco_gt.loadRes(results) if results else _empty_results(coco_gt)
            evaluator = COCOeval(coco_gt, coco_dt, iou_type)
            evaluator.params.imgIds = sorted(coco_gt.getImgIds())
            evaluator.evaluate()
            evaluator.accumulate()
            evaluator.summarize()
        stats = [float(s) for s in evaluator.stats]
        out.update({f"{iou_type}_{name}": value for name, value in zip(COCO_STAT_NAMES, stats, strict=True)})
    return out


def _empty_results(coco_gt):
    from pycocotools.coco import COCO

    coco_dt = COCO()
    coco_dt.dataset = {"images": list(coco_gt.dataset["images"]), "categories": list(coco_gt.dataset["categories"]),
                       "annotations": []}  # fmt: skip
    coco_dt.createIndex()
    return coco_dt
