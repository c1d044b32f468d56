"""FLOPs of a block with fvcore, exact for the criss-cross ops, the same on either backend.

Convention (the paper's; the author's recipe in speedinghzl/CCNet issue #2): **FLOPs = 2 x
multiply-adds** of the block alone, counting

* convolutions and linear layers, their bias as one multiply-add per output element (as thop,
  the usual counter of that time, does),
* matrix products (``matmul``/``mm``/``bmm``/``einsum``/``scaled_dot_product_attention``),
* the criss-cross affinity ``cca::ca_weight_*``: ``N * P * prod(S) * C'`` and aggregation
  ``cca::ca_map_*``: ``N * P * prod(S) * C`` multiply-adds, ``P = H + W - 1`` in 2D and
  ``T + H + W - 2`` in 3D (fvcore cannot see inside custom ops: these handles count them from
  the shapes), and their backward ops (twice each, if a traced graph contains them).

Everything else that computes (softmax, element-wise add/mul, activation, normalisation, pooling,
resampling) is **not counted**, as in the author's recipe ("softmax and add ignored"); each such op
met in the trace is listed, with its number of calls, in the result's ``ignored_ops``.

Backend independence: without the compiled kernels the criss-cross attention runs the pure-PyTorch
reference (einsum + gather, which also computes each pixel's self-affinity twice). While counting,
:func:`modelled_criss_cross` routes that path through the ``cca_profiling::*`` custom ops below
(same schema, fake impls and saved tensors as the compiled ``cca::*`` ops, reference numerics), so
the trace holds one criss-cross node per call on either backend and the count is identical.

Shapes only: when the inputs are on the ``meta`` device no data is allocated. fvcore traces with
``torch.jit`` and PyTorch's Python meta kernels cannot run under the tracer, so the block is traced
once on small real CPU inputs (each spatial side at most :data:`TRACE_SIDE`) and the traced graph
is re-executed op by op on meta tensors of the requested shape, re-typing every value before
fvcore's handles read the shapes. This assumes the block's graph does not change with the input
size (true for the context blocks here; the tests compare both ways).
"""

from __future__ import annotations

import contextlib
import math
import warnings
from collections import Counter
from collections.abc import Iterator, Sequence
from typing import Any
from unittest import mock

import torch
from torch import Tensor, nn

from cca.ops import reference

with warnings.catch_warnings():  # fvcore's import scripts a loss with the deprecated torch.jit.script
    warnings.filterwarnings("ignore", message=".*torch.jit.script.*", category=FutureWarning)
    from fvcore.nn import FlopCountAnalysis, jit_analysis, parameter_count
    from fvcore.nn.jit_handles import (
        addmm_flop_jit,
        bmm_flop_jit,
        conv_flop_count,
        einsum_flop_jit,
        get_shape,
        linear_flop_jit,
        matmul_flop_jit,
    )

__all__ = [
    "FLOPS_CONVENTION",
    "TRACE_SIDE",
    "ca_map_macs",
    "ca_weight_macs",
    "count_flops",
    "count_parameters",
    "criss_cross_positions",
    "flop_handles",
    "modelled_criss_cross",
]

FLOPS_CONVENTION = (
    "2 x multiply-adds (the paper's convention): convolutions/linear (bias = 1 multiply-add per output), "
    "matrix products, criss-cross affinity N*P*prod(S)*C' and aggregation N*P*prod(S)*C (P = H+W-1; "
    "3D: T+H+W-2); softmax, element-wise, normalisation, pooling and resampling not counted (listed in ignored_ops)"
)
TRACE_SIDE = 16
_NS = "cca_profiling"


# --------------------------------------------------------------------------- exact formulas
def criss_cross_positions(spatial: Sequence[int]) -> int:
    """Positions of a criss-cross set: ``H + W - 1`` (2D), ``T + H + W - 2`` (3D)."""
    return sum(spatial) - len(spatial) + 1


def ca_weight_macs(batch: int, channels: int, spatial: Sequence[int]) -> int:
    """Multiply-adds of the affinity: ``N * P * prod(S) * C'``."""
    return batch * criss_cross_positions(spatial) * math.prod(spatial) * channels


def ca_map_macs(batch: int, channels: int, spatial: Sequence[int]) -> int:
    """Multiply-adds of the aggregation: ``N * P * prod(S) * C``."""
    return batch * criss_cross_positions(spatial) * math.prod(spatial) * channels


