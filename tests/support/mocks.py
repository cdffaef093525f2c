"""Running component code under Pulumi's mocks (unit tests): one fresh root stack per test,
and a program run as the engine would run it (every Output awaited)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

import pulumi

M = TypeVar("M", bound=pulumi.runtime.Mocks)


@contextmanager
def installed(mocks: M) -> Iterator[M]:
    """``mocks`` as the engine, under a fresh root stack (each program run has a register of
    its own), for the duration of the block."""
    pulumi.runtime.settings.ROOT.set(None)
    pulumi.runtime.set_mocks(mocks, preview=False)
    try:
        yield mocks
    finally:
        pulumi.runtime.settings.ROOT.set(None)


def run(program: Callable[[], Any]) -> Any:
    """Run ``program`` as Pulumi would (every Output awaited); returns its result."""
    result: dict[str, Any] = {}

    @pulumi.runtime.test  # type: ignore[untyped-decorator]
    def wrapped() -> Any:
        out = pulumi.Output.from_input(program())
        return out.apply(lambda v: result.setdefault("value", v))

    wrapped()
    return result.get("value")
