"""Process-level pieces of a training run: determinism switches, the kernel build before the clock starts,
the end state of a run (``metrics.json``) and what Ctrl-C raises."""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Iterator
from pathlib import Path

import torch

from cca import _env
from cca.ops import _extension


class TrainingInterrupted(KeyboardInterrupt):
    """Ctrl-C during training: where it stopped and which checkpoint a resumed run starts from."""

    def __init__(self, iteration: int, saved_iteration: int | None, run_dir: Path) -> None:
        self.iteration, self.saved_iteration, self.run_dir = iteration, saved_iteration, run_dir
        saved = (f"resumes from iteration {saved_iteration} ({run_dir / 'last.pt'})" if saved_iteration is not None
                 else "no checkpoint yet: starts over")
        super().__init__(f"interrupted at iteration {iteration}; {saved}")


@contextlib.contextmanager
def determinism(deterministic: bool, device: torch.device) -> Iterator[None]:
    """cudnn.benchmark off and deterministic algorithms on when asked for; restored afterwards."""
    saved = (
        torch.backends.cudnn.benchmark,
        torch.backends.cudnn.deterministic,
        torch.are_deterministic_algorithms_enabled(),
        torch.is_deterministic_algorithms_warn_only_enabled(),
    )
    if deterministic and device.type == "cuda":
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.backends.cudnn.benchmark = device.type == "cuda" and not deterministic
    torch.backends.cudnn.deterministic = deterministic
    if deterministic:
        torch.use_deterministic_algorithms(True, warn_only=True)
    try:
        yield
    finally:
        torch.backends.cudnn.benchmark, torch.backends.cudnn.deterministic = saved[:2]
        torch.use_deterministic_algorithms(saved[2], warn_only=saved[3])


def final_metrics_done(path: Path, iterations: int) -> bool:
    """Whether ``metrics.json`` exists and holds the evaluation after the last iteration."""
    try:
        return int(json.loads(path.read_text()).get("iteration", -1)) >= iterations
    except (OSError, ValueError, TypeError, AttributeError):
        return False


def compile_kernels() -> None:
    """Load (JIT-compile on first use) the criss-cross kernels now, so that the progress bar's clock and
    the first step's time do not include the build; any failure is left to the first real call."""
    _env.quiet_cpu_toolchain_notice()
    try:
        _extension.load()
    except Exception:  # noqa: BLE001 - the op itself reports (or falls back) on first use
        pass
