"""A persistent agent per host: one shell and one agent process per host per provider
process, so that each agent call after the first is one Send and one Receive.

The first call to a host opens a shell (with an idle timeout), starts the constant
bootstrap in it (pipe-mode stdin, no cmd.exe) and sends the agent frame with its request;
powershell.exe, the agent script, Microsoft.Web.Administration and the agent's emitted
types are loaded there once. Every later call sends one request frame (one ``Send``) and
gets its result frame from the ``Receive`` that is already waiting: a receiver thread keeps
one Receive posted while calls are in flight and for ``LINGER_SECONDS`` after the last, so
the answer comes back as soon as the agent writes it.

Concurrent calls to one host share its agent, in order (not a pool of agents): Pulumi's
dynamic-provider server runs at most 4 calls at once, and a pool would start up to 4
powershell.exe per host (0.5-1.5 s each) and hold 4 of the account's MaxShellsPerUser
shells, while write batches are serialised on the host anyway (the agent's host mutex) and
reads take milliseconds against round trips of tens to hundreds. Calls do not wait for each
other's answers: each call's frame goes out as soon as no Send is in flight (frames queued
meanwhile leave together in the next Send, so at most one Send per session is on the wire
and frames never interleave), the agent answers them in order, and the receiver hands each
answer to its caller by request id. A burst of 4 calls costs about two round trips, not
four.

What is never repeated blindly (the retry rules of winrm_transport hold): a request whose
Send or answer failed may have run, so its call fails with ``command_may_have_run=True``
(read-only batches are sent again, to a new session). A session that failed in any way is
abandoned whole (its shell deleted): a late answer can never be taken for another call's.
A request that provably never reached the host (the shell was gone when its Send came: the
idle timeout, a WinRM restart) goes to a new session at once. When the host refuses a new
shell (MaxShellsPerUser), calls to it fall back to one-shot commands (a shell per call,
deleted at once) for ``ONE_SHOT_SECONDS``.

Sessions live in a module-level pool keyed like the WinRM endpoints (endpoint, user,
transport, digest of the secrets), never in a pickled provider; they are closed when the
provider process exits (atexit: one Delete per shell, all hosts at once, within
``CLOSE_SECONDS``; the engine gives a provider 5 s after its interrupt, and waits for it: with
Basic and certificate authentication the Delete's answer is not awaited,
``EXIT_ANSWER_SECONDS``). A provider process
that dies without closing them leaves each shell, and its agent, until the host's idle
timeout (``SHELL_IDLE_SECONDS``) removes it.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Final

import winrm.exceptions

from iis_clientcert.errors import (
    AgentProtocolError,
    ContractError,
    HostTimeoutError,
    IisClientCertError,
    TransportError,
)
from iis_clientcert.host import contract, winrm_transport
from iis_clientcert.host.connection import Connection
from iis_clientcert.host.winrm_transport import (
    CODEPAGE_UTF8,
    FAULT_PIPE_CLOSING,
    FAULT_QUOTA_MAX_SHELLS,
    FAULT_SHELL_NOT_FOUND,
    _Endpoint,
    _endpoint_for,
    _map_error,
    _MappedError,
)

log = logging.getLogger(__name__)

# The shell's IdleTimeOut (rsp:IdleTimeOut of the Create request): a provider process that
# dies leaves its shell and agent this long. Windows applies at least 60 s (the WinRS
# IdleTimeout policy) and at most the server's IdleTimeout (7200 s by default). A live
# session keeps its shell with Receives (one per operation timeout, which must stay
# shorter: see _idle_timeout).
SHELL_IDLE_SECONDS: float = 120.0
# After the last call, the receiver keeps a Receive posted this long, so the next call's
# answer needs no Receive of its own; then it stops (an idle provider process sends
# nothing, and its shell goes after SHELL_IDLE_SECONDS unless a call comes first).
LINGER_SECONDS: float = 60.0
# How long calls to a host that refused a shell (MaxShellsPerUser) go one-shot.
ONE_SHOT_SECONDS: float = 60.0
# Whether a request frame that fits one Send goes out at once, beside the Sends of other
# calls (False: one Send per session on the wire at a time, frames queued meanwhile leave
# together). Two Sends to one command at once are safe only if WinRS writes each Send's
# data to the process's stdin whole (docs/real-host.md, "Concurrent Sends"); until a
# Windows host confirms it, they stay serialised. IIS_CLIENTCERT_CONCURRENT_SENDS=1 turns
# them on for a provider process (that check, and the floor of `make bench`, where the
# client must add no waiting of its own).
CONCURRENT_SENDS: bool = os.environ.get("IIS_CLIENTCERT_CONCURRENT_SENDS") == "1"
# Closing every session at exit takes at most this long.
CLOSE_SECONDS: Final = 3.0
# At exit, how long the Delete of a shell waits for the host's answer (Basic and
# certificate transports, which need no handshake on a new connection): nobody needs it
# (the engine waits for the provider process to end, so on a WAN a whole round trip was
# spent here at the end of every `pulumi up`, refresh and destroy). The Delete is sent
# whole; if it never arrives, the host's idle timeout removes the shell (SHELL_IDLE_SECONDS).
EXIT_ANSWER_SECONDS: Final = 0.1


class _Undelivered(IisClientCertError):  # noqa: N818 (control flow)
    """The request never reached an agent (its session was gone before the Send)."""


class _Refused(IisClientCertError):  # noqa: N818 (control flow)
    """The host refused the session's shell (MaxShellsPerUser): go one-shot."""

    def __init__(self, failure: _MappedError) -> None:
        super().__init__(str(failure))
        self.failure = failure


