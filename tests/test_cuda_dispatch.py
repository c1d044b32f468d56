"""The per-shape choice among CUDA backends (:mod:`cca.ops.cuda_dispatch`) on the CPU: fake candidates and
an injected timer decide; the real candidates' workloads run on CPU tensors; the hook in
``criss_cross_attention`` stays out of fake-tensor traces."""

from __future__ import annotations

import json
import logging

import pytest
import torch
from torch._subclasses.fake_tensor import FakeTensorMode

import cca
from cca import _env
from cca.ops import cuda_dispatch, reference
from cca.ops.cuda_dispatch import Candidate, Chooser


class FakeBench:
    """Candidates that record their runs and a timer that returns each one's planned time."""

    def __init__(self, times_ms: dict[str, float], cannot: dict[str, str] | None = None, raises=()):
        self.times_ms, self.cannot, self.raises = times_ms, cannot or {}, set(raises)
        self.runs: list[str] = []
        self.timed: list[str] = []

    def candidate(self, name: str) -> Candidate:
        def run(q, k, v):
            self.runs.append(name)
            if name in self.raises:
                raise RuntimeError(f"{name} kernel exploded\nsecond line")
            return reference.criss_cross_attention_2d(q, k, v)

        return Candidate(name, lambda q, k, v: self.cannot.get(name), run)

    def candidates(self) -> dict[str, Candidate]:
        return {name: self.candidate(name) for name in self.times_ms}

    def timer(self, fn) -> float:
        fn()
        self.timed.append(self.runs[-1])
        return self.times_ms[self.runs[-1]]


def qkv(make_tensor, shape=(1, 2, 3, 4, 5), requires_grad=False):
    n, cq, c, h, w = shape
    tensors = (make_tensor((n, cq, h, w)), make_tensor((n, cq, h, w)), make_tensor((n, c, h, w)))
    return [t.requires_grad_(requires_grad) for t in tensors]


def test_fastest_wins_logs_one_line_and_is_cached_per_key(make_tensor, caplog):
    bench = FakeBench({"fused": 3.0, "gemm": 1.5, "simple": 2.0})
    chooser = Chooser(bench.candidates(), bench.timer)
    q, k, v = qkv(make_tensor)
    with caplog.at_level(logging.INFO, logger="cca.ops.cuda_dispatch"):
        assert chooser.choose(q, k, v).name == "gemm"
        assert chooser.choose(q, k, v).name == "gemm"
    assert bench.timed == ["fused", "gemm", "simple"]  # timed once, not again for the same key
    key = cuda_dispatch.choice_key(q, k, v)
    assert key == "criss_cross_attention_2d|forward|1x2x3x4x5|float64|cpu"
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 1 and key in lines[0] and "gemm 1.500 ms" in lines[0] and ": gemm (timed" in lines[0]
    assert chooser.choices[key].times_ms == {"fused": 3.0, "gemm": 1.5, "simple": 2.0}
    q2, k2, v2 = qkv(make_tensor, (1, 2, 3, 4, 6))
    chooser.choose(q2, k2, v2)
    assert len(bench.timed) == 6  # a new shape is a new key


def test_training_calls_are_their_own_key_and_time_the_backward(make_tensor):
    bench = FakeBench({"gemm": 1.0, "simple": 2.0})
    chooser = Chooser(bench.candidates(), bench.timer)
    q, k, v = qkv(make_tensor, requires_grad=True)
    chooser.choose(q, k, v)
    key = cuda_dispatch.choice_key(q, k, v)
    assert "|forward+backward|" in key
    with torch.no_grad():
        assert "|forward|" in cuda_dispatch.choice_key(q, k, v)
    assert q.grad is None  # the timing ran on detached copies: the caller's tensors are untouched


def test_workload_runs_forward_and_backward(make_tensor):
    seen = []

    def run(q, k, v):
        seen.append(torch.is_grad_enabled())
        return reference.criss_cross_attention_2d(q, k, v)

    q, k, v = qkv(make_tensor, requires_grad=True)
    grads = cuda_dispatch._workload(Candidate("x", lambda *a: None, run), q, k, v, backward=True)()
    assert len(grads) == 3 and all(g.shape == t.shape for g, t in zip(grads, (q, k, v), strict=True))
    with torch.no_grad():
        out = cuda_dispatch._workload(Candidate("x", lambda *a: None, run), q, k, v, backward=False)()
    assert out.shape == v.shape and seen == [True, False]


