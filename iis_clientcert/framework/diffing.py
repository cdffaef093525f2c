"""Diff refinements shared by resources (pure: they read only stored outputs and inputs)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from pulumi.dynamic import DiffResult

from iis_clientcert.errors import ValidationError
from iis_clientcert.framework.base import is_unknown


def same_object_diff(
    result: DiffResult,
    news: Mapping[str, Any],
    old_key: tuple[Any, ...],
    new_key: Callable[[], tuple[Any, ...]],
) -> DiffResult:
    """Refine a replace by the object's key on the host (store, thumbprint).

    A new input text for the same certificate in the same store (PEM instead of DER, "auto"
    instead of "Root") is an update that touches nothing. A different certificate or store is
    a different object with another id, so the new one is created before the old one is
    removed: a renewed certificate is in place before the old one goes.
    """
    replaces = result.replaces or []
    if not replaces or "connection" in replaces or None in old_key:
        return result  # another host, or old state without the key: keep delete-first
    if is_unknown({k: v for k, v in news.items() if k != "__provider"}):
        return result
    try:
        key = new_key()
    except ValidationError:
        return result
    if key == old_key:
        return DiffResult(changes=result.changes, replaces=[], delete_before_replace=False)
    return DiffResult(changes=result.changes, replaces=replaces, delete_before_replace=False)
