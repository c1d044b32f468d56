"""The engine's run files for training loops outside :mod:`cca.engine.train` (Mask R-CNN, 3D video).

:class:`LoopRun` gives such a loop what the engine's runs have: the directory lock, ``last.pt`` written
atomically every ``checkpoint_every`` steps (keeping ``last.pt.prev``, falling back to it), resume that
checks the iterations, ``metrics.jsonl`` truncated to the checkpoint on resume, ``metrics.json``
(fractions in [0, 1]) and Ctrl-C as :class:`~cca.engine.runtime.TrainingInterrupted`::

    with LoopRun(cfg) as run:
        start = run.resume(model, optimizer, scheduler)
        for it in run.progress(start):  # with a progress bar
            loss, terms = ...
            run.step(it, loss, terms, model, optimizer, scheduler)  # backward, optimiser, log, checkpoint
        run.finish(metrics)
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterator
from pathlib import Path
from types import TracebackType
from typing import Any

import torch

from cca.engine import checkpoint, runlog
from cca.engine.config import ExperimentConfig, save_config
from cca.engine.lock import RunLock
from cca.engine.runtime import TrainingInterrupted, final_metrics_done

log = logging.getLogger("cca.engine")
LOOP_FORMAT = "cca.engine.loop/1"


class LoopRun:
    """Run files of one loop in ``cfg.run_dir``; use as a context manager (holds the directory's lock)."""

    def __init__(self, cfg: ExperimentConfig) -> None:
        self.cfg = cfg
        self.dir = Path(cfg.run_dir)
        self.last = self.dir / "last.pt"
        self.metrics = runlog.MetricsLog(self.dir / "metrics.jsonl")
        self.iteration = 0
        self.saved_iteration: int | None = None
        self._lock = RunLock(self.dir)
        self._last_loss = float("nan")

    def __enter__(self) -> LoopRun:
        self._lock.acquire()
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None, tb: TracebackType | None) -> None:
        self._lock.release()
        if kind is not None and issubclass(kind, KeyboardInterrupt) and not isinstance(error, TrainingInterrupted):
            raise TrainingInterrupted(self.iteration, self.saved_iteration, self.dir) from None

    def resume(self, model: torch.nn.Module, optimizer: Any, scheduler: Any) -> int:
        """Load ``last.pt`` (or ``last.pt.prev``) if there is one; returns the iterations already done."""
        runlog.check_run_directory(self.dir)
        if checkpoint.holds_checkpoint(self.last):
            state, path = checkpoint.load_or_fallback(self.last)
            if state.get("format") != LOOP_FORMAT:
                raise checkpoint.CheckpointError(f"{path} is not a checkpoint of this loop (format {state.get('format')!r})")
            done = int(state["iteration"])
            if done > self.cfg.iterations:
                raise checkpoint.CheckpointError(
                    f"{path} is at iteration {done} but iterations={self.cfg.iterations}: a run cannot be shortened "
                    f"below its checkpoint; pass --set iterations={done} (or more), or start a new run elsewhere"
                )
            model.load_state_dict(state["model"])
            optimizer.load_state_dict(state["optimizer"])
            scheduler.load_state_dict(state["scheduler"])
            torch.set_rng_state(state["torch_rng"])
            self.iteration = self.saved_iteration = done
            log.info("resumed %s at iteration %d/%d", path, done, self.cfg.iterations)
        self.metrics.truncate_after(self.iteration)
        save_config(self.cfg, self.dir / "config.json")
        return self.iteration

    def progress(self, start: int) -> Iterator[int]:
        """Iterations ``start + 1 .. cfg.iterations`` under a progress bar showing the last step's loss."""
        from tqdm.auto import tqdm

        with tqdm(total=self.cfg.iterations, initial=start, desc=f"train {self.cfg.name}", dynamic_ncols=True) as bar:
            for it in range(start + 1, self.cfg.iterations + 1):
                yield it
                bar.set_postfix(loss=f"{self._last_loss:.3f}", refresh=False)
                bar.update(1)

    def step(
        self, it: int, loss: torch.Tensor, terms: dict[str, float], model: torch.nn.Module, optimizer: Any, scheduler: Any
    ) -> dict[str, Any]:
        """One optimiser step on ``loss`` (its parts: ``terms``), then :meth:`step_done` with the row
        ``{loss, *terms, lr}``; a loss that is not finite is a ``FloatingPointError`` naming the terms."""
        self._last_loss = float(loss.detach())
        if not math.isfinite(self._last_loss):
            raise FloatingPointError(f"loss is not finite at iteration {it}: {terms}")
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        scheduler.step()
        row = {"loss": self._last_loss, **terms, "lr": optimizer.param_groups[0]["lr"]}
        self.step_done(it, row, model, optimizer, scheduler)
        return row

    def step_done(self, it: int, row: dict[str, Any], model: torch.nn.Module, optimizer: Any, scheduler: Any) -> None:
        """Log step ``it`` (every ``log_every``) and checkpoint (every ``checkpoint_every`` and at the end)."""
        self.iteration = it
        last_step = it == self.cfg.iterations
        if it % self.cfg.log_every == 0 or last_step:
            self.metrics.write({"type": "train", "iter": it, **row})
        if it % self.cfg.checkpoint_every == 0 or last_step:
            checkpoint.save({"format": LOOP_FORMAT, "config": self.cfg.to_dict(), "iteration": it,
                             "model": model.state_dict(), "optimizer": optimizer.state_dict(),
                             "scheduler": scheduler.state_dict(), "torch_rng": torch.get_rng_state()}, self.last)
            self.saved_iteration = it

    def finished(self) -> bool:
        """Whether ``metrics.json`` already holds the evaluation after the last iteration."""
        return final_metrics_done(self.dir / "metrics.json", self.cfg.iterations)

    def finish(self, metrics: dict[str, Any]) -> dict[str, Any]:
        """Log the final evaluation (fractions) and write ``metrics.json``; returns what it wrote."""
        self.metrics.write({"type": "eval", "iter": self.cfg.iterations, **metrics})
        payload = {**metrics, "iteration": self.cfg.iterations, "checkpoint": str(self.last)}
        runlog.write_json(self.dir / "metrics.json", payload)
        return payload

    def read_metrics(self) -> dict[str, Any]:
        import json

        return json.loads((self.dir / "metrics.json").read_text())
