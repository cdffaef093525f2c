"""Host facts read once per provider process and host.

``host.facts`` (OS build, IIS version, Web-Cert-Auth, Schannel settings, password and
lockout policy) is read by most resources, and on Windows it is not free: it reads the
registry, ADSI and runs secedit.exe (~150 ms a time). None of it changes while a
``pulumi up`` runs, so a provider process asks each host once and answers later reads from
what it learnt (for at most ``TTL_SECONDS``, for a process that lives long, such as an
Automation API program). The cache lives at module level, never in a pickled provider.

Resources read at the same time (the engine runs up to 4 provider calls at once), so
several calls may want the facts before any has them: the first sends ``host.facts`` and
the others leave it out of their batches and take its answer (``claim``/``wait``). The
host's agent answers a session's requests in order, so the facts are there by the time a
later request's answer is; a call whose facts never came reads them itself.
"""

from __future__ import annotations

import copy
import threading
import time
from collections.abc import Sequence
from typing import Any, Final, cast

from iis_clientcert.host.contract import HostFactsResult, Op

TTL_SECONDS: Final = 600.0
# How long a call waits for another call's facts before reading them itself.
WAIT_SECONDS: Final = 120.0


class FactsCache:
    """The last ``host.facts`` result per host (the connection's authority)."""

    def __init__(self) -> None:
        self._lock = threading.Condition()
        self._facts: dict[str, tuple[float, HostFactsResult]] = {}
        self._reading: dict[str, int] = {}  # host -> calls reading the facts now

    def clear(self) -> None:
        with self._lock:
            self._facts.clear()

    def _fresh(self, host: str) -> HostFactsResult | None:
        # Under self._lock.
        found = self._facts.get(host)
        if found is None or time.monotonic() - found[0] > TTL_SECONDS:
            return None
        return copy.deepcopy(found[1])

    def get(self, host: str) -> HostFactsResult | None:
        with self._lock:
            return self._fresh(host)

    def claim(self, host: str) -> tuple[HostFactsResult | None, bool]:
        """For a call that needs the facts: (the facts, False) if known; (None, True) if
        this call should read them (call ``release`` after); (None, False) if another
        call is reading them (``wait`` for its answer after sending the rest)."""
        with self._lock:
            facts = self._fresh(host)
            if facts is not None:
                return facts, False
            if self._reading.get(host):
                return None, False
            self._reading[host] = 1
            return None, True

    def release(self, host: str) -> None:
        """The reading call is done (with the facts recorded, or failed)."""
        with self._lock:
            self._reading.pop(host, None)
            self._lock.notify_all()

    def wait(self, host: str, timeout: float = WAIT_SECONDS) -> HostFactsResult | None:
        """The facts another call is reading; None if it failed or took too long."""
        deadline = time.monotonic() + timeout
        with self._lock:
            while True:
                facts = self._fresh(host)
                remaining = deadline - time.monotonic()
                if facts is not None or not self._reading.get(host) or remaining <= 0:
                    return facts
                self._lock.wait(remaining)

    def record(self, host: str, ops: Sequence[Op[Any]], results: Sequence[Any]) -> None:
        """Learn from the results of ``ops`` (in order; as many as completed)."""
        for op, result in zip(ops, results, strict=False):
            if op.name == "host.facts" and isinstance(result, dict):
                facts = cast(HostFactsResult, copy.deepcopy(result))
                with self._lock:
                    self._facts[host] = (time.monotonic(), facts)
                    self._lock.notify_all()


FACTS = FactsCache()