def test_skips_a_candidate_that_cannot_run_or_raises(make_tensor, caplog):
    bench = FakeBench({"fused": 0.5, "gemm": 1.0, "simple": 2.0}, cannot={"fused": "no Triton here"}, raises={"gemm"})
    chooser = Chooser(bench.candidates(), bench.timer)
    q, k, v = qkv(make_tensor)
    with caplog.at_level(logging.INFO, logger="cca.ops.cuda_dispatch"):
        assert chooser.choose(q, k, v).name == "simple"
    (line,) = [r.getMessage() for r in caplog.records]
    assert "skipped fused: no Triton here" in line
    assert "skipped gemm: raised RuntimeError: gemm kernel exploded" in line and "second line" not in line
    choice = chooser.choices[cuda_dispatch.choice_key(q, k, v)]
    assert choice.times_ms == {"simple": 2.0} and set(choice.skipped) == {"fused", "gemm"}


def test_no_candidate_left_is_an_error_with_every_reason(make_tensor):
    bench = FakeBench({"fused": 1.0, "gemm": 1.0}, cannot={"fused": "reason one"}, raises={"gemm"})
    with pytest.raises(RuntimeError, match="no CUDA backend .*fused: reason one; gemm: raised RuntimeError"):
        Chooser(bench.candidates(), bench.timer).choose(*qkv(make_tensor))


def test_forced_backend(make_tensor, monkeypatch):
    bench = FakeBench({"fused": 0.5, "gemm": 1.0, "simple": 2.0}, cannot={"fused": "Triton missing"})
    chooser = Chooser(bench.candidates(), bench.timer)
    q, k, v = qkv(make_tensor)
    monkeypatch.setenv("CCA_CUDA_KERNEL", "simple")
    assert cuda_dispatch.select(q, k, v, chooser).name == "simple"
    assert bench.timed == [] and chooser.choices == {}  # a forced backend is not timed
    monkeypatch.setenv("CCA_CUDA_KERNEL", "fused")
    with pytest.raises(RuntimeError, match=r"CCA_CUDA_KERNEL=fused cannot run .*: Triton missing"):
        cuda_dispatch.select(q, k, v, chooser)
    monkeypatch.setenv("CCA_CUDA_KERNEL", "AUTO")
    assert cuda_dispatch.select(q, k, v, chooser).name == "gemm"  # auto: timed, fused skipped
    assert bench.timed == ["gemm", "simple"]


@pytest.mark.parametrize("value", ["cublas", "triton", "reference", "1"])
def test_bad_cuda_kernel_setting(monkeypatch, value):
    monkeypatch.setenv("CCA_CUDA_KERNEL", value)
    with pytest.raises(ValueError, match=f"CCA_CUDA_KERNEL must be one of .*got CCA_CUDA_KERNEL='{value}'"):
        _env.cuda_kernel()


def test_choice_cache_setting(monkeypatch):
    monkeypatch.delenv("CCA_CUDA_CHOICE_CACHE", raising=False)
    assert _env.cuda_choice_cache() is False
    monkeypatch.setenv("CCA_CUDA_CHOICE_CACHE", "1")
    assert _env.cuda_choice_cache() is True
    monkeypatch.setenv("CCA_CUDA_CHOICE_CACHE", "maybe")
    with pytest.raises(ValueError, match="CCA_CUDA_CHOICE_CACHE must be 0 or 1"):
        _env.cuda_choice_cache()


def test_disk_cache_round_trip(make_tensor, tmp_path, caplog):
    path = tmp_path / "sub" / "cuda_choice.json"
    q, k, v = qkv(make_tensor)
    first = FakeBench({"gemm": 2.0, "simple": 1.0})
    Chooser(first.candidates(), first.timer, path).choose(q, k, v)
    data = json.loads(path.read_text())
    key = cuda_dispatch.choice_key(q, k, v)
    assert data["format"] == cuda_dispatch.CACHE_FORMAT
    assert data["choices"][key] == {"winner": "simple", "times_ms": {"gemm": 2.0, "simple": 1.0}}
    second = FakeBench({"gemm": 0.1, "simple": 1.0})  # would win if timed: the file decides
    chooser = Chooser(second.candidates(), second.timer, path)
    with caplog.at_level(logging.INFO, logger="cca.ops.cuda_dispatch"):
        assert chooser.choose(q, k, v).name == "simple"
    assert second.timed == [] and chooser.choices[key].source == "disk"
    assert "from" in caplog.records[-1].getMessage()


