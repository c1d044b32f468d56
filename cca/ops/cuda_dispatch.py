"""Per-shape choice among the CUDA backends of criss-cross attention (2D and 3D), by timing them on the device.

Backends (each autograd-enabled, ``(N, C', H, W) x2, (N, C, H, W) -> (N, C, H, W)``, or the 3D shapes):

* ``fused``: the Triton kernels of :mod:`cca.ops.triton_kernels` (online softmax, no map in HBM; 2D only);
* ``gemm``: :mod:`cca.ops.gemm_backend` (cuBLAS batched matmuls into a slot buffer; 2D and 3D);
* ``simple``: the compiled CUDA kernels ``torch.ops.cca.ca_weight_* -> softmax -> ca_map_*``;
* ``einsum``: the reference formulation (:mod:`cca.ops.reference`), a candidate
  so that the choice is never slower than einsum by construction (up to timing noise).

The first call of a new key ``(op, pass, shape, dtype, TF32, determinism, device)`` times every candidate
that can run on the call's own tensors (a few warm runs, CUDA events, the median), keeps the fastest for
the process and logs one line (logger ``cca.ops.cuda_dispatch``) with the times and the winner. A candidate
that cannot run (its ``can_run`` reason) or raises while timed is skipped, its reason logged. The pass is
``forward`` under ``torch.no_grad`` or when no input needs a gradient, else ``forward+backward`` (timed
as such). With ``CCA_CUDA_CHOICE_CACHE=1`` the choices are also kept in
``cca._env.cache_dir() / "cuda_choice.json"`` and read back by later processes (a corrupt file is ignored
with a warning). ``CCA_CUDA_KERNEL=fused|gemm|simple|einsum`` forces one backend (an error with the reason when
it cannot run). Under ``torch.use_deterministic_algorithms(True)`` the fused kernels are not candidates.
During CUDA graph capture nothing is timed: a key not chosen before the capture gets the first backend
that can run (``fused``, then ``gemm``...), so warm up outside the capture as CUDA graphs require anyway.

The choice happens in eager mode on real CUDA tensors only (:func:`applies`): under ``torch.compile``,
``torch.jit.trace`` and dispatch modes (fake tensors, :mod:`cca.profiling`'s memory trackers) the
``simple`` ops are traced, so graphs and memory models keep seeing ``ca_weight_2d``/``ca_map_2d``.
"""

from __future__ import annotations

import functools
import json
import logging
import os
import statistics
import threading
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import Tensor
from torch.utils._python_dispatch import _get_current_dispatch_mode

from cca import _env
from cca.ops import _extension, gemm_backend, reference, triton_kernels

__all__ = ["BACKENDS", "Candidate", "Chooser", "applies", "choice_key", "criss_cross_attention", "cuda_event_timer"]

BACKENDS = ("fused", "gemm", "simple", "einsum")
CACHE_FORMAT = 1
logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Candidate:
    """A backend: ``can_run(q, k, v) -> None or reason``, ``run(q, k, v) -> out`` (autograd-enabled)."""

    name: str
    can_run: Callable[[Tensor, Tensor, Tensor], str | None]
    run: Callable[[Tensor, Tensor, Tensor], Tensor]


@dataclass
class Choice:
    winner: str
    times_ms: dict[str, float] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)
    source: str = "timed"  # or "disk"


def cuda_event_timer(fn: Callable[[], object], warmup: int = 2, repeats: int = 5) -> float:
    """Median milliseconds of ``fn`` on the current CUDA stream, after ``warmup`` runs."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end))
    return statistics.median(times)


def needs_backward(*tensors: Tensor) -> bool:
    return torch.is_grad_enabled() and any(t.requires_grad for t in tensors)


def _op_name(query: Tensor) -> str:
    return f"criss_cross_attention_{query.dim() - 2}d"


@functools.cache
def _device_name(index: int) -> str:
    return torch.cuda.get_device_name(index)


def choice_key(query: Tensor, key: Tensor, value: Tensor) -> str:
    """``op|pass|NxC'xCx[T]xHxW|dtype[+tf32][|deterministic]|device name`` of a call."""
    n, cq, *spatial = query.shape
    dtype = str(query.dtype).removeprefix("torch.")
    if query.dtype == torch.float32 and query.is_cuda and torch.backends.cuda.matmul.allow_tf32:
        dtype += "+tf32"
    device = _device_name(query.device.index or 0) if query.is_cuda else str(query.device)
    parts = [_op_name(query), "forward+backward" if needs_backward(query, key, value) else "forward",
             "x".join(map(str, (n, cq, value.shape[1], *spatial))), dtype]
    if torch.are_deterministic_algorithms_enabled():
        parts.append("deterministic")
    return "|".join([*parts, device])


