"""Argument checks of the public criss-cross functions: shapes only, so meta tensors get the same
errors. Bad input raises ``TypeError`` (type, dtype) or ``ValueError`` (rank, shape, device),
naming the argument, what it got and what was expected."""

from __future__ import annotations

import torch
from torch import Tensor

SUPPORTED_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)
_DTYPE_NAMES = "float16, bfloat16, float32 or float64"  # the kernels dispatch exactly these


def check_tensor(name: str, tensor, ndim: int, layout: str) -> None:
    if not isinstance(tensor, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor of shape {layout}, got {type(tensor).__name__}")
    if tensor.dim() != ndim:
        raise ValueError(f"{name} must have {ndim} dims {layout}, got {name}.shape={tuple(tensor.shape)}")
    if tensor.dtype not in SUPPORTED_DTYPES:
        raise TypeError(
            f"{name} must be a floating-point tensor of dtype {_DTYPE_NAMES}, got {name}.dtype={tensor.dtype}"
        )
    if tensor.numel() == 0:
        raise ValueError(f"{name} must not be empty, got {name}.shape={tuple(tensor.shape)}")


def check_same(names: tuple[str, str], tensors: tuple[Tensor, Tensor]) -> None:
    (na, nb), (a, b) = names, tensors
    if a.device != b.device:
        raise ValueError(
            f"{na} and {nb} must be on the same device, got {na}.device={a.device}, {nb}.device={b.device}"
        )
    if a.dtype != b.dtype:
        raise TypeError(f"{na} and {nb} must have the same dtype, got {na}.dtype={a.dtype}, {nb}.dtype={b.dtype}")


def check_rank(name: str, tensor, ranks: tuple[int, ...], layouts: str) -> int:
    """The rank of ``tensor`` (4 when it is not a tensor: :func:`check_tensor` then names the type)."""
    ndim = tensor.dim() if isinstance(tensor, Tensor) else ranks[0]
    if ndim not in ranks:
        raise ValueError(f"{name} must have {layouts}, got {name}.shape={tuple(tensor.shape)}")
    return ndim


def check_qkv(query, key, value, ndim: int) -> None:
    spatial = "(N, C', H, W)" if ndim == 4 else "(N, C', T, H, W)"
    check_tensor("query", query, ndim, spatial)
    check_tensor("key", key, ndim, spatial)
    check_tensor("value", value, ndim, spatial.replace("C'", "C"))
    check_same(("query", "key"), (query, key))
    check_same(("query", "value"), (query, value))
    if key.shape != query.shape:
        raise ValueError(
            f"key must have the shape of query, got key.shape={tuple(key.shape)}, query.shape={tuple(query.shape)}"
        )
    if value.shape[0] != query.shape[0] or value.shape[2:] != query.shape[2:]:
        raise ValueError(
            "value must match query in batch and spatial dims, got "
            f"value.shape={tuple(value.shape)}, query.shape={tuple(query.shape)}"
        )


def check_attention(attention, value, ndim: int) -> None:
    layout = "(N, H+W-1, H, W)" if ndim == 4 else "(N, T+H+W-2, T, H, W)"
    check_tensor("attention", attention, ndim, layout)
    check_tensor("value", value, ndim, "(N, C, H, W)" if ndim == 4 else "(N, C, T, H, W)")
    check_same(("attention", "value"), (attention, value))
    spatial = value.shape[2:]
    expected = (value.shape[0], sum(spatial) - len(spatial) + 1, *spatial)
    if tuple(attention.shape) != expected:
        raise ValueError(
            f"attention must have shape {expected} for value.shape={tuple(value.shape)}, got {tuple(attention.shape)}"
        )
