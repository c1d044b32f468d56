"""Collect benchmark results per group and print ours-vs-reference ratios at the end of the run."""

from __future__ import annotations

import pytest

RESULTS = pytest.StashKey[dict]()


@pytest.fixture
def record_result(request: pytest.FixtureRequest):
    """``record_result(group, impl, benchmark, **values)``: keep the median time (when timed) and
    ``values`` (e.g. ``peak_bytes``) of one implementation in a group for the summary."""
    results = request.config.stash.setdefault(RESULTS, {})

    def record(group: str, impl: str, benchmark, **values) -> None:
        stats = getattr(benchmark, "stats", None)
        median = stats.stats.median if stats is not None else None
        results.setdefault(group, {})[impl] = {"median_s": median, **values}

    return record


def _mib(value: float) -> str:
    return f"{value / 2**20:.1f} MiB"


def pytest_terminal_summary(terminalreporter, exitstatus, config) -> None:
    results = config.stash.get(RESULTS, {})
    if not results:
        return
    terminalreporter.section("criss-cross attention: ours (extension) vs reference")
    for group, impls in sorted(results.items()):
        ref, ours = impls.get("reference"), impls.get("extension")
        if ref is None or ours is None:
            continue
        parts = []
        if ref["median_s"] and ours["median_s"]:
            parts.append(
                f"median {ours['median_s'] * 1e3:.1f} ms vs {ref['median_s'] * 1e3:.1f} ms "
                f"= {ref['median_s'] / ours['median_s']:.2f}x faster"
            )
        for key in ("peak_bytes", "saved_bytes"):
            if key in ours and key in ref:
                parts.append(f"{key} {_mib(ours[key])} vs {_mib(ref[key])} ({ours[key] / ref[key]:.2f}x)")
        terminalreporter.write_line(f"{group}: " + ("; ".join(parts) or "no timings (--benchmark-disable)"))
