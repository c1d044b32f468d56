"""``experiments/gpu_check.py`` without a GPU: the dry run, the time plan, the roofline arithmetic and
the correctness of the benchmark's axial fused-attention formulation (its forward) on the CPU."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch

from cca.ops import reference
from experiments import gpu_bench, gpu_check

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("mode", ["full", "quick"])
def test_plan_fits_the_time_limit(mode):
    rows = gpu_check.plan(mode)
    assert [r["step"] for r in rows] == ["build", "tests", "bench", "efficiency", "report"]
    assert all(r["budget_s"] > 0 for r in rows)
    assert rows[-1]["deadline_s"] == sum(r["budget_s"] for r in rows) <= gpu_check.TOTAL_LIMIT_S[mode]
    assert gpu_check.TOTAL_LIMIT_S == {"full": 8 * 60, "quick": 4 * 60}


@pytest.mark.parametrize("flags", [[], ["--quick"]], ids=["full", "quick"])
def test_dry_run_lists_steps_and_budgets(capsys, flags):
    assert gpu_check.main(["--dry-run", *flags]) == 0
    out = capsys.readouterr().out
    mode = "quick" if flags else "full"
    for row in gpu_check.plan(mode):
        assert f"{row['step']:<11s} budget {row['budget_s']:>4d} s" in out
    assert f"limit {gpu_check.TOTAL_LIMIT_S[mode]} s" in out
    assert "backends: einsum, auto, gemm, simple, fused, axial_sdpa" in out
    assert "sizes 97x97, 194x194" in out and ("388x388" in out) == (mode == "full")
    assert "dtypes float32, float16, bfloat16; passes forward, forward+backward" in out


def test_dry_run_as_a_module_needs_no_gpu():
    done = subprocess.run(
        [sys.executable, "-m", "experiments.gpu_check", "--dry-run"], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    assert "build" in done.stdout and "report" in done.stdout


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the refusal on a machine without a GPU")
def test_without_a_gpu_refuses_with_the_reason(capsys):
    with pytest.raises(SystemExit) as exc:
        gpu_check.main([])
    assert exc.value.code == 2
    assert "needs a CUDA GPU" in capsys.readouterr().err


def test_roofline_arithmetic():
    n, cq, c, size = 2, 3, 5, 4
    plane, slots = size * size, 2 * size - 1
    energy = n * slots * plane
    rows = gpu_bench.roofline((n, cq, c, size), dtype_bytes=2, gpus=("H200", "A100"))
    assert [(r["op"], r["kernel"], r["channels"]) for r in rows] == [
        ("ca_weight forward", "weight_fwd", cq),
        ("ca_map forward", "map_fwd", c),
        ("ca_weight backward", "map_fwd", cq),
        ("ca_weight backward", "map_bwd_v", cq),
        ("ca_map backward", "weight_fwd", c),
        ("ca_map backward", "map_bwd_v", c),
    ]
    for row in rows:
        channels = row["channels"]
        flops = 2 * channels * energy  # one multiply-add per channel per energy entry
        moved = 2 * (energy + 2 * n * channels * plane)  # bytes: the map once, two channel tensors once
        assert row["gflop"] == pytest.approx(flops / 1e9)
        assert row["moved_mib"] == pytest.approx(moved / 2**20)
        for gpu in ("H200", "A100"):
            spec = gpu_bench.GPU_SPECS[gpu]
            memory_us, compute_us = moved / spec["bandwidth_gb_s"] / 1e3, flops / spec["fp32_tflops"] / 1e6
            assert row[f"{gpu}_us"] == pytest.approx(max(memory_us, compute_us))
            assert row[f"{gpu}_bound"] == ("memory" if memory_us >= compute_us else "compute")


def test_roofline_at_the_paper_shape_names_every_gpu():
    rows = gpu_bench.roofline()
    n, cq, c, size = gpu_bench.PAPER_SHAPE
    assert (n, c, size) == (1, 512, 97) and cq == c // 8
    assert rows[0]["gflop"] == pytest.approx(2 * cq * (2 * size - 1) * size * size / 1e9)
    assert all(f"{gpu}_us" in rows[0] for gpu in gpu_bench.GPU_SPECS)
    assert all(spec["source"] for spec in gpu_bench.GPU_SPECS.values())


@pytest.mark.parametrize("name, key", [("NVIDIA H200", "H200"), ("NVIDIA H100 80GB HBM3", "H100"),
                                       ("NVIDIA A100-SXM4-80GB", "A100"), ("NVIDIA GeForce RTX 4090", None)])
def test_gpu_key(name, key):
    assert gpu_bench.gpu_key(name) == key


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32, torch.bfloat16], ids=str)
@pytest.mark.parametrize("shape", [(2, 8, 16, 5, 7), (1, 4, 4, 1, 6), (1, 4, 12, 6, 1), (1, 2, 3, 1, 1)], ids=str)
def test_axial_sdpa_forward_matches_reference(make_tensor, check_close, shape, dtype):
    """Rows + columns merged by log-sum-exp with the pixel counted once = criss-cross attention."""
    n, cq, c, h, w = shape
    q, k = (make_tensor((n, cq, h, w), scale=0.7) for _ in range(2))
    v = make_tensor((n, c, h, w))
    out = gpu_bench.axial_sdpa(q.to(dtype), k.to(dtype), v.to(dtype))
    assert out.dtype == dtype and out.shape == v.shape
    check_close(out, reference.criss_cross_attention_2d(q, k, v))


def test_report_renders_results(tmp_path):
    """reports/gpu.md from (made-up, clearly fake) step results: device named, ratios, roofline, CSVs."""
    bench = [
        {"formulation": name, "size": "97x97", "dtype": "float32", "error": "", "forward_ms": ms,
         "forward_backward_ms": 3 * ms, "peak_mib": 10.0}
        for name, ms in (("auto", 1.0), ("einsum", 4.0), ("axial_sdpa", 2.0))
    ]
    for row in bench:
        row["device"] = "FAKE H200 (test)"
    results = {"bench": bench, "efficiency": [{"run": "rcca", "peak_memory_mib": 5.0}],
               "auto_vs_einsum": gpu_check.auto_vs_einsum(bench)}
    steps = [{"step": "build", "status": "ok", "elapsed_s": 1.0, "budget_s": 180, "detail": "test"}]
    prov = {"command": "test", "time_utc": "now", "hardware": "FAKE H200 (test)", "commit": "abc"}
    path = gpu_check.write_report(results, steps, "full", 12.0, "FAKE H200 (test)", prov, tmp_path / "gpu.md")
    text = path.read_text()
    assert "CUDA check on FAKE H200 (test)" in text and "H200_us" in text and "A100_us" not in text
    frame = __import__("pandas").read_csv(tmp_path / "gpu.csv")
    assert list(frame.forward_x_einsum) == [4.0, 1.0, 2.0]
    assert list(frame.forward_backward_x_einsum) == [4.0, 1.0, 2.0]
    assert "Auto choice vs einsum" in text
    for name in ("gpu_roofline.csv", "gpu_efficiency.csv", "gpu_steps.csv", "gpu_model.md", "gpu_model.csv"):
        assert (tmp_path / name).is_file()
    assert "auto" not in __import__("pandas").read_csv(tmp_path / "gpu_model_measured.csv").backend.tolist()
    assert "Measured (reports/gpu.md) beside predicted" in (tmp_path / "gpu_model.md").read_text()


def test_auto_vs_einsum_verdicts():
    rows = [{"formulation": "einsum", "size": "97x97", "dtype": "float32", "forward_ms": 2.0, "forward_backward_ms": 6.0},
            {"formulation": "auto", "size": "97x97", "dtype": "float32", "forward_ms": 2.08, "forward_backward_ms": 6.5,
             "backend_forward": "gemm", "backend_forward_backward": "einsum"},
            {"formulation": "auto", "size": "194x194", "dtype": "float32", "error": "OutOfMemoryError: x"}]
    verdicts = gpu_check.auto_vs_einsum(rows)
    assert [(v["size"], v["pass"], v["chosen"]) for v in verdicts] == [
        ("97x97", "forward", "gemm"), ("97x97", "forward+backward", "einsum"),
        ("194x194", "forward", None), ("194x194", "forward+backward", None)]
    assert verdicts[0]["verdict"] == "ok"  # 1.04x: within AUTO_SLACK
    assert verdicts[1]["verdict"] == "slower: 1.08x einsum's time"
    assert verdicts[2]["verdict"].startswith("not measured: OutOfMemoryError")


def test_bench_step_fails_when_auto_is_slower(monkeypatch):
    rows = {("einsum", 97): 1.0, ("auto", 97): 2.0}

    def fake_case(name, size, dtype, repeats):
        ms = rows.get((name, size), 1.0)
        return {"formulation": name, "size": f"{size}x{size}", "dtype": str(dtype)[6:], "error": "",
                "forward_ms": ms, "forward_backward_ms": ms}

    monkeypatch.setattr(gpu_bench, "bench_case", fake_case)
    monkeypatch.setattr(torch.cuda, "empty_cache", lambda: None)
    results = {}
    status, detail = gpu_check.step_bench(60, "quick", results)
    assert status == "failed" and "auto vs einsum: 6/12 ok, 6 slower" in detail
    assert len(results["bench"]) == 2 * 3 * len(gpu_bench.FORMULATIONS)
    rows.clear()  # auto as fast as einsum, but one case never measured: not ok, and not called slower
    monkeypatch.setattr(gpu_bench, "bench_case", lambda name, size, dtype, repeats: {
        **fake_case(name, size, dtype, repeats), **({"error": "x", "forward_ms": None} if size == 194 else {})})
    status, detail = gpu_check.step_bench(60, "quick", results)
    assert status == "failed" and detail.endswith("auto vs einsum: 9/12 ok, 3 not measured")


def test_model_columns_use_the_model_bytes():
    from cca.profiling import gpu_model

    shape = gpu_model.Shape(1, 64, 512, 97, 97)
    row = {"dtype": "bfloat16", "device": "NVIDIA H100 80GB HBM3", "backend_forward": "gemm",
           "backend_forward_backward": "axial_sdpa", "forward_ms": 0.1, "forward_backward_ms": 0.3}
    cols = gpu_bench.model_columns(row, shape, allow_tf32=False)
    fwd = gpu_model.summary("gemm", "forward", shape, "bfloat16/float16", gpu_model.gpu_peaks())
    assert cols["forward_gb_s"] == pytest.approx(fwd["hbm_mib"] * 2**20 / 1e-4 / 1e9)
    assert cols["forward_roofline_pct"] == pytest.approx(100 * fwd["H100_us"] / 100.0)
    assert "forward_backward_gb_s" not in cols  # axial_sdpa is not modelled
