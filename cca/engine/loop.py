"""The run layer: one training-run object under every training loop of the project.

:class:`TrainingRun` owns what every loop needs around its steps: the run directory and its lock,
``last.pt`` written atomically every ``checkpoint_every`` steps (keeping ``last.pt.prev`` and falling back
to it), resume that checks the checkpoint's format and iterations, ``metrics.jsonl`` truncated to the
checkpoint on resume, the finite-loss guard, ``metrics.json`` (fractions in [0, 1]) and Ctrl-C as
:class:`~cca.engine.runtime.TrainingInterrupted`. A loop plugs in its step and its evaluation; the
segmentation engine (:mod:`cca.engine.train`), the 3D video and Mask R-CNN loops (``experiments/video.py``,
``experiments/detection.py``) and the mechanism studies (``experiments/mechanisms/training.py``) all run
on it::

    with TrainingRun(cfg, parts={"model": model, "optimizer": optimizer, "scheduler": scheduler}) as run:
        start = run.resume()
        for it in run.progress(start):  # with a progress bar
            loss, terms = ...
            run.step(it, loss, terms, optimizer, scheduler)  # guard, backward, optimiser, log, checkpoint
        run.finish(metrics)

``parts`` are the objects whose ``state_dict()`` a checkpoint holds under their names (``None``: stored as
``None``, nothing loaded). A run without a directory (``directory=None`` with ``files=False``) keeps
everything in memory: no lock, no files.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Iterator, Mapping
from pathlib import Path
from types import TracebackType
from typing import Any

import torch
from tqdm.auto import tqdm

from cca.engine import checkpoint, runlog
from cca.engine.config import ExperimentConfig, save_config
from cca.engine.lock import RunLock
from cca.engine.runtime import TrainingInterrupted, final_metrics_done

log = logging.getLogger("cca.engine")
LOOP_FORMAT = "cca.engine.loop/1"


class TrainingRun:
    """One training run's files in ``directory`` (default ``cfg.run_dir``); use as a context manager.

    ``cfg``: the run's settings, an :class:`~cca.engine.config.ExperimentConfig` or any settings dataclass
    with ``iterations``, ``log_every`` and ``checkpoint_every`` (and ``name``, ``to_dict()`` where used).

    ``fmt``: the checkpoint's ``format`` tag, checked on resume (``None``: neither written nor checked, for
    checkpoints made before the tag existed). ``main``: this process writes the files and holds the lock
    (rank 0 of a distributed run). ``files=False``: no directory at all.
    """

    def __init__(
        self,
        cfg: ExperimentConfig | Any,
        parts: Mapping[str, Any] | None = None,
        *,
        directory: str | Path | None = None,
        fmt: str | None = LOOP_FORMAT,
        main: bool = True,
        files: bool = True,
    ) -> None:
        self.cfg = cfg
        self.parts = dict(parts or {})
        self.fmt = fmt
        self.files = files
        self.main = main and files
        self.dir = Path(directory) if directory is not None else (cfg.run_dir if files else Path())
        self.last = self.dir / "last.pt"
        self.metrics = runlog.MetricsLog(self.dir / "metrics.jsonl", enabled=self.main)
        self.iteration = 0
        self.saved_iteration: int | None = None
        self._lock = RunLock(self.dir) if self.main else None
        self._last_loss = float("nan")

    # ------------------------------------------------------------------------------ lifetime
    def __enter__(self) -> TrainingRun:
        if self._lock is not None:
            self._lock.acquire()
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None, tb: TracebackType | None) -> None:
        if self._lock is not None:
            self._lock.release()
        if kind is not None and issubclass(kind, KeyboardInterrupt) and not isinstance(error, TrainingInterrupted):
            raise TrainingInterrupted(self.iteration, self.saved_iteration, self.dir) from None

    # ------------------------------------------------------------------------------ checkpoints
    def has_checkpoint(self) -> bool:
        """Whether ``last.pt`` (or ``last.pt.prev``) is there to resume from."""
        return self.files and checkpoint.holds_checkpoint(self.last)

    def resume(self, map_location: str | torch.device = "cpu", load: bool = True) -> int:
        """Load ``last.pt`` (or ``last.pt.prev``) into :attr:`parts` if there is one (and ``load``); returns the
        iterations done.

        The whole checkpoint stays in :attr:`state` (``None`` without one) for what a loop keeps besides its
        parts (random generators, data position). Metrics rows past the checkpoint are moved aside.
        """
        self.state: dict[str, Any] | None = None
        if self.files:
            runlog.check_run_directory(self.dir)
        if load and self.has_checkpoint():
            state, path = checkpoint.load_or_fallback(self.last, map_location=map_location)
            if self.fmt is not None and state.get("format") != self.fmt:
                raise checkpoint.CheckpointError(
                    f"{path} is not a checkpoint of this loop (format {state.get('format')!r}, expected {self.fmt!r})"
                )
            done = int(state["iteration"])
            if done > self.cfg.iterations:
                raise checkpoint.CheckpointError(
                    f"{path} is at iteration {done} but iterations={self.cfg.iterations}: a run cannot be shortened "
                    f"below its checkpoint; pass --set iterations={done} (or more), or start a new run elsewhere"
                )
            for name, part in self.parts.items():
                if part is not None:
                    part.load_state_dict(state[name])
            if "torch_rng" in state:
                torch.set_rng_state(state["torch_rng"])
            self.state = state
            self.iteration = self.saved_iteration = done
            if self.main:
                log.info("resumed %s at iteration %d/%d", path, done, self.cfg.iterations)
        dropped = self.metrics.truncate_after(self.iteration)
        if dropped:
            log.info("moved %d metrics rows past iteration %d to metrics.discarded.jsonl", dropped, self.iteration)
        return self.iteration

    def write_config(self, **extra: Any) -> None:
        """``config.json`` beside the run's files (``extra`` under ``_``-prefixed keys)."""
        if self.main:
            save_config(self.cfg, self.dir / "config.json", **extra)

    def save(self, it: int, **extra: Any) -> None:
        """Write ``last.pt`` at iteration ``it``: the parts' states, ``extra`` and (with a format) the settings."""
        state: dict[str, Any] = {}
        if self.fmt is not None:
            state.update({"format": self.fmt, "config": self.cfg.to_dict()})
        state["iteration"] = it
        state.update({name: None if part is None else part.state_dict() for name, part in self.parts.items()})
        state.update(extra)
        if self.main:
            checkpoint.save(state, self.last)
        self.saved_iteration = it

    def checkpoint_due(self, it: int) -> bool:
        """Every ``checkpoint_every`` steps and after the last one."""
        return it % self.cfg.checkpoint_every == 0 or it == self.cfg.iterations

    # ------------------------------------------------------------------------------ steps
    def progress(self, start: int) -> Iterator[int]:
        """Iterations ``start + 1 .. cfg.iterations`` under a progress bar showing the last step's loss."""
        with tqdm(total=self.cfg.iterations, initial=start, desc=f"train {self.cfg.name}", dynamic_ncols=True,
                  disable=not self.main) as bar:
            for it in range(start + 1, self.cfg.iterations + 1):
                yield it
                bar.set_postfix(loss=f"{self._last_loss:.3f}", refresh=False)
                bar.update(1)

    @staticmethod
    def all_finite(terms: Mapping[str, float]) -> bool:
        return all(math.isfinite(float(v)) for v in terms.values())

    def check_finite(self, it: int, terms: Mapping[str, float], hint: str = "") -> None:
        """The finite-loss guard: a loss term that is NaN/inf at step ``it`` writes an error row and raises
        ``FloatingPointError`` naming the terms and the last good checkpoint (``hint``: what to try)."""
        if self.all_finite(terms):
            return
        self.metrics.write({"type": "error", "iter": it, "error": "non-finite loss", **terms})
        last = f"{self.last} (iteration {self.saved_iteration})" if self.saved_iteration is not None else "none"
        listed = ", ".join(f"{k}={float(v):.6g}" for k, v in terms.items())
        raise FloatingPointError(
            f"loss is not finite at iteration {it}: {listed}; stopped without updating the weights. "
            f"Last good checkpoint: {last}.{' ' + hint if hint else ''}"
        )

    def diverged(self, it: int, terms: Mapping[str, float]) -> bool:
        """The same guard for studies where divergence is a result: a ``diverged`` row and True (stop there)."""
        if self.all_finite(terms):
            return False
        self.metrics.write({"type": "diverged", "iter": it, **terms})
        return True

    def step(self, it: int, loss: torch.Tensor, terms: dict[str, float], optimizer: Any, scheduler: Any) -> dict[str, Any]:
        """One optimiser step on ``loss`` (its parts: ``terms``) after the finite-loss guard, then
        :meth:`step_done` with the row ``{loss, *terms, lr}``."""
        self._last_loss = float(loss.detach())
        self.check_finite(it, {"loss": self._last_loss, **terms})
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        scheduler.step()
        row = {"loss": self._last_loss, **terms, "lr": optimizer.param_groups[0]["lr"]}
        self.step_done(it, row)
        return row

    def log_due(self, it: int) -> bool:
        """Every ``log_every`` steps and after the last one."""
        return it % self.cfg.log_every == 0 or it == self.cfg.iterations

    def step_done(self, it: int, row: dict[str, Any]) -> None:
        """Log step ``it`` (:meth:`log_due`) and checkpoint with the torch RNG (:meth:`checkpoint_due`)."""
        self.iteration = it
        if self.log_due(it):
            self.metrics.write({"type": "train", "iter": it, **row})
        if self.checkpoint_due(it):
            self.save(it, torch_rng=torch.get_rng_state())

    # ------------------------------------------------------------------------------ results
    def finished(self) -> bool:
        """Whether ``metrics.json`` already holds the evaluation after the last iteration."""
        return final_metrics_done(self.dir / "metrics.json", self.cfg.iterations)

    def finish(self, metrics: dict[str, Any], **extra: Any) -> dict[str, Any]:
        """Log the final evaluation (fractions) and write ``metrics.json`` (``metrics`` and ``extra``)."""
        self.metrics.write({"type": "eval", "iter": self.cfg.iterations, **metrics})
        payload = {**metrics, "iteration": self.cfg.iterations, "checkpoint": str(self.last), **extra}
        if self.main:
            runlog.write_json(self.dir / "metrics.json", payload)
        return payload

    def read_metrics(self) -> dict[str, Any]:
        """``metrics.json`` of a finished run."""
        return json.loads((self.dir / "metrics.json").read_text())
