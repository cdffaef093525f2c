"""A WS-Management (WinRM) endpoint on loopback that unmodified pywinrm talks to.

What it answers is what pywinrm 0.5 sends and checks (winrm/protocol.py, transport.py,
encryption.py): the cmd shell resource (Create, Command, Send, Receive, Signal, Delete),
Basic and client-certificate authentication over HTTPS, and NTLM through SPNEGO
``Negotiate`` over HTTP with WinRM message encryption. Each command's stdin, executable
and arguments go to a :data:`CommandHandler`; its stdout, stderr and exit code come back
through Receive, split to fit the client's MaxEnvelopeSize.

Secrets (Authorization headers, NTLM tokens, passwords, stdin, command output) are never
logged; the log carries actions, ids, user names and status codes.

Usage::

    server = WSManServer(
        handler,  # ShellCommand -> CommandOutcome, called once per command
        Credentials(users={"admin": "pw"}, cert_users={thumbprint: "admin"}),
        tls_cert_pem=..., tls_key_pem=..., client_ca_pem=...,
        faults=FileFaults(state_dir / "faults.json"),
    )
    server.start()  # or `with server:`
    winrm.Session(server.https_url, auth=("admin", "pw"), transport="basic",
                  ca_trust_path="ca.pem").run_ps("...")
    winrm.Session(server.http_url, auth=("admin", "pw"), transport="ntlm").run_cmd("...")
    server.stop()
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import dataclasses
import hashlib
import hmac
import json
import logging
import os
import re
import shutil
import socket
import ssl
import struct
import sys
import tempfile
import threading
import time
import traceback
import uuid
import weakref
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Final, Literal, Protocol, cast
from urllib.parse import urlsplit

import spnego
from lxml import etree
from spnego._ntlm_raw.crypto import ntowfv1  # private, but the acceptor's own hash

from iis_clientcert_simulator.winrm_service import WinRMService

__all__ = [
    "CommandHandler",
    "CommandNotStarted",
    "CommandOutcome",
    "CommandProcess",
    "Credentials",
    "DropConnection",
    "DropWhen",
    "FaultSource",
    "FileFaults",
    "ProcessOutput",
    "ShellCommand",
    "ShellControl",
    "StdinNeverEnds",
    "WSManServer",
    "WinrsConfig",
    "faults_lock",
    "write_faults",
]

logger = logging.getLogger(__name__)

# --- the interface the executor codes against ------------------------------------------


@dataclass(frozen=True)
class ShellCommand:
    user: str  # authenticated user name, as spelled in Credentials
    auth: str  # "basic" | "certificate" | "ntlm"
    executable: str  # the <rsp:Command> text (pywinrm puts the whole command line here)
    arguments: list[str]  # the <rsp:Arguments> elements, in order
    stdin: bytes  # all rsp:Send data for stdin, concatenated
    shell_id: str
    command_id: str
    # The Command request's options (MS-WSMV 3.1.4.11). WINRS_CONSOLEMODE_STDIN=TRUE hands
    # the process a console for stdin, not a pipe: what the client sends is typed into it
    # and End="true" is no end of file. WINRS_SKIP_CMD_SHELL=FALSE runs the command line
    # through cmd.exe /c. The defaults are what pywinrm's run_command sends when not told
    # otherwise (console mode, cmd.exe); an option missing from the request is read the
    # same way, the stricter reading (docs/real-host.md).
    console_mode_stdin: bool = True
    skip_cmd_shell: bool = False


@dataclass(frozen=True)
class CommandOutcome:
    stdout: bytes
    stderr: bytes
    exit_code: int


class StdinNeverEnds(Exception):  # noqa: N818 (a condition, not an error of the handler)
    """Raised by a handler whose process reads stdin to its end while stdin is a console.

    On Windows such a process (PowerShell's ``[Console]::OpenStandardInput()`` plus
    ``ReadToEnd()``) waits for an end of input that console-mode stdin never delivers
    (FACTS.md, "Real-host pitfalls": stdin mode; Ansible's winrm connection plugin starts
    every command it feeds through stdin with ``console_mode_stdin=False``). The command
    then stays Running, every Receive ends in the operation-timeout fault and no output
    comes, until the client terminates it: what the server does with the command.
    """


class CommandNotStarted(Exception):  # noqa: N818
    """Raised by a handler when Windows could not start the process at all.

    With WINRS_SKIP_CMD_SHELL=TRUE, WinRS calls CreateProcess itself; a program that is not
    there fails the command with a WS-Management fault carrying the Win32 error (e.g.
    0x80070002, "The system cannot find the file specified.") instead of cmd.exe's
    "is not recognized" text and exit code 9009.
    """

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


CommandHandler = Callable[[ShellCommand], CommandOutcome]


class DropConnection(Exception):  # noqa: N818 (a condition, not an error)
    """Raised by a running process to make the server close the HTTP connection of the
    request at hand without an answer (fault injection: the network dropped it)."""


@dataclass(frozen=True)
class ProcessOutput:
    """What one Receive takes from a process: output so far, and the exit code once the
    process has ended and all its output is taken."""

    stdout: bytes
    stderr: bytes
    exit_code: int | None


class CommandProcess(Protocol):
    """A process a command started (WinRS starts it at the Command request): stdin arrives
    Send by Send while it runs, output is taken Receive by Receive while it runs."""

    @property
    def exited(self) -> bool: ...

    @property
    def answers(self) -> int:
        """Complete answers written so far (for the server's request statistics)."""
        ...

    def write(self, data: bytes, end: bool) -> None:
        """Data for stdin (``end``: no more after it). May raise DropConnection."""
        ...

    def read(self, timeout: float, budget: int) -> ProcessOutput:
        """Output not taken yet, at most ``budget`` bytes; waits up to ``timeout`` for some.
        Raises TimeoutError when none came, DropConnection to lose the answer."""
        ...

    def terminate(self) -> None:
        """Signal terminate, the shell deleted or expired: the process ends now."""
        ...


class ShellControl(Protocol):
    """What a process may ask of the WS-Management service (fault injection)."""

    def restart_service(self) -> None:
        """The WinRM service restarts: every shell, with its processes, is gone."""
        ...


class ProcessHandler(Protocol):
    """A command handler that runs commands as processes (a persistent command can answer
    many requests). ``start`` is called at the Command request; it may raise
    CommandNotStarted (the Command fails) or StdinNeverEnds (the command never answers)."""

    def start(self, command: ShellCommand, control: ShellControl) -> CommandProcess: ...


@dataclass(frozen=True)
class WinrsConfig:
    """The WinRS settings of the host (``winrm get winrm/config/winrs``) the server enforces.

    MaxShellsPerUser 30 and IdleTimeout 7200000 ms are the defaults of Windows Server 2012
    and later (FACTS.md, "WinRM as shipped"); a shell's own IdleTimeOut (the Create
    request's rsp:IdleTimeOut) applies when given, but never below one minute ("A minimum
    of 60000 milliseconds (1 minute) is used for smaller values", the WinRS IdleTimeout
    policy) nor above the server's. 0 shells means no limit.
    """

    max_shells_per_user: int = 30
    idle_timeout_s: float = 7200.0
    min_idle_timeout_s: float = 60.0

    def idle_timeout(self, requested: float | None) -> float:
        if requested is None:
            return self.idle_timeout_s
        return min(self.idle_timeout_s, max(self.min_idle_timeout_s, requested))


@dataclass
class Credentials:
    """Who may log on. Read on every authentication, so changes apply to the next logon."""

    users: dict[str, str] = field(default_factory=dict)  # user -> password (Basic, NTLM)
    # client-certificate SHA-1 thumbprint (upper hex) -> user name (certificate auth)
    cert_users: dict[str, str] = field(default_factory=dict)
    # Local administrators other than the built-in Administrator: UAC remote restrictions
    # filter their network logons unless LocalAccountTokenFilterPolicy=1 (KB 951016).
    filtered_admins: set[str] = field(default_factory=set)


# --- fault injection -------------------------------------------------------------------

DropWhen = Literal["before_run", "after_run"]


class FaultSource(Protocol):
    def latency_ms(self) -> int | None:
        """Extra delay for every HTTP request; None means "use the server's default"."""
        ...

    def take_drop(self) -> DropWhen | None:
        """Called once per command, at its first Receive: drop this command's connection?"""
        ...


_FAULT_LOCKS: dict[str, threading.RLock] = {}
_FAULT_LOCKS_GUARD = threading.Lock()


def faults_lock(path: str | os.PathLike[str]) -> threading.RLock:
    """The process-wide lock for one faults file.

    Hold it around any read-modify-write of the file (the executor's own fault keys
    included), so two writers never undo each other's one-shot removals.
    """
    key = os.path.realpath(path)
    with _FAULT_LOCKS_GUARD:
        return _FAULT_LOCKS.setdefault(key, threading.RLock())


def write_faults(path: str | os.PathLike[str], faults: dict[str, Any]) -> None:
    """Replace faults.json atomically, so a server reading it never sees half a file."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".faults-", suffix=".json", dir=target.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            json.dump(faults, fh, indent=2, sort_keys=True)
            fh.write("\n")
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


_WHENS: Final = ("before_run", "after_run")


class FileFaults:
    """Faults read from a JSON file on each request (edit it while the server runs).

    Keys: ``latency_ms`` (int, added to every HTTP request) and ``drop``
    (``{"command": k, "when": "before_run" | "after_run"}``: the k-th command, counted
    from when the fault appeared, loses its connection at its first Receive; the key is
    removed from the file when it fires). A missing or unreadable file means no faults.
    The simulator's executor reads more one-shot keys of the same shape through
    :meth:`take_nth` (its agent requests: ``drop``, ``kill_agent``, ``restart_winrm``).
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self._lock = faults_lock(self.path)
        self._seen: dict[str, tuple[str, int]] = {}  # key -> (fault as set, count so far)
        self._warned: set[str] = set()

    def _warn_once(self, message: str) -> None:
        if message not in self._warned:
            self._warned.add(message)
            logger.warning("%s: %s", self.path, message)

    def _read(self) -> dict[str, Any]:
        try:
            text = self.path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return {}
        except OSError as exc:
            self._warn_once(f"cannot read faults ({exc.strerror})")
            return {}
        if not text.strip():
            return {}
        try:
            data = json.loads(text)
        except json.JSONDecodeError:
            self._warn_once("faults file is not JSON; ignoring it")
            return {}
        if not isinstance(data, dict):
            self._warn_once("faults file is not a JSON object; ignoring it")
            return {}
        return data

    def set(self, **faults: Any) -> None:
        """Merge keys into the file (``None`` removes a key)."""
        with self._lock:
            data = self._read()
            for key, value in faults.items():
                if value is None:
                    data.pop(key, None)
                else:
                    data[key] = value
            write_faults(self.path, data)

    def latency_ms(self) -> int | None:
        value = self._read().get("latency_ms")
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            self._warn_once("latency_ms must be a non-negative integer; ignoring it")
            return None
        return value

    def take_drop(self) -> DropWhen | None:
        return cast("DropWhen | None", self.take_nth("drop", "command"))

    def take_nth(
        self, key: str, counter: str = "request", whens: tuple[str, ...] = _WHENS
    ) -> str | None:
        """For a fault ``{key: {counter: k, "when": ...}}``: count one more event; at the
        k-th (from when the fault appeared) remove the key and return its ``when`` (one of
        ``whens``)."""
        # One lock for read, count and one-shot removal, so two events racing for the
        # k-th place cannot both fire it.
        with self._lock:
            data = self._read()
            spec = data.get(key)
            if spec is None:
                self._seen.pop(key, None)
                return None
            parsed = self._parse(key, counter, spec, whens)
            if parsed is None:
                return None
            k, when = parsed
            fingerprint = json.dumps(spec, sort_keys=True)
            previous, count = self._seen.get(key, ("", 0))
            if fingerprint != previous:  # a new fault: count from here
                count = 0
            count += 1
            if count < k:
                self._seen[key] = (fingerprint, count)
                return None
            del data[key]
            write_faults(self.path, data)
            self._seen.pop(key, None)
            logger.info("fault: %s (%s)", key, when)
            return when

    def _parse(
        self, key: str, counter: str, spec: Any, whens: tuple[str, ...]
    ) -> tuple[int, str] | None:
        if not isinstance(spec, dict):
            self._warn_once(f"{key} must be an object {{{counter}, when}}; ignoring it")
            return None
        k = spec.get(counter, 1)
        when = spec.get("when", "before_run")
        if isinstance(k, bool) or not isinstance(k, int) or k < 1:
            self._warn_once(f"{key}.{counter} must be an integer >= 1; ignoring it")
            return None
        if when not in whens:
            self._warn_once(f"{key}.when must be one of {', '.join(whens)}; ignoring it")
            return None
        return k, str(when)


# --- SOAP vocabulary -------------------------------------------------------------------

NS_SOAP: Final = "http://www.w3.org/2003/05/soap-envelope"
NS_ADDRESSING: Final = "http://schemas.xmlsoap.org/ws/2004/08/addressing"
NS_TRANSFER: Final = "http://schemas.xmlsoap.org/ws/2004/09/transfer"
NS_WSMAN: Final = "http://schemas.dmtf.org/wbem/wsman/1/wsman.xsd"
NS_MSWSMAN: Final = "http://schemas.microsoft.com/wbem/wsman/1/wsman.xsd"
NS_SHELL: Final = "http://schemas.microsoft.com/wbem/wsman/1/windows/shell"
NS_FAULT: Final = "http://schemas.microsoft.com/wbem/wsman/1/wsmanfault"
NS_XML: Final = "http://www.w3.org/XML/1998/namespace"

_NSMAP: Final = {
    "s": NS_SOAP,
    "a": NS_ADDRESSING,
    "x": NS_TRANSFER,
    "w": NS_WSMAN,
    "rsp": NS_SHELL,
    "p": NS_MSWSMAN,
}

RESOURCE_CMD: Final = "http://schemas.microsoft.com/wbem/wsman/1/windows/shell/cmd"
ACTION_CREATE: Final = "http://schemas.xmlsoap.org/ws/2004/09/transfer/Create"
ACTION_DELETE: Final = "http://schemas.xmlsoap.org/ws/2004/09/transfer/Delete"
ACTION_COMMAND: Final = f"{NS_SHELL}/Command"
ACTION_SEND: Final = f"{NS_SHELL}/Send"
ACTION_RECEIVE: Final = f"{NS_SHELL}/Receive"
ACTION_SIGNAL: Final = f"{NS_SHELL}/Signal"
ACTION_FAULT: Final = "http://schemas.dmtf.org/wbem/wsman/1/wsman/fault"
ANONYMOUS: Final = "http://schemas.xmlsoap.org/ws/2004/08/addressing/role/anonymous"
STATE_DONE: Final = f"{NS_SHELL}/CommandState/Done"
STATE_RUNNING: Final = f"{NS_SHELL}/CommandState/Running"
MUTUAL_AUTH: Final = "http://schemas.dmtf.org/wbem/wsman/1/wsman/secprofile/https/mutual"

# WSManFault codes (winerror.h); pywinrm retries Receive on the operation timeout.
FAULT_INVALID_ACTION: Final = 0x80338001  # ERROR_WSMAN_INVALID_ACTIONURI
FAULT_TIMEOUT: Final = 0x80338029  # ERROR_WSMAN_OPERATION_TIMEDOUT
FAULT_SHELL_NOT_FOUND: Final = 0x8033805B  # ERROR_WINRS_SHELL_NOT_FOUND (unknown ShellId)
FAULT_INVALID_RESOURCE: Final = 0x80338000  # ERROR_WSMAN_RESOURCE_NOT_FOUND
FAULT_PIPE_CLOSING: Final = 0x800700E8  # ERROR_NO_DATA: stdin is closed
FAULT_BAD_REQUEST: Final = 0x80070057  # E_INVALIDARG
FAULT_INTERNAL: Final = 0x80004005  # E_FAIL
# Quotas (wsmerror.h): MS-WSMV 3.1.4.5.2.1 names the fault w:QuotaLimit.
FAULT_QUOTA_MAX_SHELLS: Final = 0x803381A5  # ERROR_WSMAN_QUOTA_MAX_SHELLS
FAULT_QUOTA_MAX_OPERATIONS: Final = 0x803381A6  # ERROR_WSMAN_QUOTA_MAX_OPERATIONS

# Windows' default MaxEnvelopeSizekb is 500; pywinrm asks for 150 KB responses.
SERVER_MAX_ENVELOPE: Final = 512_000
DEFAULT_MAX_ENVELOPE: Final = 153_600
# Room for the envelope around the Receive streams (headers, CommandState, tags).
_ENVELOPE_OVERHEAD: Final = 4096
_MAX_BODY: Final = 32 * 1024 * 1024
_MAX_STDIN: Final = 64 * 1024 * 1024
# How often shells past their idle timeout are looked for (a client that died sends
# nothing more; WinRS deletes its shell, and the shell's processes, on its own).
_REAPER_INTERVAL: Final = 0.2


def _q(prefix: str, local: str) -> str:
    return f"{{{_NSMAP[prefix]}}}{local}"


def _sub(
    parent: etree._Element,
    prefix: str,
    local: str,
    text: str | None = None,
    **attrib: str,
) -> etree._Element:
    child = etree.SubElement(parent, _q(prefix, local), attrib)
    if text is not None:
        child.text = text
    return child


class _SoapFaultError(Exception):
    """A WS-Management fault, sent as HTTP 500 with a SOAP Fault body (as Windows does)."""

    def __init__(
        self,
        subcode: str,
        reason: str,
        wsman_code: int,
        *,
        sender: bool = True,
    ) -> None:
        super().__init__(reason)
        self.subcode = subcode
        self.reason = reason
        self.wsman_code = wsman_code
        self.sender = sender


class _ConnectionDropError(Exception):
    """Close the TCP connection without an HTTP response (fault injection)."""


def _envelope(action: str, relates_to: str | None) -> tuple[etree._Element, etree._Element]:
    root = etree.Element(_q("s", "Envelope"), nsmap=_NSMAP)
    root.set(f"{{{NS_XML}}}lang", "en-US")
    header = _sub(root, "s", "Header")
    _sub(header, "a", "Action", action)
    _sub(header, "a", "MessageID", f"uuid:{str(uuid.uuid4()).upper()}")
    _sub(header, "a", "To", ANONYMOUS)
    if relates_to is not None:
        _sub(header, "a", "RelatesTo", relates_to)
    body = _sub(root, "s", "Body")
    return root, body


def _serialize(root: etree._Element) -> bytes:
    return etree.tostring(root, encoding="utf-8")


def _fault_envelope(fault: _SoapFaultError, relates_to: str | None, machine: str) -> bytes:
    root, body = _envelope(ACTION_FAULT, relates_to)
    f = _sub(body, "s", "Fault")
    code = _sub(f, "s", "Code")
    _sub(code, "s", "Value", "s:Sender" if fault.sender else "s:Receiver")
    subcode = _sub(code, "s", "Subcode")
    _sub(subcode, "s", "Value", fault.subcode)
    reason = _sub(f, "s", "Reason")
    text = _sub(reason, "s", "Text", fault.reason)
    text.set(f"{{{NS_XML}}}lang", "en-US")
    detail = _sub(f, "s", "Detail")
    wsman_fault = etree.SubElement(
        detail,
        f"{{{NS_FAULT}}}WSManFault",
        {"Code": str(fault.wsman_code), "Machine": machine},
        nsmap={"f": NS_FAULT},
    )
    message = etree.SubElement(wsman_fault, f"{{{NS_FAULT}}}Message")
    message.text = fault.reason
    return _serialize(root)


def _where(exc: BaseException) -> str:
    """An exception's type and frames, without its message (which may quote secrets)."""
    frames = traceback.extract_tb(exc.__traceback__)
    where = " <- ".join(f"{f.filename}:{f.lineno} in {f.name}" for f in reversed(frames))
    return f"{type(exc).__name__} at {where}"


def _parse_duration(text: str | None, default: float) -> float:
    """Seconds of an xs:duration like PT20S or PT20.000S (what WS-Management uses)."""
    if not text:
        return default
    m = re.fullmatch(r"P(?:(\d+)D)?(?:T(?:(\d+)H)?(?:(\d+)M)?(?:(\d+(?:\.\d+)?)S)?)?", text.strip())
    if not m:
        return default
    days, hours, minutes, seconds = m.groups()
    return (int(days or 0) * 86400 + int(hours or 0) * 3600 + int(minutes or 0) * 60) + float(
        seconds or 0
    )


# --- shells and commands ---------------------------------------------------------------


@dataclass(eq=False)
class _Command:
    command_id: str
    executable: str
    arguments: list[str]
    stdin: bytearray = field(default_factory=bytearray)
    stdin_closed: bool = False
    counted: bool = False  # seen by the drop fault (at its first Receive)
    started: bool = False
    done: threading.Event = field(default_factory=threading.Event)
    outcome: CommandOutcome | None = None
    failed: str | None = None  # handler exception type name
    stdout_pos: int = 0
    stderr_pos: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)
    console_mode_stdin: bool = True
    skip_cmd_shell: bool = False
    waits_for_stdin: bool = False  # the handler raised StdinNeverEnds
    not_started: CommandNotStarted | None = None
    # A ProcessHandler's process, started at the Command request (None: a CommandHandler,
    # run once at the first Receive with the stdin sent until then).
    process: CommandProcess | None = None


