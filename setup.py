"""Ahead-of-time build of the compiled kernels, ``cca/_C*.so`` (``torch.ops.cca.*``).

When is something compiled?

* ``python setup.py build_ext --inplace`` (what ``nox -s build`` runs) builds ``cca/_C*.so`` beside
  the package, where ``cca/ops/_extension.py`` finds and loads it.
* ``CCA_BUILD_EXT=1 pip install --no-build-isolation [-e] .`` builds it as part of the install
  (without ``--no-build-isolation`` the build runs in a fresh environment that has no PyTorch).
* Otherwise (a plain ``pip install -e .``) nothing is compiled: the package then builds the
  kernels just in time on first use (``cca/ops/_extension.py``), or runs on the pure-PyTorch
  reference.

CPU kernels (``csrc/ops.cpp``, ``csrc/cpu/*.cpp``) are always built. The CUDA kernels
(``csrc/cuda/*.cu``) are added when ``FORCE_CUDA=1``, or when PyTorch has CUDA, a CUDA toolkit is
found and a GPU is visible; ``FORCE_CUDA=0`` turns them off. A GPU is never needed to compile them:
on a machine without one, set ``FORCE_CUDA=1`` and the target architectures,

    FORCE_CUDA=1 TORCH_CUDA_ARCH_LIST="8.0;9.0" MAX_JOBS=2 python setup.py build_ext --inplace

(without ``TORCH_CUDA_ARCH_LIST`` and without a GPU, ``DEFAULT_CUDA_ARCHS`` below is used).
``MAX_JOBS`` caps the parallel compiler jobs.
"""

from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path

from setuptools import setup

ROOT = Path(__file__).resolve().parent
CSRC = ROOT / "csrc"
DEFAULT_CUDA_ARCHS = "8.0;9.0+PTX"  # A100, H100/H200; PTX so newer GPUs can JIT it
BUILD_COMMANDS = ("build_ext",)


def _flag(name: str) -> str | None:
    """``"1"``/``"0"`` for a set boolean environment switch, ``None`` when unset or empty."""
    value = os.environ.get(name, "").strip().lower()
    if value in ("", "auto"):
        return None
    if value in ("1", "true", "yes", "on"):
        return "1"
    if value in ("0", "false", "no", "off"):
        return "0"
    raise ValueError(f"{name} must be 0 or 1, got {name}={os.environ[name]!r}")


def _wants_build() -> bool:
    return _flag("CCA_BUILD_EXT") == "1" or any(cmd in sys.argv[1:] for cmd in BUILD_COMMANDS)


def _rel(paths) -> list[str]:
    return [str(p.relative_to(ROOT)) for p in paths]


def _with_cuda(torch, cpp_extension) -> bool:
    force = _flag("FORCE_CUDA")
    if force == "0":
        return False
    if force == "1":
        if cpp_extension.CUDA_HOME is None:
            raise RuntimeError("FORCE_CUDA=1 but no CUDA toolkit was found: put nvcc on PATH or set CUDA_HOME")
        return True
    return torch.version.cuda is not None and cpp_extension.CUDA_HOME is not None and torch.cuda.is_available()


def _toolkit():
    """``cca/ops/_toolkit.py``, loaded by path (importing ``cca`` here would need torch at install)."""
    spec = importlib.util.spec_from_file_location("cca_toolkit", ROOT / "cca" / "ops" / "_toolkit.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _extensions() -> tuple[list, dict]:
    """The ``cca._C`` extension and the ``build_ext`` command, or nothing when not building."""
    if not _wants_build():
        return [], {}
    import torch
    from torch.utils import cpp_extension

    sources = [CSRC / "ops.cpp", *sorted((CSRC / "cpu").glob("*.cpp"))]
    cxx_flags = ["-O3", "-fopenmp"]  # OpenMP: at::parallel_for in the kernels is inlined, and serial without it
    kwargs: dict = {
        "include_dirs": [str(CSRC)],
        "extra_compile_args": {"cxx": cxx_flags},
        "extra_link_args": ["-fopenmp"],  # libgomp.so.1: resolves to the one PyTorch loaded
    }
    if _with_cuda(torch, cpp_extension):
        if not os.environ.get("TORCH_CUDA_ARCH_LIST") and not torch.cuda.is_available():
            os.environ["TORCH_CUDA_ARCH_LIST"] = DEFAULT_CUDA_ARCHS
            print(f"cca setup.py: no GPU visible, building for TORCH_CUDA_ARCH_LIST={DEFAULT_CUDA_ARCHS}")
        sources += sorted((CSRC / "cuda").glob("*.cu"))
        toolkit = _toolkit()
        system_includes = toolkit.system_include_flags()
        kwargs["library_dirs"] = toolkit.cuda_library_dirs(cpp_extension.CUDA_HOME)
        kwargs["extra_compile_args"] = {"cxx": cxx_flags + system_includes, "nvcc": ["-O3", *system_includes]}
        extension = cpp_extension.CUDAExtension("cca._C", _rel(sources), **kwargs)
    else:
        extension = cpp_extension.CppExtension("cca._C", _rel(sources), **kwargs)
    print(f"cca setup.py: building cca._C from {', '.join(_rel(sources))}")
    return [extension], {"build_ext": cpp_extension.BuildExtension}


ext_modules, cmdclass = _extensions()
setup(ext_modules=ext_modules, cmdclass=cmdclass)
