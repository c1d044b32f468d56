"""Collect benchmark results per group and print ours-vs-reference ratios at the end of the run.

A timed run (`--benchmark-only`) also writes `reports/operator.md` (+ `operator.csv`, `modules.csv`):
the ratios with the hardware, commit and command that produced them.
"""

from __future__ import annotations

import csv
from pathlib import Path

import pytest
import torch

REPORTS = Path(__file__).resolve().parents[2] / "reports"

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
    module_rows = _module_rows(results)
    if module_rows:
        terminalreporter.section("context modules: non-local time / module time")
        for row in module_rows:
            terminalreporter.write_line(
                f"{row['benchmark']}: {row['module']} median {row['median_ms']:.1f} ms, "
                f"non-local / {row['module']} = {row['nonlocal_over_module']:.2f}x"
            )


MODULES = ("rcca_r1", "rcca_r2", "nonlocal")  # impl names recorded by test_bench_modules.py


def _operator_rows(results: dict) -> list[dict]:
    """One row per operator group: ours vs reference medians, speed-up, peak and saved memory."""
    rows = []
    for group, impls in sorted(results.items()):
        ref, ours = impls.get("reference"), impls.get("extension")
        if not (ref and ours and ref["median_s"] and ours["median_s"]):
            continue
        row = {
            "benchmark": group,
            "ours_ms": round(ours["median_s"] * 1e3, 2),
            "reference_ms": round(ref["median_s"] * 1e3, 2),
            "speedup": round(ref["median_s"] / ours["median_s"], 3),
        }
        for key in ("peak_bytes", "saved_bytes"):
            if key in ours and key in ref:
                row[f"ours_{key[:-6]}_mib"] = round(ours[key] / 2**20, 1)
                row[f"reference_{key[:-6]}_mib"] = round(ref[key] / 2**20, 1)
                row[f"{key[:-6]}_ratio"] = round(ours[key] / ref[key], 3)
        rows.append(row)
    return rows


def _module_rows(results: dict) -> list[dict]:
    """One row per (module group, module): median time and the non-local block's time over it (same run)."""
    rows = []
    for group, impls in sorted(results.items()):
        nonlocal_ = impls.get("nonlocal")
        if not (nonlocal_ and nonlocal_["median_s"]):
            continue
        for name in MODULES:
            if name in impls and impls[name]["median_s"]:
                median = impls[name]["median_s"]
                rows.append(
                    {
                        "benchmark": group,
                        "module": name,
                        "median_ms": round(median * 1e3, 2),
                        "nonlocal_over_module": round(nonlocal_["median_s"] / median, 3),
                    }
                )
    return rows


def _write_csv(path: Path, rows: list[dict]) -> None:
    columns = list(dict.fromkeys(key for row in rows for key in row))
    with open(path, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns)
        writer.writeheader()
        writer.writerows(rows)


def _markdown_table(rows: list[dict]) -> list[str]:
    columns = list(dict.fromkeys(key for row in rows for key in row))
    return [
        "| " + " | ".join(columns) + " |",
        "| " + " | ".join("---" for _ in columns) + " |",
        *("| " + " | ".join(str(row.get(c, "")) for c in columns) + " |" for row in rows),
    ]


def _write_report(results: dict, config) -> None:
    from cca.reports.provenance import provenance, stamp

    rows, module_rows = _operator_rows(results), _module_rows(results)
    if not rows and not module_rows:
        return
    groups = [r["benchmark"] for r in rows + module_rows]
    device = "cuda" if any(" cuda " in f" {g} " for g in groups) and torch.cuda.is_available() else "cpu"
    prov = provenance(device, command="pytest tests/benchmarks --benchmark-only")
    prov["hardware"] += f", torch threads {torch.get_num_threads()}"
    REPORTS.mkdir(exist_ok=True)
    lines = [
        "# Criss-cross attention operator: ours (compiled kernels) vs the einsum reference",
        "",
        stamp(prov, regenerate="pytest tests/benchmarks --benchmark-only"),
        "Median time of each benchmark (pytest-benchmark, after warm-up), every comparison measured in",
        "the same run. CUDA rows appear only when the run had a GPU.",
    ]
    if rows:
        _write_csv(REPORTS / "operator.csv", rows)
        lines += [
            "",
            "## The operator: ours vs the pure-PyTorch reference (`operator.csv`)",
            "",
            "peak = peak bytes of live tensors during the call, saved = bytes saved for backward.",
            "",
            *_markdown_table(rows),
        ]
    if module_rows:
        _write_csv(REPORTS / "modules.csv", module_rows)
        lines += [
            "",
            "## Context modules: RCCA (R=1, R=2) vs the non-local block (`modules.csv`)",
            "",
            "Each module alone on the paper's 1x512x97x97 input, float32; `nonlocal_over_module` is the",
            "non-local block's median time divided by the module's (tests/benchmarks/test_bench_modules.py).",
            "",
            *_markdown_table(module_rows),
        ]
    (REPORTS / "operator.md").write_text("\n".join(lines) + "\n")


def pytest_sessionfinish(session, exitstatus) -> None:
    config = session.config
    if getattr(config.option, "benchmark_only", False) and exitstatus == 0:
        _write_report(config.stash.get(RESULTS, {}), config)
