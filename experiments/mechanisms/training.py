"""Train one (settings, variant, seed) run, resumably, and many of them in worker processes.

A run lives in its own directory: ``metrics.jsonl`` (:class:`cca.engine.runlog.MetricsLog`: train rows
with the loss terms, gamma, the CCL features' norm and the CCL / cross-entropy gradient ratio; eval
rows with val mIoU), ``last.pt`` while it trains (:func:`cca.engine.checkpoint.save`, atomic; a killed
run resumes from it, or from ``last.pt.prev`` when it is damaged, and repeats exactly the same steps; with
neither readable the run starts over), then ``model.pt`` and ``result.json``
(atomic). A run whose ``result.json`` carries the same :func:`run_key` is not trained again.

Seeds are exact: every run uses one thread (``torch.set_num_threads(1)``), so the same seed gives
the same numbers whatever the number of worker processes.
"""

from __future__ import annotations

import json
import time
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from experiments.mechanisms.model import build_model, gamma_values
from experiments.mechanisms.settings import MechanismSettings, Variant, ccl_loss, run_key


def feature_statistics(feat: torch.Tensor, label: torch.Tensor, num_classes: int) -> dict[str, float]:
    """What the CCL acts on, for ``feat (N, C, H, W)`` and ``label (N, H, W)`` (all images pooled):
    mean distance of a pixel to its class centre, mean distance between class centres, their ratio,
    the mean feature norm, and the mean distance between the centres of the object classes (1..K-1)."""
    f = feat.permute(0, 2, 3, 1).reshape(-1, feat.shape[1]).double()
    y = label.reshape(-1)
    centres, spreads, present = [], [], []
    for k in range(num_classes):
        members = f[y == k]
        if len(members) == 0:
            continue
        centre = members.mean(0)
        centres.append(centre)
        present.append(k)
        spreads.append((members - centre).norm(dim=1).mean())
    c = torch.stack(centres)
    pair = torch.cdist(c, c)
    inter = pair[~torch.eye(len(c), dtype=torch.bool)].mean() if len(c) > 1 else torch.tensor(float("nan"))
    intra = torch.stack(spreads).mean()
    objects = [i for i, k in enumerate(present) if k > 0]
    sub = pair[objects][:, objects]
    blob_inter = (
        sub[~torch.eye(len(objects), dtype=torch.bool)].mean() if len(objects) > 1 else torch.tensor(float("nan"))
    )
    return {
        "intra_class_spread": float(intra),
        "inter_class_distance": float(inter),
        "inter_over_intra": float(inter / intra),
        "feature_norm": float(f.norm(dim=1).mean()),
        "blob_inter_class_distance": float(blob_inter),
    }


@torch.no_grad()
def evaluate(
    model: nn.Module, projection: nn.Module | None, val: tuple[torch.Tensor, torch.Tensor], num_classes: int
) -> dict[str, Any]:
    """Val mIoU (percent), per-class IoU and the feature statistics of the context features (and of the CCL projection)."""
    from cca.engine.metrics import ConfusionMatrix

    was_training = model.training
    model.eval()
    matrix = ConfusionMatrix(num_classes)
    feats, projected = [], []
    for i in range(0, len(val[0]), 64):
        outputs = model(val[0][i : i + 64])
        matrix.update(outputs["out"].argmax(1), val[1][i : i + 64])
        feats.append(outputs["feat"])
        if projection is not None:
            projected.append(projection(outputs["feat"]))
    model.train(was_training)
    metrics = matrix.compute()
    result = {"miou": 100.0 * float(metrics["miou"]), "iou": [100.0 * float(v) for v in metrics["iou"]]}
    result.update(feature_statistics(torch.cat(feats), val[1], num_classes))
    if projection is not None:
        result.update({f"ccl_{k}": v for k, v in feature_statistics(torch.cat(projected), val[1], num_classes).items()})
    return result


def _ccl_inputs(space: torch.Tensor, target: torch.Tensor, centres: str) -> tuple[torch.Tensor, torch.Tensor]:
    """``(N, C, H, W)`` features and ``(N, H, W)`` labels as the CCL sees them: per image, or (``"batch"``)
    the batch side by side as one ``(1, C, H, N * W)`` image, so that class centres pool every image."""
    if centres == "image":
        return space, target
    n, c, h, w = space.shape
    return space.permute(1, 2, 0, 3).reshape(1, c, h, n * w), target.permute(1, 0, 2).reshape(1, h, n * w)


def _grad_norm(value: torch.Tensor, wrt: torch.Tensor) -> float:
    (grad,) = torch.autograd.grad(value, wrt, retain_graph=True)
    return float(grad.norm())


