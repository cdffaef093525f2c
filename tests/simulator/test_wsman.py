"""The simulator's WS-Management endpoint, driven by unmodified pywinrm."""

from __future__ import annotations

import base64
import contextlib
import json
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
import winrm
import xmltodict  # type: ignore[import-untyped]
from winrm.exceptions import InvalidCredentialsError, WinRMOperationTimeoutError, WSManFaultError
from winrm.protocol import Protocol

from iis_clientcert.host.contract import (
    POWERSHELL,
    command_arguments,
    encode_stdin,
    make_op,
    make_request,
    parse_result,
)
from iis_clientcert_simulator import audit
from iis_clientcert_simulator.executor import Executor
from iis_clientcert_simulator.powershell_errors import (
    decode_encoded_command,
    encode_command,
    not_recognized_cmd,
    not_recognized_powershell,
)
from iis_clientcert_simulator.testing import AgentRunner, agent_script
from iis_clientcert_simulator.wsman import (
    Credentials,
    FileFaults,
    WSManServer,
)
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

SECRET_STDIN = b"stdin-secret-7f3a9c\r\n"


@pytest.fixture
def handler() -> EchoHandler:
    return EchoHandler()


@pytest.fixture
def creds(wsman_pki: WSManPki) -> Credentials:
    return Credentials(
        users={USER: PASSWORD, "other": "Other-Passw0rd"},
        cert_users={wsman_pki.client.thumbprint: USER},
    )


@pytest.fixture
def server(make_wsman: WSManFactory, handler: EchoHandler, creds: Credentials) -> WSManServer:
    return make_wsman(handler, creds)


def assert_refused(handler: EchoHandler, *sessions: winrm.Session) -> None:
    """Each session's command is refused at logon: the handler never runs."""
    for session in sessions:
        with pytest.raises(InvalidCredentialsError):
            session.run_cmd("whoami")
    assert handler.calls == []


def run_with_stdin(
    protocol: Protocol, command: str, chunks: list[bytes]
) -> tuple[bytes, bytes, int]:
    shell_id = protocol.open_shell()
    try:
        command_id = protocol.run_command(shell_id, command)
        for i, chunk in enumerate(chunks):
            protocol.send_command_input(shell_id, command_id, chunk, end=i == len(chunks) - 1)
        result = protocol.get_command_output(shell_id, command_id)
        protocol.cleanup_command(shell_id, command_id)
    finally:
        protocol.close_shell(shell_id)
    return result


# --- authentication --------------------------------------------------------------------


def test_basic_over_https_runs_ps_and_gets_powershell_error(server, wsman_pki, handler):
    result = basic_session(server, wsman_pki).run_ps("Get-Date")
    assert result.status_code == 1
    # run_ps cleans CLIXML: what a user sees from a real host.
    assert result.std_err.decode().startswith(
        "Get-Date : The term 'Get-Date' is not recognized as the name of a cmdlet"
    )
    assert b"CommandNotFoundException" in result.std_err
    (call,) = handler.calls
    assert call.user == USER and call.auth == "basic"
    assert call.executable.lower().startswith("powershell -encodedcommand ")
    assert call.stdin == b""


def test_ssl_transport_is_basic_over_https(server, wsman_pki):
    result = basic_session(server, wsman_pki, transport="ssl").run_cmd("whoami")
    assert (result.status_code, result.std_out) == (0, f"{USER} basic".encode())


def test_user_name_is_case_insensitive(server, wsman_pki):
    result = basic_session(server, wsman_pki, user=USER.upper()).run_cmd("whoami")
    assert result.std_out == f"{USER} basic".encode()


def test_certificate_auth_maps_thumbprint_to_user(server, wsman_pki):
    result = cert_session(server, wsman_pki).run_cmd("whoami")
    assert (result.status_code, result.std_out) == (0, f"{USER} certificate".encode())


def test_unmapped_client_certificate_is_rejected(make_wsman, handler, wsman_pki):
    server = make_wsman(handler, Credentials(users={USER: PASSWORD}, cert_users={}))
    assert_refused(handler, cert_session(server, wsman_pki))


