"""The CUDA kernels' own source run on the CPU: build and load the test-only extension.

``csrc/testing/emulated_ops.cpp`` compiles ``csrc/cuda/kernels.h`` (the exact device code of the
CUDA extension) as ordinary C++ under ``csrc/testing/cuda_emulation.h`` and registers the ops as
``torch.ops.cca_cuda_emulated.*`` on CPU tensors, with the schemas of ``torch.ops.cca.*``.
:func:`load` builds it just in time (``torch.utils.cpp_extension.load``, cached under
``CCA_CACHE_DIR`` or ``~/.cache/cca``; never shipped) and registers fake implementations and autograd
(backward through the ``*_backward`` ops, forward mode) with ``cca/ops/_registration.py``, the one path that
serves the real ``cca`` ops too.
"""

from __future__ import annotations

import contextlib
import hashlib
import threading
from collections.abc import Iterator
from pathlib import Path

import torch
from torch import Tensor

from cca import _env
from cca.ops import _registration, reference

CSRC = Path(__file__).resolve().parents[1] / "csrc"
SOURCE = CSRC / "testing" / "emulated_ops.cpp"
HEADERS = (
    CSRC / "testing" / "cuda_emulation.h",
    CSRC / "cuda" / "kernels.h",
    CSRC / "cuda" / "launch_config.h",
    CSRC / "cuda" / "ops_composition.h",
    CSRC / "cuda" / "primitives.h",
    CSRC / "criss_cross.h",
    CSRC / "checks.h",
)
NAMESPACE = "cca_cuda_emulated"
DIMS = ("2d", "3d")

_lock = threading.Lock()
_loaded: list[bool] = []


def _sources_digest() -> str:
    """Hash of the source and every header it includes (the JIT versioner hashes the sources only)."""
    digest = hashlib.sha256()
    for path in (SOURCE, *HEADERS):
        digest.update(path.read_bytes())
    return digest.hexdigest()[:16]


def load() -> object:
    """Build (once, cached) and load the emulated kernels; returns ``torch.ops.cca_cuda_emulated``."""
    with _lock:
        if not _loaded:
            from torch.utils import cpp_extension

            build_dir = _env.cache_dir() / "cuda_emulated"
            build_dir.mkdir(parents=True, exist_ok=True)
            cpp_extension.load(
                name="cca_cuda_emulated",
                sources=[str(SOURCE)],
                extra_cflags=["-O2", f"-DCCA_EMULATION_DIGEST={_sources_digest()}"],
                extra_include_paths=[str(CSRC)],
                build_directory=str(build_dir),
                is_python_module=False,
                verbose=_env.verbose_build(),
            )
            _registration.register(NAMESPACE)  # fake impls + autograd, the one path used for `cca` too
            _loaded.append(True)
    return getattr(torch.ops, NAMESPACE)


@contextlib.contextmanager
def max_blocks(blocks: int) -> Iterator[None]:
    """Cap the grid of every emulated launch at ``blocks`` blocks (grid-stride loop) inside the block."""
    ops = load()
    previous = ops.set_max_blocks(blocks)
    try:
        yield
    finally:
        ops.set_max_blocks(previous)


def attention(query: Tensor, key: Tensor, value: Tensor) -> Tensor:
    """Criss-cross attention through the emulated ops, as ``cca.criss_cross_attention`` runs the real
    ones: ``softmax(ca_weight(q, k))`` (float32 for half precision) then ``ca_map``. 2D or 3D."""
    ops = load()
    dim = "2d" if query.dim() == 4 else "3d"
    energy = getattr(ops, f"ca_weight_{dim}")(query, key)
    return getattr(ops, f"ca_map_{dim}")(reference.position_softmax(energy), value)


def ca_weight(query: Tensor, key: Tensor) -> Tensor:
    """Emulated affinity, 2D ``(N, C', H, W)`` or 3D ``(N, C', T, H, W)`` inputs."""
    return getattr(load(), f"ca_weight_{'2d' if query.dim() == 4 else '3d'}")(query, key)


def ca_map(attention_map: Tensor, value: Tensor) -> Tensor:
    """Emulated aggregation, 2D ``(N, C, H, W)`` or 3D ``(N, C, T, H, W)`` value."""
    return getattr(load(), f"ca_map_{'2d' if value.dim() == 4 else '3d'}")(attention_map, value)
