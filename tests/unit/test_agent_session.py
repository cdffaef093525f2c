"""The persistent agent per host (iis_clientcert/host/agent_session.py) against the
simulator: framing, one process and two requests per call, concurrent calls sharing one
agent, the shell's idle timeout, MaxShellsPerUser and the one-shot fallback, closing, and
that nothing of it reaches a pickled provider."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import dill
import pytest
from winrm.protocol import Protocol

from iis_clientcert.errors import WSManFaultError
from iis_clientcert.host import agent_session, contract, winrm_transport
from iis_clientcert.host.client import HostClient
from iis_clientcert.host.connection import Connection
from iis_clientcert.providers.local_user import LocalUserProvider
from iis_clientcert_simulator import audit
from iis_clientcert_simulator.endpoint import Endpoint
from iis_clientcert_simulator.serve import Simulator
from iis_clientcert_simulator.testing import set_host_facts
from tests.support import simulator as support
from tests.support.simulator import in_process_simulator, set_faults


@pytest.fixture
def sim(tmp_path: Path) -> Iterator[Simulator]:
    with in_process_simulator(tmp_path / "host") as simulator:
        yield simulator


def connection(sim: Simulator, **extra: Any) -> Connection:
    endpoint = sim.endpoint
    assert endpoint is not None
    value: dict[str, Any] = {
        "endpoint": endpoint.winrm_https_url,
        "transport": "basic",
        "username": endpoint.username,
        "password": endpoint.password,
        "ca_bundle": Path(endpoint.ca_file).read_text(),
        "operation_timeout": 2,
        "read_timeout": 4,
        **extra,
    }
    return Connection.from_input(value)


def lines(sim: Simulator) -> list[dict[str, Any]]:
    return [x for x in audit.read(sim.state.audit) if x.get("kind") == "agent"]


def shells(sim: Simulator) -> list[dict[str, Any]]:
    assert sim.server is not None
    return sim.server.shells()


# --- framing -----------------------------------------------------------------------------


def test_frames_are_one_line_each_and_keep_secrets_off_the_command_line() -> None:
    secret = "Pw-with\nnewline-and-ünïcode-4242"
    request = contract.make_request([contract.user_set("u1", password=secret)])
    frame = contract.request_frame(17, request)
    assert frame.endswith(b"\n") and frame.count(b"\n") == 1 and frame.isascii()
    parsed = contract.parse_stdin_line(frame.rstrip(b"\n"))
    assert (parsed.kind, parsed.request_id) == ("request", 17)
    assert json.loads(parsed.text) == request
    script = "# agent\nWrite-Output 'x'\n"
    agent = contract.parse_stdin_line(contract.agent_frame(script).rstrip(b"\n"))
    assert (agent.kind, agent.text) == ("agent", script)
    assert contract.parse_stdin_line(b"Remove-Item C:\\ -Recurse").kind == "unknown"
    # The command line is the same constant for every request, secret or not.
    assert secret not in " ".join(contract.command_arguments())


def test_results_are_taken_whole_and_stray_output_is_dropped() -> None:
    buffer = bytearray(b'WARNING: something\r\niis-clientcert-result 3 {"ok":true,"res')
    assert contract.take_results(buffer) == []  # the result line is not complete yet
    buffer += b'ults":[]}\niis-clientcert-result 4 {"ok":true,"results":[1]}\npartial'
    assert contract.take_results(buffer) == [
        (3, b'{"ok":true,"results":[]}'),
        (4, b'{"ok":true,"results":[1]}'),
    ]
    assert bytes(buffer) == b"partial"


# --- one process, two requests per call ---------------------------------------------------


def test_one_agent_process_per_host_and_two_requests_per_call(sim: Simulator) -> None:
    client = HostClient(connection(sim))
    for i in range(6):
        assert client.call_one("user.get", name=f"nobody{i}")["exists"] is False
    calls = lines(sim)
    assert len(calls) == 6
    assert sum(1 for x in calls if x.get("process_started")) == 1  # powershell.exe once
    assert len({x["process"] for x in calls}) == 1
    assert sim.server is not None
    stats = sim.server.stats()
    # After the first call: one Send, and the Receive that was already waiting.
    assert stats["steady_answers"] == 5
    assert stats["steady_requests"] <= 2 * stats["steady_answers"], stats
    assert stats["by_action"]["Create"] == 1 and stats["by_action"]["Command"] == 1


def test_concurrent_calls_share_one_agent_and_get_their_own_answers(sim: Simulator) -> None:
    conn = connection(sim)
    errors: list[BaseException] = []

    def work(n: int) -> None:
        try:
            for i in range(5):
                name = f"t{n}-u{i}"
                # Each answer names the account asked about: a mixed-up answer would show.
                assert HostClient(conn).call_one("user.get", name=name)["name"] == name
        except BaseException as exc:  # collected for the assertion below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    calls = lines(sim)
    assert len(calls) == 20
    assert sum(1 for x in calls if x.get("process_started")) == 1


def test_concurrent_sends_never_overtake_the_agent_frame(
    sim: Simulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    # With CONCURRENT_SENDS (off until docs/real-host.md section 8 is checked on Windows), a
    # call's frame may go in a Send of its own beside others: but never before the Send
    # that carries the agent itself, which is large and slow on a real network.
    monkeypatch.setattr(agent_session, "CONCURRENT_SENDS", True)
    agent_sent = threading.Event()
    send = Protocol.send_command_input

    def slow_agent_upload(self: Protocol, *args: Any, **kwargs: Any) -> Any:
        data = args[2] if len(args) > 2 else kwargs["stdin_input"]
        if data.startswith(contract.AGENT_TAG.encode()):
            second_call_started.wait(5)
            time_to_overtake.wait(0.5)
            result = send(self, *args, **kwargs)
            agent_sent.set()
            return result
        return send(self, *args, **kwargs)

    second_call_started = threading.Event()
    time_to_overtake = threading.Event()
    monkeypatch.setattr(Protocol, "send_command_input", slow_agent_upload)
    conn = connection(sim)
    answers: dict[str, Any] = {}

    def ask(name: str) -> None:
        answers[name] = HostClient(conn).call_one("user.get", name=name)

    first = threading.Thread(target=ask, args=("first",))
    first.start()
    while not agent_session.sessions() or agent_session.sessions()[0].shell_id is None:
        threading.Event().wait(0.01)
    second = threading.Thread(target=ask, args=("second",))
    second_call_started.set()
    second.start()
    first.join(30)
    second.join(30)
    assert agent_sent.is_set()
    assert {name: a["name"] for name, a in answers.items()} == {
        "first": "first",
        "second": "second",
    }
    assert sum(1 for x in lines(sim) if x.get("process_started")) == 1


def test_a_shell_gone_between_calls_is_replaced_without_an_error(sim: Simulator) -> None:
    client = HostClient(connection(sim))
    client.call_one("host.facts")
    assert sim.server is not None
    sim.server.service.restart_service()  # WinRM restarted: the agent's shell is gone
    assert client.call_one("user.get", name="after-restart")["exists"] is False
    assert sum(1 for x in lines(sim) if x.get("process_started")) == 2


def _until_no_shells(sim: Simulator) -> list[dict[str, Any]]:
    deadline = time.monotonic() + 10
    while shells(sim) and time.monotonic() < deadline:
        time.sleep(0.05)
    return shells(sim)


def test_closing_the_pool_deletes_the_agents_shell_on_the_host(sim: Simulator) -> None:
    HostClient(connection(sim)).call_one("host.facts")
    assert [s["processes"] for s in shells(sim)] == [1]
    winrm_transport.close_pool()  # what atexit runs when the provider process ends
    assert _until_no_shells(sim) == []


@pytest.mark.parametrize("transport", ["basic", "certificate", "ntlm"])
def test_the_process_exits_without_waiting_for_the_deletes_answer(
    sim: Simulator, transport: str
) -> None:
    assert sim.endpoint is not None
    HostClient(support.connection(sim.endpoint, transport)).call_one("host.facts")
    # A WAN: each request takes 1.5 s before the host acts on it.
    set_faults(sim.state.dir, {"latency_ms": 1500})
    winrm_transport.close_pool()
    if transport == "ntlm":
        # A new connection needs NTLM's handshake answered before the Delete can go: the
        # provider waits for the Delete's answer, and the shell is gone when it exits.
        assert shells(sim) == []
        return
    # Back before the host has acted on the Delete: the engine, which waits for the
    # provider process to end, does not wait a round trip more.
    assert [s["processes"] for s in shells(sim)] == [1]
    # The Delete went out whole all the same: the host deletes the shell and its agent.
    assert _until_no_shells(sim) == []


# --- idle timeout -------------------------------------------------------------------------


def test_a_dead_client_leaves_its_shell_only_until_the_idle_timeout(
    sim: Simulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Windows never applies less than a minute; this host allows a second.
    set_host_facts(sim.state.dir, winrs={"min_idle_timeout_s": 0.5})
    monkeypatch.setattr(agent_session, "SHELL_IDLE_SECONDS", 1.5)
    monkeypatch.setattr(agent_session, "LINGER_SECONDS", 0.0)
    conn = connection(sim, operation_timeout=1, read_timeout=2)
    HostClient(conn).call_one("host.facts")
    (opened,) = shells(sim)
    assert opened["idle_timeout"] == 2.0  # asked for: two operation timeouts at least
    # The provider process dies: nothing is closed, nothing more is sent.
    for session in agent_session.sessions():
        with session._cond:
            session._state = "closed"
    agent_session._SESSIONS.clear()
    deadline = __import__("time").monotonic() + 10
    while shells(sim) and __import__("time").monotonic() < deadline:
        __import__("time").sleep(0.1)
    assert shells(sim) == []  # the host deleted the shell, and its agent with it


# --- MaxShellsPerUser -------------------------------------------------------------------


def _hold_shell(sim: Simulator) -> tuple[Protocol, str]:
    """Another tool of the same account holding a shell."""
    endpoint: Endpoint | None = sim.endpoint
    assert endpoint is not None
    protocol = Protocol(
        endpoint.winrm_https_url,
        transport="basic",
        username=endpoint.username,
        password=endpoint.password,
        ca_trust_path=endpoint.ca_file,
        server_cert_validation="validate",
    )
    return protocol, protocol.open_shell()


def test_max_shells_refused_then_one_shot_when_a_shell_frees_up(
    sim: Simulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    set_host_facts(sim.state.dir, winrs={"max_shells_per_user": 1})
    protocol, held = _hold_shell(sim)
    sleeps: list[float] = []

    def sleep(seconds: float) -> None:
        sleeps.append(seconds)
        if len(sleeps) == 1:
            protocol.close_shell(held)  # the other tool is done

    monkeypatch.setattr(winrm_transport, "_sleep", sleep)
    client = HostClient(connection(sim))
    assert client.call_one("host.facts")["computer_name"]
    assert sleeps == [0.5]  # refused once (nothing ran), then a one-shot command got in
    assert shells(sim) == []  # the one-shot command deleted its shell
    # While the host refuses shells, calls stay one-shot: a process per call.
    client.call_one("host.facts")
    assert shells(sim) == [] and agent_session.session_for(client.connection, "") is None
    assert sum(1 for x in lines(sim) if x.get("process_started")) == 2


def test_max_shells_refused_for_good_is_explained(
    sim: Simulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    set_host_facts(sim.state.dir, winrs={"max_shells_per_user": 1})
    _hold_shell(sim)
    sleeps: list[float] = []
    monkeypatch.setattr(winrm_transport, "_sleep", sleeps.append)
    with pytest.raises(WSManFaultError) as caught:
        HostClient(connection(sim)).call_one("host.facts")
    assert caught.value.command_may_have_run is False
    assert "MaxShellsPerUser" in str(caught.value) and "0x803381A5" in str(caught.value)
    assert sleeps == list(winrm_transport.RETRY_DELAYS)
    assert lines(sim) == []  # nothing ran


def test_after_the_one_shot_period_a_persistent_agent_is_used_again(
    sim: Simulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    set_host_facts(sim.state.dir, winrs={"max_shells_per_user": 1})
    protocol, held = _hold_shell(sim)
    monkeypatch.setattr(winrm_transport, "_sleep", lambda _: protocol.close_shell(held))
    monkeypatch.setattr(agent_session, "ONE_SHOT_SECONDS", 0.0)
    client = HostClient(connection(sim))
    client.call_one("host.facts")  # refused, then one-shot
    client.call_one("host.facts")
    assert [s["processes"] for s in shells(sim)] == [1]  # a persistent agent again


# --- pickling ---------------------------------------------------------------------------


def test_provider_state_stays_small_and_holds_no_session(sim: Simulator) -> None:
    conn = connection(sim)
    HostClient(conn).call_one("host.facts")
    assert agent_session.sessions()  # a live session exists in this process
    provider = LocalUserProvider()
    data = dill.dumps(provider, recurse=True)
    # What Pulumi stores as __provider: small, and nothing live.
    assert len(data) < 2048
    for word in (b"AgentSession", b"Protocol", b"Thread", b"_SESSIONS", b"requests"):
        assert word not in data
