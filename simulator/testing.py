"""Helpers for tests: a simulated host running for the length of a ``with`` block."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from simulator.serve import Endpoint, Simulator


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
        public: dict[str, Any] = json.loads(line)
        data = json.loads(Path(public["endpoint_json"]).read_text("utf-8"))
        data.pop("endpoint_json", None)
        yield Endpoint(**data)
    finally:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
