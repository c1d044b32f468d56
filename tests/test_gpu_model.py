"""The GPU performance model's arithmetic on a small shape, counted by hand, and its report."""

from __future__ import annotations

import pytest

from cca.profiling import gpu_model
from cca.profiling.gpu_model import Shape, Step

# N=1, C'=2, C=3, H=2, W=3: P=6 pixels, Q=12, V=18, Lw=18, Lh=12, Lm=6*(2+3-1)=24, Lb=6*5=30 elements
SMALL = Shape(1, 2, 3, 2, 3)


def totals(backend, which, precision="float32", shape=SMALL):
    parts = gpu_model.steps(backend, which, shape, precision)
    return sum(s.read_bytes + s.write_bytes for s in parts), sum(s.flops for s in parts), sum(s.l2_bytes for s in parts)


def test_gemm_forward_by_hand():
    # transposes q, k 2*(12+12)*4; row energies (12+12)*4 + 18*4; column (12+12)*4 + 12*4; mask 6*4;
    # softmax 2*30*4; share 6*4 + 2*6*4; transpose v 2*18*4; row bmm (18+18)*4 + 18*4;
    # column baddbmm (12+2*18)*4 + 18*4; output back 2*18*4
    hbm = 192 + 168 + 144 + 24 + 240 + 72 + 144 + 216 + 264 + 144
    flops = 2 * 2 * 18 + 2 * 2 * 12 + 2 * 3 * 18 + 2 * 3 * 12
    assert totals("gemm", "forward") == (hbm, flops, 0)
    assert totals("gemm", "forward", "bfloat16/float16") == (hbm / 2, flops, 0)


def test_simple_forward_by_hand():
    # weight_fwd 2*12*4 + 24*4; softmax 2*24*4; map_fwd (24+18)*4 + 18*4; L2: 2*C'*Lm*4 + 2*C*Lm*4
    assert totals("simple", "forward") == (192 + 192 + 240, 2 * 2 * 24 + 2 * 3 * 24, (2 * 2 * 24 + 2 * 3 * 24) * 4)
    # half dtypes: the softmax in float32 between two casts (24*2 + 24*4 each way)
    hbm, _, l2 = totals("simple", "forward", "bfloat16/float16")
    assert hbm == (2 * 12 + 24) * 2 + (24 * 2 + 24 * 4) + 2 * 24 * 4 + (24 * 4 + 24 * 2) + (24 + 18 + 18) * 2
    assert l2 == (2 * 2 * 24 + 2 * 3 * 24) * 2


def test_simple_backward_flops_by_hand():
    # dA = g.v (C), dv (C), dq (C'), dk (C'): 2 * ch * Lm each
    assert totals("simple", "backward")[1] == 2 * 24 * (3 + 3 + 2 + 2)


def test_fused_forward_by_hand():
    # each pass reads q, k, v ((12+12+18)*4) and writes a float32 partial (18*4) and log-sum-exp (6*4);
    # the merge reads both partials and lse (2*18*4 + 2*6*4) and writes the output (18*4)
    hbm = 2 * (168 + 96) + 192 + 72
    flops = (2 * 2 + 2 * 3) * 18 + (2 * 2 + 2 * 3) * 12  # one value block: energies once per pass
    assert totals("fused", "forward") == (hbm, flops, 0)


def test_einsum_matmuls_and_autograd_rule():
    fwd = gpu_model.steps("einsum", "forward", SMALL, "float32")
    bwd = gpu_model.steps("einsum", "backward", SMALL, "float32")
    assert sum(s.flops for s in fwd) == 2 * 2 * (18 + 12 + 6) + 2 * 3 * (18 + 12)  # + time energies, T = 1
    assert sum(s.flops for s in bwd) == 2 * sum(s.flops for s in fwd)  # each matmul -> two of the same size
    row = next(s for s in fwd if s.name == "row aggregation")
    assert (row.read_bytes, row.write_bytes) == ((18 + 18) * 4, 18 * 4)
    grads = [s for s in bwd if s.name.startswith("row aggregation")]
    assert [(s.read_bytes, s.write_bytes) for s in grads] == [((18 + 18) * 4, 18 * 4), ((18 + 18) * 4, 18 * 4)]
    assert not any(s.name == "sum of the two" for s in bwd)


def test_step_time_is_the_roofline():
    gpu = {"hbm_gb_s": 2.0, "fp32_tflops": 1e-3, "tf32_tensor_tflops": 4e-3, "bf16_tensor_tflops": 8e-3}
    step = Step("x", 3000.0, 1000.0, flops=10_000.0, unit="gemm")
    assert gpu_model.step_time_us(step, gpu, "float32") == pytest.approx(max(4000 / 2e3, 10_000 / 1e3))
    assert gpu_model.step_time_us(step, gpu, "tf32") == pytest.approx(max(2.0, 10_000 / 4e3))
    assert gpu_model.step_time_us(step, gpu, "bfloat16/float16") == pytest.approx(2.0)  # memory bound
    cuda = Step("y", 0.0, 0.0, flops=10_000.0, unit="cuda")  # CUDA cores at every precision
    assert gpu_model.step_time_us(cuda, gpu, "bfloat16/float16") == pytest.approx(10.0)


