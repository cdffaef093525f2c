"""Faults: a dropped WinRM connection (before or after the command ran) or a failing op,
at every command and every op that create, update and delete of every resource use.

After the failed run, the same operation runs again without faults (as the next
``pulumi up`` / ``destroy`` would): it must converge to exactly the host state of a run
that never failed (nothing lost, nothing extra, nothing outside the resource touched), a
refresh must find no drift, and a destroy after a recovered create must give the host
back as it was. The wide matrix runs at the provider level; a representative subset runs
through the real engine.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.reliability.resources import SUBJECTS, Subject
from tests.support.fault_matrix import Host, run_matrix
from tests.support.reliability import Figures, Pki

pytestmark = [pytest.mark.reliability, pytest.mark.usefixtures("fast_retries")]


def _fault_specs(commands: int, ops: int) -> list[dict[str, Any]]:
    specs: list[dict[str, Any]] = [
        {"drop": {"command": k, "when": when}}
        for k in range(1, commands + 1)
        for when in ("before_run", "after_run")
    ]
    specs += [
        {"fail_op": {"nth": n, "code": "Fault", "hresult": "0x80004005", "message": "injected"}}
        for n in range(1, ops + 1)
    ]
    return specs


@pytest.mark.parametrize("subject", SUBJECTS, ids=[s.kind for s in SUBJECTS])
def test_fault_matrix(
    subject: Subject, matrix_host: Host, pki: Pki, figures: Figures, tmp_path: Path
):
    run_matrix(subject, matrix_host, pki, figures, tmp_path, _fault_specs)
