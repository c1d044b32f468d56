"""The JIT build of ``csrc/`` from a clean cache, the fallback without a compiler, ``python -m cca.info``.

Each case runs in a fresh interpreter (the loader's state is per process) with its own
``CCA_CACHE_DIR``. An ahead-of-time build beside the package would take precedence over the JIT
build, so the scripts switch it off to test the JIT path itself.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

import cca
from cca.ops import _extension

SCRIPT = """
import json, sys, warnings
import torch
from cca.ops import _extension, reference
_extension._aot_library = lambda: None  # test the JIT path even when an AOT build exists
import cca

with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    q, k = torch.randn(2, 3, 5, 6, dtype=torch.float64), torch.randn(2, 3, 5, 6, dtype=torch.float64)
    v = torch.randn(2, 4, 5, 6, dtype=torch.float64)
    errors = [
        (cca.criss_cross_attention(q, k, v) - reference.criss_cross_attention_2d(q, k, v)).abs().max().item(),
        (cca.ca_weight(q, k) - reference.ca_weight_2d(q, k)).abs().max().item(),
        (cca.criss_cross_attention(q, k, v) - reference.criss_cross_attention_2d(q, k, v)).abs().max().item(),
    ]
print(json.dumps({
    "state": _extension._state,
    "errors": errors,
    "runtime_warnings": [str(w.message) for w in caught if issubclass(w.category, RuntimeWarning)],
    "uses_extension": cca.ops.use_extension(torch.device("cpu")),
}))
"""


def run_script(cache: Path, **env_overrides: str | None) -> tuple[dict, str, float]:
    """Run :data:`SCRIPT` in a fresh interpreter; returns its report, its stderr and its wall time."""
    env = {**os.environ, "CCA_CACHE_DIR": str(cache)}
    for name, value in env_overrides.items():
        if value is None:
            env.pop(name, None)
        else:
            env[name] = value
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, "-c", SCRIPT], env=env, capture_output=True, text=True, timeout=600)
    elapsed = time.perf_counter() - start
    assert proc.returncode == 0, f"exit {proc.returncode}\nstderr:\n{proc.stderr[-4000:]}"
    return json.loads(proc.stdout.strip().splitlines()[-1]), proc.stderr, elapsed


@pytest.mark.slow
def test_jit_build_from_clean_cache(tmp_path):
    """First use compiles once into CCA_CACHE_DIR (saying so on stderr); the next process reuses it."""
    cache = tmp_path / "cache"
    first, stderr, build_seconds = run_script(cache, CCA_BACKEND="extension")
    assert stderr.count("compiling") == 1, stderr
    libraries = sorted(cache.rglob("*.so"))
    assert len(libraries) == 1, f"expected one library in {cache}, found {libraries}"
    assert first["state"]["loaded"] and first["state"]["how"] == "JIT build"
    assert Path(first["state"]["path"]) == libraries[0]
    assert first["uses_extension"]
    assert max(first["errors"]) < 1e-12

    second, stderr, load_seconds = run_script(cache, CCA_BACKEND="extension")
    assert "compiling" not in stderr, stderr
    assert second["state"]["path"] == first["state"]["path"]
    assert max(second["errors"]) < 1e-12
    print(f"clean JIT build: {build_seconds:.1f} s, cached load: {load_seconds:.1f} s")


def test_without_compiler_falls_back_to_reference_and_warns_once(tmp_path):
    """No usable C++ compiler: the default backend runs the reference and warns once."""
    missing = str(tmp_path / "no-such-compiler")
    report, stderr, _ = run_script(tmp_path / "cache", CCA_BACKEND=None, CXX=missing, CC=missing)
    assert report["state"]["loaded"] is False
    assert not report["uses_extension"]
    assert max(report["errors"]) < 1e-12
    assert len(report["runtime_warnings"]) == 1, report["runtime_warnings"]
    warning = report["runtime_warnings"][0]
    assert "reference" in warning and "cca.info" in warning
    assert "no-such-compiler" in report["state"]["error"]


def test_without_compiler_extension_backend_fails_loudly(tmp_path):
    missing = str(tmp_path / "no-such-compiler")
    env = {**os.environ, "CCA_CACHE_DIR": str(tmp_path / "cache"), "CCA_BACKEND": "extension", "CXX": missing}
    proc = subprocess.run([sys.executable, "-c", SCRIPT], env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode != 0
    assert "RuntimeError: CCA_BACKEND=extension but the kernels could not be loaded" in proc.stderr


# --------------------------------------------------------------------------- python -m cca.info
INFO_KEYS = {
    "cca_version",
    "torch_version",
    "torch_cuda_version",
    "gpu_visible",
    "cca_backend_env",
    "backend_requested",
    "loaded",
    "how",
    "library",
    "error",
    "cpu_kernels",
    "cuda_kernels",
    "cache_dir",
    "active_cpu",
    "active_cuda",
}


def run_info(*args: str, **env_overrides: str) -> subprocess.CompletedProcess:
    env = {**os.environ, **env_overrides}
    return subprocess.run(
        [sys.executable, "-m", "cca.info", *args], env=env, capture_output=True, text=True, timeout=600
    )


def test_info_json_on_reference_backend(tmp_path):
    proc = run_info("--json", CCA_BACKEND="reference", CCA_CACHE_DIR=str(tmp_path))
    assert proc.returncode == 0, proc.stderr
    info = json.loads(proc.stdout)
    assert INFO_KEYS <= set(info)
    assert info["cca_version"] == cca.__version__ and info["torch_version"] == torch.__version__
    assert info["gpu_visible"] == torch.cuda.is_available()
    assert info["backend_requested"] == "reference" and info["loaded"] is False
    assert info["active_cpu"].startswith("reference")
    assert info["cache_dir"].startswith(str(tmp_path))


def test_info_text_with_extension(extension, capsys):
    from cca import info

    assert info.main([]) == 0
    text = capsys.readouterr().out
    assert f"loaded ({_extension._state['how']}) from {_extension._state['path']}" in text
    assert "CPU kernels     yes" in text
    assert "active on CPU     compiled kernels" in text
    assert f"torch             {torch.__version__}" in text


def test_info_reports_a_bogus_backend():
    proc = run_info(CCA_BACKEND="bogus")
    assert proc.returncode == 0, proc.stderr
    assert "CCA_BACKEND       bogus -> invalid" in proc.stdout
    assert "CCA_BACKEND must be one of ('auto', 'extension', 'reference')" in proc.stdout
