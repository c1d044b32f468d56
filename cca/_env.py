"""Every environment switch of ``cca`` in one place.

* ``CCA_BACKEND``: ``auto`` (default: compiled kernels when they load, else the reference),
  ``extension`` (compiled kernels or an error) or ``reference`` (pure PyTorch, never compiles).
* ``CCA_CACHE_DIR``: where the JIT build of ``csrc/`` is cached
  (default ``~/.cache/cca/<torch version>``).
* ``CCA_VERBOSE_BUILD``: ``1`` shows the compiler output of the JIT build.
* ``CCA_CPU_SIMD``: ``0`` runs the 2D CPU ops on the generic kernels instead of the AVX2 ones
  (read by the C++ kernels at every call, ``csrc/cpu/simd.cpp``).
* ``CCA_CUDA_KERNEL``: ``auto`` (default: the fastest CUDA backend of criss-cross attention, timed once per shape),
  ``fused`` (Triton), ``gemm`` (cuBLAS batched matmuls), ``simple`` (the compiled CUDA kernels) or
  ``einsum`` (the reference formulation);
  see :mod:`cca.ops.cuda_dispatch`.
* ``CCA_CUDA_CHOICE_CACHE``: ``1`` keeps the CUDA backend choices in ``<cache dir>/cuda_choice.json``
  across processes (default ``0``: timed once per process).
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import torch

BACKENDS = ("auto", "extension", "reference")
CUDA_KERNELS = ("auto", "fused", "gemm", "simple", "einsum")


def backend() -> str:
    """The requested backend, validated (``auto`` when unset)."""
    value = os.environ.get("CCA_BACKEND", "auto").strip().lower() or "auto"
    if value not in BACKENDS:
        raise ValueError(f"CCA_BACKEND must be one of {BACKENDS}, got CCA_BACKEND={value!r}")
    return value


def cuda_kernel() -> str:
    """The requested CUDA backend of criss-cross attention (2D and 3D), validated (``auto`` when unset)."""
    value = os.environ.get("CCA_CUDA_KERNEL", "auto").strip().lower() or "auto"
    if value not in CUDA_KERNELS:
        raise ValueError(f"CCA_CUDA_KERNEL must be one of {CUDA_KERNELS}, got CCA_CUDA_KERNEL={value!r}")
    return value


def cuda_choice_cache() -> bool:
    """Whether the CUDA backend choices are kept on disk (``CCA_CUDA_CHOICE_CACHE=1``)."""
    value = os.environ.get("CCA_CUDA_CHOICE_CACHE", "0").strip().lower()
    if value not in ("", "0", "1", "false", "true", "no", "yes"):
        raise ValueError(f"CCA_CUDA_CHOICE_CACHE must be 0 or 1, got CCA_CUDA_CHOICE_CACHE={value!r}")
    return value in ("1", "true", "yes")


def cache_dir() -> Path:
    """Directory of the JIT-compiled extension for this torch build."""
    root = os.environ.get("CCA_CACHE_DIR")
    base = Path(root) if root else Path.home() / ".cache" / "cca"
    tag = torch.__version__.replace("+", "-")
    return base / f"torch-{tag}"


def verbose_build() -> bool:
    return os.environ.get("CCA_VERBOSE_BUILD", "0") not in ("", "0", "false", "False")


def quiet_cpu_toolchain_notice() -> None:
    """On a machine without a GPU, drop torch's "No CUDA runtime is found, using CUDA_HOME=..." notice, which
    ``torch.utils.cpp_extension`` logs on import although nothing here uses CUDA."""
    if not torch.cuda.is_available():
        logging.getLogger("torch.utils.cpp_extension").setLevel(logging.ERROR)