@dataclass(eq=False)
class _Call:
    request: dict[str, Any]
    request_id: int
    frame: bytes
    deadline: float
    sent: bool = False
    done: bool = False
    result: bytes | None = None
    error: BaseException | None = None


@dataclass(eq=False)
class _Stats:
    """What a session did (for tests and benchmarks)."""

    opened: float = field(default_factory=time.monotonic)
    calls: int = 0
    sends: int = 0
    receives: int = 0


class AgentSession:
    """One shell with one agent process on one host (see the module docstring)."""

    def __init__(self, endpoint: _Endpoint, agent_script: str) -> None:
        self.endpoint = endpoint
        self.conn = endpoint.connection
        self._script = agent_script
        self._cond = threading.Condition()
        self._state = "new"  # new -> open -> ended | closed
        self.shell_id: str | None = None
        self.command_id: str | None = None
        self._next_id = 1
        self._queue: list[_Call] = []
        self._calls: dict[int, _Call] = {}
        self._sending = False
        # The Send carrying the agent itself went through: a request frame sent before it
        # ends could reach the process first (the agent would refuse it, unread).
        self._agent_delivered = False
        self._receiving = False
        self._last_call = time.monotonic()
        self._stdout = bytearray()
        self._stderr = bytearray()
        self.stats = _Stats()

    # --- the caller's side ------------------------------------------------------------

    @property
    def usable(self) -> bool:
        with self._cond:
            return self._state in ("new", "open")

    def call(self, request: dict[str, Any]) -> bytes:
        """Send ``request`` to the agent; its result frame's JSON. Raises _MappedError,
        _Undelivered, _Refused, or the error of an agent that ended without answering."""
        budget = max(winrm_transport.MIN_RECEIVE_SECONDS, 5 * self.conn.read_timeout)
        with self._cond:
            if self._state not in ("new", "open"):
                raise _Undelivered
            request_id = self._next_id
            self._next_id += 1
            call = _Call(
                request,
                request_id,
                contract.request_frame(request_id, request),
                time.monotonic() + budget,
            )
            self._calls[request_id] = call
            self._last_call = time.monotonic()
            self.stats.calls += 1
            # A frame that fits one Send may go at once, beside other such Sends, when the
            # session is open and CONCURRENT_SENDS allows it; otherwise frames queue and
            # leave together, one Send on the wire at a time.
            direct = (
                CONCURRENT_SENDS
                and self._state == "open"
                and self._agent_delivered
                and len(call.frame) <= winrm_transport.STDIN_CHUNK
            )
            send = False
            if not direct:
                self._queue.append(call)
                send = not self._sending
                if send:
                    self._sending = True
            if self._state == "open":
                self._ensure_receiver()
        if direct:
            self._send([call], call.frame)
        elif send:
            self._pump()
        with self._cond:
            while not call.done:
                remaining = call.deadline - time.monotonic()
                if remaining <= 0:
                    self._fail_all(
                        _MappedError(
                            HostTimeoutError(
                                self.conn.host,
                                f"the agent did not answer within {budget:g} s",
                                command_may_have_run=call.sent,
                            ),
                            retryable=True,
                        )
                    )
                    break
                self._cond.wait(remaining)
        if call.error is not None:
            raise call.error
        assert call.result is not None
        return call.result

    def _pump(self) -> None:
        """Send queued frames, one Send at a time, until the queue is empty."""
        while True:
            with self._cond:
                batch, self._queue = self._queue, []
                if not batch or self._state not in ("new", "open"):
                    self._sending = False
                    for call in batch:  # the session failed meanwhile: never sent
                        self._finish(call, error=_Undelivered())
                    self._cond.notify_all()
                    return
                opening = self._state == "new"
            if opening:
                try:
                    self._open()
                except _MappedError as failure:
                    refused = _is_quota(failure)
                    with self._cond:
                        for call in [*batch, *self._queue]:
                            self._finish(call, error=_Refused(failure) if refused else failure)
                        self._queue = []
                        self._sending = False
                        self._state = "ended"
                        self._cond.notify_all()
                    return
            payload = (contract.agent_frame(self._script) if opening else b"") + b"".join(
                call.frame for call in batch
            )
            if self._send(batch, payload) and opening:
                with self._cond:
                    self._agent_delivered = True

    def _send(self, batch: list[_Call], payload: bytes) -> bool:
        """Send ``payload`` (the frames of ``batch``); whether all of it went through."""
        chunks = winrm_transport._chunks(payload)
        protocol = self.endpoint.acquire()
        reusable = False
        sent_any = False
        try:
            with self._cond:
                for call in batch:
                    call.sent = True
            for part in chunks:
                assert self.shell_id is not None and self.command_id is not None
                protocol.send_command_input(self.shell_id, self.command_id, part, end=False)
                sent_any = True
                with self._cond:
                    self.stats.sends += 1
            reusable = True
        except Exception as exc:
            if not sent_any and _session_gone(exc):
                # The shell (or its process) was gone before this Send: nothing of it
                # reached an agent. A new session takes these requests.
                log.info("%s: the agent's shell is gone; opening a new one", self.conn.host)
                self._abandon(undelivered=batch)
            else:
                self._abandon(failure=self._failure(exc, "send"))
        finally:
            self.endpoint.release(protocol, reusable)
        return reusable

    def _failure(self, exc: BaseException, stage: winrm_transport.Stage) -> _MappedError:
        """A Send or Receive failed after requests went out: they may have run."""
        if _session_gone(exc):
            # The shell went (a WinRM restart, the idle timeout) with the requests in it:
            # a new session may well work (for what may be repeated).
            return _MappedError(
                TransportError(
                    self.conn.host,
                    f"the agent's shell on the host is gone (during {stage}): WinRM restarted, "
                    "or the shell's idle timeout passed",
                    command_may_have_run=True,
                ),
                retryable=True,
            )
        return _map_error(exc, self.conn, stage, may_have_run=True)

    # --- opening and the receiver -----------------------------------------------------

    def _idle_timeout(self) -> float:
        # Receives come once per operation timeout while the session is in use; the shell
        # must outlive two of them.
        return max(SHELL_IDLE_SECONDS, 2 * self.conn.operation_timeout)

    def _open(self) -> None:
        protocol = self.endpoint.acquire()
        reusable = False
        stage: winrm_transport.Stage = "open_shell"
        shell_id: str | None = None
        try:
            try:
                shell_id = protocol.open_shell(
                    codepage=CODEPAGE_UTF8,
                    noprofile=True,
                    idle_timeout=f"PT{self._idle_timeout():.3f}S",
                )
                stage = "run_command"
                # Pipe-mode stdin, no cmd.exe: see winrm_transport._run_once.
                command_id = protocol.run_command(
                    shell_id,
                    contract.executable(self.conn.shell),
                    contract.command_arguments(),
                    console_mode_stdin=False,
                    skip_cmd_shell=True,
                )
            except Exception as exc:
                winrm_transport._tidy(protocol, shell_id, None)
                raise _map_error(exc, self.conn, stage, may_have_run=False) from None
            reusable = True
        finally:
            self.endpoint.release(protocol, reusable)
        with self._cond:
            self.shell_id, self.command_id = shell_id, command_id
            self._state = "open"
            self._ensure_receiver()

    def _ensure_receiver(self) -> None:
        # Under self._cond.
        if self._receiving or self._state != "open":
            return
        self._receiving = True
        threading.Thread(
            target=self._receive_loop, name=f"agent-receiver-{self.conn.host}", daemon=True
        ).start()

    def _receive_loop(self) -> None:
        # A Protocol of its own: its Receive waits on the wire while Sends go out on others.
        protocol = self.endpoint.acquire()
        reusable = False
        try:
            while True:
                with self._cond:
                    if self._state != "open":
                        reusable = True
                        return
                    idle = time.monotonic() - self._last_call
                    if not self._calls and idle > LINGER_SECONDS:
                        self._receiving = False
                        reusable = True
                        return
                    shell_id, command_id = self.shell_id, self.command_id
                assert shell_id is not None and command_id is not None
                try:
                    out, err, code, done = protocol.get_command_output_raw(shell_id, command_id)
                except winrm.exceptions.WinRMOperationTimeoutError:
                    continue  # nothing yet: normal while an op runs, or while idle
                except Exception as exc:
                    with self._cond:
                        closing = self._state != "open"
                    if not closing:
                        self._abandon(failure=self._failure(exc, "receive"))
                    return
                self._take(out, err, code if done else None)
                if done:
                    return
        finally:
            with self._cond:
                if self._state != "open":
                    self._receiving = False
            self.endpoint.release(protocol, reusable)

    def _take(self, out: bytes, err: bytes, exit_code: int | None) -> None:
        """Output of one Receive: hand each result to its call; an ended process fails the
        calls it did not answer."""
        with self._cond:
            self.stats.receives += 1
            self._stdout += out
            self._stderr += err
            for answered, body in contract.take_results(self._stdout):
                request_id = answered
                if answered == contract.NO_REQUEST and self._calls:
                    # An answer to no request (the agent refused its own frame): the oldest
                    # call gets it, as a one-shot command's caller would.
                    request_id = min(self._calls)
                call = self._calls.get(request_id)
                if call is not None:
                    self._finish(call, result=body)
            if exit_code is not None:
                self._state = "ended"
                self._receiving = False
                for call in list(self._calls.values()):
                    error = winrm_transport.no_answer(
                        self.conn, call.request, exit_code, bytes(self._stdout), bytes(self._stderr)
                    )
                    if isinstance(error, AgentProtocolError):
                        self._finish(call, error=error)
                    else:
                        self._finish(call, error=_MappedError(error, retryable=True))
            self._cond.notify_all()
        if exit_code is not None:
            self._tidy_later()

    # --- failing and closing ----------------------------------------------------------

    def _finish(
        self, call: _Call, *, result: bytes | None = None, error: BaseException | None = None
    ) -> None:
        # Under self._cond.
        call.result, call.error, call.done = result, error, True
        self._calls.pop(call.request_id, None)

    def _fail_all(self, failure: _MappedError) -> None:
        # Under self._cond: every call in flight fails; the session is abandoned.
        for call in list(self._calls.values()):
            if call.sent:
                self._finish(call, error=failure)
            else:
                self._finish(call, error=_Undelivered())
        self._queue = []
        if self._state == "open":
            self._state = "ended"
            self._tidy_later()
        elif self._state == "new":
            self._state = "ended"
        self._cond.notify_all()

    def _abandon(
        self, *, failure: _MappedError | None = None, undelivered: list[_Call] | None = None
    ) -> None:
        with self._cond:
            for call in undelivered or []:
                call.sent = False
            gone = TransportError(
                self.conn.host,
                "the agent's shell is gone (idle timeout, or WinRM restarted)",
                command_may_have_run=True,  # for calls sent before
            )
            self._fail_all(failure or _MappedError(gone, retryable=True))

    def _tidy_later(self) -> None:
        """Delete the shell (its agent with it) in the background: a failed session is not
        used again, and its caller need not wait for the host to confirm."""
        threading.Thread(target=self._delete_shell, name="agent-tidy", daemon=True).start()

    def _delete_shell(self, wait_for_answer: bool = True) -> None:
        shell_id = self.shell_id
        if shell_id is None:
            return
        protocol = self.endpoint.acquire()
        ok = False
        # NTLM, Kerberos and CredSSP authenticate a new connection with a handshake whose
        # answers must come first: their Delete waits for its answer as before.
        wait_for_answer = wait_for_answer or self.conn.transport not in ("basic", "certificate")
        if not wait_for_answer:
            # The request still goes out whole (the connect, TLS and the send are not cut
            # short; Basic credentials go with the request); only the wait for the answer is.
            conn = self.conn
            protocol.transport.read_timeout_sec = (conn.connect_timeout, EXIT_ANSWER_SECONDS)  # type: ignore[assignment]
        try:
            # Deleting a shell ends its processes (MS-WSMV 3.1.4.6), so no Signal first.
            protocol.close_shell(shell_id, close_session=False)
            ok = wait_for_answer
        except Exception:
            if wait_for_answer:
                log.debug("deleting the agent's shell failed", exc_info=True)
        finally:
            # Not reused without the answer: its connection may still have one coming.
            self.endpoint.release(protocol, ok)

    def close(self, wait_for_answer: bool = True) -> None:
        """End the session: its shell and agent are deleted on the host (``wait_for_answer``
        False: the Delete is sent, its answer not awaited)."""
        with self._cond:
            was_open = self._state == "open"
            self._state = "closed"
            for call in list(self._calls.values()):
                self._finish(call, error=_Undelivered())
            self._cond.notify_all()
        if was_open:
            self._delete_shell(wait_for_answer)