@dataclass(eq=False)
class _Shell:
    shell_id: str
    owner: str
    auth: str
    last_used: float
    idle_timeout: float
    commands: dict[str, _Command] = field(default_factory=dict)
    requests: int = 0  # WS-Management requests for this shell
    # Sends after its first answer, and Receives that brought output after it.
    after_first_answer: int = 0


@dataclass(frozen=True)
class _Principal:
    user: str
    auth: str


@dataclass(frozen=True)
class _Request:
    action: str
    message_id: str | None
    resource_uri: str | None
    shell_id: str | None
    max_envelope: int
    operation_timeout: float
    body: etree._Element
    header: etree._Element | None = None


def _parse_request(data: bytes) -> _Request:
    parser = etree.XMLParser(
        resolve_entities=False, no_network=True, load_dtd=False, huge_tree=False
    )
    try:
        root = etree.fromstring(data, parser)
    except etree.XMLSyntaxError as exc:
        raise _SoapFaultError(
            "w:SchemaValidationError", f"The request is not XML ({exc.msg}).", FAULT_BAD_REQUEST
        ) from None
    if root.tag != _q("s", "Envelope"):
        raise _SoapFaultError(
            "w:SchemaValidationError", "The request is not a SOAP 1.2 envelope.", FAULT_BAD_REQUEST
        )
    header = root.find(_q("s", "Header"))
    body = root.find(_q("s", "Body"))
    if header is None or body is None:
        raise _SoapFaultError(
            "w:SchemaValidationError", "The envelope needs a Header and a Body.", FAULT_BAD_REQUEST
        )

    def text(prefix: str, local: str) -> str | None:
        node = header.find(_q(prefix, local))
        return node.text.strip() if node is not None and node.text else None

    shell_id = None
    for selector in header.iterfind(f"{_q('w', 'SelectorSet')}/{_q('w', 'Selector')}"):
        if selector.get("Name") == "ShellId" and selector.text:
            shell_id = selector.text.strip()
    try:
        max_envelope = int(text("w", "MaxEnvelopeSize") or DEFAULT_MAX_ENVELOPE)
    except ValueError:
        max_envelope = DEFAULT_MAX_ENVELOPE
    return _Request(
        action=text("a", "Action") or "",
        message_id=text("a", "MessageID"),
        resource_uri=text("w", "ResourceURI"),
        shell_id=shell_id,
        max_envelope=max(8192, min(max_envelope, SERVER_MAX_ENVELOPE)),
        operation_timeout=max(0.05, _parse_duration(text("w", "OperationTimeout"), 20.0)),
        body=body,
        header=header,
    )