def test_summary_splits_tensor_and_cuda_core_flops():
    gpus = {"G": {"hbm_gb_s": 1.0, "fp32_tflops": 1.0, "tf32_tensor_tflops": 2.0, "bf16_tensor_tflops": 4.0}}
    fp32 = gpu_model.summary("gemm", "forward", SMALL, "float32", gpus)
    tf32 = gpu_model.summary("gemm", "forward", SMALL, "tf32", gpus)
    assert fp32["gflop_tensor_core"] == 0 and fp32["gflop_cuda_core"] == pytest.approx(300 / 1e9)
    assert tf32["gflop_tensor_core"] == pytest.approx(300 / 1e9) and tf32["gflop_cuda_core"] == 0
    assert fp32["hbm_mib"] == pytest.approx(1608 / 2**20)


def test_table_at_the_paper_shapes():
    peaks = gpu_model.gpu_peaks()
    assert set(peaks) == {"A100", "H100", "H200"} and all(p["source"] for p in peaks.values())
    assert peaks["H200"]["hbm_gb_s"] == 4800 and peaks["A100"]["bf16_tensor_tflops"] == 312
    rows = gpu_model.table()
    assert len(rows) == 4 * 3 * 3 * 4  # shapes x precisions x passes x backends
    for row in rows:
        if row["backend"] == "einsum":
            assert all(row[f"{g}_x_einsum"] == 1 for g in peaks)
        if row["pass"] == "forward+backward":
            parts = [r for r in rows if r["backend"] == row["backend"] and r["n"] == row["n"] and r["size"] == row["size"]
                     and r["precision"] == row["precision"] and r["pass"] in gpu_model.PASSES]
            assert row["H200_us"] == pytest.approx(sum(r["H200_us"] for r in parts))


def test_measured_beside_predicted_and_report(tmp_path):
    import pandas as pd

    measured = tmp_path / "gpu.csv"
    pd.DataFrame([{"formulation": "gemm", "size": "97x97", "dtype": "bfloat16", "device": "NVIDIA H200 (fake, test)",
                   "forward_ms": 0.5, "forward_backward_ms": float("nan")}]).to_csv(measured, index=False)
    path = gpu_model.write(tmp_path, measured)
    text = path.read_text()
    assert "A model, not a measurement" in text and "Measured (reports/gpu.md) beside predicted" in text
    joined = pd.read_csv(tmp_path / "gpu_model_measured.csv")
    assert len(joined) == 1 and joined.gpu[0] == "H200" and joined.measured_us[0] == 500
    predicted = gpu_model.summary("gemm", "forward", Shape(1, 64, 512, 97, 97), "bfloat16/float16",
                                  gpu_model.gpu_peaks())["H200_us"]
    assert joined.predicted_us[0] == pytest.approx(predicted)
    assert len(pd.read_csv(tmp_path / "gpu_model.csv")) == 144


def test_bad_arguments():
    with pytest.raises(ValueError, match="expected backend in"):
        gpu_model.steps("cudnn", "forward", SMALL, "float32")


def _matmuls(fn, backward: bool) -> int:
    """Matrix products (bmm, baddbmm, mm) that ``fn`` runs on the CPU at a small shape, forward or backward."""
    import torch
    from torch.utils._python_dispatch import TorchDispatchMode

    names = {"bmm", "baddbmm", "baddbmm_", "mm", "addmm"}

    class Count(TorchDispatchMode):
        calls = 0

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            Count.calls += func.__name__.split(".")[0] in names
            return func(*args, **(kwargs or {}))

    q, k = (torch.randn(1, 2, 4, 5, requires_grad=True) for _ in range(2))
    v = torch.randn(1, 3, 4, 5, requires_grad=True)
    if not backward:
        with Count():
            fn(q, k, v)
        return Count.calls
    out = fn(q, k, v)
    with Count():
        out.backward(torch.ones_like(out))
    return Count.calls


@pytest.mark.parametrize("which", gpu_model.PASSES)
def test_model_counts_the_matmuls_the_code_runs(which):
    """The model's matmul kernels are the ones PyTorch dispatches for the reference and the GEMM backend."""
    from cca.ops import gemm_backend, reference

    shape = Shape(1, 2, 3, 4, 5)
    for backend, fn in (("einsum", reference.criss_cross_attention_2d), ("gemm", gemm_backend.criss_cross_attention)):
        modelled = sum(st.unit == "gemm" for st in gpu_model.steps(backend, which, shape, "float32"))
        assert _matmuls(fn, which == "backward") == modelled, (backend, which)
