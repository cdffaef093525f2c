"""Check a JSON value against a declared type (the TypedDicts of the contract's results).

Handles what the contract's result types use: str, int, bool, float, None, Any,
``list[X]``, ``dict[str, X]``, TypedDicts (nested and recursive, with ``NotRequired`` /
``Required`` and ``total=False``), ``X | None`` and other unions, and ``Literal``. Keys a
TypedDict does not declare are reported too: the agent and the contract must not drift.
"""

from __future__ import annotations

import functools
import types
from typing import (
    Any,
    Literal,
    NotRequired,
    Required,
    Union,
    get_args,
    get_origin,
    get_type_hints,
    is_typeddict,
)

from iis_clientcert.errors import ContractError


def problems(value: Any, expected: Any, where: str = "result") -> list[str]:
    """Where ``value`` differs from ``expected``, one line per difference ([] if none)."""
    out: list[str] = []
    _check(value, expected, where, out)
    return out


def check(value: Any, expected: Any, where: str = "result") -> None:
    """Raise ContractError naming the first differences if ``value`` is not ``expected``."""
    found = problems(value, expected, where)
    if found:
        shown = "; ".join(found[:3]) + (f" (and {len(found) - 3} more)" if len(found) > 3 else "")
        raise ContractError(f"does not follow the contract: {shown}")


def _name(value: Any) -> str:
    return "null" if value is None else type(value).__name__


@functools.cache
def _fields(typed_dict: Any) -> tuple[dict[str, Any], frozenset[str]]:
    """A TypedDict's field types and its required keys.

    Read from the annotations (with extras) rather than ``__required_keys__``, which
    Python 3.11 gets wrong for ``NotRequired`` under ``from __future__ import annotations``.
    """
    hints = get_type_hints(typed_dict, include_extras=True)
    total = bool(getattr(typed_dict, "__total__", True))
    fields: dict[str, Any] = {}
    required: set[str] = set()
    for key, annotation in hints.items():
        origin = get_origin(annotation)
        hint = annotation
        if origin is NotRequired:
            (hint,) = get_args(annotation)
        elif origin is Required:
            (hint,) = get_args(annotation)
            required.add(key)
        elif total:
            required.add(key)
        fields[key] = hint
    return fields, frozenset(required)


def _check(value: Any, expected: Any, where: str, out: list[str]) -> None:
    if expected is Any:
        return
    if expected is None or expected is type(None):
        if value is not None:
            out.append(f"{where}: expected null, got {_name(value)}")
        return
    if is_typeddict(expected):
        _check_typeddict(value, expected, where, out)
        return
    origin = get_origin(expected)
    if origin is Union or origin is types.UnionType:
        options = get_args(expected)
        if any(not problems(value, option, where) for option in options):
            return
        if value is None:
            out.append(f"{where}: expected {_describe(expected)}, got null")
            return
        # Report against the one option of the value's JSON kind, if any (more precise).
        same_kind = [o for o in options if _kind_matches(value, o)]
        if len(same_kind) == 1:
            _check(value, same_kind[0], where, out)
        else:
            out.append(f"{where}: expected {_describe(expected)}, got {_name(value)}")
        return
    if origin is Literal:
        allowed = get_args(expected)
        if value not in allowed or type(value) not in {type(a) for a in allowed}:
            out.append(f"{where}: expected one of {', '.join(map(repr, allowed))}, got {value!r}")
        return
    if origin is list:
        if not isinstance(value, list):
            out.append(f"{where}: expected a list, got {_name(value)}")
            return
        (item,) = get_args(expected) or (Any,)
        for i, entry in enumerate(value):
            _check(entry, item, f"{where}[{i}]", out)
        return
    if origin is dict:
        if not isinstance(value, dict):
            out.append(f"{where}: expected an object, got {_name(value)}")
            return
        key_type, item = get_args(expected) or (str, Any)
        for key, entry in value.items():
            _check(key, key_type, f"{where} key {key!r}", out)
            _check(entry, item, f"{where}[{key!r}]", out)
        return
    if expected is bool:
        if not isinstance(value, bool):
            out.append(f"{where}: expected bool, got {_name(value)}")
        return
    if expected is int:
        # bool is an int in Python; JSON and the contract keep them apart.
        if not isinstance(value, int) or isinstance(value, bool):
            out.append(f"{where}: expected int, got {_name(value)}")
        return
    if expected is float:
        if not isinstance(value, int | float) or isinstance(value, bool):
            out.append(f"{where}: expected a number, got {_name(value)}")
        return
    if expected is str:
        if not isinstance(value, str):
            out.append(f"{where}: expected str, got {_name(value)}")
        return
    # A type the contract's results should never use: a bug in the contract, not the host.
    raise ContractError(f"{where}: cannot check a value against {expected!r}")


def _check_typeddict(value: Any, expected: Any, where: str, out: list[str]) -> None:
    if not isinstance(value, dict):
        out.append(f"{where}: expected an object ({expected.__name__}), got {_name(value)}")
        return
    fields, required = _fields(expected)
    for key in sorted(required - set(value)):
        out.append(f"{where}: missing {key!r}")
    for key in value:
        if key not in fields:
            out.append(f"{where}: unexpected key {key!r} (not in {expected.__name__})")
    for key, hint in fields.items():
        if key in value:
            _check(value[key], hint, f"{where}.{key}", out)


def _kind_matches(value: Any, option: Any) -> bool:
    """Whether ``value`` is of the JSON kind ``option`` describes (object, list, ...)."""
    origin = get_origin(option)
    if is_typeddict(option) or origin is dict:
        return isinstance(value, dict)
    if origin is list:
        return isinstance(value, list)
    if origin is Literal:
        return any(type(value) is type(a) for a in get_args(option))
    if isinstance(option, type):
        return isinstance(value, option) and not (option is int and isinstance(value, bool))
    return False


def _describe(expected: Any) -> str:
    if expected is None or expected is type(None):
        return "null"
    if is_typeddict(expected):
        return f"an object ({expected.__name__})"
    origin = get_origin(expected)
    if origin is Union or origin is types.UnionType:
        return " or ".join(_describe(o) for o in get_args(expected))
    if origin is list:
        return "a list"
    if origin is dict:
        return "an object"
    if origin is Literal:
        return "one of " + ", ".join(map(repr, get_args(expected)))
    return getattr(expected, "__name__", repr(expected))
