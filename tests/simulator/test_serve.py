"""``python -m iis_clientcert_simulator serve``: first start, endpoint.json, WinRM clients,
restart, reset."""

from __future__ import annotations

import json
import signal
import stat
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import winrm
from winrm.protocol import Protocol

from iis_clientcert.host.client import HostClient
from iis_clientcert.host.connection import Connection
from iis_clientcert.host.contract import (
    POWERSHELL,
    SECTION_SSL,
    Op,
    command_arguments,
    element,
    encode_stdin,
    make_op,
    make_request,
    parse_result,
)
from iis_clientcert_simulator import EndpointError, endpoint_connection
from iis_clientcert_simulator.endpoint import Endpoint
from iis_clientcert_simulator.testing import agent_script, running_simulator


def agent_call(endpoint: Endpoint, *ops: Op[Any]) -> dict[str, Any]:
    protocol = Protocol(
        endpoint.winrm_https_url,
        transport="ssl",
        username=endpoint.username,
        password=endpoint.password,
        ca_trust_path=endpoint.ca_file,
    )
    shell = protocol.open_shell()
    try:
        command = protocol.run_command(
            shell, POWERSHELL, command_arguments(), console_mode_stdin=False, skip_cmd_shell=True
        )
        protocol.send_command_input(
            shell, command, encode_stdin(agent_script(), make_request(list(ops))), end=True
        )
        stdout, _stderr, _code = protocol.get_command_output(shell, command)
        protocol.cleanup_command(shell, command)
    finally:
        protocol.close_shell(shell)
    return parse_result(stdout)


def test_serve_subprocess_first_start_and_restart(tmp_path: Path) -> None:
    state = tmp_path / "state"
    with running_simulator(state, subprocess_mode=True) as endpoint:
        endpoint_file = state / "endpoint.json"
        assert stat.S_IMODE(endpoint_file.stat().st_mode) == 0o600
        data = json.loads(endpoint_file.read_text())
        for key in ("connection", "winrm_http_url", "ca_file", "client_cert", "client_key"):
            assert key in data
        assert isinstance(data["sites"], dict) and data["pid"] > 0
        assert data["connection"]["username"] == "sim-admin"
        # Written once: the password is in the connection and nowhere else in the file.
        assert endpoint_file.read_text().count(endpoint.password) == 1
        assert endpoint.winrm_https_url.startswith("https://127.0.0.1:")
        assert stat.S_IMODE(Path(endpoint.client_key).stat().st_mode) == 0o600
        # The admin password is in endpoint.json only: users.json has a hash.
        assert endpoint.password not in (state / "users.json").read_text()
        assert endpoint.password not in (state / "audit.log").read_text()

        session = winrm.Session(
            endpoint.winrm_https_url,
            auth=(endpoint.username, endpoint.password),
            transport="ssl",
            ca_trust_path=endpoint.ca_file,
        )
        response = session.run_ps("Get-Date")
        assert response.status_code == 1
        assert b"The term 'Get-Date' is not recognized" in response.std_err

        result = agent_call(
            endpoint,
            make_op(
                "config.set",
                section=SECTION_SSL,
                location="shop",
                element=element({"sslFlags": "Ssl"}),
            ),
        )
        assert result == {"ok": True, "results": [{"changed": True}]}
        password = endpoint.password

    # Restart: same password, same state.
    with running_simulator(state, subprocess_mode=True) as endpoint:
        assert endpoint.password == password
        got = agent_call(endpoint, make_op("config.get", section=SECTION_SSL, location="shop"))
        assert got["results"][0]["element"]["attributes"] == {"sslFlags": "Ssl"}


