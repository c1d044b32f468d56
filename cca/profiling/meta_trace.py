"""Re-run a ``torch.jit`` traced graph on ``meta`` tensors of another input shape, re-typing every
value, so that fvcore's handles read the shapes of the requested size without allocating it."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor

__all__ = ["retype_graph_on_meta"]


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


def retype_graph_on_meta(graph: torch._C.Graph, input_shapes: Sequence[Sequence[int]]) -> None:
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
