"""Find, build and load the compiled kernels of ``csrc/``.

Order: an ahead-of-time build (``nox -s build`` puts ``cca/_C*.so`` beside the package) that is
newer than every source file; else a JIT build with :func:`torch.utils.cpp_extension.load`,
cached in :func:`cca._env.cache_dir`. The library is loaded only for its ``TORCH_LIBRARY``
registrations (``torch.ops.cca.*``), then :func:`cca.ops._registration.register` adds their fake
implementations and autograd. When nothing can be loaded the package keeps working on the
pure-PyTorch reference and says so once.
"""

from __future__ import annotations

import sys
import threading
import warnings
from pathlib import Path

import torch

from cca import _env
from cca.ops import _registration
from cca.ops._torch_private import torch_private

PACKAGE_DIR = Path(__file__).resolve().parents[1]
CSRC_CANDIDATES = (PACKAGE_DIR / "csrc", PACKAGE_DIR.parent / "csrc")

_lock = threading.Lock()
_state: dict = {"tried": False, "loaded": False, "path": None, "how": None, "error": None}


def csrc_dir() -> Path | None:
    """The ``csrc/`` directory shipped with this checkout, or ``None``."""
    for candidate in CSRC_CANDIDATES:
        if (candidate / "ops.cpp").is_file():
            return candidate
    return None


def sources(with_cuda: bool) -> list[Path]:
    root = csrc_dir()
    if root is None:
        return []
    files = [root / "ops.cpp", *sorted((root / "cpu").glob("*.cpp"))]
    if with_cuda:
        files += sorted((root / "cuda").glob("*.cu"))
    return files


def _newest_source_mtime() -> float:
    root = csrc_dir()
    if root is None:
        return 0.0
    testing = root / "testing"  # test-only sources (the CUDA emulation): not part of the shipped library
    return max(
        p.stat().st_mtime
        for p in root.rglob("*")
        if p.suffix in (".cpp", ".cu", ".h", ".cuh") and testing not in p.parents
    )


def _aot_library() -> Path | None:
    """An ahead-of-time build that is not older than the sources, if any."""
    for lib in sorted(PACKAGE_DIR.glob("_C*.so")):
        if lib.stat().st_mtime >= _newest_source_mtime():
            return lib
    return None


def _jit_build() -> Path:
    _env.quiet_cpu_toolchain_notice()
    from torch.utils import cpp_extension

    with_cuda = torch.cuda.is_available() and cpp_extension.CUDA_HOME is not None
    files = sources(with_cuda)
    if not files:
        raise RuntimeError(f"no csrc/ directory found beside the package (looked in {CSRC_CANDIDATES})")
    build_dir = _env.cache_dir() / ("cuda" if with_cuda else "cpu")
    build_dir.mkdir(parents=True, exist_ok=True)
    name = "cca_C_cuda" if with_cuda else "cca_C_cpu"
    built = build_dir / f"{name}.so"
    if not built.is_file() or built.stat().st_mtime < _newest_source_mtime():
        print(
            f"cca: compiling the criss-cross kernels ({'CPU+CUDA' if with_cuda else 'CPU'}) on first use; "
            f"cached in {build_dir}",
            file=sys.stderr,
            flush=True,
        )
    cuda_flags, ld_flags = [], ["-fopenmp"]  # at::parallel_for is inlined: serial without OpenMP
    if with_cuda:
        from cca.ops import _toolkit

        cuda_flags = ["-O3", *_toolkit.system_include_flags()]
        ld_flags += [f"-L{lib}" for lib in _toolkit.cuda_library_dirs(cpp_extension.CUDA_HOME)]
    cpp_extension.load(
        name=name,
        sources=[str(f) for f in files],
        extra_cflags=["-O3", "-fopenmp"],
        extra_cuda_cflags=cuda_flags or None,
        extra_ldflags=ld_flags,
        extra_include_paths=[str(files[0].parent)],
        build_directory=str(build_dir),
        is_python_module=False,
        verbose=_env.verbose_build(),
    )
    return built


def load() -> bool:
    """Load the compiled kernels once; ``True`` when ``torch.ops.cca`` is usable."""
    requested = _env.backend()  # validated first: a bad value raises and leaves nothing half-set
    if requested == "reference":  # not remembered: a later CCA_BACKEND=auto may still load
        return _state["loaded"]
    with _lock:
        if _state["tried"]:
            return _state["loaded"]
        _state["tried"] = True
        try:
            lib = _aot_library()
            if lib is not None:
                torch.ops.load_library(str(lib))
                _state["how"] = "ahead-of-time build"
            else:
                lib = _jit_build()
                _state["how"] = "JIT build"
            _state["path"], _state["loaded"] = str(lib), True
        except Exception as exc:  # no compiler, broken toolchain, ...: fall back, say why once
            _state["error"] = f"{type(exc).__name__}: {exc}"
            if requested == "extension":
                raise RuntimeError(f"CCA_BACKEND=extension but the kernels could not be loaded: {exc}") from exc
            lines = _state["error"].splitlines()
            reason = next((line for line in lines if "error:" in line), lines[0] if lines else "")
            warnings.warn(
                "cca: compiled kernels unavailable, using the pure-PyTorch reference path "
                f"({reason.strip()[:300]}). Run `python -m cca.info` for details; "
                "set CCA_BACKEND=reference to skip the build.",
                RuntimeWarning,
                stacklevel=3,
            )
        if _state["loaded"]:
            _registration.register("cca")  # fake impls and autograd of torch.ops.cca.*, once
        return _state["loaded"]


def has_kernel(device_type: str) -> bool:
    """Whether the loaded library has kernels for ``device_type`` (``"cpu"`` or ``"cuda"``)."""
    if not load():
        return False
    if device_type == "meta":  # shapes only: served by the fake implementations
        return True
    key = {"cpu": "CPU", "cuda": "CUDA"}.get(device_type)
    if key is None:
        return False
    has_kernel = torch_private().has_kernel_for_dispatch_key
    return all(has_kernel(f"cca::{op}", key) for op in _registration.OPS)


def status() -> dict:
    """What is loaded, from where, and why not (for ``python -m cca.info``)."""
    load()
    return {
        "backend_requested": _env.backend(),
        "loaded": _state["loaded"],
        "how": _state["how"],
        "library": _state["path"],
        "error": _state["error"],
        "cpu_kernels": has_kernel("cpu"),
        "cuda_kernels": has_kernel("cuda"),
        "cache_dir": str(_env.cache_dir()),
        "csrc": str(csrc_dir()),
    }