def _fault_code(exc: BaseException) -> int | None:
    if isinstance(exc, winrm.exceptions.WSManFaultError) and exc.wsman_fault_code is not None:
        return exc.wsman_fault_code & 0xFFFFFFFF
    return None


def _session_gone(exc: BaseException) -> bool:
    """A Send refused because the shell, or its process's stdin, no longer exists."""
    return _fault_code(exc) in (FAULT_SHELL_NOT_FOUND, FAULT_PIPE_CLOSING)


def _is_quota(failure: _MappedError) -> bool:
    code = getattr(failure.error, "code", None)
    return isinstance(code, int) and code & 0xFFFFFFFF == FAULT_QUOTA_MAX_SHELLS


# --- the pool -----------------------------------------------------------------------------

_Key = tuple[str, str, str, str]
_SESSIONS: dict[_Key, AgentSession] = {}  # winrm_transport.endpoint_key -> the session
_ONE_SHOT_UNTIL: dict[_Key, float] = {}  # until when calls to a host go one-shot
_LOCK = threading.Lock()


def session_for(conn: Connection, agent_script: str) -> AgentSession | None:
    """The host's session (a new one if it has none that works); None while the host
    refuses shells (go one-shot)."""
    key = winrm_transport.endpoint_key(conn)
    endpoint = _endpoint_for(conn)
    with _LOCK:
        if time.monotonic() < _ONE_SHOT_UNTIL.get(key, 0.0):
            return None
        session = _SESSIONS.get(key)
        if session is None or not session.usable or session.endpoint is not endpoint:
            session = _SESSIONS[key] = AgentSession(endpoint, agent_script)
        return session


