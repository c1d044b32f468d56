"""Collect benchmark results, print a short summary, and dump them to the git-ignored results folder.

A timed run (``pytest tests/benchmarks --benchmark-only``) writes
``results/benchmarks/runs/<UTC time>.json`` (one file per run, with its provenance); nothing tracked is
touched. ``python -m cca.reports.operator`` renders ``reports/operator.md`` (+ CSVs) from those files.
The ordinary test run (``--benchmark-disable``) executes every benchmark once, as a test, and writes
nothing.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import torch

RESULTS_DIR = Path(__file__).resolve().parents[2] / "results" / "benchmarks" / "runs"
COMMAND = "pytest tests/benchmarks --benchmark-only"

RESULTS = pytest.StashKey[dict]()


@pytest.fixture
def record_result(request: pytest.FixtureRequest):
    """``record_result(group, impl, benchmark=None, **values)``: keep one implementation's figures in a
    group (the benchmark's median time when it was timed by pytest-benchmark, plus ``values``)."""
    results = request.config.stash.setdefault(RESULTS, {})

    def record(group: str, impl: str, benchmark=None, **values) -> None:
        stats = getattr(benchmark, "stats", None)
        median = stats.stats.median if stats is not None else None
        entry = {"median_s": median} if benchmark is not None else {}
        results.setdefault(group, {})[impl] = {**entry, **values}

    return record


def _summary_line(group: str, impls: dict) -> str | None:
    ours = impls.get("extension") or {}
    parts = []
    for other in ("einsum", "reference"):
        ratio = ours.get(f"speedup_vs_{other}")
        if ratio:
            parts.append(f"{ratio['median']:.2f}x vs {other} (min {ratio['min']:.2f}, max {ratio['max']:.2f})")
    if not parts:
        return None
    return f"{group}: ours {ours['median_ms']:.1f} ms, " + "; ".join(parts)


def _timed(config) -> bool:
    return not getattr(config.option, "benchmark_disable", True)


def pytest_runtest_logstart(nodeid, location) -> None:
    """A timed run says what it measures as it goes (a case takes seconds to a minute)."""
    reporter = _REPORTER.get("reporter")
    if reporter is not None:
        reporter.write_line(f"[{time.strftime('%H:%M:%S')}] measuring {nodeid.split('::', 1)[-1]} ...")


_REPORTER: dict = {}


def pytest_collection_finish(session) -> None:
    config = session.config
    if _timed(config):
        _REPORTER["reporter"] = config.pluginmanager.get_plugin("terminalreporter")
        full = config.getoption("--full")
        reporter = _REPORTER["reporter"]
        if reporter is not None:
            reporter.write_line(
                "timed benchmarks: ours vs einsum vs reference, interleaved rounds after a checked warm-up call; "
                + ("the long sweep included (--full)" if full else "default set (the long sweep: --full)")
                + "; durations: README 'Speed and memory on CPU'"
            )


def pytest_terminal_summary(terminalreporter, exitstatus, config) -> None:
    if not _timed(config):  # an untimed test run measured nothing: no speed figures
        return
    results = config.stash.get(RESULTS, {})
    lines = [line for group, impls in sorted(results.items()) if (line := _summary_line(group, impls))]
    if lines:
        terminalreporter.section("criss-cross attention: ours (extension) speed-up, median over interleaved rounds")
        for line in lines:
            terminalreporter.write_line(line)


def pytest_sessionfinish(session, exitstatus) -> None:
    """Dump a timed run's results (``--benchmark-only``, all passed) as one JSON file per run."""
    config = session.config
    results = config.stash.get(RESULTS, {})
    if not (getattr(config.option, "benchmark_only", False) and exitstatus == 0 and results):
        return
    from cca._io import atomic_write_json
    from cca.provenance import provenance

    prov = provenance("cpu", command=COMMAND)
    prov["hardware"] += f", torch threads {torch.get_num_threads()}"
    name = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    atomic_write_json(RESULTS_DIR / f"{name}.json", {"provenance": prov, "groups": results})
