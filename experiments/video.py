"""CamVid video segmentation: CCNet per frame (through the engine) and CCNet3D on clips (a small loop).

The engine trains models whose output matches the label map ``(N, K, H, W)``; the 3D model maps a clip
``(N, 3, T, H, W)`` to ``(N, K, T, H, W)`` and CamVid labels only the clip's centre frame
(``cca.data.camvid``, clip mode), so the 3D row has a loop of its own, built from the engine's pieces:
settings (:class:`cca.engine.config.VideoConfig`), ``CCNetCriterion`` on the centre frame, SGD + poly
schedule, ``ConfusionMatrix``, and the engine's run files (:class:`cca.engine.loop.LoopRun`: lock,
checkpoints with fallback, resume, ``metrics.jsonl``, ``metrics.json`` in fractions). Single process.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import torch

from cca.engine.config import VideoConfig

METRICS = ("miou", "pixel_acc", "mean_acc")


def _centre(outputs: dict[str, torch.Tensor], frame: int) -> dict[str, torch.Tensor]:
    """Video outputs ``(N, K, T, H, W)`` -> the labelled frame ``(N, K, H, W)`` (features likewise)."""
    return {k: (v[:, :, frame] if v.dim() == 5 else v) for k, v in outputs.items()}


def _datasets(cfg: VideoConfig):
    from cca.data import build_dataset, synthetic, transforms

    if cfg.synthetic:
        synthetic.write(cfg.dataset, cfg.data_root, num_train=cfg.synthetic_num_train,
                        num_val=cfg.synthetic_num_val, size=tuple(cfg.synthetic_size), seed=cfg.seed)
    train_tf = transforms.TrainTransform(crop_size=tuple(cfg.crop_size), scale_range=tuple(cfg.scale_range), flip=cfg.flip)
    train_set = build_dataset(cfg.dataset, cfg.data_root, cfg.train_split, transform=train_tf, clip_length=cfg.clip_length)
    val_set = build_dataset(cfg.dataset, cfg.data_root, cfg.val_split, transform=transforms.EvalTransform(),
                            clip_length=cfg.clip_length)
    if len(train_set) < cfg.batch_size:
        raise ValueError(f"the {cfg.train_split} set has {len(train_set)} clips, fewer than batch_size={cfg.batch_size}")
    return train_set, val_set


def train_3d(cfg: VideoConfig) -> dict[str, float]:
    """Train CCNet3D on clips and evaluate the centre frames; writes ``cfg.run_dir``'s run files and
    returns mIoU, pixel and mean accuracy as fractions."""
    from cca import models
    from cca.engine.builders import param_groups
    from cca.engine.distributed import resolve_device
    from cca.engine.loop import LoopRun
    from cca.engine.metrics import ConfusionMatrix
    from cca.engine.schedule import poly_scheduler
    from cca.losses import CCNetCriterion

    device = resolve_device(cfg.device)
    torch.manual_seed(cfg.seed)
    train_set, val_set = _datasets(cfg)
    frame = cfg.clip_length // 2
    model = models.build(cfg.model, train_set.num_classes, backbone=cfg.backbone,
                         recurrence=cfg.recurrence, pretrained=cfg.pretrained).to(device)
    criterion = CCNetCriterion(aux_weight=cfg.aux_weight, ignore_index=train_set.ignore_index).to(device)
    optimizer = torch.optim.SGD(param_groups(model, cfg.lr, cfg.head_lr_mult), lr=cfg.lr, momentum=cfg.momentum,
                                weight_decay=cfg.weight_decay)
    scheduler = poly_scheduler(optimizer, cfg.iterations, cfg.poly_power, cfg.warmup_iters, cfg.warmup_ratio)
    with LoopRun(cfg) as run:
        start = run.resume(model, optimizer, scheduler)
        if start >= cfg.iterations and run.finished():
            return {k: float(run.read_metrics()[k]) for k in METRICS}
        per_epoch = max(1, len(train_set) // cfg.batch_size)
        model.train()
        for it in run.progress(start):
            epoch, position = divmod(it - 1, per_epoch)
            order = torch.randperm(len(train_set), generator=torch.Generator().manual_seed(cfg.seed * 100_003 + epoch))
            items = [train_set[i] for i in order[position * cfg.batch_size : (position + 1) * cfg.batch_size].tolist()]
            clips = torch.stack([c for c, _ in items]).to(device)
            labels = torch.stack([lab for _, lab in items]).to(device)
            loss, terms = criterion(_centre(model(clips), frame), labels)
            run.step(it, loss, {k: float(v) for k, v in terms.items() if k != "loss"}, model, optimizer, scheduler)
        model.eval()
        matrix = ConfusionMatrix(val_set.num_classes, ignore_index=val_set.ignore_index)
        with torch.no_grad():
            for i in range(len(val_set)):
                clip, label = val_set[i]
                logits = _centre(model(clip.unsqueeze(0).to(device)), frame)["out"]
                matrix.update(logits.argmax(1).cpu(), label.unsqueeze(0))
        result = matrix.compute()
        metrics = {k: float(result[k]) for k in METRICS}
        run.finish({**metrics, "num_clips": len(val_set)})
    return metrics


def video_runner(table, row, cfg: VideoConfig, options, directory: Path) -> dict[str, float]:
    """Table 9's runner: the 3D row through :func:`train_3d`, the per-frame row through the engine; percent."""
    from experiments.rows import as_percent, train_runner

    if cfg.model != "ccnet3d":
        return train_runner(table, row, cfg, options, directory)
    if options.nproc > 1:
        raise NotImplementedError("the 3D row of table 9 trains in one process; run it without --nproc")
    return {k: as_percent(v) for k, v in train_3d(cfg).items()}


def smoke_settings(full: VideoConfig) -> VideoConfig:
    """Tiny backbone, CPU, synthetic CamVid-format sequences, 48-pixel crops, 150 steps."""
    from experiments.spec import SYNTHETIC_AUTO

    return dataclasses.replace(
        full, backbone="resnet18_tiny", pretrained=None, synthetic=True, synthetic_num_train=16, synthetic_num_val=4,
        synthetic_size=(48, 64), data_root=SYNTHETIC_AUTO, crop_size=(48, 48), num_workers=0, batch_size=4,
        iterations=150, device="cpu", checkpoint_every=75, log_every=1, eval_every=0,
    )
