"""Criss-cross attention ops (2D and 3D) against a float64 reference, on both backends.

The reference itself is checked against a pixel-by-pixel loop written from the paper's
definition (``test_ops_reference.py``), so nothing here trusts ``cca.ops.reference`` blindly.
"""

from __future__ import annotations

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

import cca
from cca.ops import reference

# (N, C', C, H, W): batch, query/key channels, value channels, height, width
SHAPES_2D = [
    (1, 8, 16, 7, 9),  # H != W
    (2, 4, 3, 5, 5),  # N > 1, H == W
    (1, 1, 2, 6, 4),  # C' = 1
    (2, 3, 4, 1, 7),  # H = 1
    (1, 3, 2, 7, 1),  # W = 1
    (1, 2, 3, 1, 1),  # H = W = 1
]
# (N, C', C, T, H, W)
SHAPES_3D = [
    (1, 4, 6, 3, 5, 6),
    (2, 2, 3, 1, 4, 5),  # T = 1
    (1, 3, 2, 4, 1, 5),  # H = 1
    (1, 3, 2, 4, 5, 1),  # W = 1
    (2, 1, 2, 2, 1, 1),  # C' = 1, H = W = 1
    (1, 2, 2, 3, 3, 3),
]


def shape_id(shape) -> str:
    return "x".join(map(str, shape))


def cross_length(spatial) -> int:
    return sum(spatial) - len(spatial) + 1


def _softmax_map(weight_fn):
    return lambda q, k: torch.softmax(weight_fn(q, k), dim=1)


# op name -> (public function per ndim, float64 reference per ndim, input names)
OPS = {
    "criss_cross_attention": (
        {2: cca.criss_cross_attention, 3: cca.criss_cross_attention_3d},
        {2: reference.criss_cross_attention_2d, 3: reference.criss_cross_attention_3d},
        ("query", "key", "value"),
    ),
    "ca_weight": (
        {2: cca.ca_weight, 3: cca.ca_weight},
        {2: reference.ca_weight_2d, 3: reference.ca_weight_3d},
        ("query", "key"),
    ),
    "ca_map": (
        {2: cca.ca_map, 3: cca.ca_map},
        {2: reference.ca_map_2d, 3: reference.ca_map_3d},
        ("attention", "value"),
    ),
    "criss_cross_attention_map": (
        {2: cca.criss_cross_attention_map, 3: cca.criss_cross_attention_map_3d},
        {2: _softmax_map(reference.ca_weight_2d), 3: _softmax_map(reference.ca_weight_3d)},
        ("query", "key"),
    ),
}


def make_inputs(make_tensor, op: str, shape, dtype=torch.float64, scale=1.0, device="cpu") -> list[torch.Tensor]:
    """Leaf tensors (requires_grad) for ``op`` at ``shape`` = (N, C', C, *spatial)."""
    n, cq, c, *spatial = shape
    shapes = {
        "query": (n, cq, *spatial),
        "key": (n, cq, *spatial),
        "value": (n, c, *spatial),
        "attention": (n, cross_length(spatial), *spatial),
    }
    names = OPS[op][2]
    return [
        make_tensor(
            shapes[name],
            dtype=dtype,
            device=device,
            scale=scale if name in ("query", "key") else 1.0,
            requires_grad=True,
        )
        for name in names
    ]


def as_float64(tensors) -> list[torch.Tensor]:
    """The same values cast up to float64 (new leaves)."""
    return [t.detach().double().cpu().requires_grad_(True) for t in tensors]


def forward_backward(fn, inputs, grad_out):
    out = fn(*inputs)
    grads = torch.autograd.grad(out, inputs, grad_out.to(device=out.device, dtype=out.dtype))
    return out, grads