def test_disk_winner_that_cannot_run_is_timed_again(make_tensor, tmp_path):
    path = tmp_path / "cuda_choice.json"
    q, k, v = qkv(make_tensor)
    path.write_text(json.dumps({"format": 1, "choices": {cuda_dispatch.choice_key(q, k, v): {"winner": "fused"}}}))
    bench = FakeBench({"fused": 0.1, "gemm": 1.0}, cannot={"fused": "gone"})
    assert Chooser(bench.candidates(), bench.timer, path).choose(q, k, v).name == "gemm"


@pytest.mark.parametrize("text", ["{not json", "[1, 2]", '{"format": 99, "choices": {}}', '{"format": 1, "choices": 3}'])
def test_corrupt_disk_cache_is_ignored_with_a_warning(make_tensor, tmp_path, text):
    path = tmp_path / "cuda_choice.json"
    path.write_text(text)
    bench = FakeBench({"gemm": 2.0, "simple": 1.0})
    chooser = Chooser(bench.candidates(), bench.timer, path)
    with pytest.warns(UserWarning, match="ignoring the CUDA backend choice cache"):
        assert chooser.choose(*qkv(make_tensor)).name == "simple"
    assert bench.timed == ["gemm", "simple"]
    assert json.loads(path.read_text())["format"] == 1  # rewritten, valid


def test_default_candidates_on_cpu_tensors(make_tensor, monkeypatch):
    """The real backends' checks and workloads (gemm and simple run on the CPU; fused says why not)."""
    candidates = cuda_dispatch.default_candidates()
    assert tuple(candidates) == cuda_dispatch.BACKENDS
    q, k, v = qkv(make_tensor, requires_grad=True)
    assert candidates["gemm"].can_run(q, k, v) is None
    fused_reason = candidates["fused"].can_run(q, k, v)  # the real Triton module's answer, not an ImportError
    from cca.ops import triton_kernels

    assert fused_reason == triton_kernels.can_run(q, k, v)
    assert "float64" in fused_reason
    reason_f32 = candidates["fused"].can_run(*(t.detach().float() for t in (q, k, v)))
    assert reason_f32 is None or "TRITON_INTERPRET=1" in reason_f32  # None only under the interpreter
    monkeypatch.setattr(torch, "are_deterministic_algorithms_enabled", lambda: True)
    assert "deterministic" in candidates["fused"].can_run(q, k, v)
    assert cuda_dispatch.choice_key(q, k, v).endswith("|deterministic|cpu")
    monkeypatch.undo()
    timed = []
    assert candidates["einsum"].can_run(q, k, v) is None
    chooser = Chooser({n: candidates[n] for n in ("gemm", "simple", "einsum")}, lambda fn: timed.append(fn()) or len(timed))
    assert chooser.choose(q, k, v).name == "gemm"  # the fake timer ranks by order
    for grads in timed:  # each workload computed real gradients on the CPU
        expected = torch.autograd.grad(reference.criss_cross_attention_2d(q, k, v), (q, k, v), torch.ones_like(v))
        for got, want in zip(grads, expected, strict=True):
            torch.testing.assert_close(got, want)


def test_applies_only_to_eager_cuda_tensors(make_tensor, monkeypatch):
    q, k, v = qkv(make_tensor)
    assert not cuda_dispatch.applies(q)
    monkeypatch.setattr(cuda_dispatch, "chooser", lambda: pytest.fail("the chooser ran inside a fake-tensor trace"))
    with FakeTensorMode():
        fq, fk = (torch.empty(1, 2, 3, 4, device="cuda") for _ in range(2))
        fv = torch.empty(1, 5, 3, 4, device="cuda")
        assert not cuda_dispatch.applies(fq)
        out = cca.criss_cross_attention(fq, fk, fv)
    assert out.shape == (1, 5, 3, 4) and out.device.type == "cuda"


def test_torch_compile_on_cpu_unchanged(make_tensor, check_close):
    q, k, v = qkv(make_tensor)
    compiled = torch.compile(cca.criss_cross_attention, backend="eager", fullgraph=True)
    check_close(compiled(q, k, v), reference.criss_cross_attention_2d(q, k, v))


