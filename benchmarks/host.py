"""Host-access benchmark: agent calls per second, latency p50/p95 and WinRM HTTP requests
per agent call, for a read batch (host.facts + site.list + config.get) against the
simulator at --latency-ms 0 and 300 (latency is added to every HTTP request). Calls go to
the host's persistent agent (one Send and one Receive each); the stack-level benchmark
against the floor is benchmarks/stack.py (`make bench`).

    python -m benchmarks.host [--calls 40] [--slow-calls 8] [--transport basic|certificate|ntlm]

A benchmark prints figures; it asserts nothing.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import requests

from iis_clientcert.host import winrm_transport
from iis_clientcert.host.contract import SECTION_SSL, make_op
from iis_clientcert_simulator.testing import running_simulator
from tests.support.simulator import host_client

BATCH = [
    make_op("host.facts"),
    make_op("site.list"),
    make_op("config.get", section=SECTION_SSL, location="shop"),
]


class RequestCounter:
    """Counts HTTP requests that requests' Session sends (every WinRM message is one)."""

    def __init__(self) -> None:
        self.count = 0
        self._lock = threading.Lock()
        self._original: Callable[..., Any] = requests.Session.send

    def __enter__(self) -> RequestCounter:
        original = self._original

        def send(session: requests.Session, request: Any, **kwargs: Any) -> Any:
            with self._lock:
                self.count += 1
            return original(session, request, **kwargs)

        requests.Session.send = send  # type: ignore[method-assign,assignment]
        return self

    def __exit__(self, *exc: object) -> None:
        requests.Session.send = self._original  # type: ignore[method-assign]


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(fraction * (len(ordered) - 1))))
    return ordered[index]


def run(latency_ms: int, calls: int, transport: str, threads: int) -> dict[str, float]:
    with tempfile.TemporaryDirectory(prefix="bench-host-") as state:
        with running_simulator(Path(state), latency_ms=latency_ms) as endpoint:
            client = host_client(endpoint, transport)
            client.call(BATCH)  # warm-up: TLS session, NTLM context, agent script read
            durations: list[float] = []

            def one() -> None:
                started = time.perf_counter()
                client.call(BATCH)
                durations.append(time.perf_counter() - started)

            with RequestCounter() as counter:
                started = time.perf_counter()
                if threads == 1:
                    for _ in range(calls):
                        one()
                else:
                    with ThreadPoolExecutor(threads) as pool:
                        for future in [pool.submit(one) for _ in range(calls)]:
                            future.result()
                elapsed = time.perf_counter() - started
        winrm_transport.close_pool()
    return {
        "calls_per_s": calls / elapsed,
        "p50_ms": percentile(durations, 0.5) * 1000,
        "p95_ms": percentile(durations, 0.95) * 1000,
        "mean_ms": statistics.fmean(durations) * 1000,
        "requests_per_call": counter.count / calls,
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=40, help="calls at --latency-ms 0")
    parser.add_argument("--slow-calls", type=int, default=8, help="calls at --latency-ms 300")
    parser.add_argument("--transport", default="basic", choices=["basic", "certificate", "ntlm"])
    args = parser.parse_args(argv)
    print(
        f"read batch: {' + '.join(op.name for op in BATCH)} "
        f"({len(BATCH)} ops per agent call), transport {args.transport}"
    )
    header = (
        f"{'latency':>8} {'threads':>7} {'calls':>5} {'calls/s':>8} {'p50 ms':>8} "
        f"{'p95 ms':>8} {'HTTP req/call':>13}"
    )
    print(header)
    for latency, calls in ((0, args.calls), (300, args.slow_calls)):
        for threads in (1, 4):
            figures = run(latency, calls, args.transport, threads)
            print(
                f"{latency:>6}ms {threads:>7} {calls:>5} {figures['calls_per_s']:>8.1f} "
                f"{figures['p50_ms']:>8.1f} {figures['p95_ms']:>8.1f} "
                f"{figures['requests_per_call']:>13.1f}"
            )


if __name__ == "__main__":
    main()
