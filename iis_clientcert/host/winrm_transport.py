"""WinRM for the agent, with pywinrm's ``Protocol``: sessions, error mapping, retries and
the one-shot command.

An agent request normally goes to the host's persistent agent
(:mod:`iis_clientcert.host.agent_session`: one Send, one Receive per call). The one-shot
command here is the fallback when the host refuses to keep a shell (MaxShellsPerUser):
Create shell -> Command (the constant bootstrap, stdin in pipe mode, no cmd.exe) -> Send
(the agent frame and one request frame, the last part with End) -> Receive until Done ->
Signal terminate -> Delete shell. Nothing variable is ever on the command line; the request
(and so every secret) travels only as stdin data.

Retry policy (both ways): a failure while opening the shell or starting the command is
retried with backoff, because nothing can run before the request arrives on stdin. Once
``Send`` may have delivered the request, a failure is raised with
``command_may_have_run=True`` and never repeated blindly; only read-only batches (every op
``writes=False`` in the contract) are repeated, since running them twice changes nothing.
A request the host never received (its persistent agent's shell was gone when the Send
came: idle timeout, WinRM restarted) goes to a new session at once.

Sessions live in a module-level pool keyed by endpoint, user, transport and a digest of
the secrets, never in a pickled provider. Each concurrent call gets its own ``Protocol``
(pywinrm's Protocol and its requests Session are not thread-safe); idle ones are reused so
a provider process keeps its TCP/TLS connection (and NTLM context) per endpoint.
"""

from __future__ import annotations

import atexit
import logging
import os
import shutil
import tempfile
import threading
import time
import warnings
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, Final, Literal, TypeVar

import requests
import urllib3.exceptions
import winrm
import winrm.exceptions
from winrm.protocol import Protocol

from iis_clientcert.errors import (
    AgentProtocolError,
    AuthenticationError,
    ContractError,
    HostError,
    HostTimeoutError,
    HostUnreachableError,
    IisClientCertError,
    TlsVerificationError,
    TransportError,
    WSManFaultError,
)
from iis_clientcert.host import contract
from iis_clientcert.host.connection import Connection

log = logging.getLogger(__name__)

# Raw stdin bytes per Send. Base64 makes 128 KiB of it, which with the SOAP envelope stays
# under the 150 KiB MaxEnvelopeSize that older hosts (and pywinrm's own header) announce.
STDIN_CHUNK: Final = 96 * 1024
# Pauses before the 2nd, 3rd and 4th try of a command that never ran.
RETRY_DELAYS: tuple[float, ...] = (0.5, 1.0, 2.0)
# Idle Protocols kept per endpoint: Pulumi's provider server runs at most 4 calls at once.
MAX_IDLE: Final = 4
# WINRS_CODEPAGE: UTF-8, so a console-encoded stdout/stderr keeps non-ASCII text intact.
CODEPAGE_UTF8: Final = 65001
# stderr shown in an AgentProtocolError.
STDERR_EXCERPT: Final = 1500
# A command's output is awaited at least this long (and 5 read timeouts): slow ops answer
# Receive with operation timeouts meanwhile.
MIN_RECEIVE_SECONDS: float = 300.0
# WS-Management faults (wsmerror.h / winerror.h) the transport acts on.
FAULT_QUOTA_MAX_SHELLS: Final = 0x803381A5  # ERROR_WSMAN_QUOTA_MAX_SHELLS (MaxShellsPerUser)
FAULT_SHELL_NOT_FOUND: Final = 0x8033805B  # ERROR_WINRS_SHELL_NOT_FOUND
FAULT_PIPE_CLOSING: Final = 0x800700E8  # ERROR_NO_DATA: the process's stdin is closed

_sleep: Callable[[float], None] = time.sleep  # replaced by tests
T = TypeVar("T")


@dataclass(frozen=True)
class CommandOutput:
    stdout: bytes
    stderr: bytes
    exit_code: int


Stage = Literal["open_shell", "run_command", "send", "receive"]


class _MappedError(IisClientCertError):
    """A mapped error plus whether trying again can help."""

    def __init__(self, error: HostError, retryable: bool) -> None:
        super().__init__(str(error))
        self.error = error
        self.retryable = retryable


