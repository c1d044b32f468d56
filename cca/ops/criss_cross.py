"""Criss-cross attention: public functions, custom-op fake impls and autograd.

The compiled library (``csrc/``) defines eight ops in the ``cca`` namespace:
``ca_weight_{2d,3d}``, ``ca_map_{2d,3d}`` and their ``*_backward`` ops. This module adds their
fake (meta) implementations for ``torch.compile`` and registers autograd once, then exposes
the user-facing functions, which validate their arguments and pick the backend.
"""

from __future__ import annotations

import torch
from torch import Tensor

from cca import _env
from cca.ops import _extension, reference

__all__ = [
    "criss_cross_attention",
    "criss_cross_attention_3d",
    "criss_cross_attention_map",
    "criss_cross_attention_map_3d",
    "ca_weight",
    "ca_map",
    "use_extension",
]

_registered = False


# --------------------------------------------------------------------------- registration
def _fake_weight(query: Tensor, key: Tensor) -> Tensor:
    n, _, *spatial = query.shape
    return query.new_empty((n, sum(spatial) - len(spatial) + 1, *spatial))


def _fake_map(attention: Tensor, value: Tensor) -> Tensor:
    return value.new_empty(value.shape)


def _fake_backward(grad: Tensor, a: Tensor, b: Tensor) -> tuple[Tensor, Tensor]:
    return a.new_empty(a.shape), b.new_empty(b.shape)


def _setup_context(ctx, inputs, output) -> None:
    first, second = inputs
    ctx.save_for_backward(first, second)


def _make_backward(name: str):
    def backward(ctx, grad: Tensor):
        first, second = ctx.saved_tensors
        grad_first, grad_second = getattr(torch.ops.cca, name)(grad, first, second)
        need_first, need_second = ctx.needs_input_grad
        return (grad_first if need_first else None, grad_second if need_second else None)

    return backward


def _no_double_backward(ctx, *grads):
    raise NotImplementedError(
        "double backward through cca criss-cross attention ops is not supported "
        "(create_graph=True over torch.ops.cca.*_backward)"
    )


def _setup_nothing(ctx, inputs, output) -> None:
    return None


def _register_python_parts() -> None:
    """Fake impls + autograd for the C++ ops; idempotent (called by the loader)."""
    global _registered
    if _registered:
        return
    for dim in ("2d", "3d"):
        torch.library.register_fake(f"cca::ca_weight_{dim}")(_fake_weight)
        torch.library.register_fake(f"cca::ca_map_{dim}")(_fake_map)
        torch.library.register_fake(f"cca::ca_weight_{dim}_backward")(_fake_backward)
        torch.library.register_fake(f"cca::ca_map_{dim}_backward")(_fake_backward)
        for op in (f"ca_weight_{dim}", f"ca_map_{dim}"):
            torch.library.register_autograd(
                f"cca::{op}", _make_backward(f"{op}_backward"), setup_context=_setup_context
            )
            torch.library.register_autograd(
                f"cca::{op}_backward", _no_double_backward, setup_context=_setup_nothing
            )
    _registered = True