def train_one(
    settings: MechanismSettings, variant: Variant, seed: int, directory: Path | None = None
) -> dict[str, Any]:
    """Train ``variant`` with ``seed``; returns val mIoU (percent), feature statistics and the curves.

    With ``directory`` the run logs, checkpoints and resumes there (see the module docstring).
    """
    from cca.engine.checkpoint import (
        CheckpointError,
        holds_checkpoint,
        load_or_fallback,
        rng_state,
        save,
        set_rng_state,
    )
    from cca.engine.runlog import MetricsLog, read_jsonl

    torch.set_num_threads(1)
    torch.manual_seed(seed)
    (train_x, train_y), val = settings.datasets(seed)
    if variant.clip_frames is not None:  # the centred sub-clip the variant sees
        centre, half = train_x.shape[2] // 2, variant.clip_frames // 2
        train_x, val = (
            train_x[:, :, centre - half : centre + half + 1],
            (val[0][:, :, centre - half : centre + half + 1], val[1]),
        )
    num_classes = settings.num_colours + 1
    model = build_model(settings, variant)
    projection = nn.Conv2d(settings.channels, variant.ccl_channels, 1) if variant.ccl and variant.ccl_channels else None
    ccl = ccl_loss(variant.ccl) if variant.ccl else None
    parameters = list(model.parameters()) + (list(projection.parameters()) if projection is not None else [])
    optimiser = torch.optim.Adam(parameters, lr=settings.lr)
    generator = torch.Generator().manual_seed(seed)
    log = MetricsLog(directory / "metrics.jsonl" if directory else Path("metrics.jsonl"), enabled=directory is not None)
    start, seconds, evals, trains, stop_streak, diverged = 0, 0.0, [], [], 0, False
    state = None
    if directory is not None and holds_checkpoint(directory / "last.pt"):
        try:  # last.pt, or last.pt.prev (with a warning) when last.pt is damaged or missing
            state, _ = load_or_fallback(directory / "last.pt")
        except (CheckpointError, FileNotFoundError):  # the same seed repeats the same steps: only time is lost
            print(f"  {directory / 'last.pt'} and its previous copy are unreadable: starting this run over", flush=True)
            log.truncate_after(0)
    if state is not None:
        model.load_state_dict(state["model"])
        if projection is not None:
            projection.load_state_dict(state["projection"])
        optimiser.load_state_dict(state["optimizer"])
        generator.set_state(state["generator"])
        set_rng_state(state["rng"])
        start, seconds, stop_streak = state["iteration"], state["seconds"], state["stop_streak"]
        log.truncate_after(start)
        rows = read_jsonl(log.path) if log.path.is_file() else []
        evals, trains = [r for r in rows if r["type"] == "eval"], [r for r in rows if r["type"] == "train"]
        print(f"  resumed at iteration {start}", flush=True)
    began = time.time() - seconds
    model.train()
    it = start
    for it in range(start + 1, settings.iterations + 1):
        idx = torch.randint(len(train_x), (settings.batch_size,), generator=generator)
        outputs = model(train_x[idx])
        target = train_y[idx]
        ce = F.cross_entropy(outputs["out"], target)
        loss, terms = ce, {}
        if ccl is not None:
            space = projection(outputs["feat"]) if projection is not None else outputs["feat"]
            terms = ccl.terms(*_ccl_inputs(space, target, variant.ccl_centres))
            loss = ce + settings.ccl_weight * terms["loss"]
        if it % settings.log_every == 0 or it == settings.iterations:
            row = {
                "type": "train",
                "iter": it,
                "loss": float(loss.detach()),
                "ce": float(ce.detach()),
                "gamma": gamma_values(model.context),
            }
            if ccl is not None:
                row.update({f"ccl_{k}": float(v.detach()) for k, v in terms.items()})
                row["ccl_feature_norm"] = float(space.detach().norm(dim=1).mean())
                # the two losses' pull on the context features: ||d(w * CCL)/d feat|| / ||d CE/d feat||
                row["grad_ratio_ccl_over_ce"] = _grad_norm(settings.ccl_weight * terms["loss"], outputs["feat"]) / max(
                    _grad_norm(ce, outputs["feat"]), 1e-12
                )
            log.write(row)
            trains.append(row)
        if not torch.isfinite(loss):
            diverged = True
            log.write({"type": "diverged", "iter": it, "loss": float(loss.detach())})
            break
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        optimiser.step()
        stop = False
        if settings.eval_every and it % settings.eval_every == 0 and it != settings.iterations:
            row = {
                "type": "eval",
                "iter": it,
                "miou": evaluate(model, None, val, num_classes)["miou"],
                "gamma": gamma_values(model.context),
            }
            evals.append(row)
            log.write(row)
            stop_streak = stop_streak + 1 if settings.stop_miou_pct and row["miou"] >= settings.stop_miou_pct else 0
            stop = stop_streak >= 2
        if directory is not None and (it % settings.checkpoint_every == 0) and not stop and it != settings.iterations:
            save(
                {
                    "model": model.state_dict(),
                    "projection": projection.state_dict() if projection is not None else None,
                    "optimizer": optimiser.state_dict(),
                    "generator": generator.get_state(),
                    "rng": rng_state(),
                    "iteration": it,
                    "seconds": time.time() - began,
                    "stop_streak": stop_streak,
                },
                directory / "last.pt",
            )
        if stop:
            break
    final = evaluate(model, projection, val, num_classes)
    gammas = gamma_values(model.context)
    log.write({"type": "eval", "iter": it, "miou": final["miou"], "gamma": gammas})
    evals.append({"type": "eval", "iter": it, "miou": final["miou"], "gamma": gammas})
    result = {
        "variant": variant.label,
        "spec": variant.spec(),
        "seed": seed,
        **final,
        "iterations_run": it,
        "diverged": diverged,
        "gamma": gammas,
        "curve": [[row["iter"], row["miou"]] for row in evals],
        "gamma_curve": [[row["iter"], *row["gamma"]] for row in evals],
        "train_log": [{k: v for k, v in r.items() if k != "type"} for r in trains],
        "seconds": round(time.time() - began, 1),
    }
    if directory is not None:
        from cca.engine.checkpoint import save as save_state

        save_state(
            {"settings": settings.used_settings(), "variant": variant.spec(), "model": model.state_dict()},
            directory / "model.pt",
        )
    return result


