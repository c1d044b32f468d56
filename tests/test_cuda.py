"""CUDA kernels (``csrc/cuda/criss_cross_cuda.cu``) against the float64 reference.

Two parts:

* ``test_primitive_*`` (CPU, always run): the three primitives the CUDA kernels implement, written
  here as plain loops with the index math of ``csrc/criss_cross.h``, reproduce the reference ops
  and, through autograd, their backward ops. This documents (and checks) the identities
  ``ca_weight = weight_fwd``, ``ca_map = map_fwd``,
  ``d ca_weight (dw, q, k) = (map_fwd(dw, k), map_bwd_v(dw, q))`` and
  ``d ca_map (dout, a, v) = (weight_fwd(dout, v), map_bwd_v(a, dout))``.
* ``TestCuda`` (``@pytest.mark.cuda``, skipped without a GPU): every op on CUDA in float64,
  float32, float16 and bfloat16 against the float64 reference, gradcheck, layouts, CPU/CUDA
  agreement, device errors, determinism, streams, CUDA graphs and ``torch.compile``.

The numerical tests of ``TestCuda`` also run without a GPU, on the kernels' own source emulated on
the CPU: ``tests/test_cuda_emulated.py`` (``nox -s cuda_emulation``). On a GPU machine,
``nox -s gpu_check`` runs this file and benchmarks the operator.
"""

from __future__ import annotations

import itertools

import pytest
import torch

import cca
from cca.ops import _extension, reference

# --------------------------------------------------------------------------- index math mirror
ROW, COL, TIME = 0, 1, 2  # cca::kRow, kCol, kTime


def cross_position(i: int, t: int, y: int, x: int, H: int, W: int) -> tuple[int, int, int]:
    """Pixel (t', y', x') at slot ``i`` of the criss-cross set of (t, y, x) (``cca::cross_position``)."""
    if i < W:
        return t, y, i
    i -= W
    if i < H - 1:
        return t, (i if i < y else i + 1), x
    i -= H - 1
    return (i if i < t else i + 1), y, x


def cross_slot(axis: int, coord: int, own: int, H: int, W: int) -> int:
    """Slot of the partner with coordinate ``coord`` along ``axis`` of a pixel whose coordinate
    there is ``own`` (``cca::cross_slot``)."""
    if axis == ROW:
        return coord
    rank = coord if coord < own else coord - 1
    return W + rank if axis == COL else W + H - 1 + rank


def pixels(T: int, H: int, W: int):
    return itertools.product(range(T), range(H), range(W))


