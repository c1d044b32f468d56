"""The fused Triton criss-cross attention (``cca.ops.triton_kernels``) against the float64 reference.

Runs on CUDA tensors when a GPU is visible, else on CPU tensors under ``TRITON_INTERPRET=1``
(``nox -s triton_interpret`` sets it; the interpreter is slow, so shapes are small: its tiles are
8 positions x 8 channels x 16 lines, so 17 and 18 cross two tiles). Without either, the kernel tests
skip with that reason; the import and ``can_run`` tests run everywhere.
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch

import cca
from cca.ops import reference

INTERPRET = os.environ.get("TRITON_INTERPRET", "0") == "1"
DEVICE = "cpu" if INTERPRET or not torch.cuda.is_available() else "cuda"
runnable = pytest.mark.skipif(
    not INTERPRET and DEVICE == "cpu", reason="run by `nox -s triton_interpret` (TRITON_INTERPRET=1) or on a GPU"
)

# (N, C', C, H, W): batch 2, H != W, C' and C not multiples of 16, H and W from 1 to past two tiles,
# C past two channel tiles.
SHAPES = [
    (2, 5, 7, 9, 11),
    (1, 3, 4, 1, 1),
    (1, 3, 5, 1, 18),
    (1, 4, 3, 17, 1),
    (1, 3, 20, 17, 6),
    (2, 2, 3, 5, 18),
]
HALF_SHAPES = [SHAPES[0], SHAPES[4]]
CASES = [(shape, torch.float32) for shape in SHAPES] + [
    (shape, dtype) for dtype in (torch.float16, torch.bfloat16) for shape in HALF_SHAPES
]


def _kernels():
    from cca.ops import triton_kernels

    return triton_kernels


def _inputs(make_tensor, shape, dtype):
    n, c_qk, c_v, h, w = shape
    return [make_tensor(s, dtype=dtype, device=DEVICE) for s in ((n, c_qk, h, w), (n, c_qk, h, w), (n, c_v, h, w))]


@runnable
@pytest.mark.parametrize("shape, dtype", CASES, ids=[f"{'x'.join(map(str, s))}-{str(d)[6:]}" for s, d in CASES])
def test_forward_and_gradients_match_float64_reference(make_tensor, check_close, shape, dtype):
    """Output and the gradients of query, key and value (autograd through the float64 reference on
    the same, cast-up inputs), with the dtype's tolerance."""
    inputs = [t.requires_grad_() for t in _inputs(make_tensor, shape, dtype)]
    exact = [t.detach().double().requires_grad_() for t in inputs]
    grad = make_tensor((shape[0], shape[2], shape[3], shape[4]), device=DEVICE)

    out = _kernels().criss_cross_attention(*inputs)
    expected = reference.criss_cross_attention_2d(*exact)
    assert out.dtype == dtype and out.device.type == DEVICE
    check_close(out, expected)
    out.backward(grad.to(dtype))
    expected.backward(grad)
    for name, actual, ref in zip(("query", "key", "value"), inputs, exact, strict=True):
        assert actual.grad.dtype == dtype, name
        check_close(actual.grad, ref.grad)


@runnable
def test_only_requested_gradients_and_non_contiguous_input(make_tensor, check_close):
    """Gradients only for the inputs that need them; a transposed (non-contiguous) value works."""
    q, k, v = _inputs(make_tensor, (1, 3, 4, 6, 5), torch.float32)
    value = v.transpose(2, 3).contiguous().transpose(2, 3).requires_grad_()
    out = _kernels().criss_cross_attention(q, k, value)
    out.sum().backward()
    assert q.grad is None and k.grad is None
    exact = value.detach().double().requires_grad_()
    reference.criss_cross_attention_2d(q.double(), k.double(), exact).sum().backward()
    check_close(value.grad, exact.grad)


def _same_nonfinite(actual: torch.Tensor, expected: torch.Tensor) -> None:
    """NaN and +-inf at exactly the reference's places; the finite values close."""
    actual = actual.double().cpu()
    nan = expected.isnan()
    assert torch.equal(actual.isnan(), nan), f"NaN at {actual.isnan().nonzero().tolist()}, expected {nan.nonzero().tolist()}"
    inf = expected.isinf()
    assert torch.equal(actual.isinf(), inf) and torch.equal(actual[inf], expected[inf])
    finite = expected.isfinite()
    torch.testing.assert_close(actual[finite], expected[finite], rtol=1e-4, atol=1e-4)


def _poison(tensors, which: str, value: float):
    q, k, v = tensors
    target = {"query": q, "key": k, "value": v}[which]
    target[0, 0, 2, 3] = value
    return q, k, v


NONFINITE = [
    ("query", float("nan")),
    ("key", float("nan")),
    ("value", float("nan")),
    ("value", float("inf")),
    ("value", float("-inf")),
    ("query", float("inf")),
    ("key", float("-inf")),
]


