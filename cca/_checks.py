"""Argument checks shared by the modules, heads, models and losses, with one exception policy:

* ``TypeError`` when an argument has the wrong type (not an ``int``, not a number, not a ``Tensor``,
  a tensor of the wrong dtype);
* ``ValueError`` when its value is out of range (a count below 1, a NaN/infinite/negative weight,
  a tensor of the wrong shape or with no element).

Every message names the argument, the value it got and what was expected. ``bool`` is never
accepted as a number (``True`` is an ``int`` in Python, never a channel count or a weight here).
"""

from __future__ import annotations

import math
import numbers

import torch
from torch import Tensor

__all__ = [
    "NCHW",
    "check_nchw",
    "check_tensor",
    "finite_number",
    "int_in_range",
    "non_negative_int",
    "positive_int",
]

NCHW = "(N, C, H, W)"


def int_in_range(name: str, value: object, minimum: int | None = None, maximum: int | None = None) -> int:
    """``value`` if it is an ``int`` in ``[minimum, maximum]`` (either bound optional); else
    ``TypeError`` (not an int) or ``ValueError`` (out of range)."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int, got {name}={value!r} ({type(value).__name__})")
    if (minimum is not None and value < minimum) or (maximum is not None and value > maximum):
        raise ValueError(f"{name} must be an int{_bounds(minimum, maximum)}, got {name}={value!r}")
    return value


def positive_int(name: str, value: object) -> int:
    """``value`` if it is an ``int >= 1``; else ``TypeError`` (not an int) or ``ValueError`` (< 1)."""
    return int_in_range(name, value, minimum=1)


def non_negative_int(name: str, value: object) -> int:
    """``value`` if it is an ``int >= 0``; else ``TypeError`` (not an int) or ``ValueError`` (< 0)."""
    return int_in_range(name, value, minimum=0)


def _bounds(minimum: float | None, maximum: float | None) -> str:
    if minimum is not None and maximum is not None:
        return f" in [{minimum:g}, {maximum:g}]"
    if minimum is not None:
        return f" >= {minimum:g}"
    return f" <= {maximum:g}" if maximum is not None else ""


def finite_number(name: str, value: object, minimum: float | None = None, maximum: float | None = None) -> float:
    """``float(value)`` if it is a finite real number in ``[minimum, maximum]`` (either bound optional);
    else ``TypeError`` (not a number) or ``ValueError`` (NaN, infinite or out of range)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a number, got {name}={value!r} ({type(value).__name__})")
    try:
        number = float(value)
    except OverflowError:  # an int beyond float's range
        number = math.inf
    if (
        not math.isfinite(number)
        or (minimum is not None and number < minimum)
        or (maximum is not None and number > maximum)
    ):
        raise ValueError(f"{name} must be a finite number{_bounds(minimum, maximum)}, got {name}={value!r}")
    return number


def _dtype_names(dtypes: tuple[torch.dtype, ...]) -> str:
    names = [str(d) for d in dtypes]
    return names[0] if len(names) == 1 else f"{', '.join(names[:-1])} or {names[-1]}"


def check_tensor(
    name: str,
    x: object,
    layout: str | tuple[str, ...],
    *,
    channels: int | None = None,
    dtypes: tuple[torch.dtype, ...] | None = None,
    floating: bool = False,
    nonempty: bool = False,
    owner: str | None = None,
) -> Tensor:
    """``x`` if it is a ``Tensor`` with as many dimensions as ``layout`` (e.g. ``"(N, K, H, W)"``, or a
    tuple of layouts, any one of them), ``channels`` in dimension 1 (when given), of one of ``dtypes`` /
    a floating dtype (when asked) and with at least one element (when ``nonempty``).

    Not a tensor or the wrong dtype: ``TypeError``; the wrong number of dimensions or channels, no
    element: ``ValueError``. ``owner`` (e.g. a module's class name) starts the message.
    """
    layouts = (layout,) if isinstance(layout, str) else tuple(layout)
    shapes = " or ".join(layouts)
    expect = f"{owner} expects {name}" if owner else f"{name} must be"
    if not isinstance(x, Tensor):
        raise TypeError(f"{expect} a torch.Tensor of shape {shapes}, got {type(x).__name__}")
    ranks = {len(one.strip("()").split(",")) for one in layouts}
    if x.dim() not in ranks or (channels is not None and x.shape[1] != channels):
        with_c = f" with C={channels}" if channels is not None else ""
        raise ValueError(f"{expect} of shape {shapes}{with_c}, got {name}.shape={tuple(x.shape)}")
    if dtypes is not None and x.dtype not in dtypes:
        raise TypeError(f"{expect} a tensor of dtype {_dtype_names(dtypes)}, got {name}.dtype={x.dtype}")
    if floating and not x.is_floating_point():
        raise TypeError(f"{expect} a tensor of a floating dtype, got {name}.dtype={x.dtype}")
    if nonempty and x.numel() == 0:
        raise ValueError(f"{expect} a non-empty tensor, got {name}.shape={tuple(x.shape)}")
    return x


def check_nchw(name: str, x: object, channels: int | None = None, owner: str | None = None) -> Tensor:
    """``x`` if it is a 4D ``(N, C, H, W)`` tensor (with ``C == channels`` when given), see :func:`check_tensor`."""
    return check_tensor(name, x, NCHW, channels=channels, owner=owner)
