"""Fixtures for simulator tests: test PKI material and WS-Management servers on loopback."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from iis_clientcert_simulator.winrm_service import DEMO_SERVICE
from iis_clientcert_simulator.wsman import CommandHandler, Credentials, WSManServer
from tests.support.wsman import WSManFactory, WSManPki, make_wsman_pki


@pytest.fixture(scope="session")
def wsman_pki(tmp_path_factory: pytest.TempPathFactory) -> WSManPki:
    return make_wsman_pki(tmp_path_factory.mktemp("wsman-pki"))


@pytest.fixture
def make_wsman(wsman_pki: WSManPki) -> Iterator[WSManFactory]:
    """Start WSManServers (stopped at teardown): ``make_wsman(handler, credentials, **kw)``."""
    started: list[WSManServer] = []

    def factory(handler: CommandHandler, credentials: Credentials, **kwargs: Any) -> WSManServer:
        # Basic and certificate auth on, as after the demo's setup step (tests of the
        # shipped defaults pass their own config).
        kwargs.setdefault("config", lambda: DEMO_SERVICE)
        server = WSManServer(
            handler,
            credentials,
            tls_cert_pem=wsman_pki.server.cert_pem(),
            tls_key_pem=wsman_pki.server.key_pem(),
            client_ca_pem=wsman_pki.ca.cert_pem(),
            **kwargs,
        )
        server.start()
        started.append(server)
        return server

    yield factory
    for server in started:
        server.stop()
