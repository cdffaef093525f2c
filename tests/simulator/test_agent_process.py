"""The agent as a process in the simulator: started at the Command request, stdin read as
the Sends come, one answer per request while it keeps running; host costs counted in the
audit log; WinRS quotas and idle timeouts; faults that end processes and shells."""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import winrm.exceptions
from winrm.protocol import Protocol

from iis_clientcert.host import agent_session, contract
from iis_clientcert.host.client import HostClient
from iis_clientcert.host.connection import Connection
from iis_clientcert_simulator import audit, executor, host_costs
from iis_clientcert_simulator.agent_reading import AgentText
from iis_clientcert_simulator.executor import Executor, agent_script_text
from iis_clientcert_simulator.host_costs import REALISTIC, HostCosts
from iis_clientcert_simulator.powershell_editions import Edition
from iis_clientcert_simulator.serve import Simulator
from iis_clientcert_simulator.testing import agent_script, set_host_facts
from iis_clientcert_simulator.wsman import ShellCommand
from tests.support.simulator import in_process_simulator


@pytest.fixture
def sim(tmp_path: Path) -> Iterator[Simulator]:
    with in_process_simulator(tmp_path / "host") as simulator:
        yield simulator


def protocol_for(sim: Simulator, operation_timeout: int = 1) -> Protocol:
    endpoint = sim.endpoint
    assert endpoint is not None
    return Protocol(
        endpoint.winrm_https_url,
        transport="basic",
        username=endpoint.username,
        password=endpoint.password,
        ca_trust_path=endpoint.ca_file,
        server_cert_validation="validate",
        operation_timeout_sec=operation_timeout,
        read_timeout_sec=operation_timeout + 2,
    )


def agent_lines(sim: Simulator) -> list[dict[str, Any]]:
    return [x for x in audit.read(sim.state.audit) if x.get("kind") == "agent"]


def request(request_id: int, *ops: contract.Op[Any]) -> bytes:
    return contract.request_frame(request_id, contract.make_request(list(ops)))


def receive_answer(protocol: Protocol, shell_id: str, command_id: str) -> tuple[bytes, bool]:
    out = b""
    for _ in range(20):
        try:
            chunk, _, _, done = protocol.get_command_output_raw(shell_id, command_id)
        except winrm.exceptions.WinRMOperationTimeoutError:
            continue
        out += chunk
        if out.endswith(b"\n") or done:
            return out, done
    raise AssertionError("no answer")


# --- one process, many requests -------------------------------------------------------------


def test_a_persistent_agent_answers_each_request_while_it_keeps_running(sim: Simulator) -> None:
    protocol = protocol_for(sim)
    shell_id = protocol.open_shell()
    command_id = protocol.run_command(
        shell_id,
        contract.POWERSHELL,
        contract.command_arguments(),
        console_mode_stdin=False,
        skip_cmd_shell=True,
    )
    first = contract.agent_frame(agent_script()) + request(1, contract.host_facts())
    protocol.send_command_input(shell_id, command_id, first)
    out, done = receive_answer(protocol, shell_id, command_id)
    (answer,) = contract.take_results(bytearray(out))
    assert answer[0] == 1 and json.loads(answer[1])["results"][0]["computer_name"]
    assert done is False  # still running, waiting for the next request
    protocol.send_command_input(shell_id, command_id, request(2, contract.user_get("nobody")))
    out, done = receive_answer(protocol, shell_id, command_id)
    (answer,) = contract.take_results(bytearray(out))
    assert answer[0] == 2 and json.loads(answer[1])["results"][0]["exists"] is False
    assert done is False
    protocol.send_command_input(shell_id, command_id, b"", end=True)  # the end of stdin
    _, _, code, done = protocol.get_command_output_raw(shell_id, command_id)
    assert (done, code) == (True, 0)
    protocol.close_shell(shell_id)
    lines = agent_lines(sim)
    assert len(lines) == 2 and [x.get("process_started") for x in lines] == [True, None]
    assert lines[0]["process"] == lines[1]["process"]


