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

from iis_clientcert.host.contract import (
    POWERSHELL,
    command_arguments,
    encode_stdin,
    make_op,
    make_request,
    parse_result,
)
from iis_clientcert_simulator.endpoint import Endpoint, read_endpoint
from iis_clientcert_simulator.executor import Executor
from iis_clientcert_simulator.serve import Simulator
from iis_clientcert_simulator.wsman import CommandOutcome, ShellCommand


@contextmanager
def running_simulator(
    state_dir: Path,
    *,
    port: int = 0,
    latency_ms: int = 0,
    subprocess_mode: bool = False,
    startup_timeout: float = 60.0,
) -> Iterator[Endpoint]:
    """Start a simulator on ``state_dir`` (in-process threads, or ``python -m simulator
    serve`` with ``subprocess_mode=True``) and stop it on exit."""
    if not subprocess_mode:
        simulator = Simulator(Path(state_dir), port=port, latency_ms=latency_ms)
        try:
            yield simulator.start()
        finally:
            simulator.stop()
        return
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "simulator",
            "serve",
            "--state-dir",
            str(state_dir),
            "--port",
            str(port),
            "--latency-ms",
            str(latency_ms),
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
    """The agent script a client sends: providers/agent.ps1 when installed."""
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
        self, executable: str, arguments: list[str] | None = None, stdin: bytes = b""
    ) -> CommandOutcome:
        return self.executor(
            ShellCommand(self.user, self.auth, executable, arguments or [], stdin, "S1", "C1")
        )

    def run(self, *ops: dict[str, Any]) -> dict[str, Any]:
        """Send one request (a batch of ops) and return the parsed result."""
        stdin = encode_stdin(agent_script(), make_request(list(ops)))
        outcome = self.command(POWERSHELL, command_arguments(), stdin)
        return parse_result(outcome.stdout)

    def ok(self, *ops: dict[str, Any]) -> list[Any]:
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
