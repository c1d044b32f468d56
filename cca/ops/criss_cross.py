"""Criss-cross attention (CCNet, Huang et al.): the public functions.

Each validates its arguments (:mod:`cca.ops._checks`) and runs the compiled kernels
(``torch.ops.cca.*``, registered by :mod:`cca.ops._extension` and :mod:`cca.ops._registration`)
or the pure-PyTorch reference (:mod:`cca.ops.reference`), as :func:`use_extension` decides.
On CUDA tensors in eager mode, :func:`criss_cross_attention` and :func:`criss_cross_attention_3d` run
the fastest CUDA backend for their shape (:mod:`cca.ops.cuda_dispatch`).
"""

from __future__ import annotations

import torch
from torch import Tensor
from torch.utils._python_dispatch import _get_current_dispatch_mode

from cca import _env
from cca._checks import check_tensor
from cca.ops import _extension, cuda_dispatch, reference
from cca.ops._checks import QK_LAYOUTS, VALUE_LAYOUTS, check_attention, check_qkv
from cca.ops.reference import position_softmax

__all__ = [
    "ca_map",
    "ca_weight",
    "criss_cross_attention",
    "criss_cross_attention_3d",
    "criss_cross_attention_map",
    "criss_cross_attention_map_3d",
    "use_extension",
]


def use_extension(device: torch.device) -> bool:
    """Whether the compiled kernels serve tensors on ``device`` (honours ``CCA_BACKEND``)."""
    return _use_extension(device.type)


@torch.compiler.assume_constant_result  # decided once, outside the graph: no break under torch.compile
def _use_extension(device_type: str) -> bool:
    requested = _env.backend()
    if requested == "reference":
        return False
    available = _extension.has_kernel(device_type)
    if requested == "extension" and not available:
        raise RuntimeError(
            f"CCA_BACKEND=extension but the compiled kernels have no {device_type} implementation; "
            "run `python -m cca.info` to see what was built"
        )
    return available


def _op(name: str, device: torch.device):
    """``torch.ops.cca.<name>`` or ``reference.<name>`` for tensors on ``device``."""
    return getattr(torch.ops.cca, name) if use_extension(device) else getattr(reference, name)


def ca_weight(query: Tensor, key: Tensor) -> Tensor:
    """Affinity (no softmax). 2D: ``(N, C', H, W) x2 -> (N, H+W-1, H, W)``;
    3D: ``(N, C', T, H, W) x2 -> (N, T+H+W-2, T, H, W)``."""
    ndim = check_tensor("query", query, QK_LAYOUTS).dim()
    check_qkv(query, key, query, ndim)
    return _op(f"ca_weight_{ndim - 2}d", query.device)(query, key)


def ca_map(attention: Tensor, value: Tensor) -> Tensor:
    """Aggregation. 2D: ``(N, H+W-1, H, W), (N, C, H, W) -> (N, C, H, W)``; 3D likewise."""
    ndim = check_tensor("value", value, VALUE_LAYOUTS).dim()
    check_attention(attention, value, ndim)
    return _op(f"ca_map_{ndim - 2}d", value.device)(attention, value)


class _SoftmaxInPlace(torch.autograd.Function):
    """:func:`position_softmax` written into the energy, and its backward into the incoming gradient.

    Only for an energy that nothing else holds and whose attention only ``ca_map`` reads, as in
    :func:`_attention`: there the energy is a fresh output of the compiled ``ca_weight`` (whose
    backward does not save it) and the gradient a fresh output of ``ca_map``'s backward. Each way this
    saves a fresh ``(N, H+W-1, H, W)`` buffer, whose first touch costs a CPU as much as the softmax."""

    @staticmethod
    def forward(ctx, energy: Tensor) -> Tensor:
        torch._softmax(energy, 1, False, out=energy)
        ctx.mark_dirty(energy)
        ctx.save_for_backward(energy)
        return energy

    @staticmethod
    def backward(ctx, grad: Tensor) -> Tensor:
        (attention,) = ctx.saved_tensors
        into = None if torch.is_grad_enabled() else grad  # create_graph: out= has no derivative
        return torch._softmax_backward_data(grad, attention, 1, attention.dtype, grad_input=into)


