"""COCO instance segmentation with Mask R-CNN, with or without RCCA: training loop and COCO evaluation.

The segmentation engine (``cca.engine``) trains dense-prediction models; a detector needs lists of
images and targets and COCO's box/mask AP, so table 8 has this small loop of its own, built from the
same pieces: ``cca.models.build_mask_rcnn``, ``cca.data`` (COCO layout, synthetic writer), SGD with
linear warm-up and step decay (the standard Mask R-CNN schedule), ``cca.engine.metrics.evaluate_coco``.
Single process (``--nproc`` is not supported for this table). Resumable: ``last.pt`` every
``checkpoint_every`` iterations.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

import torch
from tqdm.auto import tqdm


@dataclass(frozen=True)
class DetectionSettings:
    """One Mask R-CNN run (read top to bottom)."""

    name: str = "table08"
    # --- model: torchvision Mask R-CNN (ResNet + FPN), RCCA on the backbone output when `rcca` ---
    backbone: str = "resnet50"
    rcca: bool = True
    recurrence: int = 2
    pretrained: str | None = None  # local ImageNet backbone weights (never downloaded)
    min_size: int = 800  # torchvision's resize: shorter side (standard COCO setting)
    max_size: int = 1333
    # --- data ---
    dataset: str = "coco"
    data_root: str = "data/coco"
    train_split: str = "train"
    val_split: str = "val"
    synthetic: bool = False
    synthetic_num_train: int = 8
    synthetic_num_val: int = 4
    synthetic_size: tuple[int, int] = (64, 80)
    flip: bool = True
    num_workers: int = 4
    # --- optimisation: the standard Mask R-CNN "1x" schedule (the paper's was not found) ---
    batch_size: int = 16
    iterations: int = 90000
    lr: float = 0.02
    momentum: float = 0.9
    weight_decay: float = 1e-4
    lr_steps: tuple[int, ...] = (60000, 80000)
    lr_gamma: float = 0.1
    warmup_iters: int = 1000
    warmup_ratio: float = 0.001
    # --- runtime ---
    device: str = "auto"
    seed: int = 0
    checkpoint_every: int = 1000
    log_every: int = 20
    output_dir: str = ""


def lr_factor(settings: DetectionSettings, it: int) -> float:
    """Linear warm-up then step decay, as a factor of ``settings.lr`` for 0-based step ``it``."""
    factor = settings.lr_gamma ** sum(it >= s for s in settings.lr_steps)
    if it < settings.warmup_iters:
        factor *= settings.warmup_ratio + (1 - settings.warmup_ratio) * it / settings.warmup_iters
    return factor


def _datasets(settings: DetectionSettings):
    from cca.data import build_dataset, synthetic
    from cca.data.transforms import DetectionTransform

    if settings.synthetic:
        synthetic.write(
            settings.dataset, settings.data_root, num_train=settings.synthetic_num_train,
            num_val=settings.synthetic_num_val, size=tuple(settings.synthetic_size), seed=settings.seed,
        )
    train = build_dataset(settings.dataset, settings.data_root, settings.train_split, transform=DetectionTransform(flip=settings.flip))
    val = build_dataset(settings.dataset, settings.data_root, settings.val_split)
    return train, val


def build_model(settings: DetectionSettings, num_classes: int) -> torch.nn.Module:
    from cca.models import build_mask_rcnn

    return build_mask_rcnn(
        num_classes, backbone=settings.backbone, rcca=settings.rcca, recurrence=settings.recurrence,
        pretrained=settings.pretrained, min_size=settings.min_size, max_size=settings.max_size,
    )


def _batches(length: int, batch: int, seed: int, start: int):
    """Index batches from a seeded shuffle per epoch; the stream from iteration ``start`` on."""
    per_epoch = max(1, length // batch)
    it = start
    while True:
        epoch, position = divmod(it, per_epoch)
        order = torch.randperm(length, generator=torch.Generator().manual_seed(seed * 100_003 + epoch))
        yield order[position * batch : (position + 1) * batch].tolist()
        it += 1


def train(settings: DetectionSettings, directory: Path) -> dict[str, float]:
    """Train and evaluate; writes ``metrics.jsonl``, ``last.pt``, ``metrics.json``; returns AP in percent."""
    from cca.data.coco import collate
    from cca.engine.distributed import resolve_device

    device = resolve_device(settings.device)
    torch.manual_seed(settings.seed)
    train_set, val_set = _datasets(settings)
    if len(train_set) < settings.batch_size:
        raise ValueError(f"the {settings.train_split} set has {len(train_set)} images, fewer than batch_size={settings.batch_size}")
    model = build_model(settings, train_set.num_classes).to(device)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.SGD(params, lr=settings.lr, momentum=settings.momentum, weight_decay=settings.weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda it: lr_factor(settings, it))
    last = directory / "last.pt"
    start = 0
    if last.is_file():
        state = torch.load(last, map_location="cpu", weights_only=False)
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        start = int(state["iteration"])
    log = directory / "metrics.jsonl"
    if log.is_file():  # drop rows past the checkpoint (they are repeated)
        rows = [r for r in (json.loads(x) for x in log.read_text().splitlines() if x.strip()) if r.get("iter", 0) <= start]
        log.write_text("".join(json.dumps(r) + "\n" for r in rows))
    batches = _batches(len(train_set), settings.batch_size, settings.seed, start)
    model.train()
    with tqdm(total=settings.iterations, initial=start, desc=f"train {settings.name}", dynamic_ncols=True) as bar:
        for it in range(start + 1, settings.iterations + 1):
            images, targets = collate([train_set[i] for i in next(batches)])
            images = [im.to(device) for im in images]
            targets = [{k: (v.to(device) if torch.is_tensor(v) else v) for k, v in t.items()} for t in targets]
            losses = model(images, targets)
            loss = sum(losses.values())
            if not math.isfinite(float(loss.detach())):
                raise FloatingPointError(f"loss is not finite at iteration {it}: {({k: float(v) for k, v in losses.items()})}")
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()
            if it % settings.log_every == 0 or it == settings.iterations:
                row = {"type": "train", "iter": it, "loss": float(loss.detach()), **{k: float(v.detach()) for k, v in losses.items()},
                       "lr": optimizer.param_groups[0]["lr"]}
                with log.open("a") as f:
                    f.write(json.dumps(row) + "\n")
            if it % settings.checkpoint_every == 0 or it == settings.iterations:
                torch.save({"model": model.state_dict(), "optimizer": optimizer.state_dict(),
                            "scheduler": scheduler.state_dict(), "iteration": it}, last)
            bar.set_postfix(loss=f"{float(loss.detach()):.3f}", refresh=False)
            bar.update(1)
    metrics = evaluate(model, val_set, device)
    with log.open("a") as f:
        # metrics.jsonl holds fractions, as the segmentation engine's rows (metrics.json: percent)
        fractions = {k: v / 100.0 if "_ap" in k else v for k, v in metrics.items()}
        f.write(json.dumps({"type": "eval", "iter": settings.iterations, **fractions}) + "\n")
    (directory / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    return metrics


@torch.no_grad()
def evaluate(model: torch.nn.Module, dataset, device: torch.device) -> dict[str, float]:
    """COCO box and mask AP / AP50 (percent) of ``model`` on ``dataset`` (a ``cca.data.coco.COCODetection``)."""
    from cca.engine.metrics import evaluate_coco

    model.eval()
    predictions = {}
    for index in tqdm(range(len(dataset)), desc="eval", leave=False, dynamic_ncols=True):
        image, target = dataset[index]
        output = model([image.to(device)])[0]
        predictions[int(target["image_id"])] = {k: v.cpu() for k, v in output.items()}
    stats = evaluate_coco(predictions, dataset.coco, label_to_cat_id=dataset.label_to_cat_id)
    # COCOeval gives fractions, and -1 where no value is defined (no ground truth): report 0 there
    return {
        "box_ap": 100.0 * max(0.0, stats["bbox_ap"]),
        "box_ap50": 100.0 * max(0.0, stats["bbox_ap50"]),
        "mask_ap": 100.0 * max(0.0, stats["segm_ap"]),
        "mask_ap50": 100.0 * max(0.0, stats["segm_ap50"]),
        "num_detections": stats["num_detections"],
        "num_images": len(dataset),
    }


def detection_runner(table, row, settings: DetectionSettings, options, directory: Path) -> dict[str, float]:
    if options.nproc > 1:
        raise NotImplementedError("table 8 (Mask R-CNN) trains in one process; run it without --nproc")
    metrics = train(settings, directory)
    return {k: float(metrics[k]) for k in ("box_ap", "mask_ap", "box_ap50", "mask_ap50")}
