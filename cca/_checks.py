"""Argument checks shared by the modules, heads, models and losses, with one exception policy:

* ``TypeError`` when an argument has the wrong type (not an ``int``, not a number, not a ``Tensor``,
  a tensor of the wrong dtype);
* ``ValueError`` when its value is out of range (a count below 1, a NaN/infinite/negative weight,
  a tensor of the wrong shape).

Every message names the argument, the value it got and what was expected. ``bool`` is never
accepted as a number (``True`` is an ``int`` in Python, never a channel count or a weight here).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

__all__ = ["NCHW", "check_nchw", "check_tensor", "finite_number", "non_negative_int", "positive_int"]

NCHW = "(N, C, H, W)"


def _int(name: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int, got {name}={value!r} ({type(value).__name__})")
    return value


def positive_int(name: str, value: object) -> int:
    """``value`` if it is an ``int >= 1``; else ``TypeError`` (not an int) or ``ValueError`` (< 1)."""
    if _int(name, value) < 1:
        raise ValueError(f"{name} must be an int >= 1, got {name}={value!r}")
    return value  # type: ignore[return-value]


def non_negative_int(name: str, value: object) -> int:
    """``value`` if it is an ``int >= 0``; else ``TypeError`` (not an int) or ``ValueError`` (< 0)."""
    if _int(name, value) < 0:
        raise ValueError(f"{name} must be an int >= 0, got {name}={value!r}")
    return value  # type: ignore[return-value]


def finite_number(name: str, value: object, minimum: float | None = None, maximum: float | None = None) -> float:
    """``float(value)`` if it is a finite real number in ``[minimum, maximum]`` (either bound optional);
    else ``TypeError`` (not a number) or ``ValueError`` (NaN, infinite or out of range)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a number, got {name}={value!r} ({type(value).__name__})")
    if minimum is not None and maximum is not None:
        bounds = f" in [{minimum:g}, {maximum:g}]"
    elif minimum is not None or maximum is not None:
        bounds = f" >= {minimum:g}" if minimum is not None else f" <= {maximum:g}"
    else:
        bounds = ""
    number = float(value)
    if (
        not math.isfinite(number)
        or (minimum is not None and number < minimum)
        or (maximum is not None and number > maximum)
    ):
        raise ValueError(f"{name} must be a finite number{bounds}, got {name}={value!r}")
    return number


def check_tensor(
    name: str,
    x: object,
    layout: str,
    *,
    channels: int | None = None,
    dtype: torch.dtype | None = None,
    floating: bool = False,
    owner: str | None = None,
) -> Tensor:
    """``x`` if it is a ``Tensor`` with as many dimensions as ``layout`` (e.g. ``"(N, K, H, W)"``),
    ``channels`` in dimension 1 (when given), of ``dtype`` / a floating dtype (when asked).

    Not a tensor or the wrong dtype: ``TypeError``; the wrong number of dimensions or channels:
    ``ValueError``. ``owner`` (e.g. a module's class name) starts the message.
    """
    expect = f"{owner} expects {name}" if owner else f"{name} must be"
    if not isinstance(x, Tensor):
        raise TypeError(f"{expect} a Tensor {layout}, got {type(x).__name__}")
    ndim = len(layout.strip("()").split(","))
    if x.dim() != ndim or (channels is not None and x.shape[1] != channels):
        with_c = f" with C={channels}" if channels is not None else ""
        raise ValueError(f"{expect} of shape {layout}{with_c}, got {name}.shape={tuple(x.shape)}")
    if dtype is not None and x.dtype != dtype:
        raise TypeError(f"{expect} a {dtype} tensor {layout}, got {name}.dtype={x.dtype}")
    if floating and not x.is_floating_point():
        raise TypeError(f"{expect} a floating tensor {layout}, got {name}.dtype={x.dtype}")
    return x


def check_nchw(name: str, x: object, channels: int | None = None, owner: str | None = None) -> Tensor:
    """``x`` if it is a 4D ``(N, C, H, W)`` tensor (with ``C == channels`` when given), see :func:`check_tensor`."""
    return check_tensor(name, x, NCHW, channels=channels, owner=owner)
