"""The one way providers talk to a host: a batch of contract ops in one WinRM command."""

from __future__ import annotations

import functools
import importlib.resources
from typing import Any

from iis_clientcert.errors import AgentError, AgentProtocolError
from iis_clientcert.host import contract
from iis_clientcert.host.connection import Connection
from iis_clientcert.host.winrm_transport import request_secrets, run_agent_request, scrub


@functools.cache
def agent_script() -> str:
    """The PowerShell agent (iis_clientcert/host/agent.ps1), read once per process."""
    return importlib.resources.files("iis_clientcert.host").joinpath("agent.ps1").read_text("utf-8")


class HostClient:
    """Runs contract ops on the host of ``connection``. Holds no live objects (picklable)."""

    def __init__(self, connection: Connection) -> None:
        self.connection = connection

    @property
    def host(self) -> str:
        return self.connection.host

    def call(self, ops: list[dict[str, Any]]) -> list[Any]:
        """Run ``ops`` (from ``contract.make_op``) in order; one result per op.

        Raises ``AgentError`` (with ``.code``, ``.hresult`` and the results of the ops that
        completed) when an op fails, and the transport errors of ``iis_clientcert.errors``.
        """
        request = contract.make_request(ops)
        result = run_agent_request(self.connection, agent_script(), request)
        results = list(result.get("results", []))
        if result["ok"]:
            if len(results) != len(ops):
                raise AgentProtocolError(
                    self.host, f"the agent returned {len(results)} results for {len(ops)} ops"
                )
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

    def call_one(self, op: str, **args: Any) -> Any:
        """Run one op; its result."""
        return self.call([contract.make_op(op, **args)])[0]
