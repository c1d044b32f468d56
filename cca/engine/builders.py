"""Settings -> objects: datasets (writing synthetic data on first use), model, criterion, optimiser.

The one place a run's settings become objects, for every training loop (the segmentation engine, the 3D
video loop on clips, Mask R-CNN): a setting read here is honoured by all of them. ``VideoConfig`` with the
clip model (``ccnet3d``) gets clip datasets; ``DetectionConfig`` gets COCO-layout datasets and Mask R-CNN.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch
from torch import nn

from cca import models
from cca.data import build_dataset, synthetic, transforms
from cca.engine import distributed
from cca.engine.config import DetectionConfig, ExperimentConfig, VideoConfig
from cca.losses import CategoryConsistentLoss, CCNetCriterion

log = logging.getLogger("cca.engine")


def ensure_synthetic_data(cfg: ExperimentConfig, info: distributed.DistInfo | None = None) -> None:
    """With ``cfg.synthetic``, write synthetic ``cfg.dataset``-format data to ``cfg.data_root`` unless it is there.

    Local rank 0 writes (``cca.data.synthetic.write``: atomic, a no-op when the same data set exists,
    ``FileExistsError`` when the directory holds something else); the other ranks wait.
    """
    if not cfg.synthetic:
        return
    if info is None or info.local_rank == 0:  # None: a single-process loop
        root = Path(cfg.data_root)
        if not root.is_dir() or not any(root.iterdir()):
            log.info("writing synthetic %s data to %s", cfg.dataset, root)
        synthetic.write(
            cfg.dataset,
            root,
            num_train=cfg.synthetic_num_train,
            num_val=cfg.synthetic_num_val,
            size=tuple(cfg.synthetic_size),
            seed=cfg.seed,
        )
    distributed.barrier()


def _clips(cfg: ExperimentConfig) -> dict[str, int]:
    """``{"clip_length": T}`` for the clip model of a video run (datasets of ``(3, T, H, W)`` clips), else ``{}``."""
    return {"clip_length": cfg.clip_length} if isinstance(cfg, VideoConfig) and cfg.model == "ccnet3d" else {}


def build_train_set(cfg: ExperimentConfig):
    if isinstance(cfg, DetectionConfig):
        return build_dataset(cfg.dataset, cfg.data_root, cfg.train_split, transform=transforms.DetectionTransform(flip=cfg.flip))
    transform = transforms.TrainTransform(crop_size=tuple(cfg.crop_size), scale_range=tuple(cfg.scale_range), flip=cfg.flip)
    return build_dataset(cfg.dataset, cfg.data_root, cfg.train_split, transform=transform, **_clips(cfg))


def build_val_set(cfg: ExperimentConfig):
    if isinstance(cfg, DetectionConfig):
        return build_dataset(cfg.dataset, cfg.data_root, cfg.val_split)
    return build_dataset(cfg.dataset, cfg.data_root, cfg.val_split, transform=transforms.EvalTransform(), **_clips(cfg))


def build_model(cfg: ExperimentConfig, num_classes: int) -> nn.Module:
    """The segmentor of ``cfg.model`` (with the CCL projection when ``ccl_channels`` is set), or Mask R-CNN
    (with RCCA when ``rcca``) for a :class:`DetectionConfig`."""
    if isinstance(cfg, DetectionConfig):
        return models.build_mask_rcnn(
            num_classes, backbone=cfg.backbone, rcca=cfg.rcca, recurrence=cfg.recurrence, pretrained=cfg.pretrained,
            min_size=cfg.min_size, max_size=cfg.max_size,
        )
    extra = {} if cfg.ccl_channels is None else {"ccl_channels": cfg.ccl_channels}
    return models.build(
        cfg.model, num_classes, backbone=cfg.backbone, recurrence=cfg.recurrence, pretrained=cfg.pretrained, **extra
    )


def build_criterion(cfg: ExperimentConfig, ignore_index: int = 255) -> nn.Module:
    return CCNetCriterion(
        aux_weight=cfg.aux_weight,
        ohem=cfg.ohem,
        ohem_thresh=cfg.ohem_thresh,
        ohem_min_kept=cfg.ohem_min_kept,
        ccl_weight=cfg.ccl_weight,
        ccl=CategoryConsistentLoss(ignore_index=ignore_index, variance=cfg.ccl_variance),
        ignore_index=ignore_index,
    )


def param_groups(model: nn.Module, lr: float, head_lr_mult: float) -> list[dict[str, Any]]:
    """``[{"params": backbone, "lr": lr, "name": "backbone"}, {"params": rest, "lr": lr * head_lr_mult, "name": "head"}]``.

    The backbone is ``model.backbone``; a model without one gets a single group at ``lr``.
    Empty groups are left out; only trainable parameters are listed.
    """
    params = [p for p in model.parameters() if p.requires_grad]
    backbone = getattr(model, "backbone", None)
    if not isinstance(backbone, nn.Module):
        if head_lr_mult != 1.0:
            raise ValueError(
                f"head_lr_mult={head_lr_mult} needs a model with a .backbone submodule, got {type(model).__name__}"
            )
        return [{"params": params, "lr": lr, "name": "all"}]
    in_backbone = {id(p) for p in backbone.parameters()}
    groups = [
        {"params": [p for p in params if id(p) in in_backbone], "lr": lr, "name": "backbone"},
        {"params": [p for p in params if id(p) not in in_backbone], "lr": lr * head_lr_mult, "name": "head"},
    ]
    return [g for g in groups if g["params"]]


def build_optimizer(model: nn.Module, cfg: ExperimentConfig) -> torch.optim.SGD:
    """SGD with momentum and weight decay over :func:`param_groups` (group 0 carries the base LR)."""
    return torch.optim.SGD(
        param_groups(model, cfg.lr, cfg.head_lr_mult), lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay
    )
