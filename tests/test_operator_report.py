"""cca.reports.operator renders the benchmark results (results/benchmarks/runs/*.json) into operator.md + CSVs."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from cca.reports import operator


def _run(speedup: float) -> dict:
    ratio = {"median": speedup, "min": speedup - 0.1, "max": speedup + 0.2}
    ours = {
        "median_ms": 10.0, "min_ms": 9.0, "max_ms": 12.0, "gflops": 50.0, "rounds": 3, "setting": "q,k 1x2x3x3",
        "pass": "forward", "device": "cpu", "speedup_vs_einsum": ratio, "speedup_vs_reference": ratio,
        "gemm_rate_gflops": 100.0, "peak_mib": 3.0, "copy_bandwidth_gbs": 10.0 * speedup,
    }
    other = {"median_ms": 10.0 * speedup, "gflops": 50.0 / speedup, "rounds": 3, "peak_mib": 6.0}
    groups = {
        "operator forward cpu tiny": {"extension": ours, "einsum": other, "reference": other},
        "module forward 1x8x9x9 cpu": {"rcca_r1": {"median_s": 0.01}, "nonlocal": {"median_s": 0.04}},
    }
    prov = {"command": "pytest", "time_utc": f"t{speedup}", "hardware": "cpu", "commit": "abc"}
    return {"provenance": prov, "groups": groups}


def test_renders_latest_run_with_spread_and_history(tmp_path) -> None:
    runs_dir = tmp_path / "runs"
    runs_dir.mkdir()
    for name, speedup in (("20260101T000000Z", 1.5), ("20260102T000000Z", 2.25)):
        (runs_dir / f"{name}.json").write_text(json.dumps(_run(speedup)))
    operator.main(["--results", str(runs_dir), "--out", str(tmp_path)])
    text = (tmp_path / "operator.md").read_text()
    assert "2.25x (2.15-2.45)" in text  # the latest run, median (min-max)
    assert "1.50x (1.40-1.70)" in text  # the earlier run, in the history table
    frame = pd.read_csv(tmp_path / "operator.csv")
    assert frame.loc[0, "speedup_vs_einsum"] == pytest.approx(2.25)
    assert frame.loc[0, "ours_pct_of_gemm"] == pytest.approx(50.0)
    assert frame.loc[0, "peak_ratio_vs_reference"] == pytest.approx(0.5)
    modules = pd.read_csv(tmp_path / "modules.csv")
    assert modules.loc[0, "nonlocal_over_module"] == pytest.approx(4.0)


def test_missing_results_name_the_folder(tmp_path) -> None:
    with pytest.raises(FileNotFoundError, match=str(tmp_path)):
        operator.load_runs(tmp_path)


def test_runs_must_be_positive(tmp_path) -> None:
    with pytest.raises(ValueError, match="--runs must be >= 1, got 0"):
        operator.main(["--results", str(tmp_path), "--runs", "0"])


def test_counts_the_runs_that_met_the_target(tmp_path) -> None:
    """The history ends with a computed verdict per run and the summary says how many runs met 1.5x."""
    runs_dir = tmp_path / "runs"
    runs_dir.mkdir()
    for name, speedup in (("20260101T000000Z", 1.49), ("20260102T000000Z", 1.5), ("20260103T000000Z", 2.0)):
        (runs_dir / f"{name}.json").write_text(json.dumps(_run(speedup)))
    operator.main(["--results", str(runs_dir), "--out", str(tmp_path), "--runs", "3"])
    text = (tmp_path / "operator.md").read_text()
    assert "met in 2 of the 3 listed runs" in text
    assert "lowest median in any run: 1.490x" in text
    assert "no (lowest 1.490x)" in text and "yes (lowest 1.500x)" in text
    assert "memory copy GB/s" in text and "14.9-14.9" in text  # each run's copy bandwidth, in its column