def _workload(candidate: Candidate, query: Tensor, key: Tensor, value: Tensor, backward: bool) -> Callable[[], object]:
    """One call of ``candidate`` as the key's pass runs it: forward only, or forward and backward."""
    if not backward:
        def forward() -> object:
            with torch.no_grad():
                return candidate.run(query, key, value)
        return forward
    leaves = [t.detach().requires_grad_(True) for t in (query, key, value)]
    grad = torch.ones_like(value)

    def forward_backward() -> object:
        with torch.enable_grad():
            return torch.autograd.grad(candidate.run(*leaves), leaves, grad)
    return forward_backward


class Chooser:
    """The per-key choice: candidates, a timer (injectable: tests pass a fake), the process cache and an
    optional JSON file on disk."""

    def __init__(self, candidates: dict[str, Candidate], timer: Callable[[Callable[[], object]], float] = cuda_event_timer,
                 cache_path: Path | None = None) -> None:
        self.candidates = candidates
        self.timer = timer
        self.cache_path = cache_path
        self.choices: dict[str, Choice] = {}
        self._lock = threading.RLock()
        self._disk: dict[str, dict] | None = None

    # ------------------------------------------------------------------ disk
    def disk_choices(self) -> dict[str, dict]:
        """The choices in the cache file (``{}`` without a file; a corrupt one is ignored with a warning)."""
        if self._disk is None:
            self._disk = {}
            if self.cache_path is not None and self.cache_path.is_file():
                try:
                    data = json.loads(self.cache_path.read_text())
                    if data.get("format") != CACHE_FORMAT or not isinstance(data.get("choices"), dict):
                        raise ValueError(f"expected {{'format': {CACHE_FORMAT}, 'choices': {{...}}}}")
                    self._disk = {k: v for k, v in data["choices"].items() if isinstance(v, dict) and "winner" in v}
                except (OSError, ValueError, AttributeError) as exc:
                    warnings.warn(f"ignoring the CUDA backend choice cache {self.cache_path}: {exc}", stacklevel=2)
        return self._disk

    def _save(self, key: str, choice: Choice) -> None:
        if self.cache_path is None:
            return
        disk = self.disk_choices()
        disk[key] = {"winner": choice.winner, "times_ms": choice.times_ms}
        try:
            self.cache_path.parent.mkdir(parents=True, exist_ok=True)
            tmp = self.cache_path.with_suffix(f".tmp{os.getpid()}")
            tmp.write_text(json.dumps({"format": CACHE_FORMAT, "choices": disk}, indent=1, sort_keys=True))
            tmp.replace(self.cache_path)
        except OSError as exc:
            logger.warning("could not write the CUDA backend choice cache %s: %s", self.cache_path, exc)

    # ------------------------------------------------------------------ choice
    def forced(self, name: str, query: Tensor, key: Tensor, value: Tensor) -> Candidate:
        """The backend ``CCA_CUDA_KERNEL`` names, or a ``RuntimeError`` with the reason it cannot run."""
        candidate = self.candidates[name]
        reason = candidate.can_run(query, key, value)
        if reason is not None:
            raise RuntimeError(f"CCA_CUDA_KERNEL={name} cannot run {choice_key(query, key, value)}: {reason}")
        return candidate

    def choose(self, query: Tensor, key: Tensor, value: Tensor, timing_allowed: bool = True) -> Candidate:
        """The winner for this call's key: cached in the process, else from disk, else timed now. Without
        ``timing_allowed`` (during CUDA graph capture) an unknown key gets the first candidate that can run,
        not cached."""
        key_text = choice_key(query, key, value)
        if not timing_allowed and key_text not in self.choices:
            for candidate in self.candidates.values():
                if candidate.can_run(query, key, value) is None:
                    return candidate
        return self.candidates[self._cached(key_text, query, key, value)]

    def _cached(self, key_text: str, query: Tensor, key: Tensor, value: Tensor) -> str:
        with self._lock:
            if key_text in self.choices:
                return self.choices[key_text].winner
            stored = self.disk_choices().get(key_text)
            if stored and stored["winner"] in self.candidates:
                if self.candidates[stored["winner"]].can_run(query, key, value) is None:
                    choice = Choice(stored["winner"], dict(stored.get("times_ms", {})), source="disk")
                    self.choices[key_text] = choice
                    logger.info("cca CUDA backend for %s: %s (from %s)", key_text, choice.winner, self.cache_path)
                    return choice.winner
            choice = self._time(key_text, query, key, value)
            self.choices[key_text] = choice
            self._save(key_text, choice)
            return choice.winner

    def _time(self, key_text: str, query: Tensor, key: Tensor, value: Tensor) -> Choice:
        backward = needs_backward(query, key, value)
        times, skipped = {}, {}
        for name, candidate in self.candidates.items():
            reason = candidate.can_run(query, key, value)
            if reason is not None:
                skipped[name] = reason
                continue
            try:
                times[name] = float(self.timer(_workload(candidate, query, key, value, backward)))
            except Exception as exc:  # a candidate that fails here must not fail the call: the next one serves
                skipped[name] = f"raised {type(exc).__name__}: {str(exc).splitlines()[0][:200] if str(exc) else ''}"
        if not times:
            reasons = "; ".join(f"{k}: {v}" for k, v in skipped.items())
            raise RuntimeError(f"no CUDA backend of criss-cross attention can run {key_text} ({reasons})")
        winner = min(times, key=times.get)
        shown = ", ".join(f"{k} {v:.3f} ms" for k, v in sorted(times.items(), key=lambda kv: kv[1]))
        skips = "".join(f"; skipped {k}: {v}" for k, v in skipped.items())
        logger.info("cca CUDA backend for %s: %s (timed: %s%s)", key_text, winner, shown, skips)
        return Choice(winner, times, skipped)