def _job(args: tuple[MechanismSettings, Variant, int, str]) -> dict[str, Any]:
    settings, variant, seed, directory = args
    from cca._io import atomic_write_json
    from cca.provenance import git_commit

    path = Path(directory)
    result = train_one(settings, variant, seed, directory=path)
    result.update({"settings_hash": run_key(settings, variant, seed), "commit": git_commit()})
    atomic_write_json(path / "result.json", result)
    (path / "last.pt").unlink(missing_ok=True)
    return result


def cached_result(directory: Path, key: str) -> dict[str, Any] | None:
    """The run's ``result.json`` when it was made with the same :func:`run_key`, else None."""
    path = directory / "result.json"
    if not path.is_file():
        return None
    old = json.loads(path.read_text())
    return old if old.get("settings_hash") == key else None


def run_jobs(
    jobs: list[tuple[MechanismSettings, Variant, int, Path]], workers: int = 2, force: bool = False
) -> list[dict[str, Any]]:
    """Every ``(settings, variant, seed, directory)``; runs done before (same key) are read back.

    Returns the results in the order of ``jobs``; ``workers > 1`` trains in that many processes.
    """
    results: dict[int, dict[str, Any]] = {}
    todo, first_of, duplicates = [], {}, {}
    for i, (settings, variant, seed, directory) in enumerate(jobs):
        if str(directory) in first_of:  # the same run planned twice (e.g. by two experiments): train it once
            duplicates[i] = first_of[str(directory)]
            continue
        first_of[str(directory)] = i
        old = None if force else cached_result(Path(directory), run_key(settings, variant, seed))
        if old is not None:
            old["variant"] = variant.label
            results[i] = old
        else:
            todo.append(i)
    print(
        f"{len(jobs) - len(todo)} of {len(jobs)} runs done before; training {len(todo)} ({workers} worker(s))",
        flush=True,
    )
    args = [(jobs[i][0], jobs[i][1], jobs[i][2], str(jobs[i][3])) for i in todo]
    if workers > 1 and len(args) > 1:
        with ProcessPoolExecutor(max_workers=workers, mp_context=get_context("spawn")) as pool:
            for i, result in zip(todo, pool.map(_job, args), strict=True):
                results[i] = result
                print(
                    f"  {result['variant']} seed {result['seed']}: mIoU {result['miou']:.1f} ({result['seconds']} s)",
                    flush=True,
                )
    else:
        for i, a in zip(todo, args, strict=True):
            results[i] = _job(a)
            print(
                f"  {results[i]['variant']} seed {results[i]['seed']}: mIoU {results[i]['miou']:.1f} ({results[i]['seconds']} s)",
                flush=True,
            )
    for i, j in duplicates.items():
        results[i] = dict(results[j])
    for i, (_, variant, _, _) in enumerate(jobs):
        results[i]["variant"] = variant.label
    return [results[i] for i in range(len(jobs))]
