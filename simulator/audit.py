"""audit.log: one JSON line per command the host received.

A line names who ran it, how they authenticated, the ops and their targets (the contract's
``OpSpec.target`` argument) and the outcome. It never carries a secret or a config element's
content: only target values, which the contract keeps non-secret.
"""

from __future__ import annotations

import datetime as dt
import json
import os
from pathlib import Path
from typing import Any

from iis_clientcert.host.contract import OPS, redact_args


def op_entry(op: str, args: dict[str, Any]) -> dict[str, Any]:
    spec = OPS.get(op)
    entry: dict[str, Any] = {"op": op, "writes": bool(spec and spec.writes)}
    if spec is not None and spec.target is not None and spec.target in args:
        # redact_args replaces secret arguments, should a target ever be one.
        entry["target"] = redact_args(op, {spec.target: args[spec.target]})[spec.target]
    return entry


def append(path: Path, record: dict[str, Any]) -> None:
    line = {"time": dt.datetime.now(dt.UTC).isoformat(timespec="milliseconds"), **record}
    data = (json.dumps(line, sort_keys=False) + "\n").encode("utf-8")
    # O_APPEND: one write per line, so concurrent writers never interleave within a line.
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    try:
        os.write(fd, data)
    finally:
        os.close(fd)


def read(path: Path) -> list[dict[str, Any]]:
    """All audit lines (for tests and benchmarks)."""
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text("utf-8").splitlines() if line.strip()]
