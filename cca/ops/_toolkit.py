"""Where the CUDA toolkit's libraries and headers are, for the AOT (``setup.py``) and JIT builds.

Imported by ``setup.py`` by file path (so that it needs neither ``cca`` nor ``torch`` at import).
"""

from __future__ import annotations

import importlib.util
from pathlib import Path


def cuda_homes(cuda_home: str | None) -> list[Path]:
    """Where the toolkit may live: ``CUDA_HOME`` as torch found it first; when nvcc is a wrapper
    script (e.g. ``/usr/local/bin/nvcc``) torch guesses ``/usr/local``, so also ``/usr/local/cuda``."""
    homes = [Path(cuda_home)] if cuda_home else []
    homes.append(Path("/usr/local/cuda"))
    unique: list[Path] = []
    for home in homes:
        if home.is_dir() and home.resolve() not in [u.resolve() for u in unique]:
            unique.append(home)
    return unique


def cuda_library_dirs(cuda_home: str | None) -> list[str]:
    """The first directory holding ``libcudart.so`` (``<home>/lib64`` or ``<home>/lib``)."""
    return [
        str(lib)
        for home in cuda_homes(cuda_home)
        for lib in (home / "lib64", home / "lib")
        if (lib / "libcudart.so").exists()
    ][:1]


def cuda_include_dirs() -> list[str]:
    """``nvidia/cu*/include`` of the pip CUDA packages that PyTorch depends on: they hold library
    headers (cuBLAS, cuSPARSE, ...) that PyTorch's CUDA headers include and that a minimal toolkit
    (nvcc + runtime only) lacks. Pass them as ``-isystem`` so the toolkit's own headers win."""
    spec = importlib.util.find_spec("nvidia")
    if spec is None or not spec.submodule_search_locations:
        return []
    return [
        str(include)
        for location in spec.submodule_search_locations
        for include in sorted(Path(location).glob("cu*/include"))
        if (include / "cublas_v2.h").is_file()
    ]


def system_include_flags() -> list[str]:
    return [flag for include in cuda_include_dirs() for flag in ("-isystem", include)]