def test_in_process_auth_kinds(tmp_path: Path) -> None:
    with running_simulator(tmp_path / "state") as endpoint:
        cert = winrm.Session(
            endpoint.winrm_https_url,
            auth=(None, None),  # type: ignore[arg-type]  # certificate: no password
            transport="certificate",
            cert_pem=endpoint.client_cert,
            cert_key_pem=endpoint.client_key,
            ca_trust_path=endpoint.ca_file,
        )
        assert cert.run_cmd("hostname").status_code == 9009
        ntlm = winrm.Session(
            endpoint.winrm_http_url,
            auth=(endpoint.username, endpoint.password),
            transport="ntlm",
            ca_trust_path=endpoint.ca_file,
        )
        assert ntlm.run_ps("Get-Date").status_code == 1
        users = [
            line["user"]
            for line in map(
                json.loads, (Path(endpoint.state_dir) / "audit.log").read_text().splitlines()
            )
        ]
        assert users == ["sim-admin", "sim-admin"]


def test_sigterm_stops_cleanly(tmp_path: Path) -> None:
    state = tmp_path / "state"
    process = subprocess.Popen(
        [sys.executable, "-m", "iis_clientcert_simulator", "serve", "--state-dir", str(state)],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        line = json.loads(process.stdout.readline())
        # The password is in endpoint.json only, never on stdout.
        assert "password" not in line and "password" not in line["connection"]
        assert line["connection"]["transport"] == "basic"
        assert line["pid"] == process.pid
        process.send_signal(signal.SIGTERM)
        assert process.wait(20) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


def test_reset(tmp_path: Path) -> None:
    state = tmp_path / "state"
    with running_simulator(state):
        pass
    assert (state / "applicationHost.config").exists()
    run = [sys.executable, "-m", "iis_clientcert_simulator", "reset", "--state-dir", str(state)]
    assert subprocess.run(run, check=False).returncode == 0
    assert not state.exists()
    other = tmp_path / "not-a-state"
    other.mkdir()
    (other / "precious.txt").write_text("keep")
    run = [sys.executable, "-m", "iis_clientcert_simulator", "reset", "--state-dir", str(other)]
    assert subprocess.run(run, check=False, capture_output=True).returncode == 2
    assert (other / "precious.txt").exists()


@pytest.mark.parametrize("port_offset", [0])
def test_fixed_port(tmp_path: Path, port_offset: int) -> None:
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1] + port_offset
    try:
        with running_simulator(tmp_path / "state", port=port) as endpoint:
            assert endpoint.winrm_https_url == f"https://127.0.0.1:{port}/wsman"
            assert endpoint.winrm_http_url == f"http://127.0.0.1:{port + 1}/wsman"
    except OSError:
        pytest.skip("the port pair was taken meanwhile")


@pytest.mark.parametrize("transport", ["basic", "certificate", "ntlm"])
def test_endpoint_connection_reaches_the_host(tmp_path: Path, transport: str) -> None:
    state = tmp_path / "state"
    with running_simulator(state) as endpoint:
        value = endpoint_connection(state, transport)
        conn = Connection.from_input(value)
        assert conn.transport == transport
        assert conn.is_https == (transport != "ntlm")
        if conn.is_https:
            # The CA as PEM text, ready for the connection input (not a path).
            assert conn.ca_bundle == Path(endpoint.ca_file).read_text()
        facts = HostClient(conn).call_one("host.facts")
        assert facts["computer_name"]
        users = [
            json.loads(line)["user"] for line in (state / "audit.log").read_text().splitlines()
        ]
        assert users == ["sim-admin"]


def test_endpoint_connection_needs_a_running_simulator(tmp_path: Path) -> None:
    state = tmp_path / "state"
    with pytest.raises(EndpointError) as missing:
        endpoint_connection(state)
    assert "does not exist" in str(missing.value)
    assert f"python -m iis_clientcert_simulator serve --state-dir {state}" in str(missing.value)
    with running_simulator(state) as endpoint, pytest.raises(ValueError, match="not 'kerberos'"):
        endpoint.connection_input("kerberos")
    # Stopped: endpoint.json keeps the password for the next start, but serves nobody.
    with pytest.raises(EndpointError) as stopped:
        endpoint_connection(state)
    assert "has stopped" in str(stopped.value)
    assert endpoint.password not in str(stopped.value)