def _options(req: _Request) -> dict[str, str]:
    """The w:OptionSet of a request's header: option name -> text."""
    header = req.header
    out: dict[str, str] = {}
    if header is None:
        return out
    for option in header.iterfind(f"{_q('w', 'OptionSet')}/{_q('w', 'Option')}"):
        name = option.get("Name")
        if name:
            out[name] = (option.text or "").strip()
    return out


def _option_true(options: dict[str, str], name: str, *, default: bool) -> bool:
    # WS-Management booleans are xs:boolean; pywinrm sends TRUE/FALSE.
    value = options.get(name)
    if value is None:
        return default
    return value.lower() in ("true", "1")


# --- the service's limits (winrm_service.WinRMService; each cites its source there) -------


def _check_shell_quota(shells: Iterable[_Shell], who: _Principal, limit: int) -> None:
    """winrs/MaxShellsPerUser: a Create beyond it gets w:QuotaLimit (MS-WSMV 3.1.4.5.2.1)."""
    if sum(1 for s in shells if s.owner.lower() == who.user.lower()) >= limit:
        raise _SoapFaultError(
            "w:QuotaLimit",
            "The Windows Remote Shell cannot process the request. The server is already "
            "executing the maximum number of concurrent shells a user can remotely open on "
            f"the same system (MaxShellsPerUser {limit}). Retry later.",
            FAULT_QUOTA_MAX_SHELLS,
        )


def _operation_quota_fault(limit: int) -> _SoapFaultError:
    """service/MaxConcurrentOperationsPerUser exceeded (w:QuotaLimit, MS-WSMV 3.1.4.5.2.1)."""
    return _SoapFaultError(
        "w:QuotaLimit",
        "The WS-Management service cannot process the request. This user is allowed a "
        f"maximum number of {limit} concurrent operations, which has been exceeded. Close "
        "existing operations for this user, or raise the quota for this user.",
        FAULT_QUOTA_MAX_OPERATIONS,
    )


def _limit_timeout(req: _Request, config: WinRMService) -> _Request:
    """An OperationTimeout above MaxTimeoutms is lowered to it, not refused (MS-WSMV
    section "wsman:OperationTimeout": the server MUST use MaxTimeoutms then)."""
    limit = config.max_timeout_ms / 1000
    if req.operation_timeout <= limit:
        return req
    return dataclasses.replace(req, operation_timeout=limit)


def _request_too_large(length: int, config: WinRMService) -> bool:
    """MaxEnvelopeSizekb also bounds a request (MS-WSMV 2.2.4.10): a larger one is answered
    with HTTP 413, which the Windows client reports as 0x80338111
    (ERROR_WSMAN_HTTP_REQUEST_TOO_LARGE_STATUS, "the request size exceeded the configured
    MaxEnvelopeSize quota")."""
    return length > config.max_envelope_size_kb * 1024


