"""Runs the commands the WS-Management server receives: agent requests only.

A command is an agent request when it is ``powershell.exe`` (Windows PowerShell 5.1) or
``pwsh.exe`` (PowerShell 7, when the host has it) with exactly the contract's bootstrap
arguments (or a script that is the bootstrap) and stdin carries the genuine
iis_clientcert/host/agent.ps1, the marker and a JSON request. Anything else fails the way
powershell.exe or cmd.exe would. Requests run under the state lock, op by op, stopping at
the first error; every command leaves one line in audit.log.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import re
import shlex
import time
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from iis_clientcert.errors import ContractError
from iis_clientcert.host.contract import (
    BOOTSTRAP,
    OPS,
    command_arguments,
    error_result,
    split_stdin,
    validate_request,
)
from iis_clientcert_simulator import audit
from iis_clientcert_simulator.agent_reading import MUTEX_NAME, AgentText
from iis_clientcert_simulator.errors import HR_FAIL, CommitConflictError, OpError, injected_error
from iis_clientcert_simulator.files import read_json, write_json
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
    ShellCommand,
    StdinNeverEnds,
    faults_lock,
)

logger = logging.getLogger(__name__)

# What the bootstrap prints (and its exit code) when stdin has no request marker.
_MARKER_MISSING = (
    '{"ok":false,"results":[],"error":{"op":null,"index":null,'
    '"code":"BadRequest","hresult":null,"message":"agent payload marker missing"}}'
)
_PAYLOAD_EXIT = 2
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


def agent_script_text() -> str:
    try:
        return resources.files("iis_clientcert.host").joinpath("agent.ps1").read_text("utf-8")
    except (FileNotFoundError, OSError):
        return ""


def _outcome(result: dict[str, Any], exit_code: int) -> CommandOutcome:
    return CommandOutcome(
        stdout=json.dumps(result, separators=(",", ":")).encode("utf-8"),
        stderr=b"",
        exit_code=exit_code,
    )


def _reads_stdin_to_end(script: str) -> bool:
    """Whether a PowerShell script waits for the end of its standard input (from its text)."""
    return "OpenStandardInput()" in script and ".ReadToEnd()" in script


def _first_word(script: str) -> str:
    match = re.match(r"\s*([^\s;|(){}]+)", script)
    return match.group(1) if match else ""


class Executor:
    """The WS-Management server's command handler for one simulated host."""

    def __init__(self, state_dir: Path) -> None:
        self.state = HostState(Path(state_dir))
        self.state.ensure()

    # --- entry point ------------------------------------------------------------------

    def __call__(self, command: ShellCommand) -> CommandOutcome:
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
            return not_recognized_cmd(argv[0])
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
            return outcome
        if command.console_mode_stdin and _reads_stdin_to_end(BOOTSTRAP):
            # Console-mode stdin never reaches its end: the bootstrap's ReadToEnd() waits for
            # good, the agent never sees its request and nothing runs (FACTS.md, "Real-host
            # pitfalls": stdin mode; MS-WSMV 3.1.4.11 WINRS_CONSOLEMODE_STDIN).
            self._audit(base, "agent", [], "StdinConsoleMode", None, started)
            raise StdinNeverEnds
        return self._run_agent(command.stdin, edition, base, started)

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

    def _run_agent(
        self, stdin: bytes, edition: Edition, base: dict[str, Any], started: float
    ) -> CommandOutcome:
        try:
            script, request_text = split_stdin(stdin)
        except (ValueError, UnicodeDecodeError):
            self._audit(base, "agent", [], "BadRequest", None, started)
            return _outcome(json.loads(_MARKER_MISSING), _PAYLOAD_EXIT)
        problem = self._check_script(script)
        if problem is not None:
            self._audit(base, "agent", [], "BadRequest", None, started)
            return _outcome(error_result(None, None, "BadRequest", problem), _PAYLOAD_EXIT)
        missing = violations(script, edition)
        if missing:
            # The edition played lacks an API the agent calls: PowerShell stops the script
            # with an error record on stderr, nothing on stdout, exit code 1.
            self._audit(base, "agent", [], "PowerShellError", None, started)
            first = missing[0]
            lines = [
                first.api.error,
                f"At line:{first.line}",
                *[v.message(edition) for v in missing],
            ]
            return CommandOutcome(stdout=b"", stderr=clixml_error(lines), exit_code=1)
        try:
            request = json.loads(request_text)
            validate_request(request)
        except json.JSONDecodeError as exc:
            self._audit(base, "agent", [], "BadRequest", None, started)
            return _outcome(
                error_result(None, None, "BadRequest", f"the request is not JSON ({exc.msg})"), 0
            )
        except ContractError as exc:
            self._audit(base, "agent", [], "BadRequest", None, started)
            return _outcome(error_result(None, None, "BadRequest", str(exc)), 0)
        return _outcome(
            self.run_ops(
                request["ops"], base, started, agent=self._agent_run(script, edition, base)
            ),
            0,
        )

    def _agent_run(self, script: str, edition: Edition, base: dict[str, Any]) -> AgentRun:
        """How this agent script behaves on this host, read from its text."""
        reading = AgentText.read(script)
        refused: dict[str, OpError] = {}
        if not self.state.host_facts().get("account_has_temp", False):
            for op, why in reading.ops_needing_temp(edition).items():
                # What the agent meets there: DirectoryNotFoundException for a path under a
                # TEMP that does not exist (0x80070003, which the agent reads as NotFound).
                refused[op] = OpError(
                    "NotFound",
                    "Could not find a part of the path "
                    f"'C:\\Users\\{base.get('user', 'deployer')}\\AppData\\Local\\Temp': "
                    f"this host's WinRM account has no TEMP folder, and the agent's {why}",
                    _PATH_NOT_FOUND,
                )
        return AgentRun(
            refused=refused,
            takes_mutex=reading.takes_host_mutex(),
            retries_conflict=reading.retries_commit_conflict(),
        )

    def run_ops(
        self,
        ops: list[dict[str, Any]],
        base: dict[str, Any] | None = None,
        started: float | None = None,
        *,
        agent: AgentRun | None = None,
    ) -> dict[str, Any]:
        """Run validated ops in order, each under the state lock; stop at the first error.

        Ops of concurrent batches interleave, as the agent's do on Windows: each op reads
        accounts, ACLs and HTTP.sys afresh, while applicationHost.config is the batch's copy
        from its first read, and a commit fails with Conflict when the file changed since
        (Microsoft.Web.Administration's optimistic concurrency). ``agent`` (default: what
        the shipped agent.ps1 does) says whether the batch holds the host's agent mutex
        when it writes, retries an op once after a commit conflict, and which ops fail on
        this host whatever their arguments.
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
