"""Argument checks of the public criss-cross functions: shapes only, so meta tensors get the same
errors. Bad input raises ``TypeError`` (type, dtype) or ``ValueError`` (rank, shape, device),
naming the argument, what it got and what was expected (:func:`cca._checks.check_tensor`)."""

from __future__ import annotations

import torch
from torch import Tensor

from cca._checks import check_tensor

KERNEL_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)  # the kernels dispatch exactly these
QK_LAYOUTS = ("(N, C', H, W)", "(N, C', T, H, W)")  # query and key, 2D and 3D
VALUE_LAYOUTS = ("(N, C, H, W)", "(N, C, T, H, W)")
ATTENTION_LAYOUTS = ("(N, H+W-1, H, W)", "(N, T+H+W-2, T, H, W)")


def check_kernel_input(name: str, tensor: object, layout: str) -> Tensor:
    """``tensor`` if it is a non-empty tensor of ``layout`` in one of :data:`KERNEL_DTYPES`."""
    return check_tensor(name, tensor, layout, dtypes=KERNEL_DTYPES, nonempty=True)


def check_same(names: tuple[str, str], tensors: tuple[Tensor, Tensor]) -> None:
    (na, nb), (a, b) = names, tensors
    if a.device != b.device:
        raise ValueError(
            f"{na} and {nb} must be on the same device, got {na}.device={a.device}, {nb}.device={b.device}"
        )
    if a.dtype != b.dtype:
        raise TypeError(f"{na} and {nb} must have the same dtype, got {na}.dtype={a.dtype}, {nb}.dtype={b.dtype}")


def check_qkv(query, key, value, ndim: int) -> None:
    layout = QK_LAYOUTS[ndim - 4]
    check_kernel_input("query", query, layout)
    check_kernel_input("key", key, layout)
    check_kernel_input("value", value, VALUE_LAYOUTS[ndim - 4])
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
    check_kernel_input("attention", attention, ATTENTION_LAYOUTS[ndim - 4])
    check_kernel_input("value", value, VALUE_LAYOUTS[ndim - 4])
    check_same(("attention", "value"), (attention, value))
    spatial = value.shape[2:]
    expected = (value.shape[0], sum(spatial) - len(spatial) + 1, *spatial)
    if tuple(attention.shape) != expected:
        raise ValueError(
            f"attention must have shape {expected} for value.shape={tuple(value.shape)}, "
            f"got attention.shape={tuple(attention.shape)}"
        )