# --- the pool ------------------------------------------------------------------------


def _write_private(directory: str, name: str, text: str) -> str:
    path = os.path.join(directory, name)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(text)
    return path


class _Endpoint:
    """pywinrm Protocols and the credential files they read, for one connection."""

    def __init__(self, connection: Connection) -> None:
        self.connection = connection
        self._lock = threading.Lock()
        self._idle: list[Protocol] = []
        self._dir: str | None = None
        self._ca_path: str | None = None
        self._cert_path: str | None = None
        self._key_path: str | None = None

    def _files(self) -> None:
        # pywinrm and requests read the CA bundle and client certificate from files: keep
        # them in a private directory (0700, files 0600) that lives as long as the pool.
        if self._dir is not None:
            return
        conn = self.connection
        if conn.ca_bundle is None and conn.client_cert_pem is None:
            return
        self._dir = tempfile.mkdtemp(prefix="iis-clientcert-")
        os.chmod(self._dir, 0o700)
        if conn.ca_bundle is not None:
            self._ca_path = _write_private(self._dir, "ca.pem", conn.ca_bundle)
        if conn.transport == "certificate" and conn.client_cert_pem and conn.client_key_pem:
            self._cert_path = _write_private(self._dir, "client.pem", conn.client_cert_pem)
            self._key_path = _write_private(self._dir, "client.key", conn.client_key_pem)

    def _new_protocol(self) -> Protocol:
        conn = self.connection
        self._files()
        kwargs: dict[str, Any] = {
            "endpoint": conn.endpoint,
            "server_cert_validation": "validate" if conn.verify_tls else "ignore",
            # None: no REQUESTS_CA_BUNDLE from the environment; the bundle given or the
            # default trust store, nothing implicit.
            "ca_trust_path": self._ca_path,
            # WinRM endpoints are reached directly: an environment proxy would see Basic
            # credentials and break NTLM's connection-bound handshake.
            "proxy": None,
            "read_timeout_sec": max(2, int(conn.read_timeout + 0.999)),
            "operation_timeout_sec": max(1, int(conn.operation_timeout)),
            "message_encryption": "auto",
        }
        if conn.transport == "certificate":
            kwargs.update(
                transport="certificate", cert_pem=self._cert_path, cert_key_pem=self._key_path
            )
        elif conn.transport == "basic":
            kwargs.update(transport="basic", username=conn.username, password=conn.password)
        else:
            # ntlm/kerberos/credssp: "auto" encrypts messages over http, relies on TLS on https.
            kwargs.update(transport=conn.transport, username=conn.username, password=conn.password)
        protocol = Protocol(**kwargs)
        # pywinrm passes one number as requests' timeout; a (connect, read) pair lets an
        # unreachable host fail after connect_timeout rather than read_timeout.
        protocol.transport.read_timeout_sec = (conn.connect_timeout, conn.read_timeout)  # type: ignore[assignment]
        return protocol

    def acquire(self) -> Protocol:
        with self._lock:
            if self._idle:
                return self._idle.pop()
            return self._new_protocol()

    def release(self, protocol: Protocol, reusable: bool) -> None:
        with self._lock:
            if reusable and len(self._idle) < MAX_IDLE and self._dir_alive():
                self._idle.append(protocol)
                return
        _close_protocol(protocol)

    def _dir_alive(self) -> bool:
        return self._dir is None or os.path.isdir(self._dir)

    def close(self) -> None:
        with self._lock:
            idle, self._idle = self._idle, []
            directory, self._dir = self._dir, None
            self._ca_path = self._cert_path = self._key_path = None
        for protocol in idle:
            _close_protocol(protocol)
        if directory is not None:
            shutil.rmtree(directory, ignore_errors=True)


def _close_protocol(protocol: Protocol) -> None:
    try:
        protocol.transport.close_session()
    except Exception:  # closing a broken session must not mask the real error
        log.debug("closing a WinRM session failed", exc_info=True)