# --------------------------------------------------------------------------- fvcore handles
def _shape(value: Any, what: str) -> list[int]:
    shape = get_shape(value)
    if shape is None:
        raise ValueError(f"fvcore handle: the {what} has no complete tensor shape in the traced graph")
    return list(shape)


def _ca_weight_handle(inputs: list, outputs: list) -> Counter:
    n, c, *spatial = _shape(inputs[0], "query of ca_weight")
    return Counter({"criss_cross_affinity": ca_weight_macs(n, c, spatial)})


def _ca_map_handle(inputs: list, outputs: list) -> Counter:
    n, c, *spatial = _shape(inputs[1], "value of ca_map")
    return Counter({"criss_cross_aggregation": ca_map_macs(n, c, spatial)})


def _ca_weight_backward_handle(inputs: list, outputs: list) -> Counter:
    # (grad, query, key) -> (d query, d key): one product of the affinity's size each
    n, c, *spatial = _shape(inputs[1], "query of ca_weight_backward")
    return Counter({"criss_cross_affinity_backward": 2 * ca_weight_macs(n, c, spatial)})


def _ca_map_backward_handle(inputs: list, outputs: list) -> Counter:
    # (grad, attention, value) -> (d attention, d value): one product of the aggregation's size each
    n, c, *spatial = _shape(inputs[2], "value of ca_map_backward")
    return Counter({"criss_cross_aggregation_backward": 2 * ca_map_macs(n, c, spatial)})


def _has_tensor(value: Any) -> bool:
    return get_shape(value) is not None


def _conv_handle(transposed_index: int | None, transposed: bool = False):
    """Convolution multiply-adds (fvcore's formula) plus one per output element for the bias."""

    def handle(inputs: list, outputs: list) -> Counter:
        x, w, out = _shape(inputs[0], "conv input"), _shape(inputs[1], "conv weight"), _shape(outputs[0], "conv output")
        is_transposed = bool(inputs[transposed_index].toIValue()) if transposed_index is not None else transposed
        macs = int(conv_flop_count(x, w, out, transposed=is_transposed))
        if _has_tensor(inputs[2]):
            macs += math.prod(out)
        return Counter({"conv": macs})

    return handle


def _linear_handle(inputs: list, outputs: list) -> Counter:
    macs = int(linear_flop_jit(inputs, outputs))
    if _has_tensor(inputs[2]):
        macs += math.prod(_shape(outputs[0], "linear output"))
    return Counter({"linear": macs})


def _addmm_handle(inputs: list, outputs: list) -> Counter:
    return Counter({"linear": int(addmm_flop_jit(inputs, outputs)) + math.prod(_shape(outputs[0], "addmm output"))})


def _sdpa_handle(inputs: list, outputs: list) -> Counter:
    q, k, v = (_shape(inputs[i], name) for i, name in enumerate(("query", "key", "value")))
    batch = math.prod(q[:-2])
    return Counter({"attention": batch * q[-2] * k[-2] * (q[-1] + v[-1])})


def _int_handle(handle):
    return lambda inputs, outputs: int(handle(inputs, outputs))


def flop_handles() -> dict:
    """Operator name -> fvcore handle (multiply-adds) of every op this module counts."""
    handles = {
        "aten::_convolution": _conv_handle(6),
        "aten::convolution": _conv_handle(6),
        "aten::conv1d": _conv_handle(None),
        "aten::conv2d": _conv_handle(None),
        "aten::conv3d": _conv_handle(None),
        "aten::conv_transpose2d": _conv_handle(None, transposed=True),
        "aten::linear": _linear_handle,
        "aten::addmm": _addmm_handle,
        "aten::matmul": _int_handle(matmul_flop_jit),
        "aten::mm": _int_handle(matmul_flop_jit),
        "aten::bmm": _int_handle(bmm_flop_jit),
        "aten::einsum": _int_handle(einsum_flop_jit),
        "aten::scaled_dot_product_attention": _sdpa_handle,
    }
    for ns in ("cca", _NS):
        for dim in ("2d", "3d"):
            handles[f"{ns}::ca_weight_{dim}"] = _ca_weight_handle
            handles[f"{ns}::ca_map_{dim}"] = _ca_map_handle
            handles[f"{ns}::ca_weight_{dim}_backward"] = _ca_weight_backward_handle
            handles[f"{ns}::ca_map_{dim}_backward"] = _ca_map_backward_handle
    return handles


