"""Evaluation on one process or many: sharded without padding, confusion matrix summed over ranks.

``evaluate_model`` is the loop the trainer calls; ``evaluate`` loads a checkpoint (its config comes
with it), evaluates and writes ``metrics.json`` with per-class IoU. Under ``torchrun`` every rank
evaluates ``indices[rank::world_size]`` (no sample twice, unlike a padded ``DistributedSampler``)
and ``ConfusionMatrix.all_reduce`` sums the counts, so 1 and N processes give the same numbers.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset
from tqdm.auto import tqdm

from cca.engine import builders, checkpoint, distributed, runlog
from cca.engine.config import ExperimentConfig, apply_overrides, config_from_dict
from cca.engine.inference import predict
from cca.engine.metrics import ConfusionMatrix
from cca.engine.sampling import ShardSampler
from cca.provenance import provenance

log = logging.getLogger("cca.engine")


def eval_window(cfg: ExperimentConfig) -> tuple[tuple[int, int], tuple[int, int]]:
    """``(crop, stride)`` of the sliding window: ``eval_crop`` or the training crop, stride ``ceil(2/3 crop)``."""
    crop = tuple(cfg.eval_crop or cfg.crop_size)
    stride = tuple(cfg.eval_stride or tuple(math.ceil(2 * c / 3) for c in crop))
    return crop, stride  # type: ignore[return-value]


def evaluate_model(
    model: nn.Module,
    dataset: Dataset,
    cfg: ExperimentConfig,
    info: distributed.DistInfo | None = None,
    *,
    desc: str = "eval",
) -> dict[str, Any]:
    """mIoU etc. of ``model`` on ``dataset`` with ``cfg``'s eval settings, summed over all ranks.

    Returns ``ConfusionMatrix.compute()`` (``miou``, ``iou`` list, ``pixel_acc``, ``mean_acc``) plus
    ``num_images``. Every rank must call it (the counts are all-reduced).
    """
    if info is None:
        info = distributed.DistInfo(device=next(model.parameters()).device)
    device = info.device
    crop, stride = eval_window(cfg)
    amp_dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(cfg.amp) if device.type == "cuda" else None
    loader = DataLoader(
        dataset,
        batch_size=1,
        sampler=ShardSampler(len(dataset), info.rank, info.world_size),  # type: ignore[arg-type]
        num_workers=cfg.num_workers,
        pin_memory=device.type == "cuda",
    )
    matrix = ConfusionMatrix(dataset.num_classes, ignore_index=dataset.ignore_index)  # type: ignore[attr-defined]
    count = torch.zeros((), dtype=torch.long, device=device)
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode(), torch.autocast(device.type, dtype=amp_dtype or torch.float32, enabled=amp_dtype is not None):
            for image, target in tqdm(loader, desc=desc, disable=not info.is_main, leave=False, dynamic_ncols=True):
                logits = predict(
                    model,
                    image.to(device, non_blocking=True),
                    mode=cfg.eval_mode,
                    crop=crop,
                    stride=stride,
                    scales=tuple(cfg.eval_scales),
                    flip=cfg.eval_flip,
                    flip_pairs=getattr(dataset, "flip_pairs", None),
                )
                matrix.update(logits.argmax(1), target.to(device, non_blocking=True))
                count += image.shape[0]
    finally:
        model.train(was_training)
    matrix.all_reduce()
    distributed.all_reduce_sum(count)
    result = dict(matrix.compute())
    result["num_images"] = int(count)
    return result


def metrics_payload(result: dict[str, Any], dataset: Dataset, cfg: ExperimentConfig) -> dict[str, Any]:
    """The ``metrics.json`` body: summary numbers, IoU (and accuracy) per class name, the eval settings used.

    A class absent from both ground truth and predictions has IoU NaN (written as ``null``), as in
    ``ConfusionMatrix.compute``.
    """
    names = list(getattr(dataset, "class_names", None) or [str(i) for i in range(len(result["iou"]))])
    iou = [float(v) for v in result["iou"]]
    if len(names) != len(iou):
        raise ValueError(f"dataset has {len(names)} class names but the confusion matrix {len(iou)} classes")
    per_class = {"iou": dict(zip(names, iou, strict=True))}
    if "acc" in result:
        per_class["acc"] = dict(zip(names, (float(v) for v in result["acc"]), strict=True))
    crop, stride = eval_window(cfg)
    return {
        "config": cfg.name,
        "dataset": cfg.dataset,
        "split": cfg.val_split,
        "miou": float(result["miou"]),
        "pixel_acc": float(result["pixel_acc"]),
        "mean_acc": float(result["mean_acc"]),
        "num_images": int(result["num_images"]),
        "num_pixels": result.get("num_pixels"),
        **per_class,
        "eval": {
            "mode": cfg.eval_mode,
            "crop": list(crop),
            "stride": list(stride),
            "scales": list(cfg.eval_scales),
            "flip": cfg.eval_flip,
        },
    }


def evaluate(
    source: ExperimentConfig | str | Path,
    *,
    checkpoint_path: str | Path | None = None,
    overrides: list[str] | dict[str, Any] | None = None,
    output_dir: str | Path | None = None,
) -> dict[str, Any]:
    """Evaluate a checkpoint and write ``metrics.json``; returns its contents.

    ``source`` is a checkpoint path (its saved config is used) or a config (then ``checkpoint_path``,
    default ``run_dir/best.pt`` else ``run_dir/last.pt``). ``overrides`` change settings (eval mode,
    scales, data root, ...). ``metrics.json`` goes to ``output_dir`` (default: the checkpoint's directory).
    """
    if isinstance(source, ExperimentConfig):
        cfg = source
        if checkpoint_path is None:
            best, last = cfg.run_dir / "best.pt", cfg.run_dir / "last.pt"
            checkpoint_path = best if best.is_file() else last
    else:
        checkpoint_path = source
    state = checkpoint.load(checkpoint_path, map_location="cpu")
    if isinstance(source, (str, Path)):
        if "config" not in state:
            raise checkpoint.CheckpointError(
                f"{checkpoint_path} has no saved config (it was not written by `python -m cca train`); evaluate it "
                "from Python with evaluate(config, checkpoint_path=...)"
            )
        cfg = config_from_dict(state["config"])
    cfg = apply_overrides(cfg, overrides or {})
    out_dir = Path(output_dir) if output_dir is not None else Path(checkpoint_path).parent

    info = distributed.setup(cfg.device)
    try:
        builders.ensure_synthetic_data(cfg, info)
        dataset = builders.build_val_set(cfg)
        model = builders.build_model(cfg, dataset.num_classes)
        model.load_state_dict(state["model"] if "model" in state else state)
        model.to(info.device)
        result = evaluate_model(model, dataset, cfg, info, desc=f"eval {Path(checkpoint_path).name}")
        payload = {
            **metrics_payload(result, dataset, cfg),
            "checkpoint": str(checkpoint_path),
            "iteration": state.get("iteration"),
            "world_size": info.world_size,
            "provenance": provenance(info.device),
        }
        if info.is_main:
            path = runlog.write_json(out_dir / "metrics.json", payload)
            log.info("mIoU %.4f on %d images -> %s", payload["miou"], payload["num_images"], path)
        return payload
    finally:
        distributed.cleanup(info)
