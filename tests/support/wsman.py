"""Test PKI for bare WS-Management servers on loopback (tests/simulator)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from iis_clientcert_simulator import pki
from iis_clientcert_simulator.wsman import WSManServer


@dataclass(frozen=True)
class WSManPki:
    """A CA, a server certificate for 127.0.0.1/localhost and a client certificate, on disk."""

    ca: pki.Issued
    server: pki.Issued
    client: pki.Issued
    ca_file: Path
    client_cert_file: Path
    client_key_file: Path


def make_wsman_pki(base: Path) -> WSManPki:
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


# make_wsman(handler, credentials, **kwargs): a started server (stopped at teardown).
WSManFactory = Callable[..., WSManServer]
