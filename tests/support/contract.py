"""The hosts the agent contract suite runs against: the simulator always, a real Windows
host when IIS_TEST_ENDPOINT (+ IIS_TEST_USERNAME, IIS_TEST_PASSWORD, IIS_TEST_TRANSPORT,
IIS_TEST_CA_BUNDLE, optional IIS_TEST_SITE) is set.

Every result an op returns through ``Target.call`` / ``Target.one`` is checked against the
type the contract declares for it (``OpSpec.result``), on both targets.
"""

from __future__ import annotations

import os
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from iis_clientcert.host import contract, shapes
from iis_clientcert.host.client import HostClient
from iis_clientcert.host.connection import Connection
from iis_clientcert.host.contract import Op
from iis_clientcert_simulator.endpoint import Endpoint


@dataclass
class Target:
    """One host the contract suite runs against."""

    name: str
    client: HostClient
    site: str
    folder: str
    # The simulator's state folder (audit log, faults); None on a real host.
    state_dir: Path | None
    endpoint: Endpoint | None = None

    @property
    def simulated(self) -> bool:
        return self.state_dir is not None

    def unique(self, prefix: str) -> str:
        """A fresh short name (local account names are limited to 20 characters)."""
        return f"{prefix}{uuid.uuid4().hex[:8]}"

    def call(self, *ops: Op[Any]) -> list[Any]:
        results = self.client.call(list(ops))
        for op, result in zip(ops, results, strict=True):
            assert_shape(op.name, result)
        return results

    def one(self, op: str, **args: Any) -> Any:
        result = self.client.call_one(op, **args)
        assert_shape(op, result)
        return result


def assert_shape(op: str, result: Any) -> None:
    """The result of ``op`` is what the contract declares (OpSpec.result)."""
    assert shapes.problems(result, contract.OPS[op].result, op) == []


def windows_connection() -> Connection | None:
    endpoint = os.environ.get("IIS_TEST_ENDPOINT")
    if not endpoint:
        return None
    ca_path = os.environ.get("IIS_TEST_CA_BUNDLE")
    return Connection.from_input(
        {
            "endpoint": endpoint,
            "transport": os.environ.get("IIS_TEST_TRANSPORT", "ntlm"),
            "username": os.environ.get("IIS_TEST_USERNAME"),
            "password": os.environ.get("IIS_TEST_PASSWORD"),
            "ca_bundle": Path(ca_path).read_text() if ca_path else None,
            # IIS_TEST_SHELL=pwsh runs the agent under PowerShell 7.
            "shell": os.environ.get("IIS_TEST_SHELL"),
        }
    )