_POOL: dict[tuple[str, str, str, str], _Endpoint] = {}
_POOL_LOCK = threading.Lock()
# Closed before the pool (the agent sessions, which use its Protocols).
_BEFORE_CLOSE: list[Callable[[], None]] = []


def endpoint_key(connection: Connection) -> tuple[str, str, str, str]:
    """What makes two connections share a session: endpoint, user, transport, secrets."""
    return (
        connection.endpoint,
        connection.username or "",
        connection.transport,
        connection.secrets_fingerprint(),
    )


def before_close(hook: Callable[[], None]) -> None:
    """Run ``hook`` first whenever the pool closes (and at exit)."""
    _BEFORE_CLOSE.append(hook)


def _endpoint_for(connection: Connection) -> _Endpoint:
    key = endpoint_key(connection)
    with _POOL_LOCK:
        entry = _POOL.get(key)
        if entry is None:
            entry = _POOL[key] = _Endpoint(connection)
        return entry


def close_pool() -> None:
    """Close every agent session and pooled connection, and delete the credential files
    (also run at exit)."""
    for hook in list(_BEFORE_CLOSE):
        hook()
    with _POOL_LOCK:
        entries = list(_POOL.values())
        _POOL.clear()
    for entry in entries:
        entry.close()


atexit.register(close_pool)


# --- error mapping -------------------------------------------------------------------


def _root_reason(exc: BaseException) -> BaseException:
    """The urllib3/socket error under a requests exception."""
    seen: BaseException = exc
    for _ in range(6):
        inner: Any = None
        if seen.args and isinstance(seen.args[0], BaseException):
            inner = seen.args[0]
        reason = getattr(seen, "reason", None)
        if isinstance(reason, BaseException):
            inner = reason
        if inner is None or inner is seen:
            break
        seen = inner
    return seen