# --------------------------------------------------------------------------- against float64
def _check_against_reference(ndim, op, inputs, make_tensor, check_close, tol=None):
    """Forward and gradients of the public ``op`` on ``inputs`` (any device) against the float64
    reference on CPU."""
    public, ref = OPS[op][0][ndim], OPS[op][1][ndim]
    inputs64 = as_float64(inputs)
    expected = ref(*inputs64)
    grad_out = make_tensor(expected.shape)
    out, grads = forward_backward(public, inputs, grad_out)
    expected_grads = torch.autograd.grad(expected, inputs64, grad_out)
    assert out.dtype == inputs[0].dtype and out.device == inputs[0].device
    check_close(out, expected.detach(), tol)
    for grad, expected_grad in zip(grads, expected_grads, strict=True):
        assert grad.dtype == inputs[0].dtype
        check_close(grad, expected_grad, tol)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=str)
@pytest.mark.parametrize("shape", SHAPES_2D, ids=shape_id)
@pytest.mark.parametrize("op", list(OPS))
def test_2d_matches_float64_reference(backend, device, make_tensor, check_close, op, shape, dtype):
    inputs = make_inputs(make_tensor, op, shape, dtype, device=device)
    _check_against_reference(2, op, inputs, make_tensor, check_close)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=str)
@pytest.mark.parametrize("shape", SHAPES_3D, ids=shape_id)
@pytest.mark.parametrize("op", list(OPS))
def test_3d_matches_float64_reference(backend, device, make_tensor, check_close, op, shape, dtype):
    inputs = make_inputs(make_tensor, op, shape, dtype, device=device)
    _check_against_reference(3, op, inputs, make_tensor, check_close)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=str)
@pytest.mark.parametrize(
    "ndim, shape", [(2, SHAPES_2D[0]), (2, SHAPES_2D[3]), (3, SHAPES_3D[0])], ids=["2d", "2d-H1", "3d"]
)
@pytest.mark.parametrize("op", list(OPS))
def test_half_precision_matches_float64_reference(backend, device, make_tensor, check_close, op, ndim, shape, dtype):
    """bfloat16/float16 (the CPU kernels dispatch both too), with the loose tolerance."""
    inputs = make_inputs(make_tensor, op, shape, dtype, device=device)
    _check_against_reference(ndim, op, inputs, make_tensor, check_close)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=str)
@pytest.mark.parametrize("ndim, shape", [(2, (2, 8, 5, 9, 11)), (3, (1, 8, 4, 3, 6, 7))], ids=["2d", "3d"])
def test_large_logits_are_stable(backend, device, make_tensor, check_close, ndim, shape, dtype):
    """Query and key scaled by 30: logits in the thousands, far past exp overflow without the
    max-subtraction; the result must be finite and match. The float32 tolerance grows with the
    rounding error of the logits, eps * sum_c |q_c k_c|."""
    q, k, v = make_inputs(make_tensor, "criss_cross_attention", shape, dtype=dtype, scale=30.0, device=device)
    weight_ref = reference.ca_weight_2d if ndim == 2 else reference.ca_weight_3d
    magnitude = weight_ref(q.detach().cpu().double().abs(), k.detach().cpu().double().abs()).max().item()
    assert magnitude > 1000.0
    tol = 1e-4 if dtype == torch.float32 else 1e-10
    tol += 4 * torch.finfo(dtype).eps * magnitude
    _check_against_reference(ndim, "criss_cross_attention", [q, k, v], make_tensor, check_close, tol)
    attention = OPS["criss_cross_attention_map"][0][ndim](q, k)
    assert torch.isfinite(attention).all()
    torch.testing.assert_close(attention.sum(1), torch.ones_like(attention.sum(1)))


# --------------------------------------------------------------------------- properties
@pytest.mark.parametrize("shape", [(2, 4, 5, 7), (1, 3, 1, 6), (1, 3, 6, 1)], ids=shape_id)
def test_attention_map_2d_shape_and_sum(backend, make_tensor, shape):
    n, cq, h, w = shape
    q, k = make_tensor(shape, dtype=torch.float32), make_tensor(shape, dtype=torch.float32)
    attention = cca.criss_cross_attention_map(q, k)
    assert attention.shape == (n, h + w - 1, h, w)
    assert (attention >= 0).all()
    torch.testing.assert_close(attention.sum(dim=1), torch.ones(n, h, w))