def test_info_shows_setting_and_both_caches(make_tensor, tmp_path, monkeypatch):
    from cca import info

    monkeypatch.setenv("CCA_BACKEND", "reference")
    monkeypatch.setenv("CCA_CACHE_DIR", str(tmp_path))
    monkeypatch.setenv("CCA_CUDA_KERNEL", "gemm")
    monkeypatch.setenv("CCA_CUDA_CHOICE_CACHE", "1")
    q, k, v = qkv(make_tensor)
    disk_bench = FakeBench({"gemm": 2.0, "simple": 1.0})
    Chooser(disk_bench.candidates(), disk_bench.timer, _env.cache_dir() / "cuda_choice.json").choose(q, k, v)
    bench = FakeBench({"fused": 0.25, "gemm": 0.5})
    process = Chooser(bench.candidates(), bench.timer)
    process.choose(*qkv(make_tensor, (2, 2, 3, 4, 4)))
    monkeypatch.setattr(cuda_dispatch, "_chooser", process)
    data = info.collect()
    assert data["cuda_kernel"] == "gemm" and data["cuda_choice_cache_on"] is True
    assert list(data["cuda_choices_disk"].values()) == [{"winner": "simple", "times_ms": {"gemm": 2.0, "simple": 1.0}}]
    text = info.format_text(data)
    assert "CCA_CUDA_KERNEL   gemm -> gemm" in text and "choice cache      on:" in text
    assert "criss_cross_attention_2d|forward|2x2x3x4x4|float64|cpu -> fused (fused 0.250 ms, gemm 0.500 ms)" in text
    assert "criss_cross_attention_2d|forward|1x2x3x4x5|float64|cpu -> simple (simple 1.000 ms, gemm 2.000 ms)" in text
    monkeypatch.setenv("CCA_CUDA_KERNEL", "bogus")
    monkeypatch.setattr(cuda_dispatch, "_chooser", None)
    text = info.format_text(info.collect())
    assert "CCA_CUDA_KERNEL   bogus -> invalid" in text and "choices (process) none" in text


def test_no_timing_when_not_allowed(make_tensor):
    """During CUDA graph capture: an unknown key gets the first candidate that can run, untimed, uncached;
    a known key keeps its winner."""
    bench = FakeBench({"fused": 0.5, "gemm": 2.0, "simple": 1.0}, cannot={"fused": "no"})
    chooser = Chooser(bench.candidates(), bench.timer)
    q, k, v = qkv(make_tensor)
    assert chooser.choose(q, k, v, timing_allowed=False).name == "gemm"
    assert bench.timed == [] and chooser.choices == {}
    assert chooser.choose(q, k, v).name == "simple"
    assert chooser.choose(q, k, v, timing_allowed=False).name == "simple"


@pytest.mark.cuda
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float64], ids=str)
def test_every_backend_and_auto_on_cuda(make_tensor, check_close, monkeypatch, caplog, dtype):
    """On a GPU: each backend that can run, forced, and the auto choice match the reference (forward and
    gradients); auto logs its choice once."""
    q, k, v = (t.to("cuda", dtype) for t in qkv(make_tensor, (2, 8, 16, 13, 17)))
    grad = make_tensor(v.shape).to("cuda", dtype)
    leaves64 = [t.detach().double().cpu().requires_grad_(True) for t in (q, k, v)]
    out64 = reference.criss_cross_attention_2d(*leaves64)
    grads64 = torch.autograd.grad(out64, leaves64, grad.double().cpu())
    ran = []
    for name in ("auto", *cuda_dispatch.BACKENDS):  # 2D
        monkeypatch.setenv("CCA_CUDA_KERNEL", name)
        if name != "auto" and cuda_dispatch.chooser().candidates[name].can_run(q, k, v) is not None:
            continue
        leaves = [t.detach().requires_grad_(True) for t in (q, k, v)]
        with caplog.at_level(logging.INFO, logger="cca.ops.cuda_dispatch"):
            out = cca.criss_cross_attention(*leaves)
        check_close(out, out64)
        for got, want in zip(torch.autograd.grad(out, leaves, grad), grads64, strict=True):
            check_close(got, want, tol=None if dtype != torch.bfloat16 else 5e-2)
        ran.append(name)
    assert {"auto", "gemm", "einsum"} <= set(ran)
    assert any("cca CUDA backend for criss_cross_attention_2d|forward+backward|2x8x16x13x17" in r.getMessage()
               for r in caplog.records)


