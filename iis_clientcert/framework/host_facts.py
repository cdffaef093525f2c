"""Host facts read once per provider process and host.

``host.facts`` (OS build, IIS version, Web-Cert-Auth, Schannel settings, password and
lockout policy) is read by most resources, and on Windows it is not free: it reads the
registry, ADSI and runs secedit.exe (~150 ms a time). None of it changes while a
``pulumi up`` runs, so a provider process asks each host once and answers later reads from
what it learnt (for at most ``TTL_SECONDS``, for a process that lives long, such as an
Automation API program). The cache lives at module level, never in a pickled provider.
"""

from __future__ import annotations

import copy
import threading
import time
from collections.abc import Sequence
from typing import Any, Final, cast

from iis_clientcert.host.contract import HostFactsResult, Op

TTL_SECONDS: Final = 600.0


class FactsCache:
    """The last ``host.facts`` result per host (the connection's authority)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._facts: dict[str, tuple[float, HostFactsResult]] = {}

    def clear(self) -> None:
        with self._lock:
            self._facts.clear()

    def get(self, host: str) -> HostFactsResult | None:
        with self._lock:
            found = self._facts.get(host)
        if found is None or time.monotonic() - found[0] > TTL_SECONDS:
            return None
        return copy.deepcopy(found[1])

    def record(self, host: str, ops: Sequence[Op[Any]], results: Sequence[Any]) -> None:
        """Learn from the results of ``ops`` (in order; as many as completed)."""
        for op, result in zip(ops, results, strict=False):
            if op.name == "host.facts" and isinstance(result, dict):
                facts = cast(HostFactsResult, copy.deepcopy(result))
                with self._lock:
                    self._facts[host] = (time.monotonic(), facts)


FACTS = FactsCache()
