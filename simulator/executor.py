"""Runs the commands the WS-Management server receives: the agent, and nothing else.

A command is the agent when it is ``powershell.exe`` (Windows PowerShell 5.1) or
``pwsh.exe`` (PowerShell 7, when the host has it) with exactly the contract's bootstrap
arguments (or a script that is the bootstrap). It runs as a process (:class:`AgentProcess`),
started at the Command request as WinRS starts one: it reads stdin as the client sends it
(the genuine iis_clientcert/host/agent.ps1 first, then request frames), answers each
request with a result frame on stdout while it runs, and ends at the end of stdin: one
request for a one-shot command, many for a persistent agent. Anything else fails the way
powershell.exe or cmd.exe would. Requests run under the state lock, op by op, stopping at
the first error; every request leaves one line in audit.log, naming the agent process that
ran it (``process``; ``process_started`` on the first line of each process).

A process pays the host's costs (simulator/host_costs.py: its start, the agent's load, the
first Add-Type compile, each op's work) and meets the faults of faults.json that name agent
requests: ``drop`` (the k-th request's Send or answer is lost with its connection),
``kill_agent`` (the process dies before or after running the k-th request, or just after
answering it) and ``restart_winrm`` (the WinRM service restarts at that point: every shell
and process is gone); ``when`` is ``before_run``, ``after_run`` or (for the last two)
``after_answer``.
In floor mode (``floor_ms``) each request costs exactly one round trip, paid when it arrives.
"""

from __future__ import annotations

import collections
import contextlib
import hashlib
import itertools
import json
import logging
import re
import shlex
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Any

from iis_clientcert.errors import ContractError
from iis_clientcert.host.contract import (
    AGENT_FRAME_MISSING,
    BOOTSTRAP,
    NO_REQUEST,
    OPS,
    command_arguments,
    error_result,
    parse_stdin_line,
    result_frame,
    validate_request,
)
from iis_clientcert_simulator import audit
from iis_clientcert_simulator.agent_reading import MUTEX_NAME, AgentText
from iis_clientcert_simulator.errors import HR_FAIL, CommitConflictError, OpError, injected_error
from iis_clientcert_simulator.files import read_json, write_json
from iis_clientcert_simulator.host_costs import NONE, HostCosts
from iis_clientcert_simulator.ops import HANDLERS
from iis_clientcert_simulator.powershell_editions import EXECUTABLES, Edition, violations
from iis_clientcert_simulator.powershell_errors import (
    clixml_error,
    decode_encoded_command,
    not_recognized_cmd,
    not_recognized_powershell,
)
from iis_clientcert_simulator.state import HostState, Session
from iis_clientcert_simulator.wsman import (
    CommandNotStarted,
    CommandOutcome,
    DropConnection,
    FileFaults,
    ProcessOutput,
    ShellCommand,
    ShellControl,
    StdinNeverEnds,
    faults_lock,
)

logger = logging.getLogger(__name__)

# The exit code of the bootstrap when stdin does not start with the genuine agent.
_PAYLOAD_EXIT = 2
# What a process killed on the host exits with (Stop-Process, Task Manager).
_KILLED_EXIT = 1
# When a kill_agent / restart_winrm fault strikes, relative to its request.
HOST_FAULT_WHENS = ("before_run", "after_run", "after_answer")
_POWERSHELL_NAMES = tuple(EXECUTABLES)
# What CreateProcess answers for a program that is not there (WINRS_SKIP_CMD_SHELL=TRUE).
_FILE_NOT_FOUND = 0x80070002
_PATH_NOT_FOUND = 0x80070003
# powershell.exe parameters that take a value (so the value is not the command).
_VALUE_PARAMS = (
    "-executionpolicy",
    "-inputformat",
    "-outputformat",
    "-windowstyle",
    "-configurationname",
    "-psconsolefile",
    "-version",
    "-file",
)


