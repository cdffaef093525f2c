"""Host facts are read from a host once per provider process (iis_clientcert/framework/
host_facts.py): later reads are answered from what the process learnt, until it is told
to forget or the facts are older than the TTL."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
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


def test_calls_at_the_same_time_read_the_facts_once(sim: Endpoint) -> None:
    # The engine runs up to 4 provider calls at once, and most resources read the facts
    # (on Windows, secedit.exe each time): the first call reads them, the others take its
    # answer and send only the rest of their batch.
    names = ["alice", "bob", "carol", "dave"]
    ready = threading.Barrier(len(names))

    def read(name: str) -> list[Any]:
        ready.wait()
        return client(sim).call([contract.host_facts(), contract.user_get(name)])

    with ThreadPoolExecutor(len(names)) as pool:
        results = list(pool.map(read, names))
    facts = results[0][0]
    assert facts["os_build"] > 0
    assert [r[0] for r in results] == [facts] * len(names)
    assert [r[1]["name"] for r in results] == names
    sent = ops_sent(sim)
    assert sum(batch.count("host.facts") for batch in sent) == 1, sent
    assert sorted(op for batch in sent for op in batch if op != "host.facts") == ["user.get"] * 4


def test_a_call_whose_facts_reader_failed_reads_them_itself(sim: Endpoint) -> None:
    # The call that claimed the facts failed before reading them (its batch stopped at an
    # earlier op): a call waiting for them reads them itself instead of going without.
    owner = client(sim).connection.authority
    facts, reading = FACTS.claim(owner)
    assert facts is None and reading
    waiter = ThreadPoolExecutor(1).submit(
        client(sim).call, [contract.host_facts(), contract.user_get("nobody")]
    )
    FACTS.release(owner)  # the reader gave up with nothing recorded
    facts_read, user = waiter.result(timeout=60)
    assert facts_read["os_build"] > 0 and user["exists"] is False
    assert ops_sent(sim) in ([["user.get"], ["host.facts"]], [["host.facts", "user.get"]])