# --------------------------------------------------------------------------- the default backends
def _fused_can_run(query: Tensor, key: Tensor, value: Tensor) -> str | None:
    if query.dim() != 4:
        return "the fused kernels are 2D only"
    if torch.are_deterministic_algorithms_enabled():
        return "not a candidate under torch.use_deterministic_algorithms(True)"
    return triton_kernels.can_run(query, key, value)  # says so when Triton is not installed


def _fused_run(query: Tensor, key: Tensor, value: Tensor) -> Tensor:
    return triton_kernels.criss_cross_attention(query, key, value)


def _simple_can_run(query: Tensor, key: Tensor, value: Tensor) -> str | None:
    if not _extension.has_kernel(query.device.type):
        return f"the compiled kernels have no {query.device.type} implementation (python -m cca.info says why)"
    return None


def _simple_run(query: Tensor, key: Tensor, value: Tensor) -> Tensor:
    """The compiled ops: ``ca_weight -> softmax -> ca_map`` (the inputs were checked by the caller)."""
    dim = f"{query.dim() - 2}d"
    energy = getattr(torch.ops.cca, f"ca_weight_{dim}")(query, key)
    return getattr(torch.ops.cca, f"ca_map_{dim}")(reference.position_softmax(energy), value)


def _einsum_run(query: Tensor, key: Tensor, value: Tensor) -> Tensor:
    fn = reference.criss_cross_attention_2d if query.dim() == 4 else reference.criss_cross_attention_3d
    return fn(query, key, value)


def default_candidates() -> dict[str, Candidate]:
    return {
        "fused": Candidate("fused", _fused_can_run, _fused_run),
        "gemm": Candidate("gemm", gemm_backend.can_run, gemm_backend.criss_cross_attention),
        "simple": Candidate("simple", _simple_can_run, _simple_run),
        "einsum": Candidate("einsum", lambda q, k, v: None, _einsum_run),
    }


_chooser: Chooser | None = None
_chooser_lock = threading.Lock()


def chooser() -> Chooser:
    """The process's :class:`Chooser` (made on first use; disk cache per ``CCA_CUDA_CHOICE_CACHE``)."""
    global _chooser
    with _chooser_lock:
        if _chooser is None:
            path = _env.cache_dir() / "cuda_choice.json" if _env.cuda_choice_cache() else None
            _chooser = Chooser(default_candidates(), cuda_event_timer, path)
        return _chooser


def applies(query: Tensor) -> bool:
    """Whether :func:`criss_cross_attention` serves this call: an eager call on real CUDA tensors."""
    return (
        isinstance(query, Tensor)
        and query.device.type == "cuda"
        and not torch.compiler.is_compiling()  # first: under dynamo nothing below is traced
        and not torch.jit.is_tracing()
        and _get_current_dispatch_mode() is None
        and _env.backend() != "reference"
    )


def select(query: Tensor, key: Tensor, value: Tensor, chosen: Chooser | None = None) -> Candidate:
    """The backend for this call: the one ``CCA_CUDA_KERNEL`` forces, else the per-key winner."""
    chosen = chosen or chooser()
    requested = _env.cuda_kernel()
    if requested != "auto":
        return chosen.forced(requested, query, key, value)
    capturing = query.is_cuda and torch.cuda.is_current_stream_capturing()  # no timing inside a CUDA graph
    return chosen.choose(query, key, value, timing_allowed=not capturing)


def criss_cross_attention(query: Tensor, key: Tensor, value: Tensor) -> Tensor:
    """Run the selected backend (2D or 3D by the rank of ``query``), under a profiler range
    ``cca::criss_cross_attention_2d[<backend>]`` (``_3d`` for volumes)."""
    candidate = select(query, key, value)
    with torch.profiler.record_function(f"cca::{_op_name(query)}[{candidate.name}]"):
        return candidate.run(query, key, value)