# Ops fvcore skips silently that still compute: reported in ignored_ops like any other.
_COMPUTING_OPS_FVCORE_HIDES = {
    "aten::relu", "aten::relu_", "aten::clamp", "aten::clamp_", "aten::dropout", "aten::max",
    "aten::floor", "aten::floor_divide", "aten::remainder", "aten::eq", "aten::ge", "aten::gt",
    "aten::bitwise_not", "aten::__and__",
}  # fmt: skip


# --------------------------------------------------------------------------- counted criss-cross ops
_REFERENCE = {name: getattr(reference, name) for name in ("ca_weight_2d", "ca_map_2d", "ca_weight_3d", "ca_map_3d")}


def _full_lines(part: Tensor, dim_other: int, dim_self: int) -> Tensor:
    """``(.., size - 1, .., size, ..)`` "other positions" slots -> ``size`` positions, zeros where other == self."""
    size = part.shape[dim_self]
    index = reference.others_index(size, part.device)
    view = [1] * part.dim()
    view[dim_other], view[dim_self] = size - 1, size
    target = list(part.shape)
    target[dim_other] = size
    return part.new_zeros(target).scatter(dim_other, index.view(view).expand(part.shape), part)


def _scatter_to_positions(weights: Tensor, x: Tensor) -> Tensor:
    """Adjoint of the aggregation in its value: ``out[p] = sum_{u, i: pos_i(u) = p} weights[i, u] * x[u]``.

    ``weights (N, P, *S)``, ``x (N, C, *S)`` -> ``(N, C, *S)``; gives d key (weights = d affinity,
    x = query) and d value (weights = attention, x = d output)."""
    width, height = x.shape[-1], x.shape[-2]
    if x.dim() == 4:
        out = torch.einsum("niyx,ncyx->ncyi", weights[:, :width], x)
        return out + torch.einsum("njyx,ncyx->ncjx", _full_lines(weights[:, width:], 1, 2), x)
    col = weights[:, width : width + height - 1]
    tim = weights[:, width + height - 1 :]
    out = torch.einsum("nityx,nctyx->nctyi", weights[:, :width], x)
    out = out + torch.einsum("njtyx,nctyx->nctjx", _full_lines(col, 1, 3), x)
    return out + torch.einsum("nstyx,nctyx->ncsyx", _full_lines(tim, 1, 2), x)


def _backward_reference(name: str, grad: Tensor, a: Tensor, b: Tensor) -> tuple[Tensor, Tensor]:
    """Gradients of ``ca_weight`` (a = query, b = key) or ``ca_map`` (a = attention, b = value)."""
    dim = name[-2:]
    if name.startswith("ca_weight"):  # d query = aggregation of the key, d key = adjoint
        return _REFERENCE[f"ca_map_{dim}"](grad, b), _scatter_to_positions(grad, a)
    # d attention = affinity of the output gradient with the value, d value = adjoint
    return _REFERENCE[f"ca_weight_{dim}"](grad, b), _scatter_to_positions(a, grad)


def _define_counted_ops() -> dict:
    """``cca_profiling::ca_{weight,map}_{2d,3d}`` (+ ``_backward``): the compiled ops' contract
    (outputs, fake impls, tensors saved for backward) with the reference's numerics."""
    counted = {}
    for name, forward in _REFERENCE.items():
        first = "query" if name.startswith("ca_weight") else "attention"
        second = "key" if name.startswith("ca_weight") else "value"

        def impl(a: Tensor, b: Tensor, _forward=forward) -> Tensor:
            return _forward(a, b)

        def backward_impl(grad: Tensor, a: Tensor, b: Tensor, _name=name) -> tuple[Tensor, Tensor]:
            return _backward_reference(_name, grad, a, b)

        op = torch.library.custom_op(
            f"{_NS}::{name}", impl, mutates_args=(), schema=f"(Tensor {first}, Tensor {second}) -> Tensor"
        )
        backward_op = torch.library.custom_op(
            f"{_NS}::{name}_backward",
            backward_impl,
            mutates_args=(),
            schema=f"(Tensor grad, Tensor {first}, Tensor {second}) -> (Tensor, Tensor)",
        )
        if name.startswith("ca_weight"):

            @op.register_fake
            def _(a: Tensor, b: Tensor) -> Tensor:
                n, _, *spatial = a.shape
                return a.new_empty((n, criss_cross_positions(spatial), *spatial))
        else:

            @op.register_fake
            def _(a: Tensor, b: Tensor) -> Tensor:
                return b.new_empty(b.shape)

        @backward_op.register_fake
        def _(grad: Tensor, a: Tensor, b: Tensor) -> tuple[Tensor, Tensor]:
            return a.new_empty(a.shape), b.new_empty(b.shape)

        def setup_context(ctx, inputs, output) -> None:
            ctx.save_for_backward(*inputs)

        def backward(ctx, grad: Tensor, _backward_op=backward_op):
            a, b = ctx.saved_tensors
            grad_a, grad_b = _backward_op(grad, a, b)
            need_a, need_b = ctx.needs_input_grad
            return (grad_a if need_a else None, grad_b if need_b else None)

        op.register_autograd(backward, setup_context=setup_context)
        counted[name] = op
    return counted