def test_mutual_header_without_certificate_is_rejected(server, wsman_pki):
    response = requests.post(
        server.https_url,
        data=b"<x/>",
        headers={
            "Authorization": "http://schemas.dmtf.org/wbem/wsman/1/wsman/secprofile/https/mutual"
        },
        verify=str(wsman_pki.ca_file),
        timeout=10,
    )
    assert response.status_code == 401


@pytest.mark.parametrize("transport", ["basic", "ssl"])
def test_wrong_password_over_https_is_invalid_credentials(server, wsman_pki, handler, transport):
    assert_refused(
        handler,
        basic_session(server, wsman_pki, password="wrong", transport=transport),
        basic_session(server, wsman_pki, user="nobody", transport=transport),
    )


def test_basic_over_http_is_refused(server, handler):
    assert_refused(
        handler, winrm.Session(server.http_url, auth=(USER, PASSWORD), transport="basic")
    )


def test_https_needs_the_ca_bundle(server, wsman_pki):
    untrusting = winrm.Session(
        server.https_url,
        auth=(USER, PASSWORD),
        transport="basic",
        server_cert_validation="validate",
        ca_trust_path=None,  # the system / certifi store, which does not know our CA
    )
    with pytest.raises(requests.exceptions.SSLError):
        untrusting.run_cmd("whoami")
    assert basic_session(server, wsman_pki).run_cmd("whoami").status_code == 0


# --- NTLM with message encryption ------------------------------------------------------