@runnable
@pytest.mark.filterwarnings("ignore::RuntimeWarning")  # the interpreter's numpy on inf - inf, log2(0)
@pytest.mark.parametrize("which, value", NONFINITE, ids=[f"{w}-{v}" for w, v in NONFINITE])
def test_nonfinite_input_behaves_as_reference(make_tensor, which, value):
    """NaN in gives NaN out at the same places, inf in value gives inf (not NaN) at the pixel itself
    and along its row and column, inf energies give what the reference's softmax gives."""
    q, k, v = _poison(_inputs(make_tensor, (2, 3, 4, 5, 6), torch.float32), which, value)
    out = _kernels().criss_cross_attention(q, k, v)
    expected = reference.criss_cross_attention_2d(q.double(), k.double(), v.double()).cpu()
    if which == "value":
        assert expected[0, 0, 2, 3].item() != 0 and not expected[0, 0, 2, 3].isfinite()
    _same_nonfinite(out, expected)


@runnable
@pytest.mark.filterwarnings("ignore::RuntimeWarning")
@pytest.mark.parametrize("which, value", NONFINITE[:4] + NONFINITE[5:6], ids=[f"{w}-{v}" for w, v in NONFINITE[:4] + NONFINITE[5:6]])
def test_nonfinite_input_gradients_behave_as_reference(make_tensor, which, value):
    """The gradients of query, key and value: NaN and inf at the reference's places, the rest close."""
    q, k, v = _poison(_inputs(make_tensor, (1, 3, 4, 5, 6), torch.float32), which, value)
    inputs = [t.requires_grad_() for t in (q, k, v)]
    exact = [t.detach().double().requires_grad_() for t in inputs]
    grad = make_tensor((1, 4, 5, 6), device=DEVICE)
    _kernels().criss_cross_attention(*inputs).backward(grad.float())
    reference.criss_cross_attention_2d(*exact).backward(grad)
    assert exact[2].grad.isnan().any() or exact[1].grad.isnan().any()
    for actual, ref in zip(inputs, exact, strict=True):
        _same_nonfinite(actual.grad, ref.grad.cpu())


@runnable
@pytest.mark.filterwarnings("ignore::RuntimeWarning")
def test_row_all_minus_inf_uses_the_column_and_all_minus_inf_is_nan(make_tensor):
    """Row energies all ``-inf`` (key row set to -inf, query positive): the softmax lives on the
    column alone and stays finite; every energy ``-inf``: NaN, as ``torch.softmax`` gives."""
    q, k, v = _inputs(make_tensor, (1, 1, 3, 6, 5), torch.float32)
    q = q.abs() + 0.5
    k[:, :, 2] = float("-inf")
    out = _kernels().criss_cross_attention(q, k, v)
    expected = reference.criss_cross_attention_2d(q.double(), k.double(), v.double()).cpu()
    assert expected.isfinite().all()
    _same_nonfinite(out, expected)
    k.fill_(float("-inf"))
    assert _kernels().criss_cross_attention(q, k, v).isnan().all()


@runnable
def test_large_logits_are_stable(make_tensor, check_close):
    """Query and key scaled by 30: logits in the thousands, far past exp overflow without the running
    max; finite and close, the tolerance growing with the logits' rounding error (eps * max logit)."""
    q, k, v = _inputs(make_tensor, (2, 8, 3, 5, 9), torch.float32)
    q, k = q * 30, k * 30
    magnitude = reference.ca_weight_2d(q.double().abs(), k.double().abs()).max().item()
    assert magnitude > 1000
    expected = reference.criss_cross_attention_2d(q.double(), k.double(), v.double())
    check_close(_kernels().criss_cross_attention(q, k, v), expected, 1e-4 + 4 * torch.finfo(torch.float32).eps * magnitude)


def test_float32_uses_tf32_only_when_allowed():
    """Exact float32 products (``ieee``) unless ``torch.backends.cuda.matmul.allow_tf32``; 16-bit
    inputs on tensor cores either way; bfloat16 multiplied in float32 only in the interpreter."""
    options = _kernels()._launch_options
    matmul = torch.backends.cuda.matmul
    saved = matmul.allow_tf32
    try:
        matmul.allow_tf32 = False
        assert options(torch.float32, False)["PRECISION"] == "ieee"
        assert options(torch.float16, False)["PRECISION"] == "tf32"
        matmul.allow_tf32 = True
        assert options(torch.float32, False)["PRECISION"] == "tf32"
    finally:
        matmul.allow_tf32 = saved
    assert options(torch.bfloat16, True)["UPCAST"] and not options(torch.bfloat16, False)["UPCAST"]
    assert not options(torch.float16, True)["UPCAST"]


