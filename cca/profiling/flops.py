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
:func:`modelled_criss_cross` routes that path through the ``cca_profiling::*`` custom ops
(:func:`cca.ops._registration.define_reference_ops`: the schemas, fake impls and saved tensors of
the compiled ``cca::*`` ops with the reference's numerics), so
the trace holds one criss-cross node per call on either backend and the count is identical.

Shapes only: when the inputs are on the ``meta`` device no data is allocated. fvcore traces with
``torch.jit`` and PyTorch's Python meta kernels cannot run under the tracer, so the block is traced
once on small real CPU inputs (each spatial side at most :data:`TRACE_SIDE`) and the traced graph
is re-executed op by op on meta tensors of the requested shape, re-typing every value before
fvcore's handles read the shapes. This assumes the block's graph does not change with the input
size (true for the context blocks here; the tests compare both ways).

The handles and formulas live in :mod:`cca.profiling.flop_handles`, the meta re-run in
:mod:`cca.profiling.meta_trace`; their public names are re-exported here.
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Iterator, Sequence
from unittest import mock

import torch
from torch import Tensor, nn

from cca.ops import _registration, reference
from cca.profiling.flop_handles import (
    COMPUTING_OPS_FVCORE_HIDES,
    FLOPS_CONVENTION,
    PROFILING_NAMESPACE,
    ca_map_macs,
    ca_weight_macs,
    criss_cross_positions,
    flop_handles,
)
from cca.profiling.meta_trace import retype_graph_on_meta

with warnings.catch_warnings():  # fvcore's import scripts a loss with the deprecated torch.jit.script
    warnings.filterwarnings("ignore", message=".*torch.jit.script.*", category=FutureWarning)
    from fvcore.nn import FlopCountAnalysis, jit_analysis, parameter_count

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

TRACE_SIDE = 16

# --------------------------------------------------------------------------- counted criss-cross ops
_registration.define_reference_ops(PROFILING_NAMESPACE)
_COUNTED = {name: getattr(getattr(torch.ops, PROFILING_NAMESPACE), name) for name in _registration.OPS}


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


# --------------------------------------------------------------------------- the analysis
class _Analysis(FlopCountAnalysis):
    """fvcore analysis with our handles only, reporting every computing op it does not count;
    optionally over a graph traced on small inputs and re-shaped on meta."""

    def __init__(self, model: nn.Module, inputs: tuple, meta_shapes: list | None = None) -> None:
        super().__init__(model, inputs)
        self.clear_op_handles()
        self.set_op_handle(**flop_handles())
        self._ignored_ops -= COMPUTING_OPS_FVCORE_HIDES
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
            retype_graph_on_meta(graph, shapes)
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
