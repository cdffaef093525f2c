"""The running simulator: the state folder's host behind a WS-Management endpoint.

First start creates the endpoint material in DIR/pki (a WinRM server certificate for
127.0.0.1/localhost and a client certificate mapped to the admin user, both issued by the
state's CA), and the admin account ``sim-admin`` with a random password kept only in
DIR/endpoint.json (0600) and as a hash in users.json.
"""

from __future__ import annotations

import os
import secrets
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from cryptography import x509

from iis_clientcert_simulator import pki
from iis_clientcert_simulator.accounts import Accounts
from iis_clientcert_simulator.executor import Executor
from iis_clientcert_simulator.files import atomic_write, read_json, write_json
from iis_clientcert_simulator.host_costs import NONE, HostCosts
from iis_clientcert_simulator.state import COMPUTER_NAME, HostState, Session
from iis_clientcert_simulator.stores import thumbprint
from iis_clientcert_simulator.wsman import Credentials, FileFaults, WinrsConfig, WSManServer

ADMIN_USER = "sim-admin"


@dataclass(frozen=True)
class Endpoint:
    """What a client needs (the content of DIR/endpoint.json)."""

    state_dir: str
    winrm_https_url: str
    winrm_http_url: str
    ca_bundle: str
    username: str
    password: str
    client_cert: str
    client_key: str
    pid: int
    sites: dict[str, Any] = field(default_factory=dict)  # https URLs per site
    http_sites: dict[str, Any] = field(default_factory=dict)  # plain http URLs per site

    def as_json(self) -> dict[str, Any]:
        return asdict(self)

    def public(self) -> dict[str, Any]:
        """The endpoint without its password (for stdout and logs)."""
        data = self.as_json()
        data.pop("password")
        data["endpoint_json"] = str(Path(self.state_dir) / "endpoint.json")
        return data


@dataclass(frozen=True)
class _Material:
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path
    client_thumbprint: str
    password: str


def _new_password() -> str:
    # token_urlsafe gives letters, digits, '-' and '_'; the suffix guarantees every class.
    return secrets.token_urlsafe(18) + "-Aa7"


def prepare(state: HostState) -> _Material:
    """Create (first start) or load the endpoint material and the admin account."""
    state.ensure()
    with state.locked():
        server_cert = state.pki / "winrm.pem"
        server_key = state.pki / "winrm.key"
        client_cert = state.pki / "client.pem"
        client_key = state.pki / "client.key"
        if not server_cert.exists() or not client_cert.exists():
            ca = state.ca()
            server = pki.make_server(ca, "localhost", ip_addresses=("127.0.0.1",))
            client = pki.make_leaf(ca, ADMIN_USER, client_auth=True)
            atomic_write(server_key, server.key_pem(), 0o600)
            atomic_write(server_cert, server.cert_pem())
            atomic_write(client_key, client.key_pem(), 0o600)
            atomic_write(client_cert, client.cert_pem())
        endpoint_file = state.dir / "endpoint.json"
        previous = read_json(endpoint_file, {}) or {}
        password = previous.get("password")
        session = Session(state)
        accounts: Accounts = session.accounts
        if not isinstance(password, str) or not accounts.password_is(ADMIN_USER, password):
            # First start, or endpoint.json was lost: a new password for the admin.
            password = _new_password()
            accounts.set_user(
                ADMIN_USER,
                password,
                {
                    "full_name": "Simulator administrator",
                    "description": "WinRM account of the iis-clientcert simulator",
                    "password_never_expires": True,
                    "disabled": False,
                },
            )
            accounts.add_member("Administrators", ADMIN_USER)
            session.save()
            write_json(endpoint_file, {**previous, "password": password}, 0o600)
        client_thumb = thumbprint(x509.load_pem_x509_certificate(client_cert.read_bytes()))
        return _Material(server_cert, server_key, client_cert, client_key, client_thumb, password)


def winrs_config(state: HostState) -> WinrsConfig:
    """The host's WinRS settings: host.json ``winrs`` (``max_shells_per_user``,
    ``idle_timeout_s``, ``min_idle_timeout_s``) over Windows' defaults."""
    facts = state.host_facts().get("winrs")
    if not isinstance(facts, dict):
        return WinrsConfig()
    known = {k: float(v) for k, v in facts.items() if k in WinrsConfig.__dataclass_fields__}
    if "max_shells_per_user" in known:
        known["max_shells_per_user"] = int(known["max_shells_per_user"])
    return WinrsConfig(**known)  # type: ignore[arg-type]


class Simulator:
    """Start and stop the simulated host's WS-Management endpoint (threads, in-process).

    ``latency_ms`` delays every HTTP request; with ``floor=True`` it is charged once per
    agent request instead (the floor of a call: one round trip) and the host costs nothing.
    ``host_costs``: what the host spends besides the network (simulator/host_costs.py).
    """

    def __init__(
        self,
        state_dir: Path,
        *,
        port: int = 0,
        latency_ms: int = 0,
        host_costs: HostCosts = NONE,
        floor: bool = False,
    ) -> None:
        self.state = HostState(Path(state_dir).resolve())
        self.port = port
        self.latency_ms = latency_ms
        self.host_costs = NONE if floor else host_costs
        self.floor = floor
        self.server: WSManServer | None = None
        self.executor: Executor | None = None
        self.endpoint: Endpoint | None = None

    def start(self) -> Endpoint:
        material = prepare(self.state)
        self.executor = Executor(
            self.state.dir,
            costs=self.host_costs,
            floor_ms=float(self.latency_ms) if self.floor else 0.0,
        )
        server = WSManServer(
            self.executor,
            Credentials(
                users={ADMIN_USER: material.password},
                cert_users={material.client_thumbprint: ADMIN_USER},
            ),
            tls_cert_pem=material.server_cert.read_bytes(),
            tls_key_pem=material.server_key.read_bytes(),
            client_ca_pem=self.state.ca_cert.read_bytes(),
            faults=FileFaults(self.state.faults),
            https_port=self.port,
            http_port=self.port + 1 if self.port else 0,
            latency_ms=0 if self.floor else self.latency_ms,
            machine=COMPUTER_NAME,
            winrs=lambda: winrs_config(self.state),
        )
        server.start()
        self.server = server
        self.endpoint = Endpoint(
            state_dir=str(self.state.dir),
            winrm_https_url=server.https_url,
            winrm_http_url=server.http_url,
            ca_bundle=str(self.state.ca_cert),
            username=ADMIN_USER,
            password=material.password,
            client_cert=str(material.client_cert),
            client_key=str(material.client_key),
            pid=os.getpid(),
            sites={},
        )
        write_json(self.state.dir / "endpoint.json", self.endpoint.as_json(), 0o600)
        return self.endpoint

    def stop(self) -> None:
        if self.server is not None:
            self.server.stop()
            self.server = None
            # Keep endpoint.json (it holds the password for the next start) but show that
            # nothing serves it now, so `reset` and scripts do not wait for a dead server.
            endpoint_file = self.state.dir / "endpoint.json"
            with self.state.locked():
                data = read_json(endpoint_file, {}) or {}
                if data.get("pid") == os.getpid():
                    write_json(endpoint_file, {**data, "pid": None}, 0o600)

    def __enter__(self) -> Endpoint:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
