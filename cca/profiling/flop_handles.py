"""fvcore handles of the FLOP convention (:data:`FLOPS_CONVENTION`): exact multiply-add formulas of
the criss-cross ops (``cca::*`` and their ``cca_profiling::*`` twins) and of the convolutions,
linear layers and matrix products, for :func:`cca.profiling.flops.count_flops`."""

from __future__ import annotations

import math
import warnings
from collections import Counter
from collections.abc import Sequence
from typing import Any

with warnings.catch_warnings():  # fvcore's import scripts a loss with the deprecated torch.jit.script
    warnings.filterwarnings("ignore", message=".*torch.jit.script.*", category=FutureWarning)
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
    "COMPUTING_OPS_FVCORE_HIDES",
    "FLOPS_CONVENTION",
    "PROFILING_NAMESPACE",
    "ca_map_macs",
    "ca_weight_macs",
    "criss_cross_positions",
    "flop_handles",
]

FLOPS_CONVENTION = (
    "2 x multiply-adds (the paper's convention): convolutions/linear (bias = 1 multiply-add per output), "
    "matrix products, criss-cross affinity N*P*prod(S)*C' and aggregation N*P*prod(S)*C (P = H+W-1; "
    "3D: T+H+W-2); softmax, element-wise, normalisation, pooling and resampling not counted (listed in ignored_ops)"
)
PROFILING_NAMESPACE = "cca_profiling"  # the reference's numerics with the compiled ops' contract


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
    for ns in ("cca", PROFILING_NAMESPACE):
        for dim in ("2d", "3d"):
            handles[f"{ns}::ca_weight_{dim}"] = _ca_weight_handle
            handles[f"{ns}::ca_map_{dim}"] = _ca_map_handle
            handles[f"{ns}::ca_weight_{dim}_backward"] = _ca_weight_backward_handle
            handles[f"{ns}::ca_map_{dim}_backward"] = _ca_map_backward_handle
    return handles


# Ops fvcore skips silently that still compute: reported in ignored_ops like any other.
COMPUTING_OPS_FVCORE_HIDES = {
    "aten::relu", "aten::relu_", "aten::clamp", "aten::clamp_", "aten::dropout", "aten::max",
    "aten::floor", "aten::floor_divide", "aten::remainder", "aten::eq", "aten::ge", "aten::gt",
    "aten::bitwise_not", "aten::__and__",
}  # fmt: skip