def _normalize_script(text: str) -> bytes:
    # A client may read agent.ps1 with or without a BOM and with CRLF or LF line ends.
    return text.lstrip("\ufeff").replace("\r\n", "\n").encode("utf-8")


def agent_script_digest() -> str | None:
    """sha256 of the agent.ps1 shipped in iis_clientcert.host (None if it is absent)."""
    try:
        text = resources.files("iis_clientcert.host").joinpath("agent.ps1").read_text("utf-8")
    except (FileNotFoundError, OSError):
        return None
    return hashlib.sha256(_normalize_script(text)).hexdigest()


def _split(text: str) -> list[str]:
    """Split a Windows command line (quotes group words; the quotes are dropped)."""
    try:
        tokens = shlex.split(text, posix=False)
    except ValueError:
        tokens = text.split()
    return [t[1:-1] if len(t) > 1 and t[0] == t[-1] == '"' else t for t in tokens]


def _argv(command: ShellCommand) -> list[str]:
    # pywinrm puts a whole command line in <rsp:Command> (run_ps) or joins the arguments
    # into one <rsp:Arguments> (run_command): split everything the way cmd.exe would.
    out = _split(command.executable)
    for argument in command.arguments:
        out.extend(_split(argument))
    return out


def _basename(token: str) -> str:
    return re.split(r"[\\/]", token)[-1]


def _powershell_script(args: list[str]) -> str | None:
    """The script a powershell.exe command line runs (None if -EncodedCommand is garbage)."""
    i = 0
    while i < len(args):
        token = args[i]
        low = token.lower()
        if (
            low.startswith("-")
            and len(low) >= 2
            and "-encodedcommand".startswith(low)
            and low != "-"
        ):
            if i + 1 >= len(args):
                return ""
            try:
                return decode_encoded_command(args[i + 1])
            except ValueError:
                return None
        if low.startswith("-") and len(low) >= 2 and "-command".startswith(low):
            return " ".join(args[i + 1 :])
        if low in _VALUE_PARAMS:
            i += 2
            continue
        if low.startswith("-"):
            i += 1
            continue
        return " ".join(args[i:])
    return ""


# How long a write batch waits for the agent mutex (the agent's own wait, agent.ps1).
MUTEX_TIMEOUT = 120.0


@dataclass(frozen=True)
class AgentRun:
    """What the agent script does on this host, as the simulator reads it (agent_reading)."""

    refused: dict[str, OpError] = field(default_factory=dict)  # op -> the error it meets
    takes_mutex: bool = False  # holds the host's agent mutex around a write batch
    retries_conflict: bool = False  # runs an op again once after a commit conflict
    serves_many: bool = True  # answers request after request (a persistent agent)
    compiles: frozenset[str] = frozenset()  # ops that can reach an Add-Type compile
    emits: frozenset[str] = frozenset()  # ops that can reach a Reflection.Emit type
    starts_programs: frozenset[str] = frozenset()  # ops that can start netsh.exe, ...


@lru_cache(maxsize=16)  # once per script and edition, not at every process start
def read_agent(script: str, edition: Edition) -> tuple[tuple[tuple[str, str], ...], AgentRun]:
    """What an agent script does on an edition, read from its text: the ops that need the
    account's TEMP (op, why), and the AgentRun of a host whose account has one."""
    reading = AgentText.read(script)
    return tuple(reading.ops_needing_temp(edition).items()), AgentRun(
        takes_mutex=reading.takes_host_mutex(),
        retries_conflict=reading.retries_commit_conflict(),
        serves_many=reading.serves_many_requests(),
        compiles=reading.ops_compiling(),
        emits=reading.ops_emitting(),
        starts_programs=reading.ops_starting_programs(),
    )


def agent_script_text() -> str:
    try:
        return resources.files("iis_clientcert.host").joinpath("agent.ps1").read_text("utf-8")
    except (FileNotFoundError, OSError):
        return ""


def _reads_stdin(script: str) -> bool:
    """Whether a PowerShell script reads its standard input (from its text)."""
    return "OpenStandardInput()" in script and (".ReadToEnd()" in script or ".ReadLine()" in script)


