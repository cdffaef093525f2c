"""Host facts are read from a host once per provider process (iis_clientcert/framework/
host_facts.py): later reads are answered from what the process learnt, until it is told
to forget or the facts are older than the TTL."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from iis_clientcert.framework import host_facts
from iis_clientcert.framework.host_facts import FACTS
from iis_clientcert.framework.logons import ProviderClient
from iis_clientcert.host import contract, winrm_transport
from iis_clientcert.host.connection import Connection
from iis_clientcert_simulator import audit
from iis_clientcert_simulator.endpoint import Endpoint
from iis_clientcert_simulator.testing import running_simulator, set_host_facts


@pytest.fixture
def sim(tmp_path: Path) -> Iterator[Endpoint]:
    FACTS.clear()
    with running_simulator(tmp_path / "host") as endpoint:
        yield endpoint
    winrm_transport.close_pool()
    FACTS.clear()


def client(sim: Endpoint) -> ProviderClient:
    return ProviderClient(
        Connection.from_input(
            {
                "endpoint": sim.winrm_https_url,
                "transport": "basic",
                "username": sim.username,
                "password": sim.password,
                "ca_bundle": Path(sim.ca_file).read_text(),
            }
        )
    )


def ops_sent(sim: Endpoint) -> list[list[str]]:
    lines: list[dict[str, Any]] = audit.read(Path(sim.state_dir) / "audit.log")
    return [[op["op"] for op in x["ops"]] for x in lines if x.get("kind") == "agent"]


def test_facts_are_read_once_per_process_and_host(sim: Endpoint) -> None:
    batch: list[contract.Op[Any]] = [contract.host_facts(), contract.user_get("nobody")]
    first = client(sim).call(batch)
    second = client(sim).call(batch)
    assert second[0] == first[0] and second[1]["exists"] is False
    assert ops_sent(sim) == [["host.facts", "user.get"], ["user.get"]]
    # A batch of nothing but facts needs no agent call at all.
    assert client(sim).call([contract.host_facts()]) == [first[0]]
    assert len(ops_sent(sim)) == 2


def test_a_new_process_or_old_facts_read_them_again(
    sim: Endpoint, monkeypatch: pytest.MonkeyPatch
) -> None:
    client(sim).call([contract.host_facts()])
    FACTS.clear()  # a new provider process (a new `pulumi up`) knows nothing yet
    set_host_facts(Path(sim.state_dir), os_build=20348)
    assert client(sim).call([contract.host_facts()])[0]["os_build"] == 20348
    monkeypatch.setattr(host_facts, "TTL_SECONDS", 0.0)
    client(sim).call([contract.host_facts()])
    assert ops_sent(sim) == [["host.facts"]] * 3
