"""COCO instance segmentation with Mask R-CNN, with or without RCCA: training loop and COCO evaluation.

The segmentation engine (``cca.engine``) trains dense-prediction models; a detector needs lists of
images and targets and COCO's box/mask AP, so table 8 has a step of its own on the engine's pieces:
settings (:class:`cca.engine.config.DetectionConfig`), data (COCO layout, synthetic writer), Mask R-CNN
and SGD from :mod:`cca.engine.builders`, linear warm-up and step decay (the standard Mask R-CNN
schedule), ``cca.engine.metrics.evaluate_coco``, and the run layer (:class:`cca.engine.loop.TrainingRun`:
lock, checkpoints with fallback, resume, finite-loss guard, ``metrics.jsonl``, ``metrics.json`` in
fractions). Single process (``--nproc`` is not supported for this table).
"""

from __future__ import annotations

from pathlib import Path

import torch
from tqdm.auto import tqdm

from cca.data.coco import collate
from cca.engine import builders
from cca.engine.config import DetectionConfig
from cca.engine.distributed import resolve_device
from cca.engine.loop import TrainingRun
from cca.engine.metrics import evaluate_coco
from experiments.cache import produces
from experiments.segmentation import as_percent

AP_METRICS = ("box_ap", "mask_ap", "box_ap50", "mask_ap50")


def lr_factor(settings: DetectionConfig, it: int) -> float:
    """Linear warm-up then step decay, as a factor of ``settings.lr`` for 0-based step ``it``."""
    factor = settings.lr_gamma ** sum(it >= s for s in settings.lr_steps)
    if it < settings.warmup_iters:
        factor *= settings.warmup_ratio + (1 - settings.warmup_ratio) * it / settings.warmup_iters
    return factor


def _batches(length: int, batch: int, seed: int, start: int):
    """Index batches from a seeded shuffle per epoch; the stream from iteration ``start`` on."""
    per_epoch = max(1, length // batch)
    it = start
    while True:
        epoch, position = divmod(it, per_epoch)
        order = torch.randperm(length, generator=torch.Generator().manual_seed(seed * 100_003 + epoch))
        yield order[position * batch : (position + 1) * batch].tolist()
        it += 1


def train(settings: DetectionConfig) -> dict[str, float]:
    """Train and evaluate; writes ``settings.run_dir``'s run files; returns COCO AP / AP50 as fractions.
    Data, model and optimiser come from :mod:`cca.engine.builders` (Mask R-CNN computes its own losses)."""
    device = resolve_device(settings.device)
    torch.manual_seed(settings.seed)
    builders.ensure_synthetic_data(settings)
    train_set, val_set = builders.build_train_set(settings), builders.build_val_set(settings)
    if len(train_set) < settings.batch_size:
        raise ValueError(f"the {settings.train_split} set has {len(train_set)} images, fewer than batch_size={settings.batch_size}")
    model = builders.build_model(settings, train_set.num_classes).to(device)
    optimizer = builders.build_optimizer(model, settings)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda it: lr_factor(settings, it))
    with TrainingRun(settings, {"model": model, "optimizer": optimizer, "scheduler": scheduler}) as run:
        start = run.resume()
        run.write_config()
        if start >= settings.iterations and run.finished():
            return {k: float(run.read_metrics()[k]) for k in AP_METRICS}
        batches = _batches(len(train_set), settings.batch_size, settings.seed, start)
        model.train()
        for it in run.progress(start):
            images, targets = collate([train_set[i] for i in next(batches)])
            images = [im.to(device) for im in images]
            targets = [{k: (v.to(device) if torch.is_tensor(v) else v) for k, v in t.items()} for t in targets]
            losses = model(images, targets)
            terms = {k: float(v.detach()) for k, v in losses.items()}
            run.step(it, sum(losses.values()), terms, optimizer, scheduler)
        metrics = evaluate(model, val_set, device)
        run.finish(metrics)
    return {k: metrics[k] for k in AP_METRICS}


@torch.no_grad()
def evaluate(model: torch.nn.Module, dataset, device: torch.device) -> dict[str, float]:
    """COCO box and mask AP / AP50 (fractions) of ``model`` on ``dataset`` (a ``cca.data.coco.COCODetection``)."""
    model.eval()
    predictions = {}
    for index in tqdm(range(len(dataset)), desc="eval", leave=False, dynamic_ncols=True):
        image, target = dataset[index]
        output = model([image.to(device)])[0]
        predictions[int(target["image_id"])] = {k: v.cpu() for k, v in output.items()}
    stats = evaluate_coco(predictions, dataset.coco, label_to_cat_id=dataset.label_to_cat_id)
    # COCOeval gives fractions, and -1 where no value is defined (no ground truth): report 0 there
    return {
        "box_ap": max(0.0, stats["bbox_ap"]),
        "box_ap50": max(0.0, stats["bbox_ap50"]),
        "mask_ap": max(0.0, stats["segm_ap"]),
        "mask_ap50": max(0.0, stats["segm_ap50"]),
        "num_detections": stats["num_detections"],
        "num_images": len(dataset),
    }


@produces(version=1)  # raise when a change to the detection loop changes the numbers
def detection_runner(table, row, settings: DetectionConfig, options, directory: Path) -> dict[str, float]:
    """Table 8's runner: box / mask AP and AP50 in percent (as the paper prints them)."""
    if options.nproc > 1:
        raise NotImplementedError("table 8 (Mask R-CNN) trains in one process; run it without --nproc")
    return {k: as_percent(v) for k, v in train(settings).items()}
