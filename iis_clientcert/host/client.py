"""The one way providers talk to a host: a batch of contract ops in one agent request.

Results come back typed and by name. A provider plans its reads as named ops
(:class:`ReadPlan`: ``plan.add(SITES, contract.site_list())``) and gets a :class:`Reads`
back, where ``reads[SITES]`` is a ``contract.SiteListResult``: no result is ever taken by
its position in a batch. Every result is checked against its op's declared type before a
provider sees it, so a result that drifted from the contract fails here, by name.
"""

from __future__ import annotations

import functools
import importlib.resources
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Generic, TypeVar, cast

from iis_clientcert.errors import AgentError, AgentProtocolError, ContractError
from iis_clientcert.host import contract, shapes
from iis_clientcert.host.agent_session import run_agent_request
from iis_clientcert.host.connection import Connection
from iis_clientcert.host.contract import Op
from iis_clientcert.host.winrm_transport import request_secrets, scrub

R = TypeVar("R")


@functools.cache
def agent_script() -> str:
    """The PowerShell agent (iis_clientcert/host/agent.ps1), read once per process."""
    return importlib.resources.files("iis_clientcert.host").joinpath("agent.ps1").read_text("utf-8")


@dataclass(frozen=True)
class ReadKey(Generic[R]):
    """The name of one read in a batch; ``R`` is the result type of the op read under it.

    Declare keys once per resource (``SITES = ReadKey[contract.SiteListResult]("sites")``),
    or make them from a name for reads that repeat (one ``acl.get`` per folder)."""

    name: str


class ReadPlan:
    """Read-only ops, each under a name, sent as one batch."""

    def __init__(self) -> None:
        self._ops: dict[ReadKey[Any], Op[Any]] = {}

    def add(self, key: ReadKey[R], op: Op[R]) -> ReadPlan:
        """Read ``op`` under ``key`` (mypy checks that the key's type is the op's result)."""
        if op.spec.writes:
            raise ContractError(f"{op.name} writes; a read plan holds reads only")
        if key in self._ops:
            raise ContractError(f"two reads are named {key.name!r}")
        self._ops[key] = op
        return self

    @property
    def ops(self) -> list[Op[Any]]:
        return list(self._ops.values())

    @property
    def keys(self) -> list[ReadKey[Any]]:
        return list(self._ops)

    def __len__(self) -> int:
        return len(self._ops)

    def bind(self, results: Sequence[Any]) -> Reads:
        """The results of :attr:`ops`, in their order, under their names."""
        if len(results) != len(self._ops):
            raise ContractError(f"{len(results)} results for {len(self._ops)} reads")
        return Reads(dict(zip(self._ops, results, strict=True)))


class Reads:
    """The results of a read batch, looked up by name: ``reads[SITES]``."""

    def __init__(self, results: Mapping[ReadKey[Any], Any]) -> None:
        self._results = dict(results)

    def __getitem__(self, key: ReadKey[R]) -> R:
        try:
            return cast(R, self._results[key])
        except KeyError:
            raise KeyError(f"nothing was read under {key.name!r}") from None

    def __contains__(self, key: object) -> bool:
        return key in self._results

    def get(self, key: ReadKey[R], default: R) -> R:
        """The result read under ``key``, or ``default`` if the plan did not read it."""
        return cast(R, self._results.get(key, default))


class HostClient:
    """Runs contract ops on the host of ``connection``. Holds no live objects (picklable)."""

    def __init__(self, connection: Connection) -> None:
        self.connection = connection

    @property
    def host(self) -> str:
        return self.connection.host

    def read(self, plan: ReadPlan) -> Reads:
        """Run a read plan as one batch; its results by name."""
        return plan.bind(self.call(plan.ops))

    def write_and_read(self, writes: Sequence[Op[Any]], plan: ReadPlan) -> Reads:
        """Writes and then the reads that verify them, as one batch (one agent call)."""
        results = self.call([*writes, *plan.ops])
        return plan.bind(results[len(writes) :])

    def run(self, op: Op[R]) -> R:
        """Run one op; its typed result."""
        result: R = self.call([op])[0]
        return result

    def call_one(self, op: str, **args: Any) -> Any:
        """Run one op given by name (for tests and scripts); its result."""
        return self.run(contract.make_op(op, **args))

    def call(self, ops: Sequence[Op[Any]]) -> list[Any]:
        """Run ``ops`` in order; one result per op, each checked against its declared type.

        Raises ``AgentError`` (with ``.code``, ``.hresult`` and the results of the ops that
        completed) when an op fails, ``AgentProtocolError`` when a result does not follow
        the contract, and the transport errors of ``iis_clientcert.errors``.
        """
        request = contract.make_request(ops)
        result = run_agent_request(self.connection, agent_script(), request)
        results = list(result.get("results", []))
        if result["ok"]:
            if len(results) != len(ops):
                raise AgentProtocolError(
                    self.host, f"the agent returned {len(results)} results for {len(ops)} ops"
                )
            for index, (op, value) in enumerate(zip(ops, results, strict=True)):
                try:
                    shapes.check(value, op.spec.result, "result")
                except ContractError as exc:
                    raise AgentProtocolError(
                        self.host, f"{op.name} (op {index} of the batch): {exc}"
                    ) from None
            return results
        error = result["error"]
        secrets = request_secrets(request, self.connection)
        hresult = error.get("hresult")
        raise AgentError(
            self.host,
            error.get("op"),
            str(error.get("code")),
            # The host should never echo a secret; scrub anyway, the message is shown.
            scrub(str(error.get("message", "")), secrets),
            str(hresult) if hresult is not None else None,
            error.get("index"),
            results,
        )
