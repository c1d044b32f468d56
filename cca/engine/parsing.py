"""The one settings parser: ``key=value`` text and JSON values checked against a dataclass's field types.

Every settings dataclass of the project goes through :func:`apply_overrides` and :func:`check_fields`:
the engine's :class:`~cca.engine.config.ExperimentConfig` with its video and detection extensions, and the
small dataclasses of the experiments that are not a segmentation training run (table 5's
``EfficiencySettings``, the mechanism studies' ``MechanismSettings``). An unknown key is a ``ValueError``
listing the valid ones, a value that does not fit the field's type a ``TypeError`` naming the setting and
what it takes. A field typed ``tuple[int, int]`` is an (H, W) size (:func:`size_fields`).
"""

from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Iterable, Mapping
from typing import Any

_TRUE = ("1", "true", "yes", "on")
_FALSE = ("0", "false", "no", "off")
SIZE_TYPE = tuple[int, int]  # the type of every (H, W) setting (crop_size, synthetic_size, eval_crop, ...)


def field_types(cls: type) -> dict[str, Any]:
    """``{field name: resolved type}`` of the dataclass ``cls``."""
    return typing.get_type_hints(cls)


def size_fields(cls: type) -> tuple[str, ...]:
    """The (H, W) settings of the dataclass ``cls``: its fields typed ``tuple[int, int]`` (or ``| None``)."""
    return tuple(name for name, tp in field_types(cls).items() if (optional_inner(tp) or tp) == SIZE_TYPE)


def to_json_dict(settings: Any) -> dict[str, Any]:
    """``{field name: JSON value}`` of the dataclass ``settings`` in field order (tuples as lists)."""
    return {f.name: _jsonable(getattr(settings, f.name)) for f in dataclasses.fields(settings)}


def _jsonable(value: Any) -> Any:
    return list(value) if isinstance(value, tuple) else value


def apply_overrides(settings: Any, overrides: Iterable[str] | Mapping[str, Any]) -> Any:
    """A copy of the dataclass ``settings`` with ``key=value`` strings (parsed by field type) or a dict applied.

    Raises ``ValueError`` for an unknown key (listing the valid ones) or a malformed item,
    ``TypeError`` for a value that does not fit the field's type.
    """
    types_ = field_types(type(settings))
    changes: dict[str, Any] = {}
    items = overrides.items() if isinstance(overrides, Mapping) else (split_item(o) for o in overrides)
    for key, value in items:
        if key not in types_:
            names = ", ".join(f.name for f in dataclasses.fields(settings))
            raise ValueError(f"unknown setting {key!r}; valid settings: {names}")
        changes[key] = parse_value(key, value, types_[key]) if isinstance(value, str) and types_[key] is not str else value
    return dataclasses.replace(settings, **changes)


def split_item(item: str) -> tuple[str, str]:
    if "=" not in item:
        raise ValueError(f"override must look like key=value, got {item!r}")
    key, value = item.split("=", 1)
    return key.strip(), value.strip()


def optional_inner(tp: Any) -> Any | None:
    """``X`` for ``X | None``, else None."""
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if len(args) == 1 and len(typing.get_args(tp)) == 2:
            return args[0]
    return None


def type_name(key: str, tp: Any) -> str:
    """What a setting takes, in words for its error message."""
    if tp == SIZE_TYPE:
        return "H,W (two comma-separated ints, e.g. 769,769, or one int for a square)"
    return getattr(tp, "__name__", None) if typing.get_origin(tp) is None else str(tp).replace("typing.", "")


def parse_value(key: str, text: str, tp: Any) -> Any:
    """Parse the command-line text of setting ``key`` into type ``tp`` (raises TypeError if it does not fit)."""
    inner = optional_inner(tp)
    if inner is not None:
        if text.strip().lower() in ("none", "null", ""):
            return None
        return parse_value(key, text, inner)
    expected = type_name(key, tp)
    bad = TypeError(f"setting {key!r} expects {expected}, got {text!r}")
    if tp is bool:
        low = text.strip().lower()
        if low in _TRUE:
            return True
        if low in _FALSE:
            return False
        raise bad
    if tp in (int, float):
        try:
            return tp(text.strip())
        except ValueError:
            raise bad from None
    if tp is str:
        return text
    if typing.get_origin(tp) is tuple:
        args = typing.get_args(tp)
        parts = [p for p in text.strip().strip("()[]").split(",") if p.strip()]
        elem = args[0]
        if len(args) == 2 and args[1] is Ellipsis:
            if not parts:
                raise bad
        elif len(parts) == 1 and len(set(args)) == 1:
            parts = parts * len(args)  # "769" -> (769, 769)
        elif len(parts) != len(args):
            raise TypeError(f"setting {key!r} expects {expected} ({len(args)} comma-separated values), got {text!r}")
        try:
            return tuple(parse_value(key, p, elem) for p in parts)
        except TypeError:
            raise bad from None
    raise TypeError(f"setting {key!r} has unsupported type {expected}")


def check_type(key: str, value: Any, tp: Any) -> Any:
    """``value`` checked against ``tp`` (lists become tuples, ints become floats); raises TypeError."""
    inner = optional_inner(tp)
    if inner is not None:
        return None if value is None else check_type(key, value, inner)
    expected = type_name(key, tp)
    bad = TypeError(f"setting {key!r} expects {expected}, got {type(value).__name__} {value!r}")
    if tp is bool:
        if not isinstance(value, bool):
            raise bad
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise bad
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise bad
        return value if isinstance(value, float) else float(value)
    if tp is str:
        if not isinstance(value, str):
            raise bad
        return value
    if typing.get_origin(tp) is tuple:
        if not isinstance(value, (tuple, list)):
            raise bad
        args = typing.get_args(tp)
        if len(args) == 2 and args[1] is Ellipsis:
            if len(value) == 0:
                raise bad
            elems = [args[0]] * len(value)
        else:
            if len(value) != len(args):
                raise bad
            elems = list(args)
        return tuple(check_type(key, v, t) for v, t in zip(value, elems, strict=True))
    raise TypeError(f"setting {key!r} has unsupported type {expected}")


def check_fields(settings: Any) -> None:
    """Check (and normalise in place, for frozen dataclasses) every field of ``settings`` against its type."""
    types_ = field_types(type(settings))
    for f in dataclasses.fields(settings):
        value = getattr(settings, f.name)
        checked = check_type(f.name, value, types_[f.name])
        if checked is not value:
            object.__setattr__(settings, f.name, checked)
