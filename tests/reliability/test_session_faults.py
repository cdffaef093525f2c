"""Faults that strike the persistent agent session of a host, at every agent request that
create, update and delete of every resource make: the agent process killed (before it
runs the request, after it ran it but before it answered, after it answered), and the
WinRM service restarting at those points (every shell and process of the host gone).
Dropped connections mid-call hit the same sessions in test_faults.py's matrix (a Send or
the waiting Receive loses its connection).

Each failed run is followed by a run without faults (the next ``pulumi up``): it must
converge to exactly the host of a run that never failed, with nothing lost and nothing
extra (0 lost writes), a clean refresh, and a destroy that gives the host back.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.reliability.resources import SUBJECTS, Subject
from tests.support.fault_matrix import Host, run_matrix
from tests.support.reliability import Figures, Pki
from tests.support.simulator import audit_lines

pytestmark = [pytest.mark.reliability, pytest.mark.usefixtures("fast_retries")]


def _session_fault_specs(commands: int, ops: int) -> list[dict[str, Any]]:
    return [
        {key: {"request": k, "when": when}}
        for k in range(1, commands + 1)
        for key in ("kill_agent", "restart_winrm")
        for when in ("before_run", "after_run", "after_answer")
    ]


@pytest.mark.parametrize("subject", SUBJECTS, ids=[s.kind for s in SUBJECTS])
def test_session_fault_matrix(
    subject: Subject, matrix_host: Host, pki: Pki, figures: Figures, tmp_path: Path
) -> None:
    seen = len(matrix_host.commands())
    run_matrix(subject, matrix_host, pki, figures, tmp_path, _session_fault_specs, part="session")
    lines = audit_lines(matrix_host.endpoint)[seen:]
    # The faults struck persistent agents: most requests ran in a process that had
    # answered one before (a process starts once per session, not per call).
    starts = sum(1 for line in lines if line.get("process_started"))
    assert lines and starts < len(lines) / 2, (starts, len(lines))