def _one_shot_for_a_while(conn: Connection) -> None:
    with _LOCK:
        _ONE_SHOT_UNTIL[winrm_transport.endpoint_key(conn)] = time.monotonic() + ONE_SHOT_SECONDS


def sessions() -> list[AgentSession]:
    """The sessions of this process (for tests and benchmarks)."""
    with _LOCK:
        return list(_SESSIONS.values())


def close_sessions() -> None:
    """Delete every session's shell on its host (all hosts at once, within CLOSE_SECONDS)."""
    with _LOCK:
        open_sessions = list(_SESSIONS.values())
        _SESSIONS.clear()
        _ONE_SHOT_UNTIL.clear()
    threads = []
    for session in open_sessions:
        try:
            thread = threading.Thread(
                target=session.close, args=(False,), name="agent-close", daemon=True
            )
            thread.start()
            threads.append(thread)
        except RuntimeError:  # no new threads at this point of interpreter shutdown
            session.close(wait_for_answer=False)
    deadline = time.monotonic() + CLOSE_SECONDS
    for thread in threads:
        thread.join(max(0.0, deadline - time.monotonic()))


# winrm_transport.close_pool (called at exit too) closes the sessions first.
winrm_transport.before_close(close_sessions)


# --- one request -------------------------------------------------------------------------