def test_info_says_how_2d_attention_is_served_on_a_gpu(monkeypatch):
    from cca import info

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)  # a GPU, as the loader would report it
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 0)
    status = {"backend_requested": "auto", "cpu_kernels": True, "cuda_kernels": False}
    monkeypatch.setattr(info._extension, "status", lambda: dict(status))
    monkeypatch.setenv("CCA_CUDA_KERNEL", "auto")
    assert info.collect()["active_cuda"] == ("attention: chosen per shape among fused, gemm, simple (not built), "
                                             "einsum; ca_weight/ca_map: reference (no compiled kernels)")
    monkeypatch.setenv("CCA_CUDA_KERNEL", "gemm")
    assert info.collect()["active_cuda"].startswith("attention: gemm (CCA_CUDA_KERNEL)")
    status["backend_requested"] = "reference"
    assert info.collect()["active_cuda"].startswith("reference")


def test_profiler_sees_the_chosen_backend(make_tensor, monkeypatch):
    """The dispatched call runs under a profiler range naming the op and the backend."""
    bench = FakeBench({"gemm": 1.0, "simple": 2.0})
    monkeypatch.setattr(cuda_dispatch, "chooser", lambda: Chooser(bench.candidates(), bench.timer))
    monkeypatch.setenv("CCA_CUDA_KERNEL", "auto")
    q, k, v = qkv(make_tensor)
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        out = cuda_dispatch.criss_cross_attention(q, k, v)
    torch.testing.assert_close(out, reference.criss_cross_attention_2d(q, k, v))
    names = {event.name for event in prof.events()}
    assert "cca::criss_cross_attention_2d[gemm]" in names


def test_volumes_are_their_own_op_with_their_candidates(make_tensor, check_close):
    """3D: its own key; fused says why not; gemm, simple and einsum run and give the 3D reference's gradients."""
    q, k = (make_tensor((1, 2, 2, 4, 5), requires_grad=True) for _ in range(2))
    v = make_tensor((1, 3, 2, 4, 5), requires_grad=True)
    assert cuda_dispatch.choice_key(q, k, v) == "criss_cross_attention_3d|forward+backward|1x2x3x2x4x5|float64|cpu"
    candidates = cuda_dispatch.default_candidates()
    assert candidates["fused"].can_run(q, k, v) == "the fused kernels are 2D only"
    timed = []
    chooser = Chooser({n: candidates[n] for n in ("gemm", "simple", "einsum")}, lambda fn: timed.append(fn()) or len(timed))
    assert chooser.choose(q, k, v).name == "gemm"
    expected = torch.autograd.grad(reference.criss_cross_attention_3d(q, k, v), (q, k, v), torch.ones_like(v))
    assert len(timed) == 3
    for grads in timed:
        for got, want in zip(grads, expected, strict=True):
            check_close(got, want)


def test_3d_fake_cuda_tensors_stay_on_the_traced_ops(monkeypatch):
    monkeypatch.setattr(cuda_dispatch, "chooser", lambda: pytest.fail("the chooser ran inside a fake-tensor trace"))
    with FakeTensorMode():
        q = torch.empty(1, 2, 3, 4, 5, device="cuda")
        out = cca.criss_cross_attention_3d(q, q, torch.empty(1, 6, 3, 4, 5, device="cuda"))
    assert out.shape == (1, 6, 3, 4, 5)


@pytest.mark.cuda
def test_3d_auto_on_cuda(make_tensor, check_close, monkeypatch):
    monkeypatch.setenv("CCA_CUDA_KERNEL", "auto")
    q, k = (make_tensor((1, 4, 3, 9, 11)).to("cuda", torch.float32).requires_grad_(True) for _ in range(2))
    v = make_tensor((1, 8, 3, 9, 11)).to("cuda", torch.float32).requires_grad_(True)
    out = cca.criss_cross_attention_3d(q, k, v)
    leaves64 = [t.detach().double().cpu().requires_grad_(True) for t in (q, k, v)]
    out64 = reference.criss_cross_attention_3d(*leaves64)
    check_close(out, out64)
    grads64 = torch.autograd.grad(out64, leaves64, torch.ones_like(out64))
    for got, want in zip(torch.autograd.grad(out, (q, k, v), torch.ones_like(out)), grads64, strict=True):
        check_close(got, want)
    assert any(key.startswith("criss_cross_attention_3d|forward+backward|") for key in cuda_dispatch.chooser().choices)
