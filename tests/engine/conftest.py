"""Fixtures of the engine tests (``pulumi_cli`` and ``pulumi_env`` are in tests/conftest.py;
the code they use is in tests/support/)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from iis_clientcert.host import winrm_transport
from iis_clientcert_simulator.endpoint import Endpoint
from iis_clientcert_simulator.testing import running_simulator


@pytest.fixture
def simulator(tmp_path: Path) -> Iterator[Endpoint]:
    """A fresh simulated host (in-process) for one test."""
    with running_simulator(tmp_path / "host") as endpoint:
        yield endpoint
    winrm_transport.close_pool()