def _map_error(
    exc: BaseException, conn: Connection, stage: Stage, may_have_run: bool
) -> _MappedError:
    host = conn.host
    where = f"during {stage.replace('_', ' ')}"
    if isinstance(exc, winrm.exceptions.InvalidCredentialsError):
        if conn.transport == "certificate":
            text = (
                "the host rejected the client certificate: map it to a local administrator "
                "(WSMan:\\localhost\\ClientCertificate) and trust its issuer"
            )
        else:
            text = (
                f"the host rejected the credentials of {conn.username!r} "
                f"({conn.transport} transport): check user name and password, and that "
                f"{conn.transport} authentication is enabled in the WinRM service"
            )
        return _MappedError(AuthenticationError(host, text), retryable=False)
    if isinstance(exc, winrm.exceptions.WSManFaultError):
        code = exc.wsman_fault_code
        fault_reason = f"{exc.reason} {where}"
        if code is not None and code & 0xFFFFFFFF == FAULT_QUOTA_MAX_SHELLS:
            # Refused at Create: nothing ran. Shells come and go (ours, other tools'), so a
            # later try may get one.
            fault_reason += (
                ": the account has as many WinRM shells open as the host allows "
                "(MaxShellsPerUser, 30 by default): close idle sessions, or raise it with "
                '`winrm set winrm/config/winrs @{MaxShellsPerUser="50"}`'
            )
            return _MappedError(
                WSManFaultError(host, code, fault_reason, command_may_have_run=False),
                retryable=True,
            )
        if code is not None and code & 0xFFFFFFFF in (0x80070002, 2):
            # WinRS could not start the program (CreateProcess): nothing ran.
            program = contract.executable(conn.shell)
            fault_reason += (
                f": {program} was not found on the host (connection.shell = {conn.shell!r}); "
                "install PowerShell 7 there, or use shell: powershell"
            )
            may_have_run = False
        return _MappedError(
            WSManFaultError(host, code, fault_reason, command_may_have_run=may_have_run),
            retryable=False,
        )
    if isinstance(exc, winrm.exceptions.WinRMTransportError):
        status = exc.code
        return _MappedError(
            TransportError(
                host,
                f"the WinRM service answered HTTP {status} {where}",
                command_may_have_run=may_have_run,
            ),
            retryable=status >= 500,
        )
    if isinstance(exc, winrm.exceptions.WinRMOperationTimeoutError):
        return _MappedError(
            HostTimeoutError(
                host,
                f"WS-Management operation timeout {where}",
                command_may_have_run=may_have_run,
            ),
            retryable=True,
        )
    if isinstance(exc, requests.exceptions.SSLError):
        text = str(_root_reason(exc))
        lowered = text.lower()
        if "certificate verify failed" in lowered or "certificate_verify_failed" in lowered:
            if (
                "hostname mismatch" in lowered
                or "doesn't match" in lowered
                or ("ip address mismatch" in lowered)
            ):
                problem = (
                    f"the host's HTTPS certificate is not issued for the name {host!r}: use "
                    "the name the certificate carries in connection.endpoint"
                )
            else:
                problem = (
                    "the host's HTTPS certificate could not be verified: give "
                    "connection.ca_bundle (PEM of the CA that issued the WinRM listener's "
                    "certificate), or check that the certificate is for this host name"
                )
            return _MappedError(
                TlsVerificationError(host, f"{problem} ({text})", command_may_have_run=False),
                retryable=False,
            )
        hint = ""
        if conn.transport == "certificate":
            hint = "; the host may have refused the client certificate"
        return _MappedError(
            TransportError(
                host, f"TLS handshake failed {where}: {text}{hint}", command_may_have_run=False
            ),
            retryable=False,
        )
    if isinstance(exc, requests.exceptions.ConnectTimeout):
        return _MappedError(
            HostUnreachableError(
                host,
                f"no connection to {conn.endpoint} within {conn.connect_timeout:g} s "
                "(host down, or a firewall drops WinRM)",
                command_may_have_run=False,
            ),
            retryable=True,
        )
    if isinstance(exc, requests.exceptions.ReadTimeout):
        return _MappedError(
            HostTimeoutError(
                host,
                f"no answer within read_timeout {conn.read_timeout:g} s {where}",
                command_may_have_run=may_have_run,
            ),
            retryable=True,
        )
    if isinstance(exc, requests.exceptions.ConnectionError):
        reason = _root_reason(exc)
        if isinstance(reason, urllib3.exceptions.NameResolutionError):
            return _MappedError(
                HostUnreachableError(host, f"cannot resolve the host name {host!r}"),
                retryable=True,
            )
        if isinstance(reason, urllib3.exceptions.NewConnectionError | ConnectionRefusedError):
            return _MappedError(
                HostUnreachableError(
                    host,
                    f"cannot connect to {conn.endpoint}: {reason} (is the WinRM listener "
                    "on this port, and the firewall open?)",
                ),
                retryable=True,
            )
        return _MappedError(
            TransportError(
                host, f"the connection broke {where}: {reason}", command_may_have_run=may_have_run
            ),
            retryable=True,
        )
    if isinstance(exc, requests.exceptions.RequestException | OSError):
        return _MappedError(
            TransportError(
                host, f"{type(exc).__name__} {where}: {exc}", command_may_have_run=may_have_run
            ),
            retryable=True,
        )
    if isinstance(exc, winrm.exceptions.WinRMError):
        return _MappedError(
            TransportError(host, f"WinRM error {where}: {exc}", command_may_have_run=may_have_run),
            retryable=False,
        )
    # pywinrm parses responses with next()/assert/ElementTree: a malformed answer surfaces
    # as StopIteration, AssertionError or ParseError.
    return _MappedError(
        TransportError(
            host,
            f"unreadable WS-Management response {where} ({type(exc).__name__})",
            command_may_have_run=may_have_run,
        ),
        retryable=False,
    )


# --- one command ---------------------------------------------------------------------


def _chunks(payload: bytes) -> list[bytes]:
    if not payload:
        return [b""]
    return [payload[i : i + STDIN_CHUNK] for i in range(0, len(payload), STDIN_CHUNK)]


