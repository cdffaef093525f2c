"""Fixtures of the reliability suite: the session's figures (written to
``.work/reliability-figures.json`` and printed as a table at the end), its PKI and cheap
password hashes. The code they use is in tests/support/."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest

from iis_clientcert.host import winrm_transport
from iis_clientcert_simulator.testing import running_simulator
from tests.reliability.resources import prepare_host
from tests.support.fault_matrix import Host
from tests.support.reliability import FIGURES_FILE, Figures, Pki, figures_table, make_pki
from tests.support.simulator import host_client

_FIGURES = Figures()


@pytest.fixture(scope="session")
def figures() -> Figures:
    """Every test records what it tried here."""
    return _FIGURES


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    if not any(_FIGURES.counts.values()):
        return  # no reliability test ran in this session
    FIGURES_FILE.parent.mkdir(parents=True, exist_ok=True)
    FIGURES_FILE.write_text(json.dumps(_FIGURES.as_json(), indent=2) + "\n")


def pytest_terminal_summary(terminalreporter: Any, exitstatus: int, config: Any) -> None:
    if not any(_FIGURES.counts.values()):
        return
    terminalreporter.section("reliability figures")
    for line in figures_table(_FIGURES.as_json()):
        terminalreporter.write_line(line)
    terminalreporter.write_line(f"(written to {FIGURES_FILE})")


@pytest.fixture(scope="session")
def pki() -> Pki:
    return make_pki()


@pytest.fixture(scope="module", autouse=True)
def _cheap_password_hashes() -> Iterator[None]:
    """The in-process simulators hash passwords with scrypt at n=2**12 (13 ms each); the
    suite runs thousands of logons, and what it tests does not depend on the cost."""
    patch = pytest.MonkeyPatch()
    patch.setattr("iis_clientcert_simulator.accounts._SCRYPT", {"n": 2**4, "r": 8, "p": 1})
    try:
        yield
    finally:
        patch.undo()


@pytest.fixture(scope="module")
def matrix_host(tmp_path_factory: pytest.TempPathFactory, pki: Pki) -> Iterator[Host]:
    """One simulated host per module for the fault matrices (saved and restored per case)."""
    with running_simulator(tmp_path_factory.mktemp("faults") / "host") as endpoint:
        prepare_host(host_client(endpoint), pki)
        yield Host(endpoint)
    winrm_transport.close_pool()


@pytest.fixture
def fast_retries(monkeypatch: pytest.MonkeyPatch) -> None:
    # Read-only batches are retried after a drop; the matrix does not need the backoff.
    monkeypatch.setattr(winrm_transport, "RETRY_DELAYS", (0.0, 0.0, 0.0))
