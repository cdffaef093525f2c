"""A trivial dynamic provider for the toolchain test.

It lives in an importable module (not in a program's ``__main__``) so that dill pickles the
provider class by reference: the ``__provider`` value in state stays tiny and the engine
always runs the current code.
"""

from __future__ import annotations

import hashlib
from typing import Any

import pulumi
from pulumi.dynamic import CreateResult, DiffResult, ReadResult, Resource, ResourceProvider


class ToyProvider(ResourceProvider):
    """Stores its inputs; the id is a hash of ``value``. No side effects anywhere."""

    def create(self, props: dict[str, Any]) -> CreateResult:
        value = str(props["value"])
        return CreateResult(id_=hashlib.sha256(value.encode()).hexdigest()[:16], outs=dict(props))

    def diff(self, _id: str, olds: dict[str, Any], news: dict[str, Any]) -> DiffResult:
        changed = olds.get("value") != news.get("value")
        return DiffResult(changes=changed, replaces=["value"] if changed else [])

    def read(self, id_: str, props: dict[str, Any]) -> ReadResult:
        return ReadResult(id_=id_, outs=dict(props))

    def delete(self, _id: str, _props: dict[str, Any]) -> None:
        return None


class Toy(Resource):
    """A dynamic resource backed by :class:`ToyProvider`."""

    value: pulumi.Output[str]

    def __init__(
        self,
        name: str,
        value: pulumi.Input[str],
        opts: pulumi.ResourceOptions | None = None,
    ) -> None:
        super().__init__(ToyProvider(), name, {"value": value}, opts)
