"""CamVid video segmentation: CCNet per frame (through the engine) and CCNet3D on clips (a small loop).

The engine trains models whose output matches the label map ``(N, K, H, W)``; the 3D model maps a clip
``(N, 3, T, H, W)`` to ``(N, K, T, H, W)`` and CamVid labels only the clip's centre frame
(``cca.data.camvid``, clip mode), so the 3D row has a step of its own on the engine's pieces: settings
(:class:`cca.engine.config.VideoConfig`), data, model, criterion (OHEM and the CCL included) and optimiser
from :mod:`cca.engine.builders`, the criterion on the centre frame, the poly schedule, ``ConfusionMatrix``,
and the run layer (:class:`cca.engine.loop.TrainingRun`: lock, checkpoints with fallback, resume,
finite-loss guard, ``metrics.jsonl``, ``metrics.json`` in fractions). Single process.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import torch

from cca.engine import builders
from cca.engine.config import VideoConfig
from cca.engine.distributed import resolve_device
from cca.engine.loop import TrainingRun
from cca.engine.metrics import ConfusionMatrix
from cca.engine.schedule import poly_scheduler
from experiments.cache import produces
from experiments.segmentation import as_percent, train_runner
from experiments.spec import SYNTHETIC_AUTO

METRICS = ("miou", "pixel_acc", "mean_acc")


def _centre(outputs: dict[str, torch.Tensor], frame: int) -> dict[str, torch.Tensor]:
    """Video outputs ``(N, K, T, H, W)`` -> the labelled frame ``(N, K, H, W)`` (features likewise)."""
    return {k: (v[:, :, frame] if v.dim() == 5 else v) for k, v in outputs.items()}


def train_3d(cfg: VideoConfig) -> dict[str, float]:
    """Train CCNet3D on clips and evaluate the centre frames; writes ``cfg.run_dir``'s run files and
    returns mIoU, pixel and mean accuracy as fractions. Data, model, loss (OHEM, CCL) and optimiser come
    from :mod:`cca.engine.builders`, as for every engine run."""
    device = resolve_device(cfg.device)
    torch.manual_seed(cfg.seed)
    builders.ensure_synthetic_data(cfg)
    train_set, val_set = builders.build_train_set(cfg), builders.build_val_set(cfg)
    if len(train_set) < cfg.batch_size:
        raise ValueError(f"the {cfg.train_split} set has {len(train_set)} clips, fewer than batch_size={cfg.batch_size}")
    frame = cfg.clip_length // 2
    model = builders.build_model(cfg, train_set.num_classes).to(device)
    criterion = builders.build_criterion(cfg, ignore_index=train_set.ignore_index).to(device)
    optimizer = builders.build_optimizer(model, cfg)
    scheduler = poly_scheduler(optimizer, cfg.iterations, cfg.poly_power, cfg.warmup_iters, cfg.warmup_ratio)
    with TrainingRun(cfg, {"model": model, "optimizer": optimizer, "scheduler": scheduler}) as run:
        start = run.resume()
        run.write_config()
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
            run.step(it, loss, {k: float(v) for k, v in terms.items() if k != "loss"}, optimizer, scheduler)
        metrics = evaluate_3d(model, val_set, frame, device)
        run.finish({**metrics, "num_clips": len(val_set)})
    return metrics


@torch.no_grad()
def evaluate_3d(model: torch.nn.Module, val_set, frame: int, device: torch.device) -> dict[str, float]:
    """mIoU, pixel and mean accuracy (fractions) of ``model`` on the centre frames of ``val_set``'s clips."""
    model.eval()
    matrix = ConfusionMatrix(val_set.num_classes, ignore_index=val_set.ignore_index)
    for i in range(len(val_set)):
        clip, label = val_set[i]
        logits = _centre(model(clip.unsqueeze(0).to(device)), frame)["out"]
        matrix.update(logits.argmax(1).cpu(), label.unsqueeze(0))
    result = matrix.compute()
    return {k: float(result[k]) for k in METRICS}


@produces(version=1)  # raise when a change to the 3D loop or the engine changes the numbers
def video_runner(table, row, cfg: VideoConfig, options, directory: Path) -> dict[str, float]:
    """Table 9's runner: the 3D row through :func:`train_3d`, the per-frame row through the engine; percent."""
    if cfg.model != "ccnet3d":
        return train_runner(table, row, cfg, options, directory)
    if options.nproc > 1:
        raise NotImplementedError("the 3D row of table 9 trains in one process; run it without --nproc")
    return {k: as_percent(v) for k, v in train_3d(cfg).items()}


def smoke_settings(full: VideoConfig) -> VideoConfig:
    """Tiny backbone, CPU, synthetic CamVid-format sequences, 48-pixel crops, 150 steps."""
    return dataclasses.replace(
        full, backbone="resnet18_tiny", pretrained=None, synthetic=True, synthetic_num_train=16, synthetic_num_val=4,
        synthetic_size=(48, 64), data_root=SYNTHETIC_AUTO, crop_size=(48, 48), num_workers=0, batch_size=4,
        iterations=150, device="cpu", checkpoint_every=75, log_every=1, eval_every=0,
    )