def _shell_not_found(shell_id: str | None) -> _SoapFaultError:
    return _SoapFaultError(
        "w:InvalidSelectors",
        f"The request for the Windows Remote Shell with ShellId {shell_id} "
        "failed because the shell was not found on the server. Possible causes "
        "are: the specified ShellId is incorrect or the shell no longer exists "
        "on the server. Provide the correct ShellId or create a new shell and "
        "retry the operation.",
        FAULT_SHELL_NOT_FOUND,
    )


def _command_state(response: Any, command_id: str, exit_code: int | None) -> None:
    """The end of a ReceiveResponse: the streams' ends, Done and the exit code when the
    command has ended (exit_code not None), else Running (MS-WSMV 3.1.4.14)."""
    if exit_code is None:
        _sub(response, "rsp", "CommandState", CommandId=command_id, State=STATE_RUNNING)
        return
    for name in ("stdout", "stderr"):
        _sub(response, "rsp", "Stream", Name=name, CommandId=command_id, End="true")
    state = _sub(response, "rsp", "CommandState", CommandId=command_id, State=STATE_DONE)
    _sub(state, "rsp", "ExitCode", str(exit_code))


class _ShellService:
    """The WinRS shell resource: shells and their commands, independent of HTTP."""

    def __init__(
        self,
        handler: CommandHandler | ProcessHandler,
        faults: Callable[[], FaultSource | None],
        machine: str,
        config: Callable[[], WinRMService] = WinRMService,
        winrs: Callable[[], WinrsConfig] = WinrsConfig,
    ) -> None:
        self._handler = handler
        self._faults = faults
        self._config = config
        self._winrs = winrs
        self.machine = machine
        self._lock = threading.Lock()
        self._shells: dict[str, _Shell] = {}
        self._counts: dict[str, int] = {}  # requests per action
        self._steady = [0, 0]  # requests after a shell's first answer, answers after its first
        self._finished_shells: list[tuple[int, int]] = []

    # -- statistics (what a benchmark reads)

    def stats(self) -> dict[str, Any]:
        """Requests per action, and for persistent processes what calls after a shell's
        first answer cost: their Sends and the Receives that brought output
        (``steady_requests``), for ``steady_answers`` answers."""
        with self._lock:
            counts = dict(self._counts)
            live = [(s.after_first_answer, self._answers(s)) for s in self._shells.values()]
            finished = list(self._finished_shells)
        steady_requests = sum(r for r, a in [*finished, *live] if a > 0)
        steady_answers = sum(max(0, a - 1) for _, a in [*finished, *live])
        return {
            "requests": sum(counts.values()),
            "by_action": counts,
            "steady_requests": steady_requests,
            "steady_answers": steady_answers,
        }

    def shells(self) -> list[dict[str, Any]]:
        with self._lock:
            return [
                {
                    "shell_id": shell.shell_id,
                    "owner": shell.owner,
                    "idle_timeout": shell.idle_timeout,
                    "processes": sum(
                        1
                        for c in shell.commands.values()
                        if c.process is not None and not c.process.exited
                    ),
                }
                for shell in self._shells.values()
            ]

    @staticmethod
    def _answers(shell: _Shell) -> int:
        return sum(c.process.answers for c in shell.commands.values() if c.process is not None)

    def _count(self, req: _Request) -> None:
        name = req.action.rsplit("/", 1)[-1]
        with self._lock:
            self._counts[name] = self._counts.get(name, 0) + 1
            shell = self._shells.get(req.shell_id or "")
            if shell is not None:
                shell.requests += 1
                # A call after the first: its Send(s), and the Receive that brought its
                # answer (counted when it does, in _receive_from_process); Receives that
                # only waited, and closing the shell, belong to no call.
                if name == "Send" and self._answers(shell) > 0:
                    shell.after_first_answer += 1

    def _count_answer(self, shell: _Shell, answers_before: int) -> None:
        with self._lock:
            if answers_before > 0:
                shell.after_first_answer += 1

    # -- shells going away (Delete, idle timeout, a service restart)

    def _forget(self, shell: _Shell) -> None:
        """Remove a shell (under self._lock) and end its processes."""
        self._shells.pop(shell.shell_id, None)
        self._finished_shells.append((shell.after_first_answer, self._answers(shell)))
        for command in shell.commands.values():
            if command.process is not None:
                command.process.terminate()

    def expire_idle(self) -> None:
        now = time.monotonic()
        with self._lock:
            for shell in [s for s in self._shells.values() if now - s.last_used > s.idle_timeout]:
                self._forget(shell)
                logger.info(
                    "shell %s deleted after %.0f s idle", shell.shell_id, shell.idle_timeout
                )

    def restart_service(self) -> None:
        """The WinRM service restarts (fault injection): every shell is gone."""
        with self._lock:
            for shell in list(self._shells.values()):
                self._forget(shell)
        logger.info("fault: the WinRM service restarted; every shell is gone")

    def handle(self, req: _Request, who: _Principal, endpoint: str) -> bytes:
        if req.message_id is None:
            raise _SoapFaultError(
                "a:InvalidMessageInformationHeader",
                "The request has no a:MessageID.",
                FAULT_BAD_REQUEST,
            )
        actions: dict[str, Callable[[_Request, _Principal, str], bytes]] = {
            ACTION_CREATE: self._create,
            ACTION_DELETE: self._delete,
            ACTION_COMMAND: self._command,
            ACTION_SEND: self._send,
            ACTION_RECEIVE: self._receive,
            ACTION_SIGNAL: self._signal,
        }
        action = actions.get(req.action)
        self._count(req)
        if action is None:
            raise _SoapFaultError(
                "a:ActionNotSupported",
                "The WS-Management service cannot process the request because the action "
                "is not supported for this resource.",
                FAULT_INVALID_ACTION,
            )
        if req.resource_uri != RESOURCE_CMD:
            raise _SoapFaultError(
                "w:DestinationUnreachable",
                "The WS-Management service cannot process the request because the resource "
                f"URI is not supported here (only {RESOURCE_CMD}).",
                FAULT_INVALID_RESOURCE,
            )
        return action(req, who, endpoint)

    # -- helpers

    def _shell(self, req: _Request, who: _Principal) -> _Shell:
        with self._lock:
            shell = self._shells.get(req.shell_id or "")
            # Shells belong to the user who made them, as on Windows.
            if shell is None or shell.owner.lower() != who.user.lower():
                raise _shell_not_found(req.shell_id)
            shell.last_used = time.monotonic()
            return shell

    def _command_of(self, shell: _Shell, command_id: str | None) -> _Command:
        with self._lock:
            command = shell.commands.get(command_id or "")
        if command is None:
            raise _SoapFaultError(
                "w:InvalidSelectors",
                f"The request for the Windows Remote Shell with ShellId {shell.shell_id} "
                f"failed because the command {command_id} was not found.",
                FAULT_SHELL_NOT_FOUND,
            )
        return command

    # -- actions

    def _create(self, req: _Request, who: _Principal, endpoint: str) -> bytes:
        shell_id = str(uuid.uuid4()).upper()
        spec = req.body.find(_q("rsp", "Shell"))

        def spec_text(local: str, default: str) -> str:
            node = spec.find(_q("rsp", local)) if spec is not None else None
            return (node.text or default) if node is not None else default

        config = self._winrs()
        requested = spec_text("IdleTimeOut", "")
        idle = config.idle_timeout(_parse_duration(requested, 0.0) if requested else None)
        self.expire_idle()
        # MaxShellsPerUser lives in winrm/config/winrs; the simulator reads it from host.json
        # "winrs" (WinrsConfig) and "winrm" (WinRMService): the stricter one holds.
        limits = [n for n in (config.max_shells_per_user, self._config().max_shells_per_user) if n]
        with self._lock:
            if limits:
                _check_shell_quota(self._shells.values(), who, min(limits))
            self._shells[shell_id] = _Shell(shell_id, who.user, who.auth, time.monotonic(), idle)

        root, body = _envelope(f"{ACTION_CREATE}Response", req.message_id)
        created = _sub(body, "x", "ResourceCreated")
        _sub(created, "a", "Address", endpoint)
        refs = _sub(created, "a", "ReferenceParameters")
        _sub(refs, "w", "ResourceURI", RESOURCE_CMD)
        selectors = _sub(refs, "w", "SelectorSet")
        _sub(selectors, "w", "Selector", shell_id, Name="ShellId")
        shell = _sub(body, "rsp", "Shell")
        _sub(shell, "rsp", "ShellId", shell_id)
        _sub(shell, "rsp", "ResourceUri", RESOURCE_CMD)
        _sub(shell, "rsp", "Owner", who.user)
        _sub(shell, "rsp", "ClientIP", "127.0.0.1")
        _sub(shell, "rsp", "IdleTimeOut", f"PT{idle:.3f}S")
        _sub(shell, "rsp", "InputStreams", spec_text("InputStreams", "stdin"))
        _sub(shell, "rsp", "OutputStreams", spec_text("OutputStreams", "stdout stderr"))
        _sub(shell, "rsp", "ShellRunTime", "P0DT0H0M0S")
        _sub(shell, "rsp", "ShellInactivity", "P0DT0H0M0S")
        logger.debug("shell %s created for %s (%s)", shell_id, who.user, who.auth)
        return _serialize(root)

    def _delete(self, req: _Request, who: _Principal, endpoint: str) -> bytes:
        shell = self._shell(req, who)
        with self._lock:
            if shell.shell_id in self._shells:
                self._forget(shell)
        logger.debug("shell %s deleted", shell.shell_id)
        root, _ = _envelope(f"{ACTION_DELETE}Response", req.message_id)
        return _serialize(root)

    def _command(self, req: _Request, who: _Principal, endpoint: str) -> bytes:
        shell = self._shell(req, who)
        line = req.body.find(_q("rsp", "CommandLine"))
        cmd = line.find(_q("rsp", "Command")) if line is not None else None
        if line is None or cmd is None:
            raise _SoapFaultError(
                "w:SchemaValidationError",
                "The Command request has no rsp:CommandLine/rsp:Command.",
                FAULT_BAD_REQUEST,
            )
        arguments = [a.text or "" for a in line.iterfind(_q("rsp", "Arguments"))]
        options = _options(req)
        command_id = str(uuid.uuid4()).upper()
        command = _Command(
            command_id,
            (cmd.text or "").strip(),
            arguments,
            console_mode_stdin=_option_true(options, "WINRS_CONSOLEMODE_STDIN", default=True),
            skip_cmd_shell=_option_true(options, "WINRS_SKIP_CMD_SHELL", default=False),
        )
        start = getattr(self._handler, "start", None)
        if callable(start):
            # WinRS starts the process at the Command request.
            try:
                command.process = start(self._shell_command(command, shell), self)
            except CommandNotStarted as exc:
                logger.info("command could not be started (0x%08X)", exc.code)
                raise _SoapFaultError(
                    "w:InternalError", exc.message, exc.code, sender=False
                ) from None
            except StdinNeverEnds:
                # Its stdin is a console: Sends are typed into it, Receives wait for good.
                command.waits_for_stdin = True
                logger.info(
                    "command %s reads stdin but stdin is in console mode: it never answers "
                    "(start it with WINRS_CONSOLEMODE_STDIN=FALSE)",
                    command_id,
                )
        with self._lock:
            shell.commands[command_id] = command
        logger.debug("shell %s: command %s created", shell.shell_id, command_id)
        root, body = _envelope(f"{ACTION_COMMAND}Response", req.message_id)
        response = _sub(body, "rsp", "CommandResponse")
        _sub(response, "rsp", "CommandId", command_id)
        return _serialize(root)

    def _send(self, req: _Request, who: _Principal, endpoint: str) -> bytes:
        shell = self._shell(req, who)
        send = req.body.find(_q("rsp", "Send"))
        streams = list(send.iterfind(_q("rsp", "Stream"))) if send is not None else []
        if not streams:
            raise _SoapFaultError(
                "w:SchemaValidationError", "The Send request has no rsp:Stream.", FAULT_BAD_REQUEST
            )
        for stream in streams:
            if stream.get("Name", "stdin") != "stdin":
                raise _SoapFaultError(
                    "w:InvalidParameter", "Only the stdin stream can be sent.", FAULT_BAD_REQUEST
                )
            command = self._command_of(shell, stream.get("CommandId"))
            try:
                data = base64.b64decode((stream.text or "").strip(), validate=True)
            except (binascii.Error, ValueError):
                raise _SoapFaultError(
                    "w:InvalidParameter", "The stdin data is not base64.", FAULT_BAD_REQUEST
                ) from None
            if command.process is not None:
                self._send_to_process(command, data, stream.get("End", "false").lower() == "true")
                continue
            with command.lock:
                if command.stdin_closed or command.started:
                    raise _SoapFaultError(
                        "w:InternalError",
                        "The pipe is being closed: the command's stdin is closed.",
                        FAULT_PIPE_CLOSING,
                        sender=False,
                    )
                if len(command.stdin) + len(data) > _MAX_STDIN:
                    raise _SoapFaultError(
                        "w:QuotaLimit", "The stdin data is too large.", FAULT_BAD_REQUEST
                    )
                command.stdin += data
                if stream.get("End", "false").lower() == "true":
                    command.stdin_closed = True
        root, body = _envelope(f"{ACTION_SEND}Response", req.message_id)
        _sub(body, "rsp", "SendResponse")
        return _serialize(root)

    @staticmethod
    def _pipe_closing() -> _SoapFaultError:
        return _SoapFaultError(
            "w:InternalError",
            "The pipe is being closed: the command's stdin is closed.",
            FAULT_PIPE_CLOSING,
            sender=False,
        )

    def _send_to_process(self, command: _Command, data: bytes, end: bool) -> None:
        process = command.process
        assert process is not None
        with command.lock:
            # The process ended (its stdin pipe with it), or the client ended stdin.
            if command.stdin_closed or process.exited:
                raise self._pipe_closing()
            if end:
                command.stdin_closed = True
        try:
            process.write(data, end)
        except DropConnection:
            raise _ConnectionDropError from None

    @staticmethod
    def _shell_command(command: _Command, shell: _Shell) -> ShellCommand:
        return ShellCommand(
            user=shell.owner,
            auth=shell.auth,
            executable=command.executable,
            arguments=list(command.arguments),
            stdin=bytes(command.stdin),
            shell_id=shell.shell_id,
            command_id=command.command_id,
            console_mode_stdin=command.console_mode_stdin,
            skip_cmd_shell=command.skip_cmd_shell,
        )

    def _run(self, command: _Command, shell: _Shell) -> None:
        request = self._shell_command(command, shell)
        started = time.monotonic()
        try:
            outcome = cast(CommandHandler, self._handler)(request)
            if not isinstance(outcome, CommandOutcome):
                raise TypeError("the command handler must return a CommandOutcome")
            command.outcome = outcome
            logger.debug(
                "command %s: exit %d after %.3f s",
                command.command_id,
                outcome.exit_code,
                time.monotonic() - started,
            )
        except StdinNeverEnds:
            # The process waits on its console for good: the command stays Running (done is
            # never set), so Receive answers with operation timeouts until Signal terminate.
            command.waits_for_stdin = True
            logger.info(
                "command %s reads stdin to its end but stdin is in console mode: it never "
                "finishes (start it with WINRS_CONSOLEMODE_STDIN=FALSE)",
                command.command_id,
            )
        except CommandNotStarted as exc:
            command.not_started = exc
            logger.info("command %s could not be started (0x%08X)", command.command_id, exc.code)
        except Exception as exc:
            command.failed = type(exc).__name__
            logger.error("command %s: the handler raised %s", command.command_id, _where(exc))
        finally:
            if not command.waits_for_stdin:
                command.done.set()

    def _receive(self, req: _Request, who: _Principal, endpoint: str) -> bytes:
        shell = self._shell(req, who)
        receive = req.body.find(_q("rsp", "Receive"))
        desired = receive.find(_q("rsp", "DesiredStream")) if receive is not None else None
        command_id = desired.get("CommandId") if desired is not None else None
        command = self._command_of(shell, command_id)
        budget = max(1024, (req.max_envelope - _ENVELOPE_OVERHEAD) // 4 * 3)
        if command.process is not None:
            return self._receive_from_process(req, shell, command, budget)

        drop: DropWhen | None = None
        with command.lock:
            if not command.counted:
                command.counted = True
                source = self._faults()
                drop = source.take_drop() if source is not None else None
                if drop == "before_run":
                    raise _ConnectionDropError
            if not command.started and not command.waits_for_stdin:
                command.started = True
                command.stdin_closed = True
                threading.Thread(
                    target=self._run,
                    args=(command, shell),
                    name=f"wsman-command-{command.command_id[:8]}",
                    daemon=True,
                ).start()
        if drop == "after_run":
            # A command that never finishes (console-mode stdin) must not hold this thread.
            command.done.wait(req.operation_timeout)
            raise _ConnectionDropError
        if not command.done.wait(req.operation_timeout):
            # pywinrm retries Receive on this code, like a long-running command on Windows.
            raise _SoapFaultError(
                "w:TimedOut",
                "The WS-Management service cannot complete the operation within the time "
                "specified in OperationTimeout.",
                FAULT_TIMEOUT,
                sender=False,
            )
        if command.failed is not None:
            raise _SoapFaultError(
                "w:InternalError",
                f"The simulator's command handler failed ({command.failed}).",
                FAULT_INTERNAL,
                sender=False,
            )
        if command.not_started is not None:
            # Windows fails the Command request itself; this server starts a command at its
            # first Receive, so the same fault arrives there (docs/real-host.md).
            raise _SoapFaultError(
                "w:InternalError",
                command.not_started.message,
                command.not_started.code,
                sender=False,
            )
        outcome = cast(CommandOutcome, command.outcome)

        root, body = _envelope(f"{ACTION_RECEIVE}Response", req.message_id)
        response = _sub(body, "rsp", "ReceiveResponse")
        with command.lock:
            for name, data, attr in (
                ("stdout", outcome.stdout, "stdout_pos"),
                ("stderr", outcome.stderr, "stderr_pos"),
            ):
                pos = cast(int, getattr(command, attr))
                if pos >= len(data) or budget <= 0:
                    continue
                chunk = data[pos : pos + budget]
                budget -= len(chunk)
                setattr(command, attr, pos + len(chunk))
                _sub(
                    response,
                    "rsp",
                    "Stream",
                    base64.b64encode(chunk).decode("ascii"),
                    Name=name,
                    CommandId=command.command_id,
                )
            finished = command.stdout_pos >= len(outcome.stdout) and command.stderr_pos >= len(
                outcome.stderr
            )
        _command_state(response, command.command_id, outcome.exit_code if finished else None)
        return _serialize(root)

    def _receive_from_process(
        self, req: _Request, shell: _Shell, command: _Command, budget: int
    ) -> bytes:
        process = command.process
        assert process is not None
        answers_before = process.answers
        try:
            output = process.read(req.operation_timeout, budget)
        except DropConnection:
            raise _ConnectionDropError from None
        except TimeoutError:
            output = None
        if output is None:
            with self._lock:
                gone = self._shells.get(shell.shell_id) is not shell
            if gone:
                # Deleted, expired or the service restarted while this Receive waited.
                raise _shell_not_found(shell.shell_id)
            # pywinrm retries Receive on this code, like a long-running command on Windows.
            raise _SoapFaultError(
                "w:TimedOut",
                "The WS-Management service cannot complete the operation within the time "
                "specified in OperationTimeout.",
                FAULT_TIMEOUT,
                sender=False,
            )
        if output.stdout or output.stderr:
            self._count_answer(shell, answers_before)
        root, body = _envelope(f"{ACTION_RECEIVE}Response", req.message_id)
        response = _sub(body, "rsp", "ReceiveResponse")
        for name, data in (("stdout", output.stdout), ("stderr", output.stderr)):
            if data:
                _sub(
                    response,
                    "rsp",
                    "Stream",
                    base64.b64encode(data).decode("ascii"),
                    Name=name,
                    CommandId=command.command_id,
                )
        _command_state(response, command.command_id, output.exit_code)
        return _serialize(root)

    def _signal(self, req: _Request, who: _Principal, endpoint: str) -> bytes:
        shell = self._shell(req, who)
        signal = req.body.find(_q("rsp", "Signal"))
        command_id = signal.get("CommandId") if signal is not None else None
        code_node = signal.find(_q("rsp", "Code")) if signal is not None else None
        code = (code_node.text or "").strip() if code_node is not None else ""
        if code.endswith("/terminate"):
            with self._lock:
                command = shell.commands.pop(command_id or "", None)
            if command is not None and command.process is not None:
                command.process.terminate()
        logger.debug(
            "shell %s: signal %s to %s", shell.shell_id, code.rsplit("/", 1)[-1], command_id
        )
        root, body = _envelope(f"{ACTION_SIGNAL}Response", req.message_id)
        _sub(body, "rsp", "SignalResponse")
        return _serialize(root)


# --- NTLM (SPNEGO Negotiate) and WinRM message encryption -------------------------------

# pyspnego's NTLM acceptor finds its users through the process-wide NTLM_USER_FILE variable,
# read while a context is created and while it checks the Authenticate message. Several
# servers in one process each have their own file, so those steps run under this lock
# with the variable pointing at the right file.
_NTLM_ENV_LOCK = threading.Lock()

_ENC_PROTOCOL: Final = "application/HTTP-SPNEGO-session-encrypted"
_BOUNDARY: Final = b"--Encrypted Boundary"
_OCTET_HEADER: Final = b"\tContent-Type: application/octet-stream\r\n"


def _nt_hash(password: str) -> str:
    # MD4 is missing from OpenSSL 3's default provider; pyspnego carries its own.
    return ntowfv1(password).hex().upper()


class _NtlmUsers:
    """The smbpasswd-format file pyspnego's acceptor reads, kept in a private directory.

    NT hashes rather than the Heimdal ``domain:user:password`` form, because a password
    may contain a colon. Each user gets lines for no domain and for ``.`` (the local
    machine, as Windows clients write it).
    """

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.path = directory / "ntlm_users"
        self._written: dict[str, str] | None = None

    def remove(self) -> None:
        with _NTLM_ENV_LOCK:
            shutil.rmtree(self.directory, ignore_errors=True)
            self._written = None

    def sync(self, users: dict[str, str]) -> None:
        if users == self._written and self.path.exists():
            return
        self.directory.mkdir(mode=0o700, exist_ok=True)
        lines = []
        for name, password in users.items():
            nt = _nt_hash(password)
            for principal in (name, f".\\{name}"):
                lines.append(f"{principal}:0:{'0' * 32}:{nt}:[U]:LCT-00000000\n")
        fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.writelines(lines)
        self._written = dict(users)

    @contextlib.contextmanager
    def active(self, users: dict[str, str]) -> Iterator[None]:
        with _NTLM_ENV_LOCK:
            self.sync(users)
            previous = os.environ.get("NTLM_USER_FILE")
            os.environ["NTLM_USER_FILE"] = str(self.path)
            try:
                yield
            finally:
                if previous is None:
                    os.environ.pop("NTLM_USER_FILE", None)
                else:
                    os.environ["NTLM_USER_FILE"] = previous


def _decrypt_body(context: Any, body: bytes) -> bytes:
    """Undo pywinrm's Encryption._encrypt_message (MS-WSMV 2.2.9.1.1)."""
    out = bytearray()
    pos = 0
    while not body.startswith(_BOUNDARY + b"--", pos):
        if not body.startswith(_BOUNDARY + b"\r\n", pos):
            raise ValueError("the encrypted body does not start with the MIME boundary")
        pos += len(_BOUNDARY) + 2
        header_end = body.find(_BOUNDARY + b"\r\n", pos)
        if header_end < 0:
            raise ValueError("the encrypted body has no payload part")
        length_match = re.search(rb"Length=(\d+)", body[pos:header_end])
        if length_match is None:
            raise ValueError("the encrypted body does not state the original length")
        length = int(length_match.group(1))
        pos = header_end + len(_BOUNDARY) + 2
        if not body.startswith(_OCTET_HEADER, pos):
            raise ValueError("the encrypted payload is not application/octet-stream")
        pos += len(_OCTET_HEADER)
        if pos + 4 > len(body):
            raise ValueError("the encrypted payload is truncated")
        (sig_len,) = struct.unpack("<I", body[pos : pos + 4])
        pos += 4
        # NTLM sealing (RC4) keeps the length, so the payload ends right after it.
        end = pos + sig_len + length
        if end > len(body):
            raise ValueError("the encrypted payload is truncated")
        header, sealed = body[pos : pos + sig_len], body[pos + sig_len : end]
        plain = cast(bytes, context.unwrap_winrm(header, sealed))
        if len(plain) != length:
            raise ValueError("the decrypted length does not match the stated length")
        out += plain
        pos = end
    return bytes(out)


def _encrypt_body(context: Any, message: bytes) -> bytes:
    """What pywinrm's Encryption._decrypt_response parses."""
    wrapped = context.wrap_winrm(message)
    header = cast(bytes, wrapped.header)
    return b"".join(
        [
            _BOUNDARY,
            b"\r\n\tContent-Type: ",
            _ENC_PROTOCOL.encode(),
            b"\r\n\tOriginalContent: type=application/soap+xml;charset=UTF-8;Length=",
            str(len(message)).encode(),
            b"\r\n",
            _BOUNDARY,
            b"\r\n",
            _OCTET_HEADER,
            struct.pack("<I", len(header)),
            header,
            cast(bytes, wrapped.data),
            _BOUNDARY,
            b"--\r\n",
        ]
    )


# --- HTTP ------------------------------------------------------------------------------


class _HTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = False  # a fixed port in use must fail loudly, not be shared
    block_on_close = False

    def __init__(
        self,
        address: tuple[str, int],
        owner: WSManServer,
        tls: ssl.SSLContext | None,
    ) -> None:
        self.owner = owner
        self.tls = tls
        self._open: set[socket.socket] = set()
        self._open_lock = threading.Lock()
        super().__init__(address, _Handler)

    def finish_request(self, request: Any, client_address: Any) -> None:
        conn = cast(socket.socket, request)
        # Headers and body go out in separate writes: without this, delayed ACKs add
        # ~40 ms to every request.
        with contextlib.suppress(OSError):
            conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if self.tls is not None:
            # Handshake in the worker thread, so a slow client cannot stall accept().
            conn.settimeout(30)
            try:
                conn = self.tls.wrap_socket(conn, server_side=True)
            except (ssl.SSLError, OSError) as exc:
                logger.info("TLS handshake from %s failed: %s", client_address[0], exc)
                with contextlib.suppress(OSError):
                    request.close()
                return
        with self._open_lock:
            self._open.add(conn)
        try:
            _Handler(conn, client_address, self)
        finally:
            with self._open_lock:
                self._open.discard(conn)
            if conn is not request:
                with contextlib.suppress(OSError):
                    conn.close()

    def handle_error(self, request: Any, client_address: Any) -> None:
        # A client that goes away mid-request (a provider process ending while its Receive
        # waits) is no server error: note it quietly instead of printing a traceback.
        exc = sys.exc_info()[1]
        if isinstance(exc, ConnectionError | ssl.SSLError | TimeoutError):
            logger.debug("client %s went away: %s", client_address[0], type(exc).__name__)
            return
        super().handle_error(request, client_address)

    def close_connections(self) -> None:
        with self._open_lock:
            conns = list(self._open)
        for conn in conns:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)
            with contextlib.suppress(OSError):
                conn.close()


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive: NTLM authenticates the connection
    server_version = "Microsoft-HTTPAPI/2.0"
    sys_version = ""
    timeout = 600  # idle keep-alive connections end eventually

    server: _HTTPServer

    def setup(self) -> None:
        super().setup()
        self._ntlm: Any = None  # a complete spnego context for this connection
        self._ntlm_user: str | None = None
        self._ntlm_pending: Any = None  # a context waiting for the Authenticate message
        self._final_token: bytes | None = None  # SPNEGO's last token, sent with the reply

    def log_message(self, format: str, *args: Any) -> None:
        # The request line and status only; headers are never logged.
        logger.debug("%s %s", self.address_string(), format % args)

    @property
    def _https(self) -> bool:
        return self.server.tls is not None

    # -- responses

    def _respond(
        self,
        status: int,
        body: bytes = b"",
        content_type: str | None = None,
        headers: list[tuple[str, str]] | None = None,
    ) -> None:
        self.send_response(status)
        if self._final_token:
            token = base64.b64encode(self._final_token).decode()
            self.send_header("WWW-Authenticate", f"Negotiate {token}")
        self._final_token = None
        if content_type is not None:
            self.send_header("Content-Type", content_type)
        for name, value in headers or []:
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if body:
            self.wfile.write(body)

    def _unauthorized(self, negotiate_token: bytes | None = None) -> None:
        if negotiate_token is not None:
            challenges = [
                ("WWW-Authenticate", f"Negotiate {base64.b64encode(negotiate_token).decode()}")
            ]
        else:
            challenges = [("WWW-Authenticate", "Negotiate")]
            # Windows offers Basic only when winrm/config/service/auth/Basic is true: a
            # client (and the doctor) can see from the challenge that it is off.
            if self._https and self.server.owner.config().auth_basic:
                challenges.append(("WWW-Authenticate", 'Basic realm="WSMAN"'))
        self._respond(401, headers=challenges)

    def _drop(self) -> None:
        self.close_connection = True
        with contextlib.suppress(OSError):
            self.connection.shutdown(socket.SHUT_RDWR)

    # -- methods

    def do_GET(self) -> None:
        self._read_body()
        self._respond(405, headers=[("Allow", "POST")])

    def do_POST(self) -> None:
        body = self._read_body()
        if body is None:
            return
        owner = self.server.owner
        # A request read whole is carried out even if its client has gone by the time it
        # is answered. Assumed, not known, of HTTP.sys and WinRM: the exit Delete whose
        # answer the client does not await relies on it (docs/real-host.md section 7 (h)).
        latency = owner.current_latency_ms()
        if latency > 0:
            time.sleep(latency / 1000)
        if urlsplit(self.path).path.rstrip("/").lower() != "/wsman":
            self._respond(404)
            return
        who = self._authenticate()
        if who is None:
            return
        if _request_too_large(len(body), owner.config()):
            logger.info("refused a %d-byte request of %s (MaxEnvelopeSizekb)", len(body), who.user)
            self._respond(413)
            return

        content_type = self.headers.get("Content-Type", "")
        encrypted = content_type.lower().startswith("multipart/encrypted")
        if encrypted:
            if self._ntlm is None or _ENC_PROTOCOL.lower() not in content_type.lower():
                self._respond(400, b"unsupported message encryption", "text/plain")
                return
            try:
                body = _decrypt_body(self._ntlm, body)
            except Exception as exc:  # spnego raises its own errors for bad seals
                logger.info("cannot decrypt a request from %s: %s", who.user, type(exc).__name__)
                self.close_connection = True
                self._respond(400, b"the encrypted message cannot be decrypted", "text/plain")
                return
        elif self._ntlm is not None and not self._https and body:
            # Windows refuses unencrypted traffic on HTTP (AllowUnencrypted=false).
            self._respond(400, b"unencrypted messages are refused on HTTP", "text/plain")
            return
        if not body:
            # pywinrm's empty POST that finishes the NTLM handshake before encrypting.
            self._respond(200)
            return

        status, reply = self._soap(body, who)
        if reply is None:
            self._drop()
            return
        if encrypted:
            reply = _encrypt_body(self._ntlm, reply)
            self._respond(
                status,
                reply,
                f'multipart/encrypted;protocol="{_ENC_PROTOCOL}";boundary="Encrypted Boundary"',
            )
        else:
            self._respond(status, reply, "application/soap+xml;charset=UTF-8")

    def _read_body(self) -> bytes | None:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            self.close_connection = True
            self._respond(411)
            return None
        try:
            length = int(self.headers.get("Content-Length", "0"))
        except ValueError:
            length = -1
        if length < 0 or length > _MAX_BODY:
            self.close_connection = True
            self._respond(413 if length > 0 else 400)
            return None
        return self.rfile.read(length) if length else b""

    def _soap(self, body: bytes, who: _Principal) -> tuple[int, bytes | None]:
        owner = self.server.owner
        scheme = "https" if self._https else "http"
        endpoint = f"{scheme}://{owner.host}:{self.server.server_address[1]}/wsman"
        relates_to: str | None = None
        try:
            req = _parse_request(body)
            relates_to = req.message_id
            req = _limit_timeout(req, owner.config())
            with owner.operation(who.user):
                reply = owner.service.handle(req, who, endpoint)
            logger.debug("%s %s -> 200", who.user, req.action.rsplit("/", 1)[-1])
            return 200, reply
        except _ConnectionDropError:
            return 0, None
        except _SoapFaultError as fault:
            logger.info("fault for %s: %s (%d)", who.user, fault.subcode, fault.wsman_code)
            return 500, _fault_envelope(fault, relates_to, owner.service.machine)
        except Exception as exc:
            # A bug here (or in a FaultSource) still answers like WinRM, not with a reset.
            logger.error("internal error answering %s: %s", who.user, _where(exc))
            internal = _SoapFaultError(
                "w:InternalError",
                f"The simulator failed to process the request ({type(exc).__name__}).",
                FAULT_INTERNAL,
                sender=False,
            )
            return 500, _fault_envelope(internal, relates_to, owner.service.machine)

    # -- authentication

    def _authenticate(self) -> _Principal | None:
        owner = self.server.owner
        header = self.headers.get("Authorization")
        if header is None:
            if self._ntlm_user is not None:
                return _Principal(self._ntlm_user, "ntlm")
            self._unauthorized()
            return None
        scheme, _, value = header.strip().partition(" ")
        lowered = scheme.lower()
        if lowered in ("negotiate", "ntlm"):
            return self._negotiate(value.strip())
        # Any other scheme ends an NTLM logon on this connection.
        self._ntlm = self._ntlm_user = self._ntlm_pending = None
        if lowered == "basic":
            if not self._https:
                # Basic on HTTP would carry the password in clear: refused, as Windows does.
                logger.info("refused Basic authentication on HTTP")
                self._unauthorized()
                return None
            if not owner.config().auth_basic:
                logger.info("refused Basic: winrm/config/service/auth/Basic is false")
                self._unauthorized()
                return None
            user = owner.check_basic(value.strip())
            if user is None or self._token_filtered(user):
                self._unauthorized()
                return None
            return _Principal(user, "basic")
        if header.strip() == MUTUAL_AUTH:
            if not owner.config().auth_certificate:
                logger.info("refused certificate auth: winrm/config/service/auth/Certificate")
                self._unauthorized()
                return None
            user = self._certificate_user() if self._https else None
            if user is None:
                self._unauthorized()
                return None
            return _Principal(user, "certificate")
        self._unauthorized()
        return None

    def _token_filtered(self, user: str) -> bool:
        """UAC remote restrictions: a local administrator other than the built-in one gets a
        filtered token over the network, and WinRM denies access (401) unless
        LocalAccountTokenFilterPolicy=1 (KB 951016)."""
        owner = self.server.owner
        if owner.config().local_account_token_filter_policy == 1:
            return False
        filtered = user.lower() in {u.lower() for u in owner.credentials.filtered_admins}
        if filtered:
            logger.info("access denied to %s: LocalAccountTokenFilterPolicy is not 1", user)
        return filtered

    def _certificate_user(self) -> str | None:
        conn = self.connection
        if not isinstance(conn, ssl.SSLSocket):
            return None
        der = conn.getpeercert(binary_form=True)
        if not der:
            logger.info("certificate authentication without a client certificate")
            return None
        thumbprint = hashlib.sha1(der, usedforsecurity=False).hexdigest().upper()
        user = self.server.owner.credentials.cert_users.get(thumbprint)
        if user is None:
            logger.info("client certificate %s is not mapped to a user", thumbprint)
        return user

    def _negotiate(self, value: str) -> _Principal | None:
        owner = self.server.owner
        try:
            token = base64.b64decode(value, validate=True)
        except (binascii.Error, ValueError):
            self._unauthorized()
            return None
        # An NTLM Negotiate (type 1) or a SPNEGO NegTokenInit (an ASN.1 application tag)
        # starts a new logon on this connection; anything else continues the pending one.
        initial = token.startswith((b"NTLMSSP\x00\x01\x00\x00\x00", b"\x60"))
        if not initial and self._ntlm_pending is None:
            self._unauthorized()
            return None
        if initial:
            self._ntlm = self._ntlm_user = None
            protocol = "ntlm" if token.startswith(b"NTLMSSP\x00") else "negotiate"
            try:
                with owner.ntlm_users.active(owner.credentials.users):
                    self._ntlm_pending = spnego.server(protocol=protocol)
            except Exception as exc:
                logger.error("cannot start an NTLM acceptor: %s", type(exc).__name__)
                self._ntlm_pending = None
                self._respond(500)
                return None
        context = self._ntlm_pending
        try:
            with owner.ntlm_users.active(owner.credentials.users):
                out = context.step(token)
        except Exception as exc:  # spnego's errors: wrong password, bad token
            logger.info("NTLM logon failed: %s", type(exc).__name__)
            self._ntlm_pending = None
            self._unauthorized()
            return None
        if not context.complete:
            self._unauthorized(out or b"")
            return None
        self._ntlm_pending = None
        self._final_token = out
        principal = str(context.client_principal or "")
        user = owner.canonical_user(principal.rsplit("\\", 1)[-1])
        if user is None or self._token_filtered(user):
            self._unauthorized()
            return None
        self._ntlm, self._ntlm_user = context, user
        logger.debug("NTLM logon of %s", user)
        return _Principal(user, "ntlm")