def _receive(protocol: Protocol, shell_id: str, command_id: str, deadline: float) -> CommandOutput:
    stdout: list[bytes] = []
    stderr: list[bytes] = []
    while True:
        try:
            out, err, code, done = protocol.get_command_output_raw(shell_id, command_id)
        except winrm.exceptions.WinRMOperationTimeoutError:
            # No output within the operation timeout: normal while a slow op runs.
            if time.monotonic() > deadline:
                raise
            continue
        stdout.append(out)
        stderr.append(err)
        if done:
            return CommandOutput(b"".join(stdout), b"".join(stderr), code)
        if time.monotonic() > deadline:
            raise winrm.exceptions.WinRMOperationTimeoutError()


def _tidy(protocol: Protocol, shell_id: str | None, command_id: str | None) -> None:
    """Best effort: stop the command and delete the shell; errors here change nothing."""
    try:
        if shell_id is not None and command_id is not None:
            protocol.cleanup_command(shell_id, command_id)
    except Exception:
        log.debug("signal terminate failed", exc_info=True)
    try:
        if shell_id is not None:
            protocol.close_shell(shell_id, close_session=False)
    except Exception:
        log.debug("deleting the shell failed", exc_info=True)


def _run_once(conn: Connection, payload: bytes) -> CommandOutput:
    endpoint = _endpoint_for(conn)
    protocol = endpoint.acquire()
    reusable = False
    shell_id: str | None = None
    command_id: str | None = None
    stage: Stage = "open_shell"
    try:
        try:
            shell_id = protocol.open_shell(codepage=CODEPAGE_UTF8, noprofile=True)
            stage = "run_command"
            # Pipe-mode stdin: the agent and its request arrive on stdin and the bootstrap
            # reads it to the end, which console-mode stdin (pywinrm's default) never has
            # (MS-WSMV 3.1.4.11 WINRS_CONSOLEMODE_STDIN; Ansible's winrm plugin sends
            # console_mode_stdin=False whenever it feeds stdin). No cmd.exe: WinRS starts
            # PowerShell itself, so no cmd parsing and no 8191-character line limit.
            command_id = protocol.run_command(
                shell_id,
                contract.executable(conn.shell),
                contract.command_arguments(),
                console_mode_stdin=False,
                skip_cmd_shell=True,
            )
        except Exception as exc:
            _tidy(protocol, shell_id, None)
            raise _map_error(exc, conn, stage, may_have_run=False) from None
        try:
            stage = "send"
            parts = _chunks(payload)
            for index, part in enumerate(parts):
                protocol.send_command_input(shell_id, command_id, part, end=index == len(parts) - 1)
            stage = "receive"
            deadline = time.monotonic() + max(MIN_RECEIVE_SECONDS, 5 * conn.read_timeout)
            output = _receive(protocol, shell_id, command_id, deadline)
        except Exception as exc:
            _tidy(protocol, shell_id, command_id)
            raise _map_error(exc, conn, stage, may_have_run=True) from None
        # The result is in hand: failing to tidy up must not turn it into an error.
        _tidy(protocol, shell_id, command_id)
        reusable = True
        return output
    finally:
        endpoint.release(protocol, reusable)


def with_retries(conn: Connection, attempt: Callable[[], T], *, read_only: bool) -> T:
    """Run ``attempt`` under the retry policy (see the module docstring)."""
    tries = 0
    while True:
        try:
            return attempt()
        except _MappedError as failure:
            error = failure.error
            may_have_run = bool(getattr(error, "command_may_have_run", False))
            # Read-only batches are safe to repeat even after they may have run.
            can_repeat = failure.retryable and (not may_have_run or read_only)
            if can_repeat and tries < len(RETRY_DELAYS):
                delay = RETRY_DELAYS[tries]
                tries += 1
                log.info("%s: %s; try %d in %.1f s", conn.host, error, tries + 1, delay)
                _close_idle(conn)
                _sleep(delay)
                continue
            raise error from None


def run_command(conn: Connection, payload: bytes, *, read_only: bool = False) -> CommandOutput:
    """Run the agent bootstrap once with ``payload`` on stdin; map and retry failures."""
    return with_retries(conn, lambda: _run_once(conn, payload), read_only=read_only)


def _close_idle(conn: Connection) -> None:
    # After a transport failure, pooled connections to that host are suspect.
    entry = _endpoint_for(conn)
    with entry._lock:
        idle, entry._idle = entry._idle, []
    for protocol in idle:
        _close_protocol(protocol)