def _first_word(script: str) -> str:
    match = re.match(r"\s*([^\s;|(){}]+)", script)
    return match.group(1) if match else ""


class _Killed(Exception):  # noqa: N818 (control flow inside a process thread)
    """The process was ended (terminate, a kill fault, the service restarting)."""


class FinishedProcess:
    """A command that ended as soon as it started (a refused command line): its output."""

    def __init__(self, outcome: CommandOutcome) -> None:
        self._outcome = outcome
        self._taken = False
        self._lock = threading.Lock()

    @property
    def exited(self) -> bool:
        return True

    @property
    def answers(self) -> int:
        return 0

    def write(self, data: bytes, end: bool) -> None:
        return None  # stdin of a process that is gone: nothing reads it

    def read(self, timeout: float, budget: int) -> ProcessOutput:
        with self._lock:
            if self._taken:
                return ProcessOutput(b"", b"", self._outcome.exit_code)
            self._taken = True
        # Refusals are short; one Receive takes them whole.
        return ProcessOutput(self._outcome.stdout, self._outcome.stderr, self._outcome.exit_code)

    def terminate(self) -> None:
        return None

    def wait(self) -> CommandOutcome:
        return self._outcome


class AgentProcess:
    """powershell.exe (or pwsh.exe) running the bootstrap: reads stdin as it arrives, answers
    each request on stdout, ends at the end of stdin (see the module docstring)."""

    def __init__(
        self,
        executor: Executor,
        command: ShellCommand,
        edition: Edition,
        control: ShellControl | None,
    ) -> None:
        self._x = executor
        self._edition = edition
        self._control = control
        self.number = next(executor._process_numbers)
        self._base: dict[str, Any] = {
            "user": command.user,
            "auth": command.auth,
            "shell_id": command.shell_id,
            "command_id": command.command_id,
            "process": self.number,
        }
        self._first_line = True
        self._host_ms = 0.0  # host costs spent since the last audit line
        self._cond = threading.Condition()
        self._lines: collections.deque[bytes] = collections.deque()
        self._tail = bytearray()  # stdin after the last line break
        self._eof = False
        self._out = bytearray()
        self._err = bytearray()
        self._out_pos = 0
        self._err_pos = 0
        self._exit: int | None = None
        self._killed = False
        self._requests_in = 0  # request lines received (numbered from 1)
        self._requests_run = 0  # request lines read by the agent (the same numbers)
        self._answers = 0
        # Request numbers whose answer a drop fault loses, and where each answer ends in
        # stdout (request number -> offset after it).
        self._lose: set[int] = set()
        self._answer_ends: dict[int, int] = {}
        self._thread = threading.Thread(
            target=self._main, name=f"agent-process-{self.number}", daemon=True
        )
        self._thread.start()

    # --- what WS-Management sees (wsman.CommandProcess) -----------------------------------

    @property
    def exited(self) -> bool:
        with self._cond:
            return self._exit is not None

    @property
    def answers(self) -> int:
        with self._cond:
            return self._answers

    def write(self, data: bytes, end: bool) -> None:
        with self._cond:
            if self._exit is not None:
                return
            pending = bytes(self._tail) + data
            *complete, rest = pending.split(b"\n")
        requests = sum(1 for line in complete if parse_stdin_line(line).kind == "request")
        lose: list[int] = []
        if requests and self._control is not None:
            # The Send that brings requests: what the network does to it.
            for offset in range(requests):
                when = self._x.faults.take_nth("drop", "command")
                if when == "before_run":
                    raise DropConnection  # none of it arrives
                if when == "after_run":
                    lose.append(offset)
            if self._x.floor_ms > 0:
                time.sleep(self._x.floor_ms / 1000)  # the one round trip of the call
        with self._cond:
            if self._ended():  # it ended while the request travelled
                return
            first = self._requests_in + 1
            self._lose.update(first + offset for offset in lose)
            self._requests_in += requests
            self._lines.extend(complete)
            self._tail = bytearray(rest)
            if end:
                self._eof = True
            self._cond.notify_all()

    def read(self, timeout: float, budget: int) -> ProcessOutput:
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                lost = [
                    n
                    for n in self._lose
                    if n in self._answer_ends and self._answer_ends[n] > self._out_pos
                ]
                if lost:
                    # The answer is lost with the connection that carried it.
                    self._lose.difference_update(lost)
                    self._out_pos = len(self._out)
                    self._err_pos = len(self._err)
                    raise DropConnection
                out = bytes(self._out[self._out_pos : self._out_pos + budget])
                err = bytes(self._err[self._err_pos : self._err_pos + max(0, budget - len(out))])
                if out or err:
                    self._out_pos += len(out)
                    self._err_pos += len(err)
                    self._cond.notify_all()
                    drained = self._out_pos >= len(self._out) and self._err_pos >= len(self._err)
                    return ProcessOutput(out, err, self._exit if drained else None)
                if self._exit is not None:
                    return ProcessOutput(b"", b"", self._exit)
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise TimeoutError
                self._cond.wait(remaining)

    def _wait_taken(self, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        with self._cond:
            while self._out_pos < len(self._out) and not self._killed:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return
                self._cond.wait(remaining)

    def _ended(self) -> bool:
        return self._exit is not None

    def terminate(self) -> None:
        with self._cond:
            self._killed = True
            if self._exit is None:
                self._exit = _KILLED_EXIT
            self._cond.notify_all()

    def wait(self) -> CommandOutcome:
        """The whole output once the process ended (for a one-shot run without WS-Man)."""
        self._thread.join()
        with self._cond:
            return CommandOutcome(bytes(self._out), bytes(self._err), self._exit or 0)

    # --- the process ------------------------------------------------------------------

    def _pause(self, ms: float) -> None:
        """Time the host spends (a host cost); ends early when the process is killed."""
        self._host_ms += ms
        deadline = time.monotonic() + ms / 1000
        with self._cond:
            while not self._killed:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return
                self._cond.wait(remaining)
            raise _Killed

    def _next_line(self) -> bytes | None:
        """The next stdin line (None at the end of stdin), as ReadLine() returns it."""
        with self._cond:
            while not self._lines and not self._eof and not self._killed:
                self._cond.wait()
            if self._killed:
                raise _Killed
            if self._lines:
                return self._lines.popleft()
            if self._tail:  # the last line, without a line break
                line = bytes(self._tail)
                self._tail.clear()
                return line
            return None

    def _print(
        self, stdout: bytes = b"", stderr: bytes = b"", *, answer: int | None = None
    ) -> None:
        with self._cond:
            if self._killed:
                raise _Killed
            self._out += stdout
            self._err += stderr
            if answer is not None:
                self._answers += 1
                self._answer_ends[answer] = len(self._out)
            self._cond.notify_all()

    def _end(self, code: int) -> None:
        with self._cond:
            if self._exit is None:
                self._exit = code
            self._cond.notify_all()

    def audit_base(self) -> dict[str, Any]:
        """The fields of this process's next audit line: its number, whether it is the
        first (a process start), and the host time spent since the last line (host_ms)."""
        base = dict(self._base)
        if self._first_line:
            base["process_started"] = True
            self._first_line = False
        if self._host_ms:
            base["host_ms"] = round(self._host_ms, 1)
            self._host_ms = 0.0
        return base

    def _main(self) -> None:
        try:
            self._run()
        except _Killed:
            pass
        except Exception as exc:
            # A simulator bug: the process "crashes" without a word on stdout.
            logger.exception("agent process %s failed", self.number)
            self._print(stderr=f"the simulator failed ({type(exc).__name__})\r\n".encode())
            self._end(1)

    def _run(self) -> None:
        x = self._x
        self._pause(x.costs.start_ms(self._edition))
        started = time.monotonic()
        line = self._next_line()
        frame = parse_stdin_line(line) if line is not None else None
        if frame is None or frame.kind != "agent":
            x._audit(self.audit_base(), "agent", [], "BadRequest", None, started)
            missing = error_result(None, None, "BadRequest", AGENT_FRAME_MISSING)
            self._print(result_frame(NO_REQUEST, missing))
            self._end(_PAYLOAD_EXIT)
            return
        script = frame.text
        problem = x._check_script(script)
        if problem is not None:
            x._audit(self.audit_base(), "agent", [], "BadRequest", None, started)
            self._print(result_frame(NO_REQUEST, error_result(None, None, "BadRequest", problem)))
            self._end(_PAYLOAD_EXIT)
            return
        missing_apis = violations(script, self._edition)
        if missing_apis:
            # The edition played lacks an API the agent calls: PowerShell stops the script
            # with an error record on stderr, nothing on stdout, exit code 1.
            x._audit(self.audit_base(), "agent", [], "PowerShellError", None, started)
            first = missing_apis[0]
            lines = [
                first.api.error,
                f"At line:{first.line}",
                *[v.message(self._edition) for v in missing_apis],
            ]
            self._print(stderr=clixml_error(lines))
            self._end(1)
            return
        agent = x._agent_run(script, self._edition, self._base)
        self._pause(x.costs.agent_load_ms)
        compiled = False
        while True:
            line = self._next_line()
            if line is None:
                self._end(0)
                return
            if not line.strip():
                continue
            frame = parse_stdin_line(line)
            if frame.kind != "request":
                # What the agent answers a line that is no request frame.
                bad = error_result(None, None, "BadRequest", "not a request frame")
                self._print(result_frame(NO_REQUEST, bad))
                continue
            self._requests_run += 1
            number = self._requests_run
            faults = self._host_faults()
            self._host_fault(faults, "before_run")
            started = time.monotonic()

            base = self.audit_base()

            def cost(op: str, logged_on: bool, line: dict[str, Any] = base) -> None:
                nonlocal compiled
                if logged_on:
                    # The agent makes its LogonUser type at the first logon of the process
                    # (compiled with Add-Type, or emitted in memory), when the op can reach
                    # that code; it stays loaded.
                    if compiled:
                        return
                    if op in agent.compiles:
                        spent = x.costs.add_type_ms
                    elif op in agent.emits:
                        spent = x.costs.emit_type_ms
                    else:
                        return
                    compiled = True
                else:
                    spent = x.costs.write_op_ms if OPS[op].writes else x.costs.read_op_ms
                    if op in agent.starts_programs:
                        spent += x.costs.child_process_ms
                self._pause(spent)
                if spent:
                    line["host_ms"] = round(line.get("host_ms", 0.0) + spent, 1)
                self._host_ms -= spent  # counted in this request's line already

            result = x.handle_request(frame.text, base, started, agent, cost)
            self._host_fault(faults, "after_run")
            self._print(result_frame(frame.request_id, result), answer=number)
            self._host_fault(faults, "after_answer")
            if not agent.serves_many:
                self._end(0)
                return

    def _host_faults(self) -> dict[str, str]:
        """faults.json ``kill_agent`` / ``restart_winrm`` that fire at this request (each
        counts requests once): key -> when."""
        if self._control is None:
            return {}
        fired = {
            key: self._x.faults.take_nth(key, whens=HOST_FAULT_WHENS)
            for key in ("kill_agent", "restart_winrm")
        }
        return {key: when for key, when in fired.items() if when is not None}

    def _host_fault(self, faults: dict[str, str], now: str) -> None:
        if now == "after_answer" and now in faults.values():
            self._wait_taken()  # between calls: the answer reached the client first
        if faults.get("kill_agent") == now:
            logger.info("fault: agent process %s killed %s", self.number, now)
            self.terminate()
            raise _Killed
        if faults.get("restart_winrm") == now and self._control is not None:
            self._control.restart_service()
            raise _Killed


class Executor:
    """The WS-Management server's command handler for one simulated host."""

    def __init__(self, state_dir: Path, *, costs: HostCosts = NONE, floor_ms: float = 0.0) -> None:
        self.state = HostState(Path(state_dir))
        self.state.ensure()
        self.costs = costs
        self.floor_ms = floor_ms
        # Faults that count agent requests (drop, kill_agent, restart_winrm).
        self.faults = FileFaults(self.state.faults)
        self._process_numbers = itertools.count(1)

    # --- entry points -------------------------------------------------------------------

    def __call__(self, command: ShellCommand) -> CommandOutcome:
        """Run a command whose whole stdin is known (``command.stdin``, then its end)."""
        process = self.start(command, None)
        process.write(command.stdin, True)
        return process.wait()

    def start(
        self, command: ShellCommand, control: ShellControl | None
    ) -> AgentProcess | FinishedProcess:
        """Start a command as WinRS does at the Command request (wsman.ProcessHandler)."""
        started = time.monotonic()
        argv = _argv(command)
        base: dict[str, Any] = {
            "user": command.user,
            "auth": command.auth,
            "shell_id": command.shell_id,
            "command_id": command.command_id,
        }
        program = _basename(argv[0]).lower() if argv else ""
        edition = EXECUTABLES.get(program)
        if edition is not None and edition not in self.state.powershell_editions():
            # PowerShell 7 is a separate install (Windows Server ships 5.1 only): the program
            # is not there. Without cmd.exe, WinRS's CreateProcess fails the command.
            self._audit(base, "rejected", [], "NotInstalled", None, started, command=program)
            if command.skip_cmd_shell:
                raise CommandNotStarted(
                    _FILE_NOT_FOUND, "The system cannot find the file specified."
                )
            return FinishedProcess(not_recognized_cmd(argv[0]))
        if edition is None or not self._is_agent_command(argv):
            outcome = self._reject(argv)
            # Only the program name: a foreign command line may carry anything.
            self._audit(
                base,
                "rejected",
                [],
                f"exit {outcome.exit_code}",
                None,
                started,
                command=_basename(argv[0]) if argv else "",
            )
            return FinishedProcess(outcome)
        if command.console_mode_stdin and _reads_stdin(BOOTSTRAP):
            # Console-mode stdin is a console, not a stream: the bootstrap never reads its
            # agent and requests from it, nothing runs (FACTS.md, "Real-host pitfalls": stdin
            # mode; MS-WSMV 3.1.4.11 WINRS_CONSOLEMODE_STDIN; docs/real-host.md, the stricter
            # reading for line reads).
            self._audit(base, "agent", [], "StdinConsoleMode", None, started)
            raise StdinNeverEnds
        return AgentProcess(self, command, edition, control)

    # --- what is an agent command -----------------------------------------------------

    @staticmethod
    def _is_agent_command(argv: list[str]) -> bool:
        if not argv or _basename(argv[0]).lower() not in _POWERSHELL_NAMES:
            return False
        if argv[1:] == command_arguments():
            return True
        return _powershell_script(argv[1:]) == BOOTSTRAP

    @staticmethod
    def _reject(argv: list[str]) -> CommandOutcome:
        if not argv:
            return not_recognized_cmd("")
        if _basename(argv[0]).lower() not in _POWERSHELL_NAMES:
            return not_recognized_cmd(argv[0])
        script = _powershell_script(argv[1:])
        if script is None:
            message = (
                "Cannot process the command because the value specified with -EncodedCommand "
                "is not properly encoded. The value must be Base64 encoded.\r\n"
            )
            return CommandOutcome(stdout=b"", stderr=message.encode(), exit_code=1)
        term = _first_word(script)
        if not term:
            return CommandOutcome(stdout=b"", stderr=b"", exit_code=0)
        first_line = script.strip().splitlines()[0] if script.strip() else term
        return not_recognized_powershell(term, script_line=first_line)

    # --- agent requests ---------------------------------------------------------------

    def _check_script(self, script: str) -> str | None:
        expected = agent_script_digest()
        if expected is None:
            # The simulator runs only the genuine agent; without it nothing is genuine.
            return (
                "iis_clientcert/host/agent.ps1 is missing from this installation: "
                "reinstall the package"
            )
        got = hashlib.sha256(_normalize_script(script)).hexdigest()
        if got != expected:
            return (
                "the agent script on stdin is not the iis_clientcert/host/agent.ps1 this host "
                "expects "
                f"(sha256 {got[:12]}..., expected {expected[:12]}...): "
                "the client and the host run different versions"
            )
        return None

    def handle_request(
        self,
        request_text: str,
        base: dict[str, Any],
        started: float,
        agent: AgentRun,
        cost: Callable[[str, bool], None] | None = None,
    ) -> dict[str, Any]:
        """One request frame's JSON, as the agent answers it."""
        try:
            request = json.loads(request_text)
            validate_request(request)
        except json.JSONDecodeError as exc:
            self._audit(base, "agent", [], "BadRequest", None, started)
            return error_result(None, None, "BadRequest", f"the request is not JSON ({exc.msg})")
        except ContractError as exc:
            self._audit(base, "agent", [], "BadRequest", None, started)
            return error_result(None, None, "BadRequest", str(exc))
        return self.run_ops(request["ops"], base, started, agent=agent, cost=cost)

    def _agent_run(self, script: str, edition: Edition, base: dict[str, Any]) -> AgentRun:
        """How this agent script behaves on this host, read from its text."""
        needing_temp, run = read_agent(script, edition)
        refused: dict[str, OpError] = {}
        if not self.state.host_facts().get("account_has_temp", False):
            for op, why in needing_temp:
                # What the agent meets there: DirectoryNotFoundException for a path under a
                # TEMP that does not exist (0x80070003, which the agent reads as NotFound).
                refused[op] = OpError(
                    "NotFound",
                    "Could not find a part of the path "
                    f"'C:\\Users\\{base.get('user', 'deployer')}\\AppData\\Local\\Temp': "
                    f"this host's WinRM account has no TEMP folder, and the agent's {why}",
                    _PATH_NOT_FOUND,
                )
        return replace(run, refused=refused)

    def run_ops(
        self,
        ops: list[dict[str, Any]],
        base: dict[str, Any] | None = None,
        started: float | None = None,
        *,
        agent: AgentRun | None = None,
        cost: Callable[[str, bool], None] | None = None,
    ) -> dict[str, Any]:
        """Run validated ops in order, each under the state lock; stop at the first error.

        Ops of concurrent batches interleave, as the agent's do on Windows: each op reads
        accounts, ACLs and HTTP.sys afresh, while applicationHost.config is the batch's copy
        from its first read, and a commit fails with Conflict when the file changed since
        (Microsoft.Web.Administration's optimistic concurrency). ``agent`` (default: what
        the shipped agent.ps1 does) says whether the batch holds the host's agent mutex
        when it writes, retries an op once after a commit conflict, and which ops fail on
        this host whatever their arguments. ``cost(op, logged_on)`` spends the host's time:
        before each op runs (``logged_on`` False), and after an op that logged on (True);
        outside the state lock.
        """
        started = time.monotonic() if started is None else started
        agent = agent if agent is not None else self._shipped_agent()
        entries = [audit.op_entry(o["op"], o.get("args", {})) for o in ops]
        results: list[Any] = []
        writes = any(OPS[o["op"]].writes for o in ops)
        mutex = (
            self.state.agent_mutex(MUTEX_TIMEOUT)
            if agent.takes_mutex and writes
            else contextlib.nullcontext(True)
        )
        with mutex as held:
            if not held:
                first = next(i for i, o in enumerate(ops) if OPS[o["op"]].writes)
                self._audit(base or {}, "agent", entries, "Conflict", first, started)
                return error_result(
                    ops[first]["op"],
                    first,
                    "Conflict",
                    f"another agent has held this host's write lock ({MUTEX_NAME}) for over "
                    f"{MUTEX_TIMEOUT:g} s",
                    None,
                    results,
                )
            session = Session(self.state)
            for index, entry in enumerate(ops):
                if index:
                    self._pause_between_ops()
                name, args = entry["op"], entry.get("args", {})
                if cost is not None:
                    cost(name, False)
                logons = session.logons.tried
                retried = False
                while True:
                    with self.state.locked():
                        try:
                            session.begin_op()
                            injected = self._take_fail_op()
                            if injected is not None:
                                raise injected
                            if name in agent.refused:
                                raise agent.refused[name]
                            result = HANDLERS[name](session, args)
                            session.save()
                        except OpError as exc:
                            session.discard()
                            conflict = isinstance(exc, CommitConflictError)
                            if conflict and agent.retries_conflict and not retried:
                                # The agent runs the op again once: a new ServerManager reads
                                # the file as it is now.
                                retried = True
                                continue
                            self._audit(base or {}, "agent", entries, exc.code, index, started)
                            return error_result(
                                name, index, exc.code, exc.message, exc.hresult, results
                            )
                        except Exception as exc:
                            # Unexpected: report the type only, a message could quote a value.
                            logger.exception("op %s failed unexpectedly", name)
                            session.discard()
                            self._audit(base or {}, "agent", entries, "Fault", index, started)
                            return error_result(
                                name,
                                index,
                                "Fault",
                                f"the simulator failed unexpectedly ({type(exc).__name__})",
                                HR_FAIL,
                                results,
                            )
                    results.append(result)
                    if cost is not None and session.logons.tried > logons:
                        cost(name, True)  # the op logged on: what that costs first
                    break
        self._audit(base or {}, "agent", entries, "ok", None, started)
        return {"ok": True, "results": results}

    def _shipped_agent(self) -> AgentRun:
        return self._agent_run(agent_script_text(), "Desktop", {})

    def _pause_between_ops(self) -> None:
        """faults.json ``op_pause_ms``: a pause between the ops of a batch, outside the state
        lock (a slow host), so that concurrent batches interleave."""
        try:
            faults = read_json(self.state.faults, {}) or {}
        except (ValueError, OSError):
            return
        pause = faults.get("op_pause_ms") if isinstance(faults, dict) else None
        if isinstance(pause, int | float) and not isinstance(pause, bool) and pause > 0:
            time.sleep(min(float(pause), 60_000.0) / 1000)

    # --- faults and audit -------------------------------------------------------------

    def _take_fail_op(self) -> OpError | None:
        """faults.json ``fail_op``: the nth op since the fault was set fails, once."""
        # The WS-Man server rewrites the same file for its drop fault: one lock for both.
        with faults_lock(self.state.faults):
            return self._take_fail_op_locked()

    def _take_fail_op_locked(self) -> OpError | None:
        try:
            faults = read_json(self.state.faults, {}) or {}
        except (ValueError, OSError):
            return None
        spec = faults.get("fail_op") if isinstance(faults, dict) else None
        if not isinstance(spec, dict):
            return None
        seen = int(spec.get("seen", 0)) + 1
        if seen < int(spec.get("nth", 1)):
            faults["fail_op"] = {**spec, "seen": seen}
            write_json(self.state.faults, faults)
            return None
        del faults["fail_op"]
        write_json(self.state.faults, faults)
        return injected_error(spec)

    def _audit(
        self,
        base: dict[str, Any],
        kind: str,
        ops: list[dict[str, Any]],
        result: str,
        error_index: int | None,
        started: float,
        **extra: Any,
    ) -> None:
        record = {
            **base,
            "kind": kind,
            **extra,
            "ops": ops,
            "result": result,
            "error_index": error_index,
            "duration_ms": round((time.monotonic() - started) * 1000, 1),
        }
        with self.state.locked():
            audit.append(self.state.audit, record)