# --- the server ------------------------------------------------------------------------


class WSManServer:
    """WinRM on loopback: HTTPS (Basic, client certificate) and HTTP (NTLM, encrypted)."""

    def __init__(
        self,
        handler: CommandHandler | ProcessHandler,
        credentials: Credentials,
        *,
        tls_cert_pem: bytes,
        tls_key_pem: bytes,
        client_ca_pem: bytes,
        faults: FaultSource | None = None,
        host: str = "127.0.0.1",
        https_port: int = 0,
        http_port: int = 0,
        latency_ms: int = 0,
        machine: str = "SIMULATOR",
        config: Callable[[], WinRMService] = WinRMService,
        winrs: Callable[[], WinrsConfig] = WinrsConfig,
    ) -> None:
        self.credentials = credentials
        # Read on every request (the host's facts may change while it runs); the default
        # is Windows as shipped: Basic and certificate authentication off.
        self.config = config
        self._operations: dict[str, int] = {}
        self._operations_lock = threading.Lock()
        self.faults = faults
        self.latency_ms = latency_ms
        self.host = host
        self._ports = (https_port, http_port)
        # Through self: a test or the owner may swap self.config while the server runs.
        self.service = _ShellService(
            handler, lambda: self.faults, machine, self._current_config, winrs
        )
        self._reaper_stop = threading.Event()
        self._tls = self._tls_context(tls_cert_pem, tls_key_pem, client_ca_pem)
        self._private = Path(tempfile.mkdtemp(prefix="wsman-"))  # mode 0700
        self._cleanup = weakref.finalize(self, shutil.rmtree, self._private, True)
        self.ntlm_users = _NtlmUsers(self._private)
        self._servers: list[_HTTPServer] = []
        self._threads: list[threading.Thread] = []
        self._https_url: str | None = None
        self._http_url: str | None = None

    @staticmethod
    def _tls_context(cert_pem: bytes, key_pem: bytes, client_ca_pem: bytes) -> ssl.SSLContext:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        # load_cert_chain wants files: write them in a private directory for a moment.
        tmp = tempfile.mkdtemp(prefix="wsman-tls-")
        try:
            cert_file = os.path.join(tmp, "cert.pem")
            key_file = os.path.join(tmp, "key.pem")
            for path, data in ((cert_file, cert_pem), (key_file, key_pem)):
                fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
                with os.fdopen(fd, "wb") as fh:
                    fh.write(data)
            ctx.load_cert_chain(cert_file, key_file)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        if client_ca_pem.strip():
            # Ask for a client certificate without requiring one: Basic clients have none.
            ctx.load_verify_locations(cadata=client_ca_pem.decode("ascii"))
            ctx.verify_mode = ssl.CERT_OPTIONAL
        return ctx

    # -- lifecycle

    def start(self) -> None:
        if self._servers:
            raise RuntimeError("the WS-Management server is already running")
        https_port, http_port = self._ports
        try:
            https = _HTTPServer((self.host, https_port), self, self._tls)
            self._servers.append(https)
            http = _HTTPServer((self.host, http_port), self, None)
            self._servers.append(http)
        except BaseException:
            for server in self._servers:
                server.server_close()
            self._servers.clear()
            raise
        self._https_url = f"https://{self.host}:{https.server_address[1]}/wsman"
        self._http_url = f"http://{self.host}:{http.server_address[1]}/wsman"
        for server, name in ((https, "https"), (http, "http")):
            thread = threading.Thread(
                target=server.serve_forever,
                kwargs={"poll_interval": 0.05},  # stop() waits one interval
                name=f"wsman-{name}",
                daemon=True,
            )
            thread.start()
            self._threads.append(thread)
        self._reaper_stop.clear()
        reaper = threading.Thread(target=self._reap, name="wsman-idle-shells", daemon=True)
        reaper.start()
        self._threads.append(reaper)
        logger.info("WS-Management listening on %s and %s", self._https_url, self._http_url)

    def _reap(self) -> None:
        while not self._reaper_stop.wait(_REAPER_INTERVAL):
            try:
                self.service.expire_idle()
            except Exception as exc:  # a bug here must not stop the reaper
                logger.error("expiring idle shells failed: %s", _where(exc))

    def shells(self) -> list[dict[str, Any]]:
        """The open shells, as ``Get-WSManInstance shell -Enumerate`` lists them: id, owner,
        idle timeout (seconds) and the processes still running in each."""
        return self.service.shells()

    def stats(self) -> dict[str, Any]:
        """WS-Management requests per action, and the requests and answers of persistent
        processes after their first answer (see _ShellService.stats)."""
        return self.service.stats()

    def stop(self) -> None:
        self._reaper_stop.set()
        self.service.restart_service()  # the processes of every shell end with the service
        for server in self._servers:
            server.shutdown()
        for server in self._servers:
            server.server_close()
            server.close_connections()
        for thread in self._threads:
            thread.join(timeout=5)
        self._servers.clear()
        self._threads.clear()
        self.ntlm_users.remove()

    def __enter__(self) -> WSManServer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def https_url(self) -> str:
        if self._https_url is None:
            raise RuntimeError("start() the server first")
        return self._https_url

    @property
    def http_url(self) -> str:
        if self._http_url is None:
            raise RuntimeError("start() the server first")
        return self._http_url

    # -- used by the request handlers

    def current_latency_ms(self) -> int:
        if self.faults is not None:
            value = self.faults.latency_ms()
            if value is not None:
                return value
        return self.latency_ms

    def _current_config(self) -> WinRMService:
        return self.config()

    @contextlib.contextmanager
    def operation(self, user: str) -> Iterator[None]:
        """Count one request in flight for ``user`` (MaxConcurrentOperationsPerUser)."""
        limit = self.config().max_concurrent_operations_per_user
        key = user.lower()
        with self._operations_lock:
            if self._operations.get(key, 0) >= limit:
                raise _operation_quota_fault(limit)
            self._operations[key] = self._operations.get(key, 0) + 1
        try:
            yield
        finally:
            with self._operations_lock:
                self._operations[key] -= 1

    def canonical_user(self, name: str) -> str | None:
        """The Credentials spelling of a user name (Windows names are case-insensitive)."""
        for user in self.credentials.users:
            if user.lower() == name.lower():
                return user
        return None

    def check_basic(self, value: str) -> str | None:
        try:
            raw = base64.b64decode(value, validate=True)
        except (binascii.Error, ValueError):
            return None
        try:
            decoded = raw.decode("utf-8")
        except UnicodeDecodeError:
            decoded = raw.decode("latin-1")  # what requests sends for non-ASCII str
        name, sep, password = decoded.partition(":")
        if not sep:
            return None
        if name.startswith(".\\"):
            name = name[2:]
        user = self.canonical_user(name)
        expected = self.credentials.users.get(user) if user is not None else None
        # Compare even when the user is unknown, so timing does not tell which it was.
        ok = hmac.compare_digest(
            (expected or "\x00unknown").encode("utf-8"), password.encode("utf-8")
        )
        if not ok or user is None:
            logger.info("Basic logon failed for %r", name)
            return None
        return user