# --------------------------------------------------------------------------- the three primitives
def weight_fwd(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``w[n, i, u] = sum_c a[n, c, u] b[n, c, pos_i(u)]``: (N, C, T, H, W) x2 -> (N, L, T, H, W)."""
    N, _, T, H, W = a.shape
    w = a.new_zeros(N, W + H + T - 2, T, H, W)
    for t, y, x in pixels(T, H, W):
        for i in range(w.shape[1]):
            tp, yp, xp = cross_position(i, t, y, x, H, W)
            w[:, i, t, y, x] = (a[:, :, t, y, x] * b[:, :, tp, yp, xp]).sum(1)
    return w


def map_fwd(w: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """``out[n, c, u] = sum_i w[n, i, u] v[n, c, pos_i(u)]``: (N, L, T, H, W), (N, C, T, H, W) -> (N, C, T, H, W)."""
    _, _, T, H, W = v.shape
    out = torch.zeros_like(v)
    for t, y, x in pixels(T, H, W):
        for i in range(w.shape[1]):
            tp, yp, xp = cross_position(i, t, y, x, H, W)
            out[:, :, t, y, x] += w[:, i, t, y, x, None] * v[:, :, tp, yp, xp]
    return out


def map_bwd_v(w: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
    """``dv[n, c, p] = sum_{u : p in cross(u)} w[n, slot_u(p), u] g[n, c, u]`` as the CUDA kernel
    gathers it: u over the row of p, the other pixels of its column and the other frames."""
    _, _, T, H, W = g.shape
    dv = torch.zeros_like(g)
    for t, y, x in pixels(T, H, W):
        for xp in range(W):
            dv[:, :, t, y, x] += w[:, cross_slot(ROW, x, xp, H, W), t, y, xp, None] * g[:, :, t, y, xp]
        for yp in (j for j in range(H) if j != y):
            dv[:, :, t, y, x] += w[:, cross_slot(COL, y, yp, H, W), t, yp, x, None] * g[:, :, t, yp, x]
        for tp in (s for s in range(T) if s != t):
            dv[:, :, t, y, x] += w[:, cross_slot(TIME, t, tp, H, W), tp, y, x, None] * g[:, :, tp, y, x]
    return dv


# (N, C', C, T, H, W)
PRIMITIVE_SHAPES = [(1, 1, 1, 1, 1, 1), (2, 3, 2, 1, 3, 4), (1, 2, 3, 3, 2, 1), (2, 2, 1, 2, 1, 3), (1, 3, 2, 3, 4, 2)]


def shape_id(shape) -> str:
    return "x".join(map(str, shape))


def test_cross_slot_inverts_cross_position():
    for T, H, W in [(1, 1, 1), (1, 3, 4), (3, 2, 1), (4, 3, 5)]:
        for t, y, x in pixels(T, H, W):
            for i in range(W + H + T - 2):
                tp, yp, xp = cross_position(i, t, y, x, H, W)
                if i < W:
                    axis, coord, own = ROW, xp, x
                elif i < W + H - 1:
                    axis, coord, own = COL, yp, y
                else:
                    axis, coord, own = TIME, tp, t
                assert cross_slot(axis, coord, own, H, W) == i


@pytest.mark.parametrize("shape", PRIMITIVE_SHAPES, ids=shape_id)
def test_primitives_give_forward_ops(make_tensor, shape):
    n, cq, c, T, H, W = shape
    q, k = make_tensor((n, cq, T, H, W)), make_tensor((n, cq, T, H, W))
    a, v = make_tensor((n, W + H + T - 2, T, H, W)), make_tensor((n, c, T, H, W))
    torch.testing.assert_close(weight_fwd(q, k), reference.ca_weight_3d(q, k), rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(map_fwd(a, v), reference.ca_map_3d(a, v), rtol=1e-12, atol=1e-12)
    if T == 1:  # the 2D ops are the T == 1 case
        torch.testing.assert_close(weight_fwd(q, k).squeeze(2), reference.ca_weight_2d(q.squeeze(2), k.squeeze(2)))
        torch.testing.assert_close(map_fwd(a, v).squeeze(2), reference.ca_map_2d(a.squeeze(2), v.squeeze(2)))


@pytest.mark.parametrize("shape", PRIMITIVE_SHAPES, ids=shape_id)
def test_primitives_give_backward_ops(make_tensor, shape):
    n, cq, c, T, H, W = shape
    L = W + H + T - 2
    q, k = make_tensor((n, cq, T, H, W), requires_grad=True), make_tensor((n, cq, T, H, W), requires_grad=True)
    a, v = make_tensor((n, L, T, H, W), requires_grad=True), make_tensor((n, c, T, H, W), requires_grad=True)
    dw, dout = make_tensor((n, L, T, H, W)), make_tensor((n, c, T, H, W))

    dq, dk = torch.autograd.grad(reference.ca_weight_3d(q, k), (q, k), dw)
    torch.testing.assert_close(map_fwd(dw, k.detach()), dq, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(map_bwd_v(dw, q.detach()), dk, rtol=1e-12, atol=1e-12)

    da, dv = torch.autograd.grad(reference.ca_map_3d(a, v), (a, v), dout)
    torch.testing.assert_close(weight_fwd(dout, v.detach()), da, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(map_bwd_v(a.detach(), dout), dv, rtol=1e-12, atol=1e-12)


# --------------------------------------------------------------------------- CUDA
# (N, C', C, H, W) and (N, C', C, T, H, W); C' is the query/key channels, C the value channels
CUDA_SHAPES = {
    "2d": [
        (1, 1, 1, 1, 1),  # H = W = 1: one slot
        (2, 4, 5, 7, 9),  # N > 1, H != W
        (1, 1, 3, 1, 6),  # C' = 1, H = 1
        (1, 2, 2, 6, 1),  # W = 1
        (3, 2, 4, 5, 5),
        (1, 16, 32, 13, 17),
        (1, 8, 8, 40, 3),  # long columns
    ],
    "3d": [
        (1, 1, 1, 1, 1, 1),
        (1, 2, 3, 1, 4, 5),  # T = 1
        (2, 3, 4, 3, 5, 6),
        (1, 1, 2, 4, 1, 3),  # C' = 1, H = 1
        (1, 2, 2, 2, 3, 1),  # W = 1
        (1, 8, 16, 5, 7, 6),
    ],
}
OP_NAMES = [
    f"ca_{kind}_{dim}{suffix}" for dim in ("2d", "3d") for kind in ("weight", "map") for suffix in ("", "_backward")
]
DTYPES = [torch.float64, torch.float32, torch.float16, torch.bfloat16]


def dim_of(name: str) -> str:
    return "2d" if "_2d" in name else "3d"


def op_inputs(make_tensor, name: str, shape, dtype, device="cuda", scale=1.0) -> list[torch.Tensor]:
    """Inputs of ``torch.ops.cca.<name>`` for ``shape`` = (N, C', C, *spatial)."""
    n, cq, c, *spatial = shape
    length = sum(spatial) - len(spatial) + 1

    def make(channels):
        return make_tensor((n, channels, *spatial), dtype=dtype, device=device, scale=scale)

    if name.startswith("ca_weight"):
        inputs = [make(cq), make(cq)]  # query, key
        grad_channels = length
    else:
        inputs = [make(length), make(c)]  # attention, value
        grad_channels = c
    if name.endswith("_backward"):
        inputs.insert(0, make(grad_channels))
    return inputs


def reference_op(name: str, inputs: list[torch.Tensor]):
    """Float64 CPU result of op ``name``; backward ops through autograd of the reference."""
    dim = dim_of(name)
    forward = getattr(reference, f"{name.split('_' + dim)[0]}_{dim}")
    args = [t.detach().double().cpu() for t in inputs]
    if not name.endswith("_backward"):
        return forward(*args)
    grad, *leaves = args
    leaves = [t.requires_grad_(True) for t in leaves]
    return torch.autograd.grad(forward(*leaves), leaves, grad)


def as_tuple(result) -> tuple[torch.Tensor, ...]:
    return tuple(result) if isinstance(result, (tuple, list)) else (result,)


@pytest.fixture
def cuda_ops(extension):
    """``torch.ops.cca`` with CUDA kernels registered (fails, not skips, when they are missing)."""
    assert _extension.has_kernel("cuda"), (
        f"the compiled library has no CUDA kernels although a GPU is visible: {_extension.status()}; "
        "rebuild with `FORCE_CUDA=1 python setup.py build_ext --inplace`"
    )
    return torch.ops.cca


def strided_copy(t: torch.Tensor, how: str) -> torch.Tensor:
    """The values of ``t`` in a non-contiguous layout on the same device."""
    if how == "sliced":  # every other element of a wider tensor along the last dim
        wide = t.new_zeros(*t.shape[:-1], 2 * t.shape[-1])
        wide[..., ::2] = t
        return wide[..., ::2]
    if how == "channels_last":
        fmt = torch.channels_last if t.dim() == 4 else torch.channels_last_3d
        return t.contiguous(memory_format=fmt)
    if how == "transposed":  # H and W swapped in memory
        return t.transpose(-1, -2).contiguous().transpose(-1, -2)
    raise ValueError(f"how must be 'sliced', 'channels_last' or 'transposed', got {how!r}")


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU: torch.cuda.is_available() is False")
class TestCuda:
    # ---------------------------------------------------------------- each op vs float64
    @pytest.mark.parametrize("dtype", DTYPES, ids=str)
    @pytest.mark.parametrize("name, shape", [(n, s) for n in OP_NAMES for s in CUDA_SHAPES[dim_of(n)]], ids=str)
    def test_op_matches_float64_reference(self, cuda_ops, make_tensor, check_close, name, shape, dtype):
        inputs = op_inputs(make_tensor, name, shape, dtype)
        results = as_tuple(getattr(cuda_ops, name)(*inputs))
        expected = as_tuple(reference_op(name, inputs))
        assert len(results) == len(expected)
        for result, want in zip(results, expected, strict=True):
            assert result.is_cuda and result.dtype == dtype and result.is_contiguous()
            check_close(result, want)

    @pytest.mark.parametrize("name", OP_NAMES)
    def test_large_values(self, cuda_ops, make_tensor, check_close, name):
        """Every input scaled by 100 (affinities ~1e4 and more): float32 keeps its relative accuracy."""
        shape = (2, 8, 4, 9, 11) if dim_of(name) == "2d" else (1, 8, 4, 3, 6, 7)
        inputs = op_inputs(make_tensor, name, shape, torch.float32, scale=100.0)
        results, expected = as_tuple(getattr(cuda_ops, name)(*inputs)), as_tuple(reference_op(name, inputs))
        for result, want in zip(results, expected, strict=True):
            check_close(result, want)

    # ---------------------------------------------------------------- public API
    @pytest.mark.parametrize("dtype", DTYPES, ids=str)
    @pytest.mark.parametrize("ndim", [2, 3])
    def test_attention_matches_float64_reference(self, cuda_ops, make_tensor, check_close, ndim, dtype):
        """Forward and input gradients of the whole attention (softmax included)."""
        spatial = (13, 17) if ndim == 2 else (3, 7, 6)
        fn = cca.criss_cross_attention if ndim == 2 else cca.criss_cross_attention_3d
        ref = reference.criss_cross_attention_2d if ndim == 2 else reference.criss_cross_attention_3d
        q, k = (make_tensor((2, 8, *spatial), dtype=dtype, device="cuda", scale=8**-0.5) for _ in range(2))
        v = make_tensor((2, 16, *spatial), dtype=dtype, device="cuda")
        grad_out = make_tensor(v.shape, dtype=dtype, device="cuda")
        inputs = [t.requires_grad_(True) for t in (q, k, v)]
        inputs64 = [t.detach().double().cpu().requires_grad_(True) for t in inputs]
        out = fn(*inputs)
        expected = ref(*inputs64)
        check_close(out.detach(), expected.detach())
        grads = torch.autograd.grad(out, inputs, grad_out)
        expected_grads = torch.autograd.grad(expected, inputs64, grad_out.double().cpu())
        for grad, want in zip(grads, expected_grads, strict=True):
            assert grad.is_cuda and grad.dtype == dtype
            check_close(grad, want)

    @pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=str)
    @pytest.mark.parametrize("ndim", [2, 3])
    def test_softmax_of_large_logits(self, cuda_ops, make_tensor, check_close, ndim, dtype):
        """Query and key scaled by 30 (logits in the thousands): finite, and as accurate as the
        rounding of the logits allows (eps * sum_c |q_c k_c|)."""
        spatial = (9, 11) if ndim == 2 else (3, 6, 7)
        fn = cca.criss_cross_attention if ndim == 2 else cca.criss_cross_attention_3d
        ref = reference.criss_cross_attention_2d if ndim == 2 else reference.criss_cross_attention_3d
        weight = reference.ca_weight_2d if ndim == 2 else reference.ca_weight_3d
        q, k = (make_tensor((2, 8, *spatial), dtype=dtype, device="cuda", scale=30.0) for _ in range(2))
        v = make_tensor((2, 4, *spatial), dtype=dtype, device="cuda")
        magnitude = weight(q.double().abs().cpu(), k.double().abs().cpu()).max().item()
        assert magnitude > 1000.0
        tol = (1e-4 if dtype == torch.float32 else 1e-10) + 4 * torch.finfo(dtype).eps * magnitude
        out = fn(q, k, v)
        assert torch.isfinite(out).all()
        check_close(out, ref(q.double().cpu(), k.double().cpu(), v.double().cpu()), tol)

    def test_public_api_uses_the_cuda_kernels(self, cuda_ops):
        assert cca.ops.use_extension(torch.device("cuda"))

    # ---------------------------------------------------------------- gradcheck
    @pytest.mark.parametrize("seed", range(3))
    @pytest.mark.parametrize(
        "fn, shapes",
        [
            (cca.ca_weight, [(2, 3, 4, 5), (2, 3, 4, 5)]),
            (cca.ca_map, [(2, 8, 4, 5), (2, 3, 4, 5)]),
            (cca.criss_cross_attention, [(2, 2, 3, 4), (2, 2, 3, 4), (2, 3, 3, 4)]),
            (cca.ca_weight, [(1, 2, 3, 3, 4), (1, 2, 3, 3, 4)]),
            (cca.ca_map, [(1, 8, 3, 3, 4), (1, 2, 3, 3, 4)]),
            (cca.criss_cross_attention_3d, [(1, 2, 2, 3, 2), (1, 2, 2, 3, 2), (1, 3, 2, 3, 2)]),
        ],
        ids=["weight2d", "map2d", "attention2d", "weight3d", "map3d", "attention3d"],
    )
    def test_gradcheck(self, cuda_ops, fn, shapes, seed):
        generator = torch.Generator(device="cuda").manual_seed(seed)
        inputs = [
            torch.randn(s, generator=generator, device="cuda", dtype=torch.float64, requires_grad=True) for s in shapes
        ]
        assert torch.autograd.gradcheck(fn, inputs)

    # ---------------------------------------------------------------- layouts, devices, agreement
    @pytest.mark.parametrize("how", ["sliced", "channels_last", "transposed"])
    @pytest.mark.parametrize("name", OP_NAMES)
    def test_non_contiguous_inputs(self, cuda_ops, make_tensor, name, how):
        shape = (2, 3, 4, 5, 6) if dim_of(name) == "2d" else (1, 3, 2, 3, 4, 5)
        inputs = op_inputs(make_tensor, name, shape, torch.float32)
        strided = [strided_copy(t, how) for t in inputs]
        assert all(not t.is_contiguous() for t in strided)
        op = getattr(cuda_ops, name)
        for result, want in zip(as_tuple(op(*strided)), as_tuple(op(*inputs)), strict=True):
            assert torch.equal(result, want)

    @pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=str)
    @pytest.mark.parametrize("name", OP_NAMES)
    def test_cuda_agrees_with_cpu_kernels(self, cuda_ops, make_tensor, name, dtype):
        assert _extension.has_kernel("cpu"), _extension.status()
        shape = (2, 8, 16, 13, 17) if dim_of(name) == "2d" else (1, 8, 16, 4, 9, 11)
        inputs = op_inputs(make_tensor, name, shape, dtype, device="cpu")
        op = getattr(cuda_ops, name)
        on_cpu = as_tuple(op(*inputs))
        on_cuda = as_tuple(op(*(t.cuda() for t in inputs)))
        tol = 1e-12 if dtype == torch.float64 else 1e-5
        for cuda_result, cpu_result in zip(on_cuda, on_cpu, strict=True):
            torch.testing.assert_close(cuda_result.cpu(), cpu_result, rtol=tol, atol=tol)

    def test_device_mix_raises_value_error(self, cuda_ops, make_tensor):
        q = make_tensor((1, 2, 4, 5), dtype=torch.float32)
        v = make_tensor((1, 3, 4, 5), dtype=torch.float32)
        a = make_tensor((1, 8, 4, 5), dtype=torch.float32)
        with pytest.raises(ValueError, match=r"query and key must be on the same device.*cpu.*cuda"):
            cca.criss_cross_attention(q, q.cuda(), v.cuda())
        with pytest.raises(ValueError, match=r"query and value must be on the same device"):
            cca.criss_cross_attention(q.cuda(), q.cuda(), v)
        with pytest.raises(ValueError, match=r"attention and value must be on the same device"):
            cca.ca_map(a.cuda(), v)
        with pytest.raises(ValueError, match=r"query and key must be on the same device"):
            cca.ca_weight(q.cuda(), q)

    def test_device_mix_in_the_ops_raises(self, cuda_ops, make_tensor):
        """The kernels' own TORCH_CHECKs (reached by calling ``torch.ops.cca`` directly)."""
        q = make_tensor((1, 2, 4, 5), dtype=torch.float32)
        a = make_tensor((1, 8, 4, 5), dtype=torch.float32)
        v = make_tensor((1, 3, 4, 5), dtype=torch.float32)
        with pytest.raises(RuntimeError, match=r"query and key must be on the same device"):
            cuda_ops.ca_weight_2d(q.cuda(), q)
        with pytest.raises(RuntimeError, match=r"attention and value must be on the same device"):
            cuda_ops.ca_map_2d(a, v.cuda())
        with pytest.raises(RuntimeError, match=r"grad and value must be on the same device"):
            cuda_ops.ca_map_2d_backward(v, a.cuda(), v.cuda())
        with pytest.raises(RuntimeError, match=r"grad and query must be on the same device"):
            cuda_ops.ca_weight_2d_backward(a, q.cuda(), q.cuda())
        with pytest.raises(RuntimeError, match=r"attention must have shape"):
            cuda_ops.ca_map_2d(a[:, :7].cuda(), v.cuda())

    @pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs two GPUs")
    def test_second_gpu(self, cuda_ops, make_tensor, check_close):
        """Inputs on cuda:1 while cuda:0 is current: the device guard runs the kernels there."""
        inputs = op_inputs(make_tensor, "ca_map_2d_backward", (2, 3, 4, 5, 6), torch.float32, device="cuda:1")
        with torch.cuda.device(0):
            results = cuda_ops.ca_map_2d_backward(*inputs)
        for result, want in zip(results, reference_op("ca_map_2d_backward", inputs), strict=True):
            assert result.device == torch.device("cuda:1")
            check_close(result, want)

    @pytest.mark.parametrize("name", OP_NAMES)
    def test_deterministic(self, cuda_ops, make_tensor, name):
        """No atomics: bitwise the same result on every run."""
        shape = (2, 8, 16, 13, 17) if dim_of(name) == "2d" else (1, 8, 16, 4, 9, 11)
        inputs = op_inputs(make_tensor, name, shape, torch.float32)
        op = getattr(cuda_ops, name)
        first = as_tuple(op(*inputs))
        for _ in range(3):
            assert all(torch.equal(a, b) for a, b in zip(first, as_tuple(op(*inputs)), strict=True))

    # ---------------------------------------------------------------- streams, graphs, compile
    def test_runs_on_the_current_stream(self, cuda_ops, make_tensor, check_close):
        """Inputs written on a side stream behind a ~50 ms sleep: a kernel launched on another
        stream than the current one would read them before they exist."""
        base = [make_tensor(s, dtype=torch.float32, device="cuda") for s in [(2, 8, 40, 50)] * 2 + [(2, 16, 40, 50)]]
        q64, k64, v64 = (t.double().cpu() * 0.5 for t in base)
        expected = reference.criss_cross_attention_2d(q64, k64, v64)
        expected_dv = reference_op(
            "ca_map_2d_backward", [torch.ones_like(v64), torch.softmax(reference.ca_weight_2d(q64, k64), 1), v64]
        )[1]
        torch.cuda.synchronize()
        side = torch.cuda.Stream()
        with torch.cuda.stream(side):
            torch.cuda._sleep(100_000_000)
            q, k, v = (t * 0.5 for t in base)
            out = cca.criss_cross_attention(q, k, v)
            _, dv = cuda_ops.ca_map_2d_backward(torch.ones_like(out), cca.criss_cross_attention_map(q, k), v)
        side.synchronize()
        check_close(out, expected)
        check_close(dv, expected_dv)

    def test_cuda_graph_capture(self, cuda_ops, make_tensor, check_close):
        """Capture forward and backward ops in a CUDA graph, replay on new inputs."""
        static = [make_tensor(s, dtype=torch.float32, device="cuda") for s in [(2, 4, 9, 7)] * 2 + [(2, 6, 9, 7)]]

        def step():
            out = cca.criss_cross_attention(*static)
            attention = cca.criss_cross_attention_map(*static[:2])
            return out, cuda_ops.ca_map_2d_backward(out, attention, static[2])

        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            step()  # warm-up outside the capture
        torch.cuda.current_stream().wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            captured_out, (captured_da, captured_dv) = step()
        for t in static:
            t.copy_(torch.randn_like(t))
        graph.replay()
        torch.cuda.synchronize()
        out, (da, dv) = step()
        assert torch.equal(captured_out, out) and torch.equal(captured_da, da) and torch.equal(captured_dv, dv)
        check_close(out, reference.criss_cross_attention_2d(*(t.double().cpu() for t in static)))

    @pytest.mark.parametrize("ndim", [2, 3])
    def test_torch_compile_fullgraph(self, cuda_ops, make_tensor, ndim):
        """Inductor on CUDA, no graph break (fullgraph=True), forward and backward as in eager."""
        torch._dynamo.reset()
        spatial = (9, 11) if ndim == 2 else (3, 6, 7)
        attend = cca.criss_cross_attention if ndim == 2 else cca.criss_cross_attention_3d

        def block(x, q_weight, k_weight):
            q = torch.einsum("oc,nc...->no...", q_weight, x)
            k = torch.einsum("oc,nc...->no...", k_weight, x)
            return x + 0.5 * attend(q.relu(), k, x)

        x = make_tensor((2, 8, *spatial), dtype=torch.float32, device="cuda", requires_grad=True)
        q_weight = make_tensor((4, 8), dtype=torch.float32, device="cuda", requires_grad=True)
        k_weight = make_tensor((4, 8), dtype=torch.float32, device="cuda", requires_grad=True)
        compiled = torch.compile(block, fullgraph=True)
        out = compiled(x, q_weight, k_weight)
        grads = torch.autograd.grad(out.square().sum(), (x, q_weight, k_weight))
        expected = block(x, q_weight, k_weight)
        expected_grads = torch.autograd.grad(expected.square().sum(), (x, q_weight, k_weight))
        torch.testing.assert_close(out, expected, rtol=1e-4, atol=1e-4)
        for grad, want in zip(grads, expected_grads, strict=True):
            torch.testing.assert_close(grad, want, rtol=1e-4, atol=1e-4 * want.abs().max().item())
        torch._dynamo.reset()

    @pytest.mark.parametrize("name", OP_NAMES)
    def test_opcheck(self, cuda_ops, make_tensor, name):
        """Schema, fake impl and (for forward ops) autograd registration of the CUDA kernels."""
        shape = (2, 3, 4, 5, 6) if dim_of(name) == "2d" else (1, 3, 2, 3, 4, 5)
        inputs = op_inputs(make_tensor, name, shape, torch.float64)
        if not name.endswith("_backward"):
            inputs = [t.requires_grad_(True) for t in inputs]
        torch.library.opcheck(getattr(cuda_ops, name), tuple(inputs))
