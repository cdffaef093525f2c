"""Helpers for tests: a simulated host running for the length of a ``with`` block."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from importlib import resources
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from iis_clientcert.host.contract import (
    POWERSHELL,
    Op,
    command_arguments,
    encode_stdin,
    make_op,
    make_request,
    parse_result,
)
from iis_clientcert_simulator.endpoint import Endpoint, read_endpoint
from iis_clientcert_simulator.executor import Executor
from iis_clientcert_simulator.files import read_json, write_json
from iis_clientcert_simulator.host_costs import NONE, HostCosts
from iis_clientcert_simulator.machinekey import MachineKey
from iis_clientcert_simulator.serve import Simulator
from iis_clientcert_simulator.state import HostState, Session
from iis_clientcert_simulator.stores import CertStores, HttpSys
from iis_clientcert_simulator.wsman import CommandOutcome, ShellCommand, faults_lock, write_faults


@contextmanager
def running_simulator(
    state_dir: Path,
    *,
    port: int = 0,
    latency_ms: int = 0,
    subprocess_mode: bool = False,
    startup_timeout: float = 60.0,
    winrm_setup: bool = True,
    host_costs: HostCosts = NONE,
) -> Iterator[Endpoint]:
    """Start a simulator on ``state_dir`` (in-process threads, or
    ``python -m iis_clientcert_simulator serve`` with ``subprocess_mode=True``) and stop it
    on exit. ``winrm_setup=False`` leaves a new host's WinRM as Windows ships it (see
    serve.winrm_demo_setup). Host costs are off unless asked for (tests stay fast)."""
    if not subprocess_mode:
        simulator = Simulator(
            Path(state_dir),
            port=port,
            latency_ms=latency_ms,
            winrm_setup=winrm_setup,
            host_costs=host_costs,
        )
        try:
            yield simulator.start()
        finally:
            simulator.stop()
        return
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "iis_clientcert_simulator",
            "serve",
            "--state-dir",
            str(state_dir),
            "--port",
            str(port),
            "--latency-ms",
            str(latency_ms),
            *([] if winrm_setup else ["--winrm-as-shipped"]),
        ],
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    try:
        assert process.stdout is not None
        line = process.stdout.readline()
        if not line:
            raise RuntimeError(f"the simulator exited with {process.wait(startup_timeout)}")
        json.loads(line)  # the ready line: the server has written endpoint.json
        yield read_endpoint(state_dir)
    finally:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def agent_script() -> str:
    """The agent script a client sends: iis_clientcert/host/agent.ps1 when installed."""
    try:
        return resources.files("iis_clientcert.host").joinpath("agent.ps1").read_text("utf-8")
    except (FileNotFoundError, OSError):
        return "# agent.ps1 is not installed yet\n"


class AgentRunner:
    """Run agent requests straight into an Executor (no WinRM): for model tests."""

    def __init__(self, state_dir: Path, user: str = "sim-admin", auth: str = "basic") -> None:
        self.state_dir = Path(state_dir)
        self.executor = Executor(self.state_dir)
        self.user = user
        self.auth = auth

    def command(
        self,
        executable: str,
        arguments: list[str] | None = None,
        stdin: bytes = b"",
        *,
        console_mode_stdin: bool = False,
        skip_cmd_shell: bool = True,
    ) -> CommandOutcome:
        """Run one command line; stdin in pipe mode without cmd.exe unless asked otherwise."""
        return self.executor(
            ShellCommand(
                self.user,
                self.auth,
                executable,
                arguments or [],
                stdin,
                "S1",
                "C1",
                console_mode_stdin=console_mode_stdin,
                skip_cmd_shell=skip_cmd_shell,
            )
        )

    def run(self, *ops: Op[Any]) -> dict[str, Any]:
        """Send one request (a batch of ops) and return the parsed result."""
        stdin = encode_stdin(agent_script(), make_request(list(ops)))
        outcome = self.command(POWERSHELL, command_arguments(), stdin)
        return parse_result(outcome.stdout)

    def ok(self, *ops: Op[Any]) -> list[Any]:
        result = self.run(*ops)
        assert result["ok"], result.get("error")
        results: list[Any] = result["results"]
        return results

    def one(self, op: str, **args: Any) -> Any:
        return self.ok(make_op(op, **args))[0]

    def error(self, op: str, **args: Any) -> dict[str, Any]:
        result = self.run(make_op(op, **args))
        assert not result["ok"], result
        error: dict[str, Any] = result["error"]
        return error


# --- setting up a host the way a test needs it (under the state lock) -----------------


def set_host_facts(state_dir: Path, **facts: Any) -> None:
    """Merge facts into host.json (os_build, password_policy, domain, ...)."""
    state = HostState(Path(state_dir))
    with state.locked():
        data = read_json(state.host, {}) or {}
        data.update(facts)
        write_json(state.host, data)


def put_sslcert(
    state_dir: Path, key: str, cert_hash: str, store: str = "My", **settings: Any
) -> None:
    """Create or replace an HTTP.sys record as its owner would with netsh, e.g.
    ``put_sslcert(d, "ipport=0.0.0.0:443", thumb, disabletls13=True)``."""
    state = HostState(Path(state_dir))
    with state.locked():
        data = read_json(state.httpsys, {}) or {}
        HttpSys(data).put(key, cert_hash, store, **settings)
        write_json(state.httpsys, data)


def sslcert(state_dir: Path, key: str) -> dict[str, Any] | None:
    """An HTTP.sys record as ``netsh http show sslcert`` would show it (None if absent)."""
    state = HostState(Path(state_dir))
    with state.locked():
        return HttpSys(read_json(state.httpsys, {}) or {}).get(key)


def fail_at(state_dir: Path, step: str, **spec: Any) -> None:
    """Make the next op that reaches ``step`` (e.g. "binding.set:after_config") fail there,
    once (faults.json ``fail_step``; code, hresult and message as for ``fail_op``)."""
    path = HostState(Path(state_dir)).faults
    with faults_lock(path):
        data = read_json(path, {}) or {}
        data["fail_step"] = {"step": step, **spec}
        write_faults(path, data)


# Files that change with every request, whatever the request did.
# Lock files (the state lock, the agent's named mutex) are not host state.
# sam.json is the SAM's next relative id, which Windows never shows and never winds back.
_VOLATILE = frozenset({"audit.log", "faults.json", ".lock", ".agent-mutex", "sam.json"})


def snapshot(state_dir: Path) -> dict[str, bytes]:
    """Every file of the host state (but the audit log and faults), for before/after."""
    root = Path(state_dir)
    return {
        str(p.relative_to(root)): p.read_bytes()
        for p in sorted(root.rglob("*"))
        if p.is_file() and p.name not in _VOLATILE and not p.name.startswith(".faults-")
    }


def foreign_ciphertext(plain: str) -> str:
    """``plain`` encrypted with another host's key: what a copied applicationHost.config
    holds, and what this host cannot decrypt."""
    return MachineKey(AESGCM.generate_key(bit_length=256)).encrypt(plain)


def replace_in_apphost(state_dir: Path, old: str, new: str) -> None:
    """Edit applicationHost.config by hand (as an owner with Notepad would)."""
    state = HostState(Path(state_dir))
    with state.locked():
        text = state.apphost.read_text("utf-8")
        if old not in text:
            raise ValueError("the text to replace is not in applicationHost.config")
        state.apphost.write_text(text.replace(old, new), "utf-8")


def orphan_keys(state_dir: Path) -> list[str]:
    """Persisted key containers no certificate store entry took (see CertStores)."""
    state = HostState(Path(state_dir))
    return CertStores(state.certstore).orphan_keys()


# Windows 11 22H2 and later: 10 bad attempts lock an account for 10 minutes, and the count
# restarts after 10 minutes without one (Microsoft docs, "Account lockout threshold").
WINDOWS_11_LOCKOUT: dict[str, int] = {
    "threshold": 10,
    "observation_window_s": 600,
    "duration_s": 600,
}


def set_lockout_policy(
    state_dir: Path,
    threshold: int = WINDOWS_11_LOCKOUT["threshold"],
    observation_window_s: int = WINDOWS_11_LOCKOUT["observation_window_s"],
    duration_s: int = WINDOWS_11_LOCKOUT["duration_s"],
) -> None:
    """Give the simulated host an account lockout policy (secpol.msc, Account Lockout
    Policy); a fresh host has none (threshold 0)."""
    state = HostState(Path(state_dir))
    state.ensure()
    with state.locked():
        facts = read_json(state.host, {}) or {}
        facts["lockout_policy"] = {
            "threshold": threshold,
            "observation_window_s": observation_window_s,
            "duration_s": duration_s,
        }
        write_json(state.host, facts)


def deny_logon_right(
    state_dir: Path, user: str, right: str = "SeDenyNetworkLogonRight", deny: bool = True
) -> None:
    """Assign (or, with ``deny=False``, take back) a "Deny ..." logon right of a local
    account (User Rights Assignment)."""
    state = HostState(Path(state_dir))
    with state.locked():
        session = Session(state)
        session.accounts.deny_logon_right(user, right, deny)
        session.save()


def grant_logon_right(
    state_dir: Path, principal: str, right: str = "SeBatchLogonRight", grant: bool = True
) -> None:
    """Add (or, with ``grant=False``, remove) an account or group to a logon right (User
    Rights Assignment: SeInteractiveLogonRight, SeNetworkLogonRight, SeBatchLogonRight)."""
    state = HostState(Path(state_dir))
    with state.locked():
        session = Session(state)
        session.accounts.grant_logon_right(principal, right, grant)
        session.save()


def set_account_state(state_dir: Path, user: str, **fields: Any) -> None:
    """Change what users.json holds for an account as lusrmgr or net user would:
    ``password_must_change``, ``account_expires`` / ``password_last_set`` (epoch seconds),
    ``password_never_expires``, ``disabled``; ``blank_password=True`` clears the password."""
    state = HostState(Path(state_dir))
    with state.locked():
        session = Session(state)
        accounts = session.accounts
        key = accounts._key(user)
        if key is None:
            raise KeyError(user)
        record = accounts.data["users"][key]
        if fields.pop("blank_password", False):
            record["password_hash"] = None
        record.update(fields)
        session.save()


def unlock_account(state_dir: Path, user: str) -> None:
    """What an administrator does for a locked account (IsAccountLocked = $false)."""
    state = HostState(Path(state_dir))
    with state.locked():
        session = Session(state)
        session.accounts.unlock(user)
        session.save()


def account_record(state_dir: Path, user: str) -> dict[str, Any]:
    """The account as users.json holds it (bad-password count, lockout time, ...)."""
    state = HostState(Path(state_dir))
    with state.locked():
        record = Session(state).accounts.user(user)
    if record is None:
        raise KeyError(user)
    record.pop("password_hash", None)
    record.setdefault("bad_password_count", 0)
    record.setdefault("locked_at", None)
    return record