def test_a_persistent_agent_in_console_mode_never_answers(sim: Simulator) -> None:
    protocol = protocol_for(sim)
    shell_id = protocol.open_shell()
    command_id = protocol.run_command(shell_id, contract.POWERSHELL, contract.command_arguments())
    protocol.send_command_input(
        shell_id,
        command_id,
        contract.agent_frame(agent_script()) + request(1, contract.user_set("console2")),
    )
    for _ in range(2):
        with pytest.raises(winrm.exceptions.WinRMOperationTimeoutError):
            protocol.get_command_output_raw(shell_id, command_id)
    protocol.close_shell(shell_id)
    assert [x["result"] for x in agent_lines(sim)] == ["StdinConsoleMode"]


def test_an_agent_that_serves_one_request_still_works_call_after_call(
    sim: Simulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    # An agent without a request loop ends after its first answer: the client must see the
    # process end and start another for the next call.
    read = executor.read_agent

    def one_request_agent(script: str, edition: Edition) -> tuple[Any, executor.AgentRun]:
        needing_temp, run = read(script, edition)
        return needing_temp, dataclasses.replace(run, serves_many=False)

    monkeypatch.setattr(executor, "read_agent", one_request_agent)
    endpoint = sim.endpoint
    assert endpoint is not None
    client = HostClient(
        Connection.from_input(
            {
                "endpoint": endpoint.winrm_https_url,
                "transport": "basic",
                "username": endpoint.username,
                "password": endpoint.password,
                "ca_bundle": Path(endpoint.ca_file).read_text(),
            }
        )
    )
    for i in range(3):
        assert client.call_one("user.get", name=f"single{i}")["exists"] is False
    assert sum(1 for x in agent_lines(sim) if x.get("process_started")) == 3


# --- host costs ---------------------------------------------------------------------------


def _run(executor: Executor, *requests: bytes) -> list[dict[str, Any]]:
    stdin = contract.agent_frame(agent_script()) + b"".join(requests)
    outcome = executor(
        ShellCommand(
            "sim-admin",
            "basic",
            contract.POWERSHELL,
            contract.command_arguments(),
            stdin,
            "S1",
            "C1",
            console_mode_stdin=False,
            skip_cmd_shell=True,
        )
    )
    assert outcome.exit_code == 0, outcome
    return [json.loads(body) for _, body in contract.take_results(bytearray(outcome.stdout))]


def test_host_costs_are_counted_in_the_audit_log(tmp_path: Path) -> None:
    costs = HostCosts(
        powershell_start_ms=3,
        agent_load_ms=2,
        read_op_ms=1,
        write_op_ms=4,
        add_type_ms=900,
        emit_type_ms=9,
    )
    executor = Executor(tmp_path / "host", costs=costs)
    verify = contract.user_verify_password("costly", "Pw-123456!a")
    results = _run(
        executor,
        request(1, contract.host_facts(), contract.user_get("a")),
        request(2, contract.user_verify_password("nobody", "Pw-123456!a")),  # no such user
        request(3, contract.user_set("costly", password="Pw-123456!a")),
        request(4, verify),
        request(5, verify),
    )
    assert all(r["ok"] for r in results)
    assert results[3]["results"][0]["valid"] is True
    lines = audit.read(executor.state.audit)
    # The start and the agent's load once; each op's work; the LogonUser type, emitted in
    # memory (no Add-Type compile), at the process's first logon, and never again.
    assert [x["host_ms"] for x in lines] == [3 + 2 + 1 + 1, 1, 4, 1 + 9, 1]
    assert [x.get("process_started") for x in lines] == [True, None, None, None, None]


def test_no_host_costs_by_default(tmp_path: Path) -> None:
    executor = Executor(tmp_path / "host")
    _run(executor, request(1, contract.host_facts()))
    assert "host_ms" not in audit.read(executor.state.audit)[0]


def test_host_costs_presets_and_overrides() -> None:
    assert host_costs.parse("none").free
    costs = host_costs.parse("realistic", ["add_type=0", "powershell_start_ms=900"])
    assert costs.add_type_ms == 0 and costs.powershell_start_ms == 900
    assert costs.agent_load_ms == REALISTIC.agent_load_ms
    with pytest.raises(ValueError, match="unknown host cost"):
        host_costs.parse("realistic", ["coffee_ms=3"])
    with pytest.raises(ValueError, match="one of"):
        host_costs.parse("cheap")


def test_what_each_op_costs_is_read_from_the_agent() -> None:
    reading = AgentText.read(agent_script_text())
    assert reading.serves_many_requests()
    assert "user.verify_password" in reading.ops_emitting()
    assert not reading.ops_compiling()  # no Add-Type anywhere
    assert "binding.set" in reading.ops_starting_programs()
    assert "config.get" not in reading.ops_emitting() | reading.ops_starting_programs()
    compiling = agent_script_text().replace(
        "function Initialize-LogonType {\n",
        "function Initialize-LogonType {\n    Add-Type -TypeDefinition 'public class X {}'\n",
    )
    assert "user.verify_password" in AgentText.read(compiling).ops_compiling()
    assert not AgentText.read("param($Reader)\n$Reader.ReadLine()\n").serves_many_requests()


# --- WinRS quotas and idle timeouts ---------------------------------------------------------


def test_max_shells_per_user_refuses_the_next_create(sim: Simulator) -> None:
    set_host_facts(sim.state.dir, winrs={"max_shells_per_user": 2})
    protocol = protocol_for(sim)
    protocol.open_shell()
    protocol.open_shell()
    with pytest.raises(winrm.exceptions.WSManFaultError) as caught:
        protocol.open_shell()
    assert caught.value.wsman_fault_code == 0x803381A5
    assert "(MaxShellsPerUser 2)" in str(caught.value.reason)


def test_idle_shells_are_deleted_with_their_processes(sim: Simulator) -> None:
    set_host_facts(sim.state.dir, winrs={"min_idle_timeout_s": 0.5})
    protocol = protocol_for(sim)
    shell_id = protocol.open_shell(idle_timeout="PT0.100S")  # below the minimum
    protocol.run_command(
        shell_id,
        contract.POWERSHELL,
        contract.command_arguments(),
        console_mode_stdin=False,
        skip_cmd_shell=True,
    )
    assert sim.server is not None
    (shell,) = sim.server.shells()
    assert (shell["idle_timeout"], shell["processes"]) == (0.5, 1)
    deadline = time.monotonic() + 5
    while sim.server.shells() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert sim.server.shells() == []
    with pytest.raises(winrm.exceptions.WSManFaultError) as caught:
        protocol.get_command_output_raw(shell_id, "X")
    assert caught.value.wsman_fault_code == 0x8033805B


# --- faults that end processes and shells ---------------------------------------------------


def test_kill_and_restart_faults(sim: Simulator) -> None:
    endpoint = sim.endpoint
    assert endpoint is not None
    conn = Connection.from_input(
        {
            "endpoint": endpoint.winrm_https_url,
            "transport": "basic",
            "username": endpoint.username,
            "password": endpoint.password,
            "ca_bundle": Path(endpoint.ca_file).read_text(),
        }
    )
    client = HostClient(conn)
    client.call_one("host.facts")
    faults = sim.state.faults
    # Killed after it answered: the next call finds the process gone and starts another.
    faults.write_text(json.dumps({"kill_agent": {"request": 1, "when": "after_answer"}}))
    client.call_one("host.facts")
    assert client.call_one("user.get", name="k1")["exists"] is False
    # Killed before a read ran: the read is sent again to a new agent.
    faults.write_text(json.dumps({"kill_agent": {"request": 1, "when": "before_run"}}))
    assert client.call_one("user.get", name="k2")["exists"] is False
    # WinRM restarted after a read ran: sent again, answered.
    faults.write_text(json.dumps({"restart_winrm": {"request": 1, "when": "after_run"}}))
    assert client.call_one("user.get", name="k3")["exists"] is False
    assert sim.server is not None and len(sim.server.shells()) == 1
    assert sum(1 for x in agent_lines(sim) if x.get("process_started")) == 4
    assert agent_session.sessions()[0].usable
