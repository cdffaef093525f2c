"""Fixtures for simulator tests: test PKI material and WS-Management servers on loopback."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from iis_clientcert_simulator import pki
from iis_clientcert_simulator.wsman import CommandHandler, Credentials, WSManServer


@dataclass(frozen=True)
class WSManPki:
    """A CA, a server certificate for 127.0.0.1/localhost and a client certificate, on disk."""

    ca: pki.Issued
    server: pki.Issued
    client: pki.Issued
    ca_file: Path
    client_cert_file: Path
    client_key_file: Path


@pytest.fixture(scope="session")
def wsman_pki(tmp_path_factory: pytest.TempPathFactory) -> WSManPki:
    base = tmp_path_factory.mktemp("wsman-pki")
    ca = pki.make_ca("Simulator Test CA")
    server = pki.make_server(ca, "localhost", ip_addresses=("127.0.0.1",))
    client = pki.make_leaf(ca, "winrm-cert-user", client_auth=True)
    ca_file = base / "ca.pem"
    ca_file.write_bytes(ca.cert_pem())
    cert_file = base / "client.pem"
    cert_file.write_bytes(client.cert_pem())
    key_file = base / "client.key"
    key_file.write_bytes(client.key_pem())
    key_file.chmod(0o600)
    return WSManPki(ca, server, client, ca_file, cert_file, key_file)


WSManFactory = Callable[..., WSManServer]


@pytest.fixture
def make_wsman(wsman_pki: WSManPki) -> Iterator[WSManFactory]:
    """Start WSManServers (stopped at teardown): ``make_wsman(handler, credentials, **kw)``."""
    started: list[WSManServer] = []

    def factory(handler: CommandHandler, credentials: Credentials, **kwargs: Any) -> WSManServer:
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
