"""The one rule for "this run already has a result", for table rows and mechanism-study runs alike.

A result is identified by its resolved settings (what decides its numbers) and the code version its
producer declares: :func:`produces` marks the function that produces results (a table's runner, the
studies' ``train_one``) with an integer to raise when a change to it, or to what it calls, changes the
numbers. :func:`result_key` hashes both; a stored result is reused when its ``settings_hash`` equals the
key (:func:`is_current`). The git commit is recorded beside a result (provenance), never compared: a
commit that changes no numbers re-runs nothing.

Results written before this rule (table rows keyed by settings and commit) carry no ``code_version``:
they are accepted under their settings-only key while their producer is at version 1, the version
declared when the rule came in (their numbers are those of that code).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

Producer = TypeVar("Producer", bound=Callable[..., Any])
FIRST_VERSION = 1  # the version every producer declared when this rule came in


def produces(version: int) -> Callable[[Producer], Producer]:
    """Declare ``version`` as the code version of the decorated result producer."""
    if isinstance(version, bool) or not isinstance(version, int) or version < FIRST_VERSION:
        raise ValueError(f"version must be an integer >= {FIRST_VERSION}, got {version!r}")

    def mark(function: Producer) -> Producer:
        function.code_version = version  # type: ignore[attr-defined]
        return function

    return mark


def code_version(producer: Callable[..., Any]) -> int:
    """The version :func:`produces` declared on ``producer``; TypeError naming it when there is none."""
    version = getattr(producer, "code_version", None)
    if version is None:
        name = getattr(producer, "__qualname__", repr(producer))
        raise TypeError(f"{name} produces cached results but declares no code version: decorate it with @produces(1)")
    return version


def identity_hash(identity: Mapping[str, Any]) -> str:
    """16 hex digits of the SHA-256 of ``identity`` as sorted JSON."""
    blob = json.dumps(dict(identity), sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def result_key(identity: Mapping[str, Any], producer: Callable[..., Any]) -> str:
    """The key of a result: its identity (resolved settings, row or variant, seed) with ``producer``'s code version."""
    return identity_hash({**identity, "code": code_version(producer)})


def is_current(
    record: Mapping[str, Any] | None, key: str, producer: Callable[..., Any], legacy_key: str | None = None
) -> bool:
    """Whether a stored ``record`` is the result of ``key``; ``legacy_key``: the settings-only key of a record
    written before this rule (no ``code_version``), accepted while ``producer`` is at version 1."""
    if not record:
        return False
    if record.get("settings_hash") == key:
        return True
    legacy = "code_version" not in record and code_version(producer) == FIRST_VERSION
    return legacy and legacy_key is not None and record.get("settings_hash") == legacy_key
