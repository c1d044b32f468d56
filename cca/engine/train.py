"""Iteration-based training on PyTorch's distributed stack (torchrun, DDP, SyncBatchNorm, autocast).

One process or ``torchrun --nproc_per_node N``, the same code: SGD with momentum and weight decay,
poly LR with optional linear warm-up, ``CCNetCriterion`` (main + aux + optional OHEM / CCL), gradient
accumulation, autocast (bf16, or fp16 with a GradScaler) on CUDA, SyncBN on several GPUs.

Reproducibility. The data order depends only on ``seed`` and the global ``batch_size``: every step
takes the next ``batch_size`` samples of the epoch's shuffle, however they are split over processes
and accumulation steps; each sample's augmentation is seeded from ``(seed, epoch, index)`` and the
torch RNG (dropout) is re-seeded before each micro-batch from its first sample. So a resumed run
repeats the steps of an uninterrupted one, and N processes with micro-batch b give the losses of one
process accumulating N micro-batches of b (BatchNorm statistics are per micro-batch in both).

Files in ``cfg.run_dir``: ``config.json``, ``metrics.jsonl`` (train and eval rows), ``last.pt``
(full state, every ``checkpoint_every`` steps and at the end), ``best.pt`` (weights with the best val
mIoU), ``metrics.json`` (per-class IoU of the final evaluation, fractions in [0, 1]), ``.lock`` (held by
the running process: a second run on the same directory fails at once naming it). A directory holding
a ``config.json`` / ``metrics.json`` / ``metrics.jsonl`` that no run wrote is refused, not overwritten.

Resuming (``resume=True``) continues from ``last.pt`` (or ``last.pt.prev`` with a warning when ``last.pt``
is unreadable or missing) and finishes whatever is missing, the final evaluation and ``metrics.json`` included.
Ctrl-C raises :class:`TrainingInterrupted` (a ``KeyboardInterrupt``) saying where the run stopped.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import time
from collections.abc import Callable
from typing import Any

import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from tqdm.auto import tqdm

from cca.engine import builders, checkpoint, distributed, runlog
from cca.engine.config import ExperimentConfig, config_from_dict, diff
from cca.engine.evaluate import evaluate_model, metrics_payload
from cca.engine.loop import TrainingRun
from cca.engine.runtime import TrainingInterrupted, compile_kernels, determinism
from cca.engine.sampling import InfiniteLoader, ResumableDistributedSampler, SeededSamples, sample_seed
from cca.engine.schedule import poly_scheduler
from cca.provenance import provenance

log = logging.getLogger("cca.engine")

StepHook = Callable[[int, dict[str, Any]], None]
CHECKPOINT_FORMAT = "cca.engine.checkpoint/1"
_DROPOUT_SALT = 0x5EED


def train(cfg: ExperimentConfig, *, resume: bool = False, on_step: StepHook | None = None) -> dict[str, Any]:
    """Train ``cfg`` (resuming from ``cfg.run_dir / "last.pt"`` if ``resume``); returns a summary dict.

    ``on_step(iteration, row)`` is called on every rank after each optimiser step (after logging,
    evaluation and checkpointing). Raises ``FloatingPointError`` when the loss stops being finite;
    the last checkpoint written before stays as it is.
    """
    info = distributed.setup(cfg.device)
    try:
        # one run per directory: rank 0 holds the lock and writes the files
        with TrainingRun(cfg, fmt=CHECKPOINT_FORMAT, main=info.is_main) as run:
            with determinism(cfg.deterministic, info.device):
                return _Trainer(cfg, info, resume, run).run(on_step)
    finally:
        distributed.cleanup(info)


def micro_batch_size(cfg: ExperimentConfig, world_size: int) -> int:
    """Samples per forward pass: ``batch_size / (world_size * grad_accum)`` (must divide evenly)."""
    parts = world_size * cfg.grad_accum
    if cfg.batch_size % parts:
        raise ValueError(
            f"batch_size={cfg.batch_size} (global) must be divisible by world_size * grad_accum = "
            f"{world_size} * {cfg.grad_accum} = {parts}"
        )
    return cfg.batch_size // parts


class _Trainer:
    def __init__(self, cfg: ExperimentConfig, info: distributed.DistInfo, resume: bool, run: TrainingRun) -> None:
        self.cfg, self.info, self.files = cfg, info, run
        self.run_dir = cfg.run_dir
        self.last_path, self.best_path = self.run_dir / "last.pt", self.run_dir / "best.pt"
        if self.last_path.is_dir():
            raise FileExistsError(f"{self.last_path} is a directory, not a checkpoint; move it out of {self.run_dir}")
        if resume and not checkpoint.holds_checkpoint(self.last_path):
            raise FileNotFoundError(f"resume was asked for but there is no checkpoint at {self.last_path}")
        if not resume and checkpoint.holds_checkpoint(self.last_path):
            found = self.last_path if self.last_path.exists() else checkpoint.previous_path(self.last_path)
            raise FileExistsError(
                f"{self.run_dir} already holds a run ({found}); pass --resume to continue it "
                "or --out DIR to start a new one elsewhere"
            )
        runlog.check_run_directory(self.run_dir)
        device = info.device
        self.micro = micro_batch_size(cfg, info.world_size)
        checkpoint.seed_everything(cfg.seed + info.rank)

        builders.ensure_synthetic_data(cfg, info)
        train_set = builders.build_train_set(cfg)
        self.val_set = builders.build_val_set(cfg)
        if len(train_set) < cfg.batch_size:
            raise ValueError(f"the {cfg.train_split} set has {len(train_set)} samples, fewer than batch_size={cfg.batch_size}")
        self.sampler = ResumableDistributedSampler(train_set, info.world_size, info.rank, seed=cfg.seed)
        self.loader = InfiniteLoader(
            SeededSamples(train_set, seed=cfg.seed),
            self.sampler,
            batch_size=self.micro,
            batches_per_epoch=(len(train_set) // cfg.batch_size) * cfg.grad_accum,
            num_workers=cfg.num_workers,
            pin_memory=device.type == "cuda",
            persistent_workers=False,
        )

        if cfg.pretrained is None and cfg.backbone != "resnet18_tiny" and info.is_main:
            log.warning("training %s from random initialisation (pretrained=None); the paper starts from "
                        "ImageNet weights: --set pretrained=PATH", cfg.backbone)
        model = builders.build_model(cfg, train_set.num_classes)
        if device.type == "cuda" and info.distributed and cfg.sync_bn:
            model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
        self.module = model.to(device)
        self.criterion = builders.build_criterion(cfg, ignore_index=train_set.ignore_index).to(device)
        self.optimizer = builders.build_optimizer(self.module, cfg)
        self.scheduler = poly_scheduler(self.optimizer, cfg.iterations, cfg.poly_power, cfg.warmup_iters, cfg.warmup_ratio)

        self.amp_dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(cfg.amp)
        if self.amp_dtype is not None and device.type != "cuda":
            log.warning("amp=%s applies on CUDA only; training in float32 on %s", cfg.amp, device)
            self.amp_dtype = None
        if self.amp_dtype is torch.bfloat16 and not torch.cuda.is_bf16_supported():
            raise RuntimeError(f"amp='bf16' but {torch.cuda.get_device_name(device)} does not support bfloat16")
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.amp_dtype is torch.float16)

        self.iteration = 0
        self.best_miou = -math.inf
        self.elapsed_s = 0.0
        run.parts = {"model": self.module, "optimizer": self.optimizer, "scheduler": self.scheduler, "scaler": self.scaler}
        run.resume(map_location=device, load=resume)
        if resume:
            self._resumed(run.state)
        compile_kernels()  # a JIT build of the kernels happens here, not inside the first timed step
        self.model: nn.Module = self.module
        if info.distributed:
            self.model = DistributedDataParallel(
                self.module,
                device_ids=[device.index] if device.type == "cuda" else None,
                # parameters that get no gradient: the aux head when aux_weight == 0, the shared
                # criss-cross attention when R == 0 (the no-attention ablation of table 2)
                find_unused_parameters=cfg.aux_weight == 0 or cfg.recurrence == 0,
            )

        self.metrics = run.metrics
        run.write_config(provenance=provenance(device), world_size=info.world_size)

    # ------------------------------------------------------------------------------------------
    def run(self, on_step: StepHook | None) -> dict[str, Any]:
        cfg, info = self.cfg, self.info
        final: dict[str, Any] | None = None
        done: dict[str, Any] | None = None  # the final evaluation of a run found complete, for the summary
        if self.iteration >= cfg.iterations:
            if self.files.finished():
                log.info("run %s is complete (%d/%d iterations)", self.run_dir, self.iteration, cfg.iterations)
                done = json.loads((self.run_dir / "metrics.json").read_text())
            else:  # killed after its last checkpoint, before metrics.json: finish what is missing
                log.info("run %s finished training (%d/%d iterations) but not its final evaluation: evaluating now",
                         self.run_dir, self.iteration, cfg.iterations)
                final = self._evaluate()
        bar = tqdm(
            total=cfg.iterations,
            initial=self.iteration,
            desc=f"train {cfg.name}",
            unit="it",
            disable=not info.is_main,
            dynamic_ncols=True,
        )
        start = time.perf_counter() - self.elapsed_s
        try:
            while self.iteration < cfg.iterations:
                t0 = time.perf_counter()
                terms, lr = self._step()
                self.iteration += 1
                it = self.iteration
                self.elapsed_s = time.perf_counter() - start
                row = {"type": "train", "iter": it, **terms, "lr": lr, "time_s": round(self.elapsed_s, 4),
                       "step_time_s": round(time.perf_counter() - t0, 4)}
                if it % cfg.log_every == 0 or it == cfg.iterations:
                    self.metrics.write(row)
                bar.set_postfix(loss=f"{terms['loss']:.4f}", lr=f"{lr:.2e}", refresh=False)
                bar.update(1)
                if (cfg.eval_every and it % cfg.eval_every == 0) or it == cfg.iterations:
                    final = self._evaluate()
                if self.files.checkpoint_due(it):
                    self._save_last()
                if on_step is not None:
                    on_step(it, row)
        except KeyboardInterrupt:
            raise TrainingInterrupted(self.iteration, self.files.saved_iteration, self.run_dir) from None
        finally:
            bar.close()
        if final is not None and info.is_main:
            runlog.write_json(
                self.run_dir / "metrics.json",
                {**metrics_payload(final, self.val_set, cfg), "checkpoint": str(self.last_path),
                 "iteration": self.iteration, "provenance": provenance(info.device)},
            )
        return {
            "run_dir": str(self.run_dir),
            "iteration": self.iteration,
            "last_checkpoint": str(self.last_path),
            "best_checkpoint": str(self.best_path) if self.best_path.is_file() else None,
            "best_miou": self.best_miou if math.isfinite(self.best_miou) else None,
            "final_metrics": final if final is not None else done,
        }

    # ------------------------------------------------------------------------------------------
    def _step(self) -> tuple[dict[str, float], float]:
        """One optimiser step over ``grad_accum`` micro-batches; loss terms averaged over ranks."""
        cfg, device = self.cfg, self.info.device
        self.model.train()
        lr = float(self.optimizer.param_groups[0]["lr"])
        self.optimizer.zero_grad(set_to_none=True)
        names: list[str] | None = None
        totals: torch.Tensor | None = None
        for m in range(cfg.grad_accum):
            image, target = next(self.loader)
            epochs, indices = self.loader.last_keys  # type: ignore[misc]
            torch.manual_seed(sample_seed(cfg.seed ^ _DROPOUT_SALT, int(epochs[0]), int(indices[0])))
            image = image.to(device, non_blocking=True)
            target = target.to(device, non_blocking=True)
            sync = not isinstance(self.model, DistributedDataParallel) or m == cfg.grad_accum - 1
            with contextlib.nullcontext() if sync else self.model.no_sync():
                with torch.autocast(device.type, dtype=self.amp_dtype or torch.float32, enabled=self.amp_dtype is not None):
                    outputs = self.model(image)
                    loss, terms = self.criterion(outputs, target)
                self.scaler.scale(loss / cfg.grad_accum).backward()
            if names is None:
                names = sorted(k for k in terms if k != "loss")
            values = [loss.detach().float().reshape(())] + [
                torch.as_tensor(terms[k]).detach().float().reshape(()).to(device) for k in names
            ]
            step = torch.stack(values) / cfg.grad_accum
            totals = step if totals is None else totals + step
        assert totals is not None and names is not None
        distributed.all_reduce_sum(totals)
        values = (totals / self.info.world_size).tolist()
        terms_out = dict(zip(["loss", *names], values, strict=True))
        self.files.check_finite(self.iteration + 1, terms_out,
                                hint=f"Try a lower lr (now {cfg.lr}), a warm-up or amp='none'.")
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.scheduler.step()
        return terms_out, lr

    def _evaluate(self) -> dict[str, Any]:
        # Without SyncBN each rank's BN running statistics saw only its own batches since DDP last broadcast
        # rank 0's (at the start of each forward): evaluate everywhere with rank 0's, which are the saved ones.
        distributed.broadcast_buffers(self.module)
        result = evaluate_model(self.module, self.val_set, self.cfg, self.info, desc=f"eval @{self.iteration}")
        row = {"type": "eval", "iter": self.iteration, "split": self.cfg.val_split,
               **{k: result[k] for k in ("miou", "pixel_acc", "mean_acc", "num_images") if k in result},
               "time_s": round(self.elapsed_s, 4)}
        self.metrics.write(row)
        if result["miou"] > self.best_miou:
            self.best_miou = float(result["miou"])
            if self.info.is_main:
                checkpoint.save(
                    {"format": CHECKPOINT_FORMAT, "config": self.cfg.to_dict(), "iteration": self.iteration,
                     "model": self.module.state_dict(), "miou": self.best_miou},
                    self.best_path, keep_previous=False,
                )
        return result

    # ------------------------------------------------------------------------------------------
    def _save_last(self) -> None:
        """``last.pt`` (rank 0 writes it) with what a resumed run needs besides the parts: data position,
        every rank's RNG state, the best mIoU and the time so far."""
        rng = distributed.all_gather_object(checkpoint.rng_state(self.info.device))  # collective: every rank
        data = {"epoch": self.loader.epoch, "steps_in_epoch": self.loader.position // self.cfg.grad_accum,
                "batch_size": self.cfg.batch_size}
        self.files.save(self.iteration, data=data, rng=rng, world_size=self.info.world_size, best_miou=self.best_miou,
                        elapsed_s=self.elapsed_s, provenance=provenance(self.info.device))
        distributed.barrier()

    def _resumed(self, state: dict[str, Any]) -> None:
        """After :meth:`TrainingRun.resume` loaded the parts: the settings check, data position, RNG, counters."""
        saved = config_from_dict(state["config"])
        done = int(state["iteration"])
        if saved.iterations != self.cfg.iterations and self.info.is_main:
            log.warning("iterations changed from %d to %d: the run %s to %d iterations from its checkpoint at %d; "
                        "the poly LR schedule now ends at iteration %d", saved.iterations, self.cfg.iterations,
                        "is extended" if self.cfg.iterations > saved.iterations else "is shortened",
                        self.cfg.iterations, done, self.cfg.iterations)
        changed = {k: v for k, v in diff(saved, self.cfg).items() if k != "output_dir"}
        if changed and self.info.is_main:
            log.warning("resuming with settings that differ from the checkpoint's: %s",
                        ", ".join(f"{k}: {a!r} -> {b!r}" for k, (a, b) in changed.items()))
        data = state["data"]
        if data["batch_size"] != self.cfg.batch_size and self.info.is_main:
            log.warning("global batch changed from %d to %d: the data order differs from the original run",
                        data["batch_size"], self.cfg.batch_size)
        position = min(data["steps_in_epoch"] * self.cfg.grad_accum, self.loader.batches_per_epoch)
        self.loader.load_state_dict({"epoch": data["epoch"], "position": position})
        rng = state["rng"]
        if len(rng) == self.info.world_size:
            checkpoint.set_rng_state(rng[self.info.rank], self.info.device)
        else:
            if self.info.is_main:
                log.warning("checkpoint has RNG states of %d processes, this run has %d: re-seeding",
                            len(rng), self.info.world_size)
            checkpoint.seed_everything(self.cfg.seed + self.info.rank + int(state["iteration"]))
        self.iteration = done
        self.best_miou = float(state["best_miou"])
        self.elapsed_s = float(state["elapsed_s"])