# --- agent requests ------------------------------------------------------------------

_CLIXML_CLEANER = object.__new__(winrm.Session)


def clean_stderr(stderr: bytes) -> str:
    """PowerShell's CLIXML error stream as readable text (pywinrm's own cleanup)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        cleaned = winrm.Session._clean_error_msg(_CLIXML_CLEANER, stderr)
    return cleaned.decode("utf-8", "replace").strip()


def request_secrets(request: dict[str, Any], conn: Connection | None = None) -> list[str]:
    """Secret values in a request (and the connection), to scrub from any text shown."""
    found: list[str] = []

    def collect(value: Any, whole: bool) -> None:
        if isinstance(value, str):
            if whole:
                found.append(value)
        elif isinstance(value, dict):
            for key, inner in value.items():
                collect(inner, whole or "password" in str(key).lower())
        elif isinstance(value, list):
            for inner in value:
                collect(inner, whole)

    for entry in request.get("ops", []):
        spec = contract.OPS.get(entry.get("op", ""))
        for name, value in entry.get("args", {}).items():
            arg = spec.args.get(name) if spec else None
            # A config element is secret as a whole but mostly plain: take its passwords.
            collect(value, arg is not None and arg.secret and arg.kind != "dict")
    if conn is not None:
        found.extend(v for v in (conn.password, conn.client_key_pem) if v)
    return found


def scrub(text: str, secrets: Iterable[str]) -> str:
    """``text`` without any secret: values of 4+ characters become REDACTED (longest
    first); a text that still holds a shorter one is withheld whole
    (contract.WITHHELD_MESSAGE), as agent.ps1's Hide-Secrets does."""
    values = sorted({s for s in secrets if s}, key=len, reverse=True)
    probe = text
    for secret in values:
        if len(secret) >= 4:
            text = text.replace(secret, "REDACTED")
            probe = probe.replace(secret, "")
    if any(secret in probe for secret in values if len(secret) < 4):
        return contract.WITHHELD_MESSAGE
    return text


def is_read_only(request: dict[str, Any]) -> bool:
    """Whether every op of a request only reads (an op this client does not know counts
    as a write: never repeated)."""
    specs = [contract.OPS.get(str(op.get("op"))) for op in request.get("ops", [])]
    return bool(specs) and all(spec is not None and not spec.writes for spec in specs)


def no_answer(
    conn: Connection,
    request: dict[str, Any],
    exit_code: int,
    stdout: bytes,
    stderr: bytes,
    problem: str = "no contract result",
) -> HostError:
    """The error for an agent process that ended without answering a request."""
    if not stdout.strip() and not stderr.strip():
        # Not a word, not an error record: the process was ended from outside (killed,
        # its shell deleted). The request may have run.
        return TransportError(
            conn.host,
            f"the agent process ended (exit code {exit_code}) before it answered: it may have "
            "been stopped on the host",
            command_may_have_run=True,
        )
    excerpt = scrub(clean_stderr(stderr), request_secrets(request, conn))
    if len(excerpt) > STDERR_EXCERPT:
        excerpt = excerpt[:STDERR_EXCERPT] + "..."
    return AgentProtocolError(
        conn.host,
        f"the agent command did not return a contract result: {problem}; exit code "
        f"{exit_code}; stdout {len(stdout)} bytes; stderr: {excerpt or '(empty)'}",
    )


def run_agent_request_once(
    conn: Connection, agent_script: str, request: dict[str, Any]
) -> dict[str, Any]:
    """Send one contract request as a one-shot command; the parsed contract result."""
    payload = contract.encode_stdin(agent_script, request)
    read_only = is_read_only(request)

    def attempt() -> dict[str, Any]:
        output = _run_once(conn, payload)
        try:
            return contract.parse_result(output.stdout)
        except ContractError as exc:
            error = no_answer(
                conn, request, output.exit_code, output.stdout, output.stderr, str(exc)
            )
            if isinstance(error, TransportError):
                raise _MappedError(error, retryable=True) from None
            raise error from None

    return with_retries(conn, attempt, read_only=read_only)
