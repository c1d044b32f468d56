"""Train one (settings, variant, seed) run, resumably, and many of them in worker processes.

A run lives in its own directory on the run layer (:class:`cca.engine.loop.TrainingRun`: lock, checkpoint
with fallback, resume, log, the finite-loss guard in its "divergence is a result" form): ``metrics.jsonl``
(train rows with the loss terms, gamma, the CCL features' norm and the CCL / cross-entropy gradient ratio; eval
rows with val mIoU), ``last.pt`` while it trains (:func:`cca.engine.checkpoint.save`, atomic; a killed
run resumes from it, or from ``last.pt.prev`` when it is damaged, and repeats exactly the same steps; with
neither readable the run starts over), then ``model.pt`` and ``result.json``
(atomic). A run whose ``result.json`` carries the same :func:`run_key` is not trained again (the one
cache rule of :mod:`experiments.cache`: the run's settings, variant and seed with :func:`train_one`'s
declared code version).

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

from cca.engine.checkpoint import CheckpointError, previous_path, rng_state, save, set_rng_state
from cca.engine.loop import TrainingRun
from cca.engine.runlog import read_jsonl
from experiments.cache import code_version, is_current, produces, result_key
from experiments.mechanisms.model import build_model, gamma_values
from experiments.mechanisms.settings import MechanismSettings, Variant, ccl_loss


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


def _clip_window(train_x: torch.Tensor, val: tuple[torch.Tensor, torch.Tensor], frames: int | None):
    """The centred sub-clip of ``frames`` frames a variant sees (``None``: all of them)."""
    if frames is None:
        return train_x, val
    centre, half = train_x.shape[2] // 2, frames // 2
    window = slice(centre - half, centre + half + 1)
    return train_x[:, :, window], (val[0][:, :, window], val[1])


def _train_row(settings: MechanismSettings, it: int, loss, ce, terms, space, outputs, model, ccl) -> dict[str, Any]:
    """A ``metrics.jsonl`` train row: the loss terms, gamma, and with the CCL its feature norm and pull."""
    row = {"type": "train", "iter": it, "loss": float(loss.detach()), "ce": float(ce.detach()),
           "gamma": gamma_values(model.context)}
    if ccl is not None:
        row.update({f"ccl_{k}": float(v.detach()) for k, v in terms.items()})
        row["ccl_feature_norm"] = float(space.detach().norm(dim=1).mean())
        # the two losses' pull on the context features: ||d(w * CCL)/d feat|| / ||d CE/d feat||
        row["grad_ratio_ccl_over_ce"] = _grad_norm(settings.ccl_weight * terms["loss"], outputs["feat"]) / max(
            _grad_norm(ce, outputs["feat"]), 1e-12
        )
    return row


@produces(version=1)  # raise when a change to the training changes a run's numbers (re-trains every run)
def train_one(
    settings: MechanismSettings, variant: Variant, seed: int, directory: Path | None = None
) -> dict[str, Any]:
    """Train ``variant`` with ``seed``; returns val mIoU (percent), feature statistics and the curves.

    With ``directory`` the run logs, checkpoints and resumes there through the run layer
    (:class:`cca.engine.loop.TrainingRun`; see the module docstring); without, it keeps nothing on disk.
    """
    torch.set_num_threads(1)
    torch.manual_seed(seed)
    (train_x, train_y), val = settings.datasets(seed)
    train_x, val = _clip_window(train_x, val, variant.clip_frames)
    model = build_model(settings, variant)
    projection = nn.Conv2d(settings.channels, variant.ccl_channels, 1) if variant.ccl and variant.ccl_channels else None
    ccl = ccl_loss(variant.ccl) if variant.ccl else None
    parameters = list(model.parameters()) + (list(projection.parameters()) if projection is not None else [])
    optimiser = torch.optim.Adam(parameters, lr=settings.lr)
    generator = torch.Generator().manual_seed(seed)
    parts = {"model": model, "projection": projection, "optimizer": optimiser}
    # fmt=None: these checkpoints carry no format tag (as before the run layer)
    with TrainingRun(settings, parts, directory=directory, fmt=None, files=directory is not None) as run:
        return _train_loop(settings, variant, seed, run, (train_x, train_y), val, generator, ccl, projection)


PRODUCER = train_one  # what the runs' keys name (kept when train_one is wrapped or replaced, e.g. in tests)


def _train_loop(settings, variant, seed, run: TrainingRun, train, val, generator, ccl, projection) -> dict[str, Any]:
    """The steps of :func:`train_one` from its checkpoint (or the start) to the final evaluation."""
    (train_x, train_y), (model, optimiser) = train, (run.parts["model"], run.parts["optimizer"])
    num_classes = settings.num_colours + 1
    try:  # last.pt, or last.pt.prev (with a warning) when last.pt is damaged or missing
        start = run.resume()
    except (CheckpointError, FileNotFoundError):  # the same seed repeats the same steps: only time is lost
        print(f"  {run.last} and its previous copy are unreadable: starting this run over", flush=True)
        start = run.resume(load=False)
    seconds, evals, trains, stop_streak, diverged = 0.0, [], [], 0, False
    if run.state is not None:
        generator.set_state(run.state["generator"])
        set_rng_state(run.state["rng"])
        seconds, stop_streak = run.state["seconds"], run.state["stop_streak"]
        rows = read_jsonl(run.metrics.path) if run.metrics.path.is_file() else []
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
        loss, terms, space = ce, {}, None
        if ccl is not None:
            space = projection(outputs["feat"]) if projection is not None else outputs["feat"]
            terms = ccl.terms(*_ccl_inputs(space, target, variant.ccl_centres))
            loss = ce + settings.ccl_weight * terms["loss"]
        if run.log_due(it):
            row = _train_row(settings, it, loss, ce, terms, space, outputs, model, ccl)
            run.metrics.write(row)
            trains.append(row)
        if run.diverged(it, {"loss": float(loss.detach())}):  # a result of these studies, not an error
            diverged = True
            break
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        optimiser.step()
        stop = False
        if settings.eval_every and it % settings.eval_every == 0 and it != settings.iterations:
            row = {"type": "eval", "iter": it, "miou": evaluate(model, None, val, num_classes)["miou"],
                   "gamma": gamma_values(model.context)}
            evals.append(row)
            run.metrics.write(row)
            stop_streak = stop_streak + 1 if settings.stop_miou_pct and row["miou"] >= settings.stop_miou_pct else 0
            stop = stop_streak >= 2
        if run.files and it % settings.checkpoint_every == 0 and not stop and it != settings.iterations:
            run.save(it, generator=generator.get_state(), rng=rng_state(), seconds=time.time() - began,
                     stop_streak=stop_streak)
        if stop:
            break
    final = evaluate(model, projection, val, num_classes)
    gammas = gamma_values(model.context)
    run.metrics.write({"type": "eval", "iter": it, "miou": final["miou"], "gamma": gammas})
    evals.append({"type": "eval", "iter": it, "miou": final["miou"], "gamma": gammas})
    if run.files:
        save({"settings": settings.to_dict(), "variant": variant.spec(), "model": model.state_dict()},
             run.dir / "model.pt")
    return {
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


def run_key(settings: MechanismSettings, variant: Variant, seed: int) -> str:
    """A run's key (its directory's name): what decides its numbers (not the seeds list, not the checkpoint
    cadence) with :func:`train_one`'s code version; unchanged from the keys of the runs on disk."""
    return result_key({"settings": settings.identity(), "variant": variant.spec(), "seed": seed}, PRODUCER)


def _job(args: tuple[MechanismSettings, Variant, int, str]) -> dict[str, Any]:
    settings, variant, seed, directory = args
    from cca._io import atomic_write_json
    from cca.provenance import git_commit

    path = Path(directory)
    result = train_one(settings, variant, seed, directory=path)
    result.update({"settings_hash": run_key(settings, variant, seed), "code_version": code_version(PRODUCER),
                   "commit": git_commit()})
    atomic_write_json(path / "result.json", result)
    for done in (path / "last.pt", previous_path(path / "last.pt")):  # a finished run needs no checkpoint
        done.unlink(missing_ok=True)
    return result


def cached_result(directory: Path, key: str) -> dict[str, Any] | None:
    """The run's ``result.json`` when it was made with the same :func:`run_key`, else None."""
    path = directory / "result.json"
    if not path.is_file():
        return None
    old = json.loads(path.read_text())
    return old if is_current(old, key, PRODUCER) else None


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