@runnable
def test_saved_tensors_are_output_and_lse_only(make_tensor):
    """Besides the inputs, autograd keeps the output and a float32 ``(N, H, W)`` LSE: the byte counts
    :func:`saved_bytes` reports (for the memory model), never a ``(N, H+W-1, H, W)`` map."""
    q, k, v = (t.requires_grad_() for t in _inputs(make_tensor, (2, 3, 5, 6, 7), torch.float32))
    saved: list[torch.Tensor] = []

    def pack(tensor):
        saved.append(tensor)
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        _kernels().criss_cross_attention(q, k, v)
    inputs = {t.data_ptr() for t in (q, k, v)}
    extra = [t for t in saved if t.data_ptr() not in inputs]
    sizes = sorted(t.numel() * t.element_size() for t in extra)
    expected = _kernels().saved_bytes(q, v)
    assert sizes == sorted([expected["out_bytes"], expected["lse_bytes"]])
    assert expected["lse_bytes"] == 2 * 6 * 7 * 4 and expected["map_bytes"] == 2 * 12 * 6 * 7 * 4
    assert all(t.shape[1:] != (12, 6, 7) for t in saved)


BAD_CALLS = [
    ("query-rank", (torch.ones(4, 5, 6), torch.ones(2, 4, 5, 6), torch.ones(2, 3, 5, 6))),
    ("value-rank", (torch.ones(2, 4, 5, 6),) * 2 + (torch.ones(3, 5, 6),)),
    ("query-int", (torch.ones(2, 4, 5, 6, dtype=torch.int64),) + (torch.ones(2, 4, 5, 6),) * 2),
    ("key-dtype", (torch.ones(2, 4, 5, 6), torch.ones(2, 4, 5, 6).half(), torch.ones(2, 3, 5, 6))),
    ("key-shape", (torch.ones(2, 4, 5, 6), torch.ones(2, 5, 5, 6), torch.ones(2, 3, 5, 6))),
    ("value-spatial", (torch.ones(2, 4, 5, 6),) * 2 + (torch.ones(2, 3, 6, 5),)),
    ("empty", (torch.ones(0, 4, 5, 6),) * 2 + (torch.ones(0, 3, 5, 6),)),
    ("value-none", (torch.ones(2, 4, 5, 6),) * 2 + (None,)),
]


@pytest.mark.parametrize("args", [c[1] for c in BAD_CALLS], ids=[c[0] for c in BAD_CALLS])
def test_bad_input_raises_what_the_public_function_raises(monkeypatch, args):
    """Same exception type and message as ``cca.criss_cross_attention`` (no Triton needed: the checks
    run before any kernel)."""
    monkeypatch.setenv("CCA_BACKEND", "reference")
    with pytest.raises((TypeError, ValueError)) as public:
        cca.criss_cross_attention(*args)
    with pytest.raises(public.type) as fused:
        _kernels().criss_cross_attention(*args)
    assert str(fused.value) == str(public.value)


@runnable
def test_unsupported_input_is_named(make_tensor):
    """Valid for the operator but not fused: ``can_run`` says why and the call raises it."""
    q, k, v = _inputs(make_tensor, (1, 3, 4, 5, 6), torch.float64)
    assert "float64" in _kernels().can_run(q, k, v)
    with pytest.raises(NotImplementedError, match="float64"):
        _kernels().criss_cross_attention(q, k, v)
    q3 = q.float().unsqueeze(2)
    assert "3D" in _kernels().can_run(q3, q3, v.float().unsqueeze(2))
    wide = torch.ones(1, 300, 2, 2, device=DEVICE)
    assert "C'=300" in _kernels().can_run(wide, wide, wide)
    assert _kernels().can_run(q.float(), k.float(), v.float()) is None


def test_kernels_load_lazily_and_cpu_needs_the_interpreter():
    """``import cca`` and the API module do not load the kernel modules; without ``TRITON_INTERPRET``
    a CPU tensor is refused with the reason (it must be set before Triton's first import)."""
    code = (
        "import sys, torch, cca\n"
        "from cca.ops import triton_kernels as t\n"
        "assert not {'cca.ops._triton_fwd', 'cca.ops._triton_bwd'} & set(sys.modules), 'kernels loaded early'\n"
        "x = torch.ones(1, 2, 3, 3)\n"
        "print(t.can_run(x, x, x))\n"
        "try:\n"
        "    t.criss_cross_attention(x, x, x)\n"
        "except NotImplementedError as exc:\n"
        "    print(exc)\n"
    )
    env = {key: value for key, value in os.environ.items() if key != "TRITON_INTERPRET"}
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300)
    assert result.returncode == 0, result.stderr
    assert result.stdout.count("CPU tensors need TRITON_INTERPRET=1, set before Triton is first imported") == 2