def _softmax_of_fresh_energy(energy: Tensor) -> Tensor:
    """:func:`position_softmax` of an energy only :func:`_attention` holds: in place for the compiled
    CPU kernels in eager mode (float32/float64), out of place elsewhere: the reference's energy may be
    saved by its own backward; CUDA, torch.compile, torch.jit.trace and dispatch modes (fake tensors,
    :mod:`cca.profiling`'s memory trackers, which model the ops as CUDA runs them) keep the functional graph."""
    in_place = (
        energy.device.type == "cpu"
        and energy.dtype in (torch.float32, torch.float64)
        and energy._base is None  # the generic CPU kernels may return a view
        and use_extension(energy.device)
        and not torch.compiler.is_compiling()
        and not torch.jit.is_tracing()  # the FLOP counter's traced graph
        and _get_current_dispatch_mode() is None  # FakeTensorMode, the memory trackers: they model the CUDA ops
    )
    return _SoftmaxInPlace.apply(energy) if in_place else position_softmax(energy)


def _attention(query: Tensor, key: Tensor, value: Tensor, ndim: int) -> Tensor:
    check_qkv(query, key, value, ndim)
    dim = f"{ndim - 2}d"
    energy = _op(f"ca_weight_{dim}", query.device)(query, key)
    return _op(f"ca_map_{dim}", query.device)(_softmax_of_fresh_energy(energy), value)


def criss_cross_attention(query: Tensor, key: Tensor, value: Tensor) -> Tensor:
    """Criss-cross attention (CCNet, Huang et al.), each pixel attending to its row and column.

    On CUDA tensors (eager mode) the backend is chosen per shape and dtype: ``CCA_CUDA_KERNEL`` and
    :mod:`cca.ops.cuda_dispatch`.

    Args:
        query: ``Tensor[N, C', H, W]``.
        key: ``Tensor[N, C', H, W]``.
        value: ``Tensor[N, C, H, W]``.

    Returns:
        ``Tensor[N, C, H, W]``: ``out[:, :, u] = sum_i softmax_i(<q_u, k_{pos_i(u)}>) v_{pos_i(u)}``
        over the ``H + W - 1`` positions of the row and column of ``u`` (``u`` counted once).
    """
    if cuda_dispatch.applies(query):
        check_qkv(query, key, value, 4)
        return cuda_dispatch.criss_cross_attention(query, key, value)
    return _attention(query, key, value, 4)


def criss_cross_attention_3d(query: Tensor, key: Tensor, value: Tensor) -> Tensor:
    """3D criss-cross attention over ``T + H + W - 2`` positions (row, column and time of ``u``).

    Args:
        query: ``Tensor[N, C', T, H, W]``; key: same shape; value: ``Tensor[N, C, T, H, W]``.

    Returns:
        ``Tensor[N, C, T, H, W]``.

    On CUDA tensors (eager mode) the backend is chosen per shape as for 2D (:mod:`cca.ops.cuda_dispatch`).
    """
    if cuda_dispatch.applies(query):
        check_qkv(query, key, value, 5)
        return cuda_dispatch.criss_cross_attention(query, key, value)
    return _attention(query, key, value, 5)


def criss_cross_attention_map(query: Tensor, key: Tensor) -> Tensor:
    """The attention map ``Tensor[N, H+W-1, H, W]`` (softmax over dim 1), e.g. to visualise it.

    Slot order: ``0..W-1`` the row of ``u``, then the ``H-1`` other column pixels top to bottom.
    """
    check_tensor("query", query, QK_LAYOUTS[0])
    return position_softmax(ca_weight(query, key))


def criss_cross_attention_map_3d(query: Tensor, key: Tensor) -> Tensor:
    """The 3D attention map ``Tensor[N, T+H+W-2, T, H, W]`` (softmax over dim 1)."""
    check_tensor("query", query, QK_LAYOUTS[1])
    return position_softmax(ca_weight(query, key))