class CapturingProxy:
    """A TCP relay that records what the client sends, to inspect the bytes on the wire."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.sent = bytearray()
        self._lock = threading.Lock()
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        self._stop = False
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while not self._stop:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            upstream = socket.create_connection(("127.0.0.1", self.target_port))
            threading.Thread(target=self._pump, args=(client, upstream, True), daemon=True).start()
            threading.Thread(target=self._pump, args=(upstream, client, False), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket, record: bool) -> None:
        try:
            while data := src.recv(65536):
                if record:
                    with self._lock:
                        self.sent += data
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                with contextlib.suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)

    def close(self) -> None:
        self._stop = True
        self._listener.close()


@pytest.fixture
def proxy(server: WSManServer) -> Iterator[CapturingProxy]:
    port = int(server.http_url.rsplit(":", 1)[1].split("/")[0])
    relay = CapturingProxy(port)
    yield relay
    relay.close()


def test_ntlm_over_http_is_encrypted_on_the_wire(proxy, handler):
    protocol = winrm_protocol(f"http://127.0.0.1:{proxy.port}/wsman")
    out, err, code = run_with_stdin(protocol, "echo-stdin --marker-7c1e", [SECRET_STDIN])
    assert (out, err, code) == (SECRET_STDIN, b"", 0)
    (call,) = handler.calls
    assert (call.user, call.auth, call.executable) == (USER, "ntlm", "echo-stdin --marker-7c1e")

    wire = bytes(proxy.sent)
    assert b'multipart/encrypted;protocol="application/HTTP-SPNEGO-session-encrypted"' in wire
    assert b"Authorization: Negotiate " in wire
    for secret in (
        PASSWORD.encode(),
        PASSWORD.encode("utf-16-le"),
        b"--marker-7c1e",
        "--marker-7c1e".encode("utf-16-le"),
        SECRET_STDIN.strip(),
        base64.b64encode(SECRET_STDIN),
        b"http://schemas.microsoft.com/wbem/wsman/1/windows/shell",  # no SOAP in clear
    ):
        assert secret not in wire


def test_ntlm_session_run_ps(server, handler):
    session = winrm.Session(server.http_url, auth=(USER, PASSWORD), transport="ntlm")
    result = session.run_ps("Get-Date")
    assert result.status_code == 1
    assert b"'Get-Date' is not recognized" in result.std_err
    assert handler.calls[0].auth == "ntlm"


def test_ntlm_wrong_password_is_invalid_credentials(server, handler):
    with pytest.raises(InvalidCredentialsError):
        winrm_protocol(server.http_url, password="wrong").open_shell()
    assert_refused(
        handler, winrm.Session(server.http_url, auth=("nobody", PASSWORD), transport="ntlm")
    )


def test_ntlm_unencrypted_on_http_is_refused(server):
    protocol = winrm_protocol(server.http_url, message_encryption="never")
    with pytest.raises(winrm.exceptions.WinRMTransportError) as info:
        protocol.open_shell()
    assert info.value.code == 400


def test_ntlm_user_list_follows_credentials(server, creds):
    creds.users["late-user"] = "Late-Passw0rd"
    protocol = Protocol(
        server.http_url, transport="ntlm", username="late-user", password="Late-Passw0rd"
    )
    protocol.close_shell(protocol.open_shell())


def test_two_servers_keep_their_own_ntlm_users(make_wsman, handler, server):
    second = make_wsman(handler, Credentials(users={USER: "Second-Passw0rd"}))
    winrm_protocol(server.http_url).close_shell(winrm_protocol(server.http_url).open_shell())
    protocol = winrm_protocol(second.http_url, password="Second-Passw0rd")
    protocol.close_shell(protocol.open_shell())
    with pytest.raises(InvalidCredentialsError):
        winrm_protocol(second.http_url).open_shell()


def test_ntlm_over_https_without_message_encryption(server, wsman_pki, handler):
    protocol = winrm_protocol(server.https_url, ca_trust_path=str(wsman_pki.ca_file))
    assert run_with_stdin(protocol, "echo-stdin", [b"over tls"]) == (b"over tls", b"", 0)
    assert handler.calls[0].auth == "ntlm"


def test_ntlm_with_domain_dot_prefix(server):
    protocol = winrm_protocol(server.http_url, user=f".\\{USER}")
    protocol.close_shell(protocol.open_shell())


def test_basic_with_domain_dot_prefix(server, wsman_pki):
    result = basic_session(server, wsman_pki, user=f".\\{USER}").run_cmd("whoami")
    assert result.std_out == f"{USER} basic".encode()


def test_spnego_wrapped_negotiate_with_encryption(server):
    """Clients that wrap NTLM in SPNEGO (pypsrp, PowerShell) get in and encrypt too."""
    import struct

    import spnego

    client = spnego.client(
        USER,
        PASSWORD,
        hostname="127.0.0.1",
        service="http",
        protocol="negotiate",
        options=spnego.NegotiateOptions.use_negotiate,
    )
    http = requests.Session()

    def negotiate(token: bytes | None) -> requests.Response:
        header = {"Authorization": f"Negotiate {base64.b64encode(token or b'').decode()}"}
        return http.post(server.http_url, data=b"", headers=header, timeout=10)

    reply = negotiate(client.step())
    assert reply.status_code == 401
    reply = negotiate(client.step(base64.b64decode(reply.headers["WWW-Authenticate"].split()[1])))
    assert reply.status_code == 200
    client.step(base64.b64decode(reply.headers["WWW-Authenticate"].split()[1]))
    assert client.complete

    protocol = Protocol("http://127.0.0.1/wsman", username="u", password="p")
    req = {
        "env:Envelope": protocol.build_wsman_header(
            action="http://schemas.xmlsoap.org/ws/2004/09/transfer/Create",
            resource_uri="http://schemas.microsoft.com/wbem/wsman/1/windows/shell/cmd",
        )
    }
    req["env:Envelope"].setdefault("env:Body", {})["rsp:Shell"] = {"rsp:InputStreams": "stdin"}
    message = xmltodict.unparse(req).encode()
    wrapped = client.wrap_winrm(message)
    boundary = b"--Encrypted Boundary"
    body = (
        boundary + b"\r\n\tContent-Type: application/HTTP-SPNEGO-session-encrypted\r\n"
        b"\tOriginalContent: type=application/soap+xml;charset=UTF-8;Length="
        + str(len(message)).encode()
        + b"\r\n"
        + boundary
        + b"\r\n\tContent-Type: application/octet-stream\r\n"
        + struct.pack("<i", len(wrapped.header))
        + wrapped.header
        + wrapped.data
        + boundary
        + b"--\r\n"
    )
    content_type = (
        'multipart/encrypted;protocol="application/HTTP-SPNEGO-session-encrypted";'
        'boundary="Encrypted Boundary"'
    )
    reply = http.post(
        server.http_url, data=body, headers={"Content-Type": content_type}, timeout=10
    )
    assert reply.status_code == 200
    assert 'protocol="application/HTTP-SPNEGO-session-encrypted"' in reply.headers["Content-Type"]
    payload = reply.content.split(b"\tContent-Type: application/octet-stream\r\n")[1]
    (sig_len,) = struct.unpack("<i", payload[:4])
    sealed = payload[4 + sig_len : payload.rindex(boundary + b"--")]
    plain = client.unwrap_winrm(payload[4 : 4 + sig_len], sealed)
    assert b'Name="ShellId"' in plain


def test_server_restarts(server, wsman_pki):
    server.stop()
    server.start()
    assert basic_session(server, wsman_pki).run_cmd("whoami").status_code == 0
    winrm_protocol(server.http_url).close_shell(winrm_protocol(server.http_url).open_shell())


# --- the shell protocol ----------------------------------------------------------------


def test_stdin_in_several_chunks_is_concatenated(server, wsman_pki, handler):
    protocol = basic_session(server, wsman_pki).protocol
    chunks = [b"first ", b"second ", b"third"]
    out, _, code = run_with_stdin(protocol, "echo-stdin", chunks)
    assert (out, code) == (b"first second third", 0)
    assert handler.calls[0].stdin == b"first second third"


def test_arguments_are_passed_in_order(server, wsman_pki, handler):
    protocol = basic_session(server, wsman_pki).protocol
    shell_id = protocol.open_shell()
    command_id = protocol.run_command(shell_id, "whoami", ["/all", "/fo", "list"])
    protocol.get_command_output(shell_id, command_id)
    protocol.cleanup_command(shell_id, command_id)
    protocol.close_shell(shell_id)
    # pywinrm joins its arguments into one rsp:Arguments element.
    assert handler.calls[0].arguments == ["/all /fo list"]
    assert handler.calls[0].shell_id == shell_id
    assert handler.calls[0].command_id == command_id


def test_cmd_style_unknown_command(server, wsman_pki):
    result = basic_session(server, wsman_pki).run_cmd("nosuchtool", ["/x"])
    assert result.status_code == 9009
    assert result.std_err == (
        b"'nosuchtool' is not recognized as an internal or external command,\r\n"
        b"operable program or batch file.\r\n"
    )


class CountingProtocol(Protocol):
    receives = 0

    def get_command_output_raw(self, shell_id, command_id):
        type(self).receives += 1
        return super().get_command_output_raw(shell_id, command_id)


@pytest.mark.parametrize("transport", ["basic", "ntlm"])
def test_large_stdout_is_split_across_receives(server, wsman_pki, transport):
    size = 700 * 1024
    if transport == "basic":
        protocol = winrm_protocol(
            server.https_url,
            transport="basic",
            cls=CountingProtocol,
            ca_trust_path=str(wsman_pki.ca_file),
        )
    else:
        protocol = winrm_protocol(server.http_url, cls=CountingProtocol)
    CountingProtocol.receives = 0
    shell_id = protocol.open_shell()
    command_id = protocol.run_command(shell_id, f"big {size}")
    out, err, code = protocol.get_command_output(shell_id, command_id)
    protocol.cleanup_command(shell_id, command_id)
    protocol.close_shell(shell_id)
    pattern = bytes(range(256))
    assert out == (pattern * (size // 256 + 1))[:size]
    assert (err, code) == (b"err-tail", 3)
    # 150 KB envelopes hold about 110 KB of output each.
    assert CountingProtocol.receives >= size // (150 * 1024 * 3 // 4)


def test_unknown_shell_id_is_a_wsman_fault(server, wsman_pki):
    protocol = basic_session(server, wsman_pki).protocol
    with pytest.raises(WSManFaultError) as info:
        protocol.run_command(str(uuid.uuid4()).upper(), "whoami")
    assert info.value.wsman_fault_code == 2150858843
    assert info.value.code == 500


def test_shell_of_another_user_is_not_found(server, wsman_pki):
    owner = basic_session(server, wsman_pki).protocol
    shell_id = owner.open_shell()
    intruder = basic_session(server, wsman_pki, user="other", password="Other-Passw0rd").protocol
    with pytest.raises(WSManFaultError) as info:
        intruder.run_command(shell_id, "whoami")
    assert info.value.wsman_fault_code == 2150858843
    owner.close_shell(shell_id)


def test_deleted_shell_is_gone(server, wsman_pki):
    protocol = basic_session(server, wsman_pki).protocol
    shell_id = protocol.open_shell()
    protocol.close_shell(shell_id, close_session=False)
    with pytest.raises(WSManFaultError) as info:
        protocol.close_shell(shell_id)
    assert info.value.wsman_fault_code == 2150858843


def transfer_request(
    protocol: Protocol, verb: str, body: dict[str, object] | None = None
) -> tuple[uuid.UUID, str]:
    """A hand-made WS-Transfer request to the cmd shell resource, and its message id."""
    message_id = uuid.uuid4()
    req = {
        "env:Envelope": protocol.build_wsman_header(
            action=f"http://schemas.xmlsoap.org/ws/2004/09/transfer/{verb}",
            resource_uri="http://schemas.microsoft.com/wbem/wsman/1/windows/shell/cmd",
            message_id=message_id,
        )
    }
    req["env:Envelope"].setdefault("env:Body", {}).update(body or {})
    return message_id, xmltodict.unparse(req)


def test_unknown_action_is_a_soap_fault(server, wsman_pki):
    protocol = basic_session(server, wsman_pki).protocol
    message_id, request = transfer_request(protocol, "Get")
    with pytest.raises(WSManFaultError) as info:
        protocol.send_message(request)
    fault = info.value
    assert fault.code == 500
    assert fault.wsman_fault_code == 2150858753
    assert fault.fault_subcode == "a:ActionNotSupported"
    assert f"uuid:{message_id}" in fault.response  # RelatesTo, as on every response


def test_responses_relate_to_the_request(server, wsman_pki):
    protocol = basic_session(server, wsman_pki).protocol
    shell = {"rsp:InputStreams": "stdin", "rsp:OutputStreams": "stdout stderr"}
    message_id, request = transfer_request(protocol, "Create", {"rsp:Shell": shell})
    reply = xmltodict.parse(protocol.send_message(request))
    header = reply["s:Envelope"]["s:Header"]
    assert header["a:RelatesTo"] == f"uuid:{message_id}"
    assert header["a:Action"].endswith("/transfer/CreateResponse")


def test_handler_failure_is_a_fault_without_its_message(server, wsman_pki, caplog):
    protocol = basic_session(server, wsman_pki).protocol
    shell_id = protocol.open_shell()
    command_id = protocol.run_command(shell_id, "boom")
    protocol.send_command_input(shell_id, command_id, SECRET_STDIN, end=True)
    with pytest.raises(WSManFaultError) as info:
        protocol.get_command_output(shell_id, command_id)
    assert "RuntimeError" in info.value.reason
    assert "secret" not in info.value.response
    assert "RuntimeError" in caplog.text
    assert "secret" not in caplog.text
    protocol.close_shell(shell_id)


def test_slow_command_is_retried_past_the_operation_timeout(server, wsman_pki, handler):
    protocol = winrm_protocol(
        server.https_url,
        transport="basic",
        ca_trust_path=str(wsman_pki.ca_file),
        operation_timeout_sec=1,
        read_timeout_sec=5,
    )
    shell_id = protocol.open_shell()
    command_id = protocol.run_command(shell_id, "sleep 2.5")
    assert protocol.get_command_output(shell_id, command_id) == (b"slept", b"", 0)
    protocol.close_shell(shell_id)
    assert len(handler.calls) == 1  # run once, however many Receives


# --- stdin modes (MS-WSMV 3.1.4.11 WINRS_CONSOLEMODE_STDIN / WINRS_SKIP_CMD_SHELL) --------


def test_command_options_reach_the_handler(server, wsman_pki, handler):
    protocol = basic_session(server, wsman_pki).protocol
    shell_id = protocol.open_shell()
    for command_id in (
        protocol.run_command(shell_id, "whoami"),
        protocol.run_command(shell_id, "whoami", console_mode_stdin=False, skip_cmd_shell=True),
    ):
        protocol.get_command_output(shell_id, command_id)
        protocol.cleanup_command(shell_id, command_id)
    protocol.close_shell(shell_id)
    # pywinrm's defaults are console mode through cmd.exe.
    assert [(c.console_mode_stdin, c.skip_cmd_shell) for c in handler.calls] == [
        (True, False),
        (False, True),
    ]


def _timed_protocol(server: WSManServer, pki: WSManPki) -> Protocol:
    return Protocol(
        server.https_url,
        transport="basic",
        username=USER,
        password=PASSWORD,
        ca_trust_path=str(pki.ca_file),
        operation_timeout_sec=1,
        read_timeout_sec=3,
    )


def test_agent_in_console_mode_never_sees_the_end_of_its_input(
    make_wsman, creds, wsman_pki, tmp_path
):
    # What Windows does with pywinrm's default console_mode_stdin=True: the bootstrap's
    # ReadToEnd() never returns, so the agent never runs and every Receive times out.
    state = tmp_path / "host"
    server = make_wsman(Executor(state), creds)
    protocol = _timed_protocol(server, wsman_pki)
    stdin = encode_stdin(
        agent_script(), make_request([make_op("user.set", name="console1", password="Pw-12345!a")])
    )
    shell_id = protocol.open_shell()
    command_id = protocol.run_command(shell_id, POWERSHELL, command_arguments())
    protocol.send_command_input(shell_id, command_id, stdin, end=True)
    started = time.monotonic()
    for _ in range(2):
        with pytest.raises(WinRMOperationTimeoutError):
            protocol.get_command_output_raw(shell_id, command_id)
    assert time.monotonic() - started < 10
    protocol.cleanup_command(shell_id, command_id)
    protocol.close_shell(shell_id)
    line = audit.read(state / "audit.log")[-1]
    assert (line["result"], line["ops"]) == ("StdinConsoleMode", [])
    assert AgentRunner(state).one("user.get", name="console1")["exists"] is False


def test_agent_in_pipe_mode_runs(make_wsman, creds, wsman_pki, tmp_path):
    server = make_wsman(Executor(tmp_path / "host"), creds)
    protocol = _timed_protocol(server, wsman_pki)
    shell_id = protocol.open_shell()
    command_id = protocol.run_command(
        shell_id, POWERSHELL, command_arguments(), console_mode_stdin=False, skip_cmd_shell=True
    )
    stdin = encode_stdin(agent_script(), make_request([make_op("host.facts")]))
    protocol.send_command_input(shell_id, command_id, stdin, end=True)
    out, _, code = protocol.get_command_output(shell_id, command_id)
    protocol.close_shell(shell_id)
    assert code == 0 and parse_result(out)["results"][0]["computer_name"] == "SIMIIS01"


def test_concurrent_clients(server, wsman_pki, handler):
    errors: list[BaseException] = []

    def work(i: int) -> None:
        try:
            if i % 2:
                protocol = winrm_protocol(server.http_url)
            else:
                protocol = basic_session(server, wsman_pki).protocol
            payload = f"client-{i}".encode() * 100
            out, _, code = run_with_stdin(protocol, "echo-stdin", [payload])
            assert (out, code) == (payload, 0)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(12)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert errors == []
    assert len(handler.calls) == 12


# --- faults ----------------------------------------------------------------------------


@pytest.fixture
def faults_file(tmp_path: Path) -> Path:
    return tmp_path / "faults.json"


@pytest.mark.parametrize("when", ["before_run", "after_run"])
def test_drop_fault_breaks_the_kth_command_once(
    make_wsman, handler, creds, wsman_pki, faults_file, when
):
    faults = FileFaults(faults_file)
    server = make_wsman(handler, creds, faults=faults)
    session = basic_session(server, wsman_pki)
    assert session.run_cmd("whoami").status_code == 0  # before the fault: not counted
    faults.set(drop={"command": 2, "when": when}, latency_ms=0)
    assert session.run_cmd("whoami").status_code == 0  # 1st since the fault
    calls_before = len(handler.calls)
    with pytest.raises(requests.exceptions.ConnectionError):
        basic_session(server, wsman_pki).run_cmd("whoami")  # 2nd: dropped
    assert len(handler.calls) == calls_before + (1 if when == "after_run" else 0)
    assert json.loads(faults_file.read_text()) == {"latency_ms": 0}  # one-shot
    assert basic_session(server, wsman_pki).run_cmd("whoami").status_code == 0


def test_drop_fault_over_ntlm(make_wsman, handler, creds, faults_file):
    faults = FileFaults(faults_file)
    server = make_wsman(handler, creds, faults=faults)
    faults.set(drop={"command": 1, "when": "before_run"})
    with pytest.raises(requests.exceptions.ConnectionError):
        winrm.Session(server.http_url, auth=(USER, PASSWORD), transport="ntlm").run_cmd("whoami")
    result = winrm.Session(server.http_url, auth=(USER, PASSWORD), transport="ntlm").run_cmd(
        "whoami"
    )
    assert result.std_out == f"{USER} ntlm".encode()


def test_latency_fault_slows_every_request(make_wsman, handler, creds, wsman_pki, faults_file):
    faults = FileFaults(faults_file)
    server = make_wsman(handler, creds, faults=faults)
    session = basic_session(server, wsman_pki)
    faults.set(latency_ms=200)
    started = time.monotonic()
    session.run_cmd("whoami")  # Create, Command, Receive, Signal, Delete
    assert time.monotonic() - started >= 5 * 0.2


def test_constructor_latency_default(make_wsman, handler, creds, wsman_pki):
    server = make_wsman(handler, creds, latency_ms=150)
    started = time.monotonic()
    basic_session(server, wsman_pki).run_cmd("whoami")
    assert time.monotonic() - started >= 5 * 0.15


def test_bad_faults_file_is_ignored(make_wsman, handler, creds, wsman_pki, faults_file):
    faults_file.write_text("{not json")
    server = make_wsman(handler, creds, faults=FileFaults(faults_file))
    assert basic_session(server, wsman_pki).run_cmd("whoami").status_code == 0


# --- PowerShell error helpers ----------------------------------------------------------


def test_encoded_command_round_trip():
    script = "Get-Item 'C:\\inetpub' | Select-Object -Property Name # ü"
    assert decode_encoded_command(encode_command(script)) == script
    with pytest.raises(ValueError):
        decode_encoded_command("not base64!")
    with pytest.raises(ValueError):
        decode_encoded_command(base64.b64encode(b"abc").decode())


def test_not_recognized_powershell_is_clixml_that_pywinrm_cleans():
    outcome = not_recognized_powershell("Get-Foo_x0041_<&>")
    assert outcome.exit_code == 1 and outcome.stdout == b""
    assert outcome.stderr.startswith(
        b'#< CLIXML\r\n<Objs Version="1.1.0.1" xmlns="http://schemas.microsoft.com/powershell/2004/04">'
        b'<S S="Error">'
    )
    cleaned = winrm.Session("http://127.0.0.1", auth=("u", "p"))._clean_error_msg(outcome.stderr)
    text = cleaned.decode()
    assert text.startswith(
        "Get-Foo_x005F_x0041_<&> : The term 'Get-Foo_x005F_x0041_<&>' is not recognized"
    )
    assert "Check the spelling of the name" in text
    assert "FullyQualifiedErrorId : CommandNotFoundException" in text


def test_not_recognized_cmd():
    outcome = not_recognized_cmd("frob")
    assert outcome.exit_code == 9009
    assert outcome.stderr.startswith(b"'frob' is not recognized as an internal or external command")
