"""The benchmark suite as a user meets it: the test run prints no speed figures (only a timed run
measures), and ``pytest --benchmark-only`` collects only the benchmarks, runs the short default set
and leaves the long sweep to ``--full``, saying what it measures as it goes."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _pytest(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1"}
    return subprocess.run([sys.executable, "-m", "pytest", "-p", "no:cacheprovider", *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=600)


def test_an_untimed_test_run_prints_no_speed_figures():
    out = _pytest("tests/benchmarks/test_bench_ops.py", "-q", "-k", "cpu and paper and float64")
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]
    assert "passed" in out.stdout
    for figure in ("x vs einsum", "speed-up", "median over interleaved rounds", " ms,"):
        assert figure not in out.stdout, out.stdout[-2000:]


def test_benchmark_only_collects_only_the_benchmarks():
    out = _pytest("--benchmark-only", "--co", "-q")
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]
    listed = [line for line in out.stdout.splitlines() if "::" in line]
    assert listed and all(line.startswith("tests/benchmarks/") for line in listed), listed[:5]


def test_the_long_sweep_is_opt_in():
    out = _pytest("--benchmark-only", "-rs", "-q", "tests/benchmarks/test_bench_ops.py", "-k", "float64 or 2x")
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]
    assert "--full" in out.stdout and " passed" not in out.stdout, out.stdout[-2000:]