@pytest.mark.parametrize("shape", [(2, 4, 3, 5, 7), (1, 3, 1, 2, 6), (1, 3, 4, 1, 1)], ids=shape_id)
def test_attention_map_3d_shape_and_sum(backend, make_tensor, shape):
    n, cq, t, h, w = shape
    q, k = make_tensor(shape, dtype=torch.float32), make_tensor(shape, dtype=torch.float32)
    attention = cca.criss_cross_attention_map_3d(q, k)
    assert attention.shape == (n, t + h + w - 2, t, h, w)
    assert (attention >= 0).all()
    torch.testing.assert_close(attention.sum(dim=1), torch.ones(n, t, h, w))


def test_3d_with_one_frame_equals_2d(backend, make_tensor):
    q, k, v = make_inputs(make_tensor, "criss_cross_attention", (2, 4, 3, 5, 6))
    out_2d = cca.criss_cross_attention(q, k, v)
    out_3d = cca.criss_cross_attention_3d(q.unsqueeze(2), k.unsqueeze(2), v.unsqueeze(2))
    torch.testing.assert_close(out_3d.squeeze(2), out_2d, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(
        cca.criss_cross_attention_map_3d(q.unsqueeze(2), k.unsqueeze(2)).squeeze(2), cca.criss_cross_attention_map(q, k)
    )


# --------------------------------------------------------------------------- gradcheck
GRADCHECK_SHAPES = {2: [(2, 2, 2, 3, 4), (1, 2, 3, 1, 4)], 3: [(1, 2, 2, 2, 3, 3), (2, 1, 2, 2, 1, 3)]}


@pytest.mark.parametrize("ndim, shape", [(nd, s) for nd, shapes in GRADCHECK_SHAPES.items() for s in shapes], ids=str)
@pytest.mark.parametrize("op", list(OPS))
def test_gradcheck(backend, device, make_tensor, op, ndim, shape):
    inputs = make_inputs(make_tensor, op, shape, device=device)
    assert torch.autograd.gradcheck(OPS[op][0][ndim], inputs)


@pytest.mark.parametrize("ndim", [2, 3])
@pytest.mark.parametrize("op", ["ca_weight", "ca_map"])
def test_gradcheck_one_input_needs_grad(backend, make_tensor, op, ndim):
    """Backward asked for one input only (the other is a constant) still gives exact gradients."""
    for needs in range(2):
        inputs = make_inputs(make_tensor, op, GRADCHECK_SHAPES[ndim][0])
        inputs[1 - needs].requires_grad_(False)
        assert torch.autograd.gradcheck(OPS[op][0][ndim], inputs)


# --------------------------------------------------------------------------- opcheck
OP_NAMES = [
    f"ca_{kind}_{dim}{suffix}" for dim in ("2d", "3d") for kind in ("weight", "map") for suffix in ("", "_backward")
]


def _opcheck_args(make_tensor, name: str, requires_grad: bool):
    dim = 2 if name.endswith("2d") or "_2d_" in name else 3
    shape = (2, 3, 4, 5, 6) if dim == 2 else (1, 3, 2, 3, 4, 5)
    kind = "ca_weight" if name.startswith("ca_weight") else "ca_map"
    inputs = [t.detach().requires_grad_(requires_grad) for t in make_inputs(make_tensor, kind, shape)]
    if name.endswith("_backward"):
        out = getattr(torch.ops.cca, name.removesuffix("_backward"))(*inputs)
        return (make_tensor(out.shape), *inputs)
    return tuple(inputs)


def test_opcheck_covers_every_registered_op(extension):
    registered = {name.split("::")[1] for name in torch._C._dispatch_get_all_op_names() if name.startswith("cca::")}
    assert registered == set(OP_NAMES)


# forward ops also with requires_grad inputs (checks the autograd registration); backward ops
# have no derivative of their own (no double backward), so only without
OPCHECK_CASES = [(name, False) for name in OP_NAMES] + [
    (name, True) for name in OP_NAMES if not name.endswith("_backward")
]


@pytest.mark.parametrize("name, requires_grad", OPCHECK_CASES, ids=lambda v: v if isinstance(v, str) else f"grad={v}")
def test_opcheck(extension, make_tensor, name, requires_grad):
    args = _opcheck_args(make_tensor, name, requires_grad)
    torch.library.opcheck(getattr(torch.ops.cca, name), args)


class _OpRecorder(TorchDispatchMode):
    def __init__(self):
        super().__init__()
        self.names: list[str] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.names.append(str(func.overloadpacket))
        return func(*args, **(kwargs or {}))


def test_extension_backend_runs_the_compiled_ops(extension, make_tensor):
    """Guard against a silent fallback: the public API dispatches to ``torch.ops.cca``."""
    q, k, v = make_inputs(make_tensor, "criss_cross_attention", SHAPES_2D[0])
    with _OpRecorder() as recorder:
        cca.criss_cross_attention(q, k, v).sum().backward()
    assert {"cca.ca_weight_2d", "cca.ca_map_2d", "cca.ca_weight_2d_backward", "cca.ca_map_2d_backward"} <= set(
        recorder.names
    )
    assert not any(name.startswith("aten.einsum") for name in recorder.names)


# --------------------------------------------------------------------------- layouts, paths
def _non_contiguous(t: torch.Tensor, how: str) -> torch.Tensor:
    """The same values as ``t`` in a non-contiguous layout."""
    if how == "permuted":
        order = list(range(t.dim()))[::-1]
        inverse = [order.index(i) for i in range(t.dim())]
        return t.permute(order).contiguous().permute(inverse)
    if how == "sliced":  # every other element of a wider tensor along the last dim
        wide = t.new_zeros(*t.shape[:-1], 2 * t.shape[-1])
        wide[..., ::2] = t
        return wide[..., ::2]
    if how == "channels_last":
        return t.contiguous(memory_format=torch.channels_last if t.dim() == 4 else torch.channels_last_3d)
    raise ValueError(how)


@pytest.mark.parametrize("how", ["permuted", "sliced", "channels_last"])
@pytest.mark.parametrize("ndim, shape", [(2, (2, 4, 3, 5, 6)), (3, (1, 3, 2, 3, 4, 5))], ids=["2d", "3d"])
@pytest.mark.parametrize("op", ["criss_cross_attention", "ca_weight", "ca_map"])
def test_non_contiguous_inputs(backend, device, make_tensor, op, ndim, shape, how):
    fn = OPS[op][0][ndim]
    inputs = make_inputs(make_tensor, op, shape, dtype=torch.float32, device=device)
    strided = [_non_contiguous(t.detach(), how).requires_grad_(True) for t in inputs]
    assert all(not t.is_contiguous() for t in strided)
    grad_out = make_tensor(fn(*inputs).shape, dtype=torch.float32, device=device)
    out, grads = forward_backward(fn, inputs, grad_out)
    out_strided, grads_strided = forward_backward(fn, strided, grad_out)
    torch.testing.assert_close(out_strided, out, rtol=1e-5, atol=1e-5)
    for grad, grad_strided in zip(grads, grads_strided, strict=True):
        torch.testing.assert_close(grad_strided, grad, rtol=1e-5, atol=1e-5)


def test_expanded_batch(backend, make_tensor):
    """A batch made by ``expand`` (stride 0) gives each item the single-item result."""
    q, k, v = make_inputs(make_tensor, "criss_cross_attention", (1, 4, 3, 5, 6), dtype=torch.float32)
    out = cca.criss_cross_attention(q.expand(3, -1, -1, -1), k.expand(3, -1, -1, -1), v.expand(3, -1, -1, -1))
    torch.testing.assert_close(out, cca.criss_cross_attention(q, k, v).expand(3, -1, -1, -1))


@pytest.mark.parametrize("ndim, shape", [(2, (2, 16, 32, 13, 17)), (3, (1, 8, 16, 4, 9, 11))], ids=["2d", "3d"])
def test_cpu_extension_agrees_with_reference_path(extension, make_tensor, monkeypatch, ndim, shape):
    fn = OPS["criss_cross_attention"][0][ndim]
    inputs = make_inputs(make_tensor, "criss_cross_attention", shape, dtype=torch.float32)
    grad_out = make_tensor(inputs[2].shape, dtype=torch.float32)
    out_ext, grads_ext = forward_backward(fn, inputs, grad_out)
    monkeypatch.setenv("CCA_BACKEND", "reference")
    out_ref, grads_ref = forward_backward(fn, inputs, grad_out)
    torch.testing.assert_close(out_ext, out_ref, rtol=1e-4, atol=1e-4)
    for grad_ext, grad_ref in zip(grads_ext, grads_ref, strict=True):
        torch.testing.assert_close(grad_ext, grad_ref, rtol=1e-4, atol=1e-4)


# --------------------------------------------------------------------------- torch.compile
class _TinyCCA(torch.nn.Module):
    """1x1 convs to query/key/value, criss-cross attention, residual: like ``cca.nn``'s module."""

    def __init__(self, channels: int, ndim: int):
        super().__init__()
        conv = torch.nn.Conv2d if ndim == 2 else torch.nn.Conv3d
        self.query, self.key, self.value = conv(channels, 2, 1), conv(channels, 2, 1), conv(channels, channels, 1)
        self.attend = cca.criss_cross_attention if ndim == 2 else cca.criss_cross_attention_3d

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + 0.5 * self.attend(self.query(x), self.key(x), self.value(x))


def _compile_matches_eager(make_tensor, ndim: int, compile_backend: str) -> list[str]:
    """Compile ``_TinyCCA`` with ``fullgraph=True``, compare with eager (output and input grad);
    returns the code of the graphs Dynamo captured."""
    torch._dynamo.reset()
    graphs: list[str] = []
    inner = torch._dynamo.lookup_backend(compile_backend)

    def recording_backend(gm, example_inputs):
        graphs.append(gm.code)
        return inner(gm, example_inputs)

    module = _TinyCCA(4, ndim).double()
    x = make_tensor((2, 4, 5, 6) if ndim == 2 else (1, 4, 3, 5, 6), requires_grad=True)
    compiled = torch.compile(module, fullgraph=True, backend=recording_backend)
    out = compiled(x)
    (grad_x,) = torch.autograd.grad(out.square().sum(), x)
    expected = module(x)
    (expected_grad_x,) = torch.autograd.grad(expected.square().sum(), x)
    torch.testing.assert_close(out, expected)
    torch.testing.assert_close(grad_x, expected_grad_x)
    torch._dynamo.reset()
    return graphs


@pytest.mark.parametrize("ndim", [2, 3])
def test_torch_compile_fullgraph(backend, make_tensor, ndim):
    """No graph break around the op (fullgraph=True raises on one), the backend's ops in the one
    graph, and the same result as eager."""
    graphs = _compile_matches_eager(make_tensor, ndim, "aot_eager")
    assert len(graphs) == 1
    dim = f"{ndim}d"
    if backend == "extension":
        assert f"cca.ca_weight_{dim}" in graphs[0] and f"cca.ca_map_{dim}" in graphs[0], graphs[0]
    else:
        assert "einsum" in graphs[0] and "cca.ca_" not in graphs[0], graphs[0]


def test_torch_compile_inductor(extension, make_tensor):
    graphs = _compile_matches_eager(make_tensor, 2, "inductor")
    assert len(graphs) == 1 and "cca.ca_map_2d" in graphs[0]