_COUNTED = _define_counted_ops()


@contextlib.contextmanager
def modelled_criss_cross() -> Iterator[None]:
    """Within: the reference path of cca's criss-cross attention calls the ``cca_profiling`` ops.

    The compiled path (``torch.ops.cca.*``) is untouched. Not thread-safe (patches module
    attributes of :mod:`cca.ops.reference` and restores them on exit).
    """
    saved = {name: getattr(reference, name) for name in _COUNTED}
    try:
        for name, op in _COUNTED.items():
            setattr(reference, name, op)
        yield
    finally:
        for name, fn in saved.items():
            setattr(reference, name, fn)


# --------------------------------------------------------------------------- shapes on meta
def _run_node_on_meta(node: torch._C.Node, args: list) -> list:
    """Execute one traced node on meta tensors; returns its outputs."""
    kind = node.kind()
    if kind == "prim::Constant":
        value = node.output().toIValue()
        if isinstance(value, torch.device):
            value = torch.device("meta")
        elif isinstance(value, Tensor):
            value = value.to("meta")
        return [value]
    if kind == "prim::ListConstruct":
        return [list(args)]
    if kind == "prim::TupleConstruct":
        return [tuple(args)]
    if kind in ("prim::ListUnpack", "prim::TupleUnpack"):
        return list(args[0])
    if kind == "prim::NumToTensor":
        return [torch.tensor(args[0])]
    if kind == "prim::device":
        return [torch.device("meta")]
    if kind == "prim::dtype":
        return [args[0].dtype]
    if kind in ("aten::Int", "aten::Float", "aten::ScalarImplicit"):
        if isinstance(args[0], Tensor) and args[0].is_meta:
            raise NotImplementedError(f"{kind} reads a tensor's value: the block's graph depends on data")
        cast = {"aten::Int": int, "aten::Float": float}.get(kind, lambda t: t.item())
        return [cast(args[0])]
    if kind.startswith("prim::"):
        raise NotImplementedError(
            f"cannot re-run {kind} on meta tensors (e.g. a torch.autograd.Function); count FLOPs on real inputs"
        )
    schema = torch._C.parse_schema(node.schema())
    namespace, name = schema.name.split("::")
    op = getattr(getattr(getattr(torch.ops, namespace), name), schema.overload_name or "default")
    positional, keywords = [], {}
    for argument, value in zip(schema.arguments, args, strict=True):
        if argument.kwarg_only:
            keywords[argument.name] = value
        else:
            positional.append(value)
    result = op(*positional, **keywords)
    outputs = list(node.outputs())
    return list(result) if len(outputs) > 1 else [result]


def _retype_graph_on_meta(graph: torch._C.Graph, input_shapes: Sequence[Sequence[int]]) -> None:
    """Re-run ``graph`` on meta tensors whose first inputs have ``input_shapes`` and write every
    tensor value's new shape into the graph (in place)."""
    env: dict[int, Any] = {}
    for index, value in enumerate(graph.inputs()):
        kind = value.type()
        if not isinstance(kind, torch.TensorType):
            raise NotImplementedError(f"graph input {index} is not a tensor: {kind}")
        shape = list(input_shapes[index]) if index < len(input_shapes) else kind.sizes()
        env[value.unique()] = torch.empty(shape, dtype=kind.dtype(), device="meta")
        value.setType(kind.with_sizes(shape))
    for node in graph.nodes():
        results = _run_node_on_meta(node, [env[v.unique()] for v in node.inputs()])
        for value, result in zip(node.outputs(), results, strict=True):
            env[value.unique()] = result
            if isinstance(result, Tensor) and isinstance(value.type(), torch.TensorType):
                value.setType(value.type().with_sizes(list(result.shape)))


