"""CamVid video segmentation: CCNet per frame (through the engine) and CCNet3D on clips (a small loop).

The engine trains models whose output matches the label map ``(N, K, H, W)``; the 3D model maps a clip
``(N, 3, T, H, W)`` to ``(N, K, T, H, W)`` and CamVid labels only the clip's centre frame
(``cca.data.camvid``, clip mode), so the 3D row has this loop of its own, built from the same pieces
(``cca.models.build``, ``CCNetCriterion`` on the centre frame, SGD + poly schedule, ``ConfusionMatrix``).
Single process. Resumable: ``last.pt`` every ``checkpoint_every`` iterations.
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass
from pathlib import Path

import torch
from tqdm.auto import tqdm


@dataclass(frozen=True)
class VideoSettings:
    """One CamVid run (read top to bottom); ``model="ccnet"`` trains per frame through the engine."""

    name: str = "table09"
    # --- model ---
    model: str = "ccnet3d"  # "ccnet3d" (clips, 3D criss-cross attention) or "ccnet" (frames)
    backbone: str = "resnet101"
    recurrence: int = 2
    pretrained: str | None = None
    clip_length: int = 3  # frames per clip (the centre one is labelled)
    # --- data ---
    dataset: str = "camvid"
    data_root: str = "data/camvid"
    train_split: str = "train"
    val_split: str = "val"
    synthetic: bool = False
    synthetic_num_train: int = 8
    synthetic_num_val: int = 3
    synthetic_size: tuple[int, int] = (48, 64)
    crop_size: tuple[int, int] = (360, 480)
    scale_range: tuple[float, float] = (0.5, 2.0)
    flip: bool = True
    num_workers: int = 4
    # --- optimisation ---
    batch_size: int = 8
    iterations: int = 20000
    lr: float = 0.01
    momentum: float = 0.9
    weight_decay: float = 1e-4
    poly_power: float = 0.9
    aux_weight: float = 0.4
    # --- evaluation: whole frames, single scale ---
    eval_mode: str = "whole"
    # --- runtime ---
    device: str = "auto"
    seed: int = 0
    checkpoint_every: int = 1000
    output_dir: str = ""


ENGINE_FIELDS = (
    "name", "model", "backbone", "recurrence", "pretrained", "dataset", "data_root", "train_split", "val_split",
    "synthetic", "synthetic_num_train", "synthetic_num_val", "synthetic_size", "crop_size", "scale_range", "flip",
    "num_workers", "batch_size", "iterations", "lr", "momentum", "weight_decay", "poly_power", "aux_weight",
    "eval_mode", "device", "seed", "checkpoint_every", "output_dir",
)  # fmt: skip


def engine_config(settings: VideoSettings):
    """The per-frame (2D) row as an engine ``ExperimentConfig``."""
    from cca.engine.config import ExperimentConfig

    return ExperimentConfig(**{k: getattr(settings, k) for k in ENGINE_FIELDS}, eval_every=0)


def _centre(outputs: dict[str, torch.Tensor], frame: int) -> dict[str, torch.Tensor]:
    """Video outputs ``(N, K, T, H, W)`` -> the labelled frame ``(N, K, H, W)`` (features likewise)."""
    return {k: (v[:, :, frame] if v.dim() == 5 else v) for k, v in outputs.items()}


def train_3d(settings: VideoSettings, directory: Path) -> dict[str, float]:
    """Train CCNet3D on clips and evaluate the centre frames; returns mIoU etc. in percent."""
    from cca import models
    from cca.data import build_dataset, synthetic, transforms
    from cca.engine.builders import param_groups
    from cca.engine.distributed import resolve_device
    from cca.engine.metrics import ConfusionMatrix
    from cca.engine.schedule import poly_scheduler
    from cca.losses import CCNetCriterion

    device = resolve_device(settings.device)
    torch.manual_seed(settings.seed)
    if settings.synthetic:
        synthetic.write(settings.dataset, settings.data_root, num_train=settings.synthetic_num_train,
                        num_val=settings.synthetic_num_val, size=tuple(settings.synthetic_size), seed=settings.seed)
    train_tf = transforms.TrainTransform(crop_size=tuple(settings.crop_size), scale_range=tuple(settings.scale_range), flip=settings.flip)
    train_set = build_dataset(settings.dataset, settings.data_root, settings.train_split, transform=train_tf, clip_length=settings.clip_length)
    val_set = build_dataset(settings.dataset, settings.data_root, settings.val_split, transform=transforms.EvalTransform(),
                            clip_length=settings.clip_length)
    if len(train_set) < settings.batch_size:
        raise ValueError(f"the {settings.train_split} set has {len(train_set)} clips, fewer than batch_size={settings.batch_size}")
    frame = settings.clip_length // 2
    model = models.build(settings.model, train_set.num_classes, backbone=settings.backbone,
                         recurrence=settings.recurrence, pretrained=settings.pretrained).to(device)
    criterion = CCNetCriterion(aux_weight=settings.aux_weight, ignore_index=train_set.ignore_index).to(device)
    optimizer = torch.optim.SGD(param_groups(model, settings.lr, 1.0), lr=settings.lr, momentum=settings.momentum,
                                weight_decay=settings.weight_decay)
    scheduler = poly_scheduler(optimizer, settings.iterations, settings.poly_power)
    last, log = directory / "last.pt", directory / "metrics.jsonl"
    start = 0
    if last.is_file():
        state = torch.load(last, map_location="cpu", weights_only=False)
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        start = int(state["iteration"])
    if log.is_file():
        rows = [r for r in (json.loads(x) for x in log.read_text().splitlines() if x.strip()) if r.get("iter", 0) <= start]
        log.write_text("".join(json.dumps(r) + "\n" for r in rows))
    per_epoch = max(1, len(train_set) // settings.batch_size)
    model.train()
    with tqdm(total=settings.iterations, initial=start, desc=f"train {settings.name}", dynamic_ncols=True) as bar:
        for it in range(start + 1, settings.iterations + 1):
            epoch, position = divmod(it - 1, per_epoch)
            order = torch.randperm(len(train_set), generator=torch.Generator().manual_seed(settings.seed * 100_003 + epoch))
            items = [train_set[i] for i in order[position * settings.batch_size : (position + 1) * settings.batch_size].tolist()]
            clips = torch.stack([c for c, _ in items]).to(device)
            labels = torch.stack([lab for _, lab in items]).to(device)
            loss, terms = criterion(_centre(model(clips), frame), labels)
            if not math.isfinite(float(loss.detach())):
                raise FloatingPointError(f"loss is not finite at iteration {it}: {terms}")
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()
            with log.open("a") as f:
                f.write(json.dumps({"type": "train", "iter": it, "loss": float(loss.detach()),
                                    **{k: float(v) for k, v in terms.items()}, "lr": optimizer.param_groups[0]["lr"]}) + "\n")
            if it % settings.checkpoint_every == 0 or it == settings.iterations:
                torch.save({"model": model.state_dict(), "optimizer": optimizer.state_dict(),
                            "scheduler": scheduler.state_dict(), "iteration": it}, last)
            bar.set_postfix(loss=f"{float(loss.detach()):.3f}", refresh=False)
            bar.update(1)
    model.eval()
    matrix = ConfusionMatrix(val_set.num_classes, ignore_index=val_set.ignore_index)
    with torch.no_grad():
        for i in range(len(val_set)):
            clip, label = val_set[i]
            logits = _centre(model(clip.unsqueeze(0).to(device)), frame)["out"]
            matrix.update(logits.argmax(1).cpu(), label.unsqueeze(0))
    result = matrix.compute()
    metrics = {k: 100.0 * float(result[k]) for k in ("miou", "pixel_acc", "mean_acc")}
    with log.open("a") as f:
        f.write(json.dumps({"type": "eval", "iter": settings.iterations, **{k: v / 100.0 for k, v in metrics.items()}}) + "\n")
    (directory / "metrics.json").write_text(json.dumps({**metrics, "num_clips": len(val_set)}, indent=2) + "\n")
    return metrics


def video_runner(table, row, settings: VideoSettings, options, directory: Path) -> dict[str, float]:
    if settings.model == "ccnet3d":
        if options.nproc > 1:
            raise NotImplementedError("the 3D row of table 9 trains in one process; run it without --nproc")
        return train_3d(settings, directory)
    from experiments.common import train_runner

    return train_runner(table, row, engine_config(settings), options, directory)


def smoke_settings(full: VideoSettings) -> VideoSettings:
    """Tiny backbone, CPU, synthetic CamVid-format sequences, 48-pixel crops, 150 steps."""
    from experiments.common import SYNTHETIC_AUTO

    return dataclasses.replace(
        full, backbone="resnet18_tiny", pretrained=None, synthetic=True, synthetic_num_train=16, synthetic_num_val=4,
        synthetic_size=(48, 64), data_root=SYNTHETIC_AUTO, crop_size=(48, 48), num_workers=0, batch_size=4,
        iterations=150, device="cpu", checkpoint_every=75,
    )
