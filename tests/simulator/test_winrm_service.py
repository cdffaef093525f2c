"""WinRM as Windows ships it (issue 11, point 11): each rule with its source.

- Basic and certificate authentication are off until ``winrm set winrm/config/service/auth
  @{Basic="true"}`` (Microsoft, "Installation and configuration for Windows Remote
  Management"); Windows then offers only Negotiate in its 401 challenge.
- A local administrator other than the built-in one gets a filtered token over the network
  and is refused unless LocalAccountTokenFilterPolicy=1 (KB 951016).
- MaxEnvelopeSizekb 500 bounds requests (MS-WSMV 2.2.4.10): HTTP 413, which Windows'
  client reports as 0x80338111.
- MaxTimeoutms 60000: a longer OperationTimeout is lowered to it (MS-WSMV,
  "wsman:OperationTimeout").
- winrs MaxShellsPerUser 30 and MaxConcurrentOperationsPerUser 1500: w:QuotaLimit
  (MS-WSMV 3.1.4.5.2.1) with WSManFault codes 0x803381A5 / 0x803381A6 (wsmerror.h).
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import threading
import time
from pathlib import Path

import pytest
import requests
import winrm
from winrm.exceptions import (
    InvalidCredentialsError,
    WinRMOperationTimeoutError,
    WinRMTransportError,
    WSManFaultError,
)
from winrm.protocol import Protocol

from iis_clientcert_simulator.testing import running_simulator
from iis_clientcert_simulator.winrm_service import DEMO_SERVICE, SHIPPED, WinRMService
from iis_clientcert_simulator.wsman import Credentials, WSManServer
from tests.support.wsman import (
    PASSWORD,
    USER,
    EchoHandler,
    WSManFactory,
    WSManPki,
    basic_session,
    cert_session,
    winrm_protocol,
)

SHIPPED_SERVICE = WinRMService()
BASIC_ONLY = WinRMService(auth_basic=True)  # otherwise as shipped


def _creds(pki: WSManPki, *, filtered: set[str] | None = None) -> Credentials:
    return Credentials(
        users={USER: PASSWORD, "Administrator": "Builtin-Passw0rd"},
        cert_users={pki.client.thumbprint: USER},
        filtered_admins=filtered or set(),
    )


def _start(make_wsman: WSManFactory, pki: WSManPki, config: WinRMService, **kw: object):
    handler = EchoHandler()
    server = make_wsman(handler, _creds(pki, **kw), config=lambda: config)  # type: ignore[arg-type]
    return server, handler


def _challenges(server: WSManServer, pki: WSManPki) -> list[str]:
    reply = requests.post(server.https_url, data=b"", verify=str(pki.ca_file), timeout=10)
    assert reply.status_code == 401
    return [c.strip() for c in reply.headers.get("WWW-Authenticate", "").split(",")]


# --- authentication ----------------------------------------------------------------------


def test_shipped_defaults_match_windows() -> None:
    assert SHIPPED == {
        "auth_basic": False,
        "auth_certificate": False,
        "local_account_token_filter_policy": 0,
        "max_envelope_size_kb": 500,
        "max_timeout_ms": 60000,
        "max_shells_per_user": 30,
        "max_concurrent_operations_per_user": 1500,
    }
    assert WinRMService.from_facts({}) == SHIPPED_SERVICE


def test_shipped_host_refuses_basic_and_does_not_offer_it(make_wsman, wsman_pki):
    server, handler = _start(make_wsman, wsman_pki, SHIPPED_SERVICE)
    with pytest.raises(InvalidCredentialsError):
        basic_session(server, wsman_pki).run_cmd("whoami")
    assert handler.calls == []
    # What a client (and the doctor) can see: Windows offers only Negotiate.
    assert not any(c.lower().startswith("basic") for c in _challenges(server, wsman_pki))


def test_shipped_host_refuses_certificate_auth(make_wsman, wsman_pki):
    server, handler = _start(make_wsman, wsman_pki, BASIC_ONLY)
    with pytest.raises(InvalidCredentialsError):
        cert_session(server, wsman_pki).run_cmd("whoami")
    assert handler.calls == []


def test_auth_turned_on_by_the_host_fact(make_wsman, wsman_pki):
    server, _ = _start(make_wsman, wsman_pki, DEMO_SERVICE)
    assert basic_session(server, wsman_pki).run_cmd("whoami").std_out == b"winrm-admin basic"
    assert cert_session(server, wsman_pki).run_cmd("whoami").std_out.endswith(b"certificate")
    assert any(c.lower().startswith("basic") for c in _challenges(server, wsman_pki))


@pytest.mark.parametrize("transport", ["ntlm", "basic"])
def test_local_admin_refused_without_token_filter_policy(make_wsman, wsman_pki, transport):
    server, handler = _start(make_wsman, wsman_pki, BASIC_ONLY, filtered={USER})
    url = server.http_url if transport == "ntlm" else server.https_url
    options = {} if transport == "ntlm" else {"ca_trust_path": str(wsman_pki.ca_file)}
    with pytest.raises(InvalidCredentialsError):
        winrm.Session(url, auth=(USER, PASSWORD), transport=transport, **options).run_cmd("whoami")
    assert handler.calls == []
    # The built-in Administrator is not filtered (KB 951016).
    out = winrm.Session(
        url, auth=("Administrator", "Builtin-Passw0rd"), transport=transport, **options
    ).run_cmd("whoami")
    assert out.std_out.startswith(b"Administrator")


def test_token_filter_policy_1_lets_the_local_admin_in(make_wsman, wsman_pki):
    config = dataclasses.replace(BASIC_ONLY, local_account_token_filter_policy=1)
    server, _ = _start(make_wsman, wsman_pki, config, filtered={USER})
    out = winrm.Session(server.http_url, auth=(USER, PASSWORD), transport="ntlm").run_cmd("whoami")
    assert out.std_out == b"winrm-admin ntlm"


# --- request limits ----------------------------------------------------------------------


def _send_stdin(protocol: Protocol, size: int) -> None:
    shell_id = protocol.open_shell()
    try:
        command_id = protocol.run_command(shell_id, "echo-stdin")
        protocol.send_command_input(shell_id, command_id, b"x" * size, end=True)
        protocol.get_command_output(shell_id, command_id)
    finally:
        protocol.close_shell(shell_id)


def test_request_over_max_envelope_size_is_http_413(make_wsman, wsman_pki):
    server, handler = _start(make_wsman, wsman_pki, BASIC_ONLY)
    protocol = winrm_protocol(
        server.https_url, transport="basic", ca_trust_path=str(wsman_pki.ca_file)
    )
    _send_stdin(protocol, 300_000)  # 400 KB of base64: under 500 KB
    with pytest.raises(WinRMTransportError) as info:
        _send_stdin(protocol, 400_000)  # 533 KB of base64
    assert info.value.code == 413
    assert [c.stdin for c in handler.calls] == [b"x" * 300_000]


def test_operation_timeout_above_max_timeout_is_lowered(make_wsman, wsman_pki):
    config = dataclasses.replace(BASIC_ONLY, max_timeout_ms=500)
    server, _ = _start(make_wsman, wsman_pki, config)
    protocol = winrm_protocol(
        server.https_url,
        transport="basic",
        ca_trust_path=str(wsman_pki.ca_file),
        operation_timeout_sec=20,
        read_timeout_sec=30,
    )
    shell_id = protocol.open_shell()
    command_id = protocol.run_command(shell_id, "sleep 5")
    start = time.monotonic()
    with pytest.raises(WinRMOperationTimeoutError):
        protocol._raw_get_command_output(shell_id, command_id)
    assert time.monotonic() - start < 3  # MaxTimeoutms, not the 20 s asked for
    protocol.close_shell(shell_id)


def test_shells_beyond_max_shells_per_user_get_quota_limit(make_wsman, wsman_pki):
    server, _ = _start(make_wsman, wsman_pki, BASIC_ONLY)  # the shipped 30
    protocol = winrm_protocol(
        server.https_url, transport="basic", ca_trust_path=str(wsman_pki.ca_file)
    )
    shells = [protocol.open_shell() for _ in range(30)]
    with pytest.raises(WSManFaultError) as info:
        protocol.open_shell()
    assert info.value.wsman_fault_code == 0x803381A5
    assert info.value.fault_subcode == "w:QuotaLimit"
    assert "maximum number of concurrent shells" in info.value.reason
    protocol.close_shell(shells.pop())
    shells.append(protocol.open_shell())  # a closed shell frees its place
    for shell_id in shells:
        protocol.close_shell(shell_id)


def test_concurrent_operations_beyond_the_quota_get_quota_limit(make_wsman, wsman_pki):
    config = dataclasses.replace(BASIC_ONLY, max_concurrent_operations_per_user=1)
    server, _ = _start(make_wsman, wsman_pki, config)

    def protocol() -> Protocol:
        return winrm_protocol(
            server.https_url,
            transport="basic",
            ca_trust_path=str(wsman_pki.ca_file),
            operation_timeout_sec=3,
            read_timeout_sec=10,
        )

    first = protocol()
    shell_id = first.open_shell()
    command_id = first.run_command(shell_id, "sleep 5")

    def receive() -> None:
        with contextlib.suppress(WinRMOperationTimeoutError):
            first._raw_get_command_output(shell_id, command_id)

    waiting = threading.Thread(target=receive, daemon=True)
    waiting.start()  # a Receive that waits up to 3 s: one operation in flight
    time.sleep(0.8)
    with pytest.raises(WSManFaultError) as info:
        protocol().open_shell()
    assert info.value.wsman_fault_code == 0x803381A6
    assert info.value.fault_subcode == "w:QuotaLimit"
    waiting.join(10)
    second = protocol().open_shell()  # the quota frees with the operation
    first.close_shell(second)
    first.close_shell(shell_id)


# --- the simulator's host: shipped, or after the demo's setup step -------------------------


def test_fresh_host_as_shipped_refuses_basic(tmp_path: Path) -> None:
    state = tmp_path / "sim"
    with running_simulator(state, winrm_setup=False) as endpoint:
        session = winrm.Session(
            endpoint.winrm_https_url,
            auth=(endpoint.username, endpoint.password),
            transport="basic",
            ca_trust_path=endpoint.ca_file,
        )
        with pytest.raises(InvalidCredentialsError):
            session.run_cmd("whoami")
        facts = json.loads((state / "host.json").read_text("utf-8"))
        assert facts["winrm"]["auth_basic"] is False
        # The person's fix, as on a real host: turn Basic on (read on every request).
        facts["winrm"]["auth_basic"] = True
        facts["winrm"]["local_account_token_filter_policy"] = 1
        (state / "host.json").write_text(json.dumps(facts), "utf-8")
        assert session.run_cmd("whoami").status_code == 9009  # reached cmd: not recognized


def test_demo_setup_step_turns_on_what_the_demo_uses(tmp_path: Path) -> None:
    state = tmp_path / "sim"
    with running_simulator(state):
        pass
    facts = json.loads((state / "host.json").read_text("utf-8"))
    assert facts["winrm"] == {
        **SHIPPED,
        "auth_basic": True,
        "auth_certificate": True,
        "local_account_token_filter_policy": 1,
    }