# --------------------------------------------------------------------------- validation
def _check_tensor(name: str, tensor, ndim: int, layout: str) -> None:
    if not isinstance(tensor, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor of shape {layout}, got {type(tensor).__name__}")
    if tensor.dim() != ndim:
        raise ValueError(f"{name} must have {ndim} dims {layout}, got {name}.shape={tuple(tensor.shape)}")
    if not tensor.is_floating_point():
        raise TypeError(f"{name} must be a floating-point tensor, got {name}.dtype={tensor.dtype}")
    if tensor.numel() == 0:
        raise ValueError(f"{name} must not be empty, got {name}.shape={tuple(tensor.shape)}")


def _check_same(names: tuple[str, str], tensors: tuple[Tensor, Tensor]) -> None:
    (na, nb), (a, b) = names, tensors
    if a.device != b.device:
        raise ValueError(f"{na} and {nb} must be on the same device, got {na}.device={a.device}, {nb}.device={b.device}")
    if a.dtype != b.dtype:
        raise TypeError(f"{na} and {nb} must have the same dtype, got {na}.dtype={a.dtype}, {nb}.dtype={b.dtype}")


def _check_qkv(query, key, value, ndim: int) -> None:
    spatial = "(N, C', H, W)" if ndim == 4 else "(N, C', T, H, W)"
    _check_tensor("query", query, ndim, spatial)
    _check_tensor("key", key, ndim, spatial)
    _check_tensor("value", value, ndim, spatial.replace("C'", "C"))
    _check_same(("query", "key"), (query, key))
    _check_same(("query", "value"), (query, value))
    if key.shape != query.shape:
        raise ValueError(f"key must have the shape of query, got key.shape={tuple(key.shape)}, query.shape={tuple(query.shape)}")
    if value.shape[0] != query.shape[0] or value.shape[2:] != query.shape[2:]:
        raise ValueError(
            "value must match query in batch and spatial dims, got "
            f"value.shape={tuple(value.shape)}, query.shape={tuple(query.shape)}"
        )


def _check_attention(attention, value, ndim: int) -> None:
    layout = "(N, H+W-1, H, W)" if ndim == 4 else "(N, T+H+W-2, T, H, W)"
    _check_tensor("attention", attention, ndim, layout)
    _check_tensor("value", value, ndim, "(N, C, H, W)" if ndim == 4 else "(N, C, T, H, W)")
    _check_same(("attention", "value"), (attention, value))
    spatial = value.shape[2:]
    expected = (value.shape[0], sum(spatial) - len(spatial) + 1, *spatial)
    if tuple(attention.shape) != expected:
        raise ValueError(f"attention must have shape {expected} for value.shape={tuple(value.shape)}, got {tuple(attention.shape)}")


# --------------------------------------------------------------------------- backend choice
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


def _softmax(energy: Tensor) -> Tensor:
    if energy.dtype in (torch.float16, torch.bfloat16):
        return torch.softmax(energy.float(), dim=1).to(energy.dtype)
    return torch.softmax(energy, dim=1)


# --------------------------------------------------------------------------- public functions
def ca_weight(query: Tensor, key: Tensor) -> Tensor:
    """Affinity (no softmax). 2D: ``(N, C', H, W) x2 -> (N, H+W-1, H, W)``;
    3D: ``(N, C', T, H, W) x2 -> (N, T+H+W-2, T, H, W)``."""
    ndim = query.dim() if isinstance(query, Tensor) else 4
    if ndim not in (4, 5):
        raise ValueError(f"query must have 4 dims (N, C', H, W) or 5 dims (N, C', T, H, W), got {tuple(query.shape)}")
    _check_qkv(query, key, query, ndim)
    dim = "2d" if ndim == 4 else "3d"
    if use_extension(query.device):
        return getattr(torch.ops.cca, f"ca_weight_{dim}")(query, key)
    return getattr(reference, f"ca_weight_{dim}")(query, key)


def ca_map(attention: Tensor, value: Tensor) -> Tensor:
    """Aggregation. 2D: ``(N, H+W-1, H, W), (N, C, H, W) -> (N, C, H, W)``; 3D likewise."""
    ndim = value.dim() if isinstance(value, Tensor) else 4
    if ndim not in (4, 5):
        raise ValueError(f"value must have 4 dims (N, C, H, W) or 5 dims (N, C, T, H, W), got {tuple(value.shape)}")
    _check_attention(attention, value, ndim)
    dim = "2d" if ndim == 4 else "3d"
    if use_extension(value.device):
        return getattr(torch.ops.cca, f"ca_map_{dim}")(attention, value)
    return getattr(reference, f"ca_map_{dim}")(attention, value)


def _attention(query: Tensor, key: Tensor, value: Tensor, ndim: int) -> Tensor:
    _check_qkv(query, key, value, ndim)
    dim = "2d" if ndim == 4 else "3d"
    if use_extension(query.device):
        ops = torch.ops.cca
        attn = _softmax(getattr(ops, f"ca_weight_{dim}")(query, key))
        return getattr(ops, f"ca_map_{dim}")(attn, value)
    return getattr(reference, f"criss_cross_attention_{dim}")(query, key, value)


def criss_cross_attention(query: Tensor, key: Tensor, value: Tensor) -> Tensor:
    """Criss-cross attention (CCNet, Huang et al.), each pixel attending to its row and column.

    Args:
        query: ``Tensor[N, C', H, W]``.
        key: ``Tensor[N, C', H, W]``.
        value: ``Tensor[N, C, H, W]``.

    Returns:
        ``Tensor[N, C, H, W]``: ``out[:, :, u] = sum_i softmax_i(<q_u, k_{pos_i(u)}>) v_{pos_i(u)}``
        over the ``H + W - 1`` positions of the row and column of ``u`` (``u`` counted once).
    """
    return _attention(query, key, value, 4)


def criss_cross_attention_3d(query: Tensor, key: Tensor, value: Tensor) -> Tensor:
    """3D criss-cross attention over ``T + H + W - 2`` positions (row, column and time of ``u``).

    Args:
        query: ``Tensor[N, C', T, H, W]``; key: same shape; value: ``Tensor[N, C, T, H, W]``.

    Returns:
        ``Tensor[N, C, T, H, W]``.
    """
    return _attention(query, key, value, 5)


def criss_cross_attention_map(query: Tensor, key: Tensor) -> Tensor:
    """The attention map ``Tensor[N, H+W-1, H, W]`` (softmax over dim 1), e.g. to visualise it.

    Slot order: ``0..W-1`` the row of ``u``, then the ``H-1`` other column pixels top to bottom.
    """
    if isinstance(query, Tensor) and query.dim() != 4:
        raise ValueError(f"query must have 4 dims (N, C', H, W), got query.shape={tuple(query.shape)}")
    return _softmax(ca_weight(query, key))


def criss_cross_attention_map_3d(query: Tensor, key: Tensor) -> Tensor:
    """The 3D attention map ``Tensor[N, T+H+W-2, T, H, W]`` (softmax over dim 1)."""
    if isinstance(query, Tensor) and query.dim() != 5:
        raise ValueError(f"query must have 5 dims (N, C', T, H, W), got query.shape={tuple(query.shape)}")
    return _softmax(ca_weight(query, key))