def run_agent_request(
    conn: Connection, agent_script: str, request: dict[str, Any]
) -> dict[str, Any]:
    """Send one contract request to the host's agent; the parsed contract result (ok or
    not). The host's persistent agent, or a one-shot command while the host refuses it."""
    read_only = winrm_transport.is_read_only(request)
    reopened = 0

    def attempt() -> dict[str, Any]:
        nonlocal reopened
        while True:
            session = session_for(conn, agent_script)
            if session is None:
                return winrm_transport.run_agent_request_once(conn, agent_script, request)
            try:
                body = session.call(request)
            except _Undelivered:
                # Nothing reached a host: a new session, at once (a few times at most).
                reopened += 1
                if reopened > 3:
                    raise _MappedError(
                        TransportError(
                            conn.host, "the host closed the agent's shell again and again"
                        ),
                        retryable=True,
                    ) from None
                continue
            except _Refused as refused:
                log.info("%s: %s; one-shot commands for now", conn.host, refused.failure.error)
                _one_shot_for_a_while(conn)
                return winrm_transport.run_agent_request_once(conn, agent_script, request)
            try:
                return contract.parse_result(body)
            except ContractError as exc:
                raise AgentProtocolError(
                    conn.host, f"the agent's answer is not a contract result: {exc}"
                ) from None

    return winrm_transport.with_retries(conn, attempt, read_only=read_only)
