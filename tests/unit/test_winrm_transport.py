"""The WinRM client against real servers: the simulator, a closed port, a silent socket.

Retry policy: failures before the command ran are retried with backoff; after the request
may have been delivered, a write is never repeated (read-only batches are).
"""

from __future__ import annotations

import json
import os
import socket
import stat
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from winrm.protocol import Protocol

from iis_clientcert.errors import (
    AgentProtocolError,
    AuthenticationError,
    HostTimeoutError,
    HostUnreachableError,
    TlsVerificationError,
    TransportError,
    WSManFaultError,
)
from iis_clientcert.host import agent_session, contract, winrm_transport
from iis_clientcert.host.client import HostClient
from iis_clientcert.host.connection import Connection
from iis_clientcert_simulator.endpoint import Endpoint
from iis_clientcert_simulator.testing import running_simulator
from tests.support.simulator import audit_lines, connection, ops_of, set_faults

CANARY = "Canary-Secret-4242!x"


@pytest.fixture(scope="module")
def sim(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Endpoint]:
    with running_simulator(tmp_path_factory.mktemp("winrm-client")) as endpoint:
        yield endpoint
    winrm_transport.close_pool()


@pytest.fixture
def sleeps(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """Backoff pauses taken (none really slept)."""
    taken: list[float] = []
    monkeypatch.setattr(winrm_transport, "_sleep", taken.append)
    return taken


# Short timeouts: the failures these tests provoke should not take long.
TIMEOUTS = {"connect_timeout": 3, "operation_timeout": 5, "read_timeout": 10}


def basic(sim: Endpoint, **extra: Any) -> Connection:
    return connection(sim, **{**TIMEOUTS, **extra})


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


# --- before the command ran: retried -----------------------------------------------------


def test_connection_refused_is_unreachable_and_retried_with_backoff(sleeps: list[float]) -> None:
    conn = Connection.from_input(
        {
            "endpoint": f"http://127.0.0.1:{free_port()}/wsman",
            "transport": "ntlm",
            "username": "u",
            "password": CANARY,
        }
    )
    with pytest.raises(HostUnreachableError) as caught:
        HostClient(conn).call_one("host.facts")
    assert sleeps == [0.5, 1.0, 2.0]
    assert caught.value.command_may_have_run is False
    assert "cannot connect" in str(caught.value) and CANARY not in str(caught.value)


def test_unknown_host_name_is_unreachable(sleeps: list[float]) -> None:
    conn = Connection.from_input(
        {
            "endpoint": "https://no-such-host.invalid:5986/wsman",
            "transport": "basic",
            "username": "u",
            "password": CANARY,
        }
    )
    with pytest.raises(HostUnreachableError) as caught:
        HostClient(conn).call_one("host.facts")
    assert "no-such-host.invalid" in str(caught.value)
    assert len(sleeps) == 3


def test_silent_host_is_a_timeout_and_retried_before_run(monkeypatch: pytest.MonkeyPatch) -> None:
    # A listener that accepts and never answers: the Create-shell request times out.
    monkeypatch.setattr(winrm_transport, "RETRY_DELAYS", (0.0,))
    monkeypatch.setattr(winrm_transport, "_sleep", lambda _: None)
    accepted: list[socket.socket] = []
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(8)
    stop = threading.Event()

    def accept() -> None:
        server.settimeout(0.2)
        while not stop.is_set():
            try:
                accepted.append(server.accept()[0])
            except OSError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        conn = Connection.from_input(
            {
                "endpoint": f"http://127.0.0.1:{server.getsockname()[1]}/wsman",
                "transport": "ntlm",
                "username": "u",
                "password": "p",
                "operation_timeout": 1,
                "read_timeout": 1.5,
            }
        )
        with pytest.raises(HostTimeoutError) as caught:
            winrm_transport.run_command(conn, b"x", read_only=False)
        assert caught.value.command_may_have_run is False
        assert len(accepted) == 2  # the first try and one retry
    finally:
        stop.set()
        thread.join()
        server.close()
        for s in accepted:
            s.close()


# --- rejected: never retried ----------------------------------------------------------------


def test_wrong_password_is_authentication_error(sim: Endpoint, sleeps: list[float]) -> None:
    with pytest.raises(AuthenticationError) as caught:
        HostClient(basic(sim, password=CANARY)).call_one("host.facts")
    assert sleeps == []
    assert sim.username in str(caught.value) and CANARY not in str(caught.value)


def test_https_without_ca_bundle_fails_verification(sim: Endpoint, sleeps: list[float]) -> None:
    with pytest.raises(TlsVerificationError) as caught:
        HostClient(basic(sim, ca_bundle=None)).call_one("host.facts")
    assert sleeps == []
    assert "ca_bundle" in str(caught.value)
    assert sim.password not in str(caught.value)


def test_verification_off_only_when_asked(sim: Endpoint) -> None:
    facts = HostClient(basic(sim, ca_bundle=None, verify_tls=False)).call_one("host.facts")
    assert facts["computer_name"]


# --- after the request was sent ------------------------------------------------------------


def _ops_in_audit(sim: Endpoint, name: str) -> int:
    return sum(1 for op in ops_of(audit_lines(sim)) if op.get("op") == name)


def test_write_dropped_after_run_is_not_repeated(sim: Endpoint, sleeps: list[float]) -> None:
    client = HostClient(basic(sim))
    before = _ops_in_audit(sim, "user.set")
    set_faults(sim.state_dir, {"drop": {"command": 1, "when": "after_run"}})
    with pytest.raises(TransportError) as caught:
        client.call_one("user.set", name="dropped1", password=CANARY)
    assert caught.value.command_may_have_run is True
    assert sleeps == []
    assert _ops_in_audit(sim, "user.set") == before + 1  # it ran, once
    assert client.call_one("user.get", name="dropped1")["exists"] is True
    assert CANARY not in str(caught.value)


def test_write_dropped_before_run_is_not_repeated_either(
    sim: Endpoint, sleeps: list[float]
) -> None:
    # The client cannot tell "before" from "after" once the request was sent.
    client = HostClient(basic(sim))
    set_faults(sim.state_dir, {"drop": {"command": 1, "when": "before_run"}})
    with pytest.raises(TransportError) as caught:
        client.call_one("user.set", name="dropped2", password=CANARY)
    assert caught.value.command_may_have_run is True
    assert sleeps == []
    assert client.call_one("user.get", name="dropped2")["exists"] is False


def test_read_only_batch_is_repeated_after_a_drop(sim: Endpoint, sleeps: list[float]) -> None:
    set_faults(sim.state_dir, {"drop": {"command": 1, "when": "after_run"}})
    results = HostClient(basic(sim)).call(
        [contract.make_op("host.facts"), contract.make_op("site.list")]
    )
    assert results[0]["computer_name"] and results[1]["sites"]
    assert sleeps == [0.5]


# --- payload and output -------------------------------------------------------------------


def test_agent_commands_start_with_stdin_in_pipe_mode(
    sim: Endpoint, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Console-mode stdin has no end (MS-WSMV 3.1.4.11; Ansible's winrm plugin sends
    # console_mode_stdin=False whenever it feeds stdin); cmd.exe adds nothing but a parser.
    seen: list[tuple[str, bool, bool]] = []
    original = Protocol.run_command

    def spy(
        self: Any,
        shell_id: str,
        command: str,
        arguments: Any = (),
        console_mode_stdin: bool = True,
        skip_cmd_shell: bool = False,
    ) -> str:
        seen.append((command, console_mode_stdin, skip_cmd_shell))
        return original(self, shell_id, command, arguments, console_mode_stdin, skip_cmd_shell)

    monkeypatch.setattr(Protocol, "run_command", spy)
    monkeypatch.setattr(winrm_transport, "MIN_RECEIVE_SECONDS", 0.0)
    monkeypatch.setattr(winrm_transport, "RETRY_DELAYS", ())
    try:
        HostClient(basic(sim, operation_timeout=1, read_timeout=2)).call_one("host.facts")
    finally:
        assert seen == [("powershell.exe", False, True)]


def test_a_call_finishes_where_console_mode_stdin_would_hang(
    sim: Endpoint, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The simulator, like Windows, never ends console-mode stdin: an agent started that way
    # waits for good and the client gives up with a timeout. Bounded here to ~10 s.
    monkeypatch.setattr(winrm_transport, "MIN_RECEIVE_SECONDS", 0.0)
    monkeypatch.setattr(winrm_transport, "RETRY_DELAYS", ())
    conn = basic(sim, operation_timeout=1, read_timeout=2)
    result = HostClient(conn).call_one("user.set", name="pipemode1", password=CANARY)
    assert result["created"] is True


def _powershell_editions(sim: Endpoint, editions: list[str]) -> None:
    path = Path(sim.state_dir) / "host.json"
    facts = json.loads(path.read_text())
    facts["powershell_editions"] = editions
    path.write_text(json.dumps(facts))


def test_pwsh_connection_runs_the_agent_under_powershell_7(sim: Endpoint) -> None:
    _powershell_editions(sim, ["Desktop", "Core"])
    try:
        facts = HostClient(basic(sim, shell="pwsh")).call_one("host.facts")
    finally:
        _powershell_editions(sim, ["Desktop"])
    assert facts["computer_name"]
    assert audit_lines(sim)[-1]["result"] == "ok"


def test_pwsh_missing_on_the_host_is_explained(sim: Endpoint, sleeps: list[float]) -> None:
    winrm_transport.close_pool()  # no pwsh.exe agent left running from another test
    with pytest.raises(WSManFaultError) as caught:
        HostClient(basic(sim, shell="pwsh")).call_one("host.facts")
    text = str(caught.value)
    assert "pwsh.exe" in text and "shell" in text and "0x80070002" in text
    assert sleeps == []


def test_large_stdin_is_sent_in_chunks(sim: Endpoint, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(winrm_transport, "STDIN_CHUNK", 4096)
    sent: list[int] = []
    original = Protocol.send_command_input

    def spy(self: Any, shell_id: str, command_id: str, data: bytes, end: bool = False) -> None:
        sent.append(len(data))
        original(self, shell_id, command_id, data, end)

    monkeypatch.setattr(Protocol, "send_command_input", spy)
    facts = HostClient(basic(sim)).call_one("host.facts")
    assert facts["computer_name"]
    assert len(sent) > 3 and max(sent) <= 4096


def test_output_that_is_not_a_result(monkeypatch: pytest.MonkeyPatch) -> None:
    clixml = (
        b'#< CLIXML\r\n<Objs Version="1.1.0.1" xmlns="http://schemas.microsoft.com/powershell/'
        b'2004/04"><S S="Error">Exception: the password '
        + CANARY.encode()
        + b" was bad_x000D__x000A_"
        b"</S></Objs>"
    )

    def fake(conn: Connection, payload: bytes) -> Any:
        assert CANARY.encode() in payload  # it was in the request ...
        return winrm_transport.CommandOutput(b"not json", clixml, 1)

    # A one-shot command (no persistent agent) whose process printed no result.
    monkeypatch.setattr(agent_session, "session_for", lambda conn, script: None)
    monkeypatch.setattr(winrm_transport, "_run_once", fake)
    # A WinRM password of one character would withhold the whole excerpt (contract
    # WITHHELD_MESSAGE): this test is about the request's secret.
    conn = Connection.from_input(
        {
            "endpoint": "https://h:5986/wsman",
            "transport": "basic",
            "username": "u",
            "password": "winrm-Pass-7",
        }
    )
    with pytest.raises(AgentProtocolError) as caught:
        HostClient(conn).call_one("user.verify_password", name="bob", password=CANARY)
    text = str(caught.value)
    assert "Exception: the password REDACTED was bad" in text  # ... never in the error
    assert "CLIXML" not in text and "exit code 1" in text
    assert "Set-StrictMode" not in text  # no stdin (agent script) either


def test_clean_stderr_uses_pywinrm_cleanup() -> None:
    raw = (
        b'#< CLIXML\r\n<Objs xmlns="x"><S S="Error">line one_x000D__x000A_</S>'
        b'<S S="Error">two</S></Objs>'
    )
    assert winrm_transport.clean_stderr(raw) == "line one\ntwo"
    assert winrm_transport.clean_stderr(b"plain text") == "plain text"


# --- the pool --------------------------------------------------------------------------------


def test_concurrent_calls_and_private_files(sim: Endpoint) -> None:
    conn = basic(sim)
    errors: list[BaseException] = []

    def work() -> None:
        try:
            for _ in range(4):
                assert HostClient(conn).call_one("site.list")["sites"]
        except BaseException as exc:  # collected for the assertion below
            errors.append(exc)

    threads = [threading.Thread(target=work) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    entry = winrm_transport._endpoint_for(conn)
    assert 1 <= len(entry._idle) <= winrm_transport.MAX_IDLE
    assert entry._dir is not None and entry._ca_path is not None
    assert stat.S_IMODE(os.stat(entry._dir).st_mode) == 0o700
    assert stat.S_IMODE(os.stat(entry._ca_path).st_mode) == 0o600
    directory = entry._dir
    winrm_transport.close_pool()
    assert not os.path.exists(directory)
    # The pool comes back on the next call.
    assert HostClient(conn).call_one("host.facts")["computer_name"]


def test_client_is_picklable_and_holds_no_session(sim: Endpoint) -> None:
    import pickle

    client = HostClient(basic(sim))
    client.call_one("host.facts")
    data = pickle.dumps(client)
    assert b"requests" not in data and b"Protocol" not in data