class _Analysis(FlopCountAnalysis):
    """fvcore analysis with our handles only, reporting every computing op it does not count;
    optionally over a graph traced on small inputs and re-shaped on meta."""

    def __init__(self, model: nn.Module, inputs: tuple, meta_shapes: list | None = None) -> None:
        super().__init__(model, inputs)
        self.clear_op_handles()
        self.set_op_handle(**flop_handles())
        self._ignored_ops -= _COMPUTING_OPS_FVCORE_HIDES
        self.unsupported_ops_warnings(False)
        self.uncalled_modules_warnings(False)
        self._meta_shapes = meta_shapes

    def _analyze(self):
        if self._meta_shapes is None:
            return super()._analyze()
        trace = jit_analysis._get_scoped_trace_graph
        shapes = self._meta_shapes

        def traced_then_reshaped(module, inputs, aliases):
            graph = trace(module, inputs, aliases)
            _retype_graph_on_meta(graph, shapes)
            return graph

        with mock.patch.object(jit_analysis, "_get_scoped_trace_graph", traced_then_reshaped):
            return super()._analyze()


def _as_tuple(inputs: Tensor | Sequence[Tensor]) -> tuple:
    inputs = (inputs,) if isinstance(inputs, Tensor) else tuple(inputs)
    if not inputs or not all(isinstance(t, Tensor) for t in inputs):
        raise TypeError(f"inputs must be a Tensor or a sequence of Tensors, got {[type(t).__name__ for t in inputs]}")
    return inputs


def count_flops(module: nn.Module, inputs: Tensor | Sequence[Tensor]) -> dict:
    """FLOPs (2 x multiply-adds, :data:`FLOPS_CONVENTION`) of ``module(*inputs)`` in eval mode.

    Args:
        module: the block; its parameters stay on CPU (real, small).
        inputs: a tensor ``(N, C, H, W)`` or a tuple of tensors. Tensors on ``meta`` give the count
            for their shapes without allocating (traced at sides <= :data:`TRACE_SIDE`, re-shaped).

    Returns:
        dict with ``flops``, ``gflops``, ``macs`` (ints / float), ``by_operator`` (multiply-adds per
        counted op), ``by_module`` (multiply-adds per submodule, non-zero ones), ``ignored_ops``
        (computing ops met but not counted -> number of calls), ``flops_convention``, ``flops_method``.
    """
    if not isinstance(module, nn.Module):
        raise TypeError(f"module must be a torch.nn.Module, got {type(module).__name__}")
    inputs = _as_tuple(inputs)
    on_meta = [t.is_meta for t in inputs]
    if any(on_meta) and not all(on_meta):
        raise ValueError(f"inputs must be all on meta or none, got devices {[str(t.device) for t in inputs]}")
    meta_shapes = None
    if all(on_meta):
        meta_shapes = [list(t.shape) for t in inputs]
        inputs = tuple(
            torch.randn([*t.shape[:2], *(min(s, TRACE_SIDE) for s in t.shape[2:])], dtype=t.dtype) for t in inputs
        )
        method = (
            f"fvcore jit trace at spatial sides <= {TRACE_SIDE} (CPU), graph re-run on meta tensors of the full shape"
        )
    else:
        method = "fvcore jit trace (real tensors)"
    was_training = module.training
    module.eval()
    try:
        with torch.no_grad(), modelled_criss_cross():
            analysis = _Analysis(module, inputs, meta_shapes)
            macs = int(analysis.total())
            by_operator = {op: int(n) for op, n in sorted(analysis.by_operator().items())}
            by_module = {name: int(n) for name, n in analysis.by_module().items() if n}
            ignored = dict(sorted(analysis.unsupported_ops().items()))
    finally:
        module.train(was_training)
    return {
        "flops": 2 * macs,
        "gflops": 2 * macs / 1e9,
        "macs": macs,
        "by_operator": by_operator,
        "by_module": by_module,
        "ignored_ops": ignored,
        "flops_convention": FLOPS_CONVENTION,
        "flops_method": method,
    }


def count_parameters(module: nn.Module) -> int:
    """Number of parameter elements (``fvcore.nn.parameter_count``), shared ones once."""
    return int(parameter_count(module)[""])
