"""The running simulator: the state folder's host behind a WS-Management endpoint.

First start creates the endpoint material in DIR/pki (a WinRM server certificate for
127.0.0.1/localhost and a client certificate mapped to the admin user, both issued by the
state's CA), and the admin account ``sim-admin`` with a random password kept only in
DIR/endpoint.json (0600; see ``iis_clientcert_simulator.endpoint``) and as a hash in
users.json.
"""

from __future__ import annotations

import logging
import os
import secrets
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509

from iis_clientcert_simulator import pki
from iis_clientcert_simulator.accounts import Accounts
from iis_clientcert_simulator.endpoint import Endpoint, endpoint_file
from iis_clientcert_simulator.executor import Executor
from iis_clientcert_simulator.files import atomic_write, read_json, write_json
from iis_clientcert_simulator.host_costs import NONE, HostCosts
from iis_clientcert_simulator.state import COMPUTER_NAME, HostState, Session
from iis_clientcert_simulator.stores import thumbprint
from iis_clientcert_simulator.winrm_service import (
    DEMO_SETUP,
    SHIPPED,
    WinRMService,
    demo_setup_commands,
)
from iis_clientcert_simulator.wsman import Credentials, FileFaults, WinrsConfig, WSManServer

ADMIN_USER = "sim-admin"
logger = logging.getLogger(__name__)


def winrm_demo_setup(state: HostState, *, enable: bool = True) -> bool:
    """The demo's WinRM setup step, done once per host (when host.json has no "winrm" yet).

    Windows ships with Basic and certificate authentication off and filters the network
    token of a local administrator like ``sim-admin`` (winrm_service.py gives the sources).
    The demo and the tests use Basic and certificate auth over HTTPS and NTLM as sim-admin,
    so this step does on the simulated host what a person does on a real one
    (:func:`demo_setup_commands`, README "A real host"). ``enable=False`` records the
    shipped defaults instead (``serve --winrm-as-shipped``). Returns whether it ran.
    """
    with state.locked():
        facts = read_json(state.host, {}) or {}
        if isinstance(facts.get("winrm"), dict):
            return False  # set up before (or configured by hand): leave it as it is
        facts["winrm"] = {**SHIPPED, **(DEMO_SETUP if enable else {})}
        write_json(state.host, facts)
    if enable:
        for command in demo_setup_commands():
            logger.warning("WinRM setup step (as on a real host): %s", command)
    return True


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
        path = endpoint_file(state.dir)
        previous = read_json(path, {}) or {}
        connection = previous.get("connection") or {}
        password = connection.get("password")
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
            # Kept at once: a start that fails later must not lose the new password.
            write_json(
                path, {**previous, "connection": {**connection, "password": password}}, 0o600
            )
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
    agent request instead (the floor of a call: one round trip). ``host_costs``: what the
    host spends besides the network (simulator/host_costs.py); the floor proper has none,
    the floor with realistic costs is what a call cannot go below on Windows.
    """

    def __init__(
        self,
        state_dir: Path,
        *,
        port: int = 0,
        latency_ms: int = 0,
        winrm_setup: bool = True,
        host_costs: HostCosts = NONE,
        floor: bool = False,
    ) -> None:
        self.state = HostState(Path(state_dir).resolve())
        self.port = port
        self.latency_ms = latency_ms
        # False: the host keeps WinRM as Windows ships it (Basic and certificate auth off).
        self.winrm_setup = winrm_setup
        self.host_costs = host_costs
        self.floor = floor
        self.server: WSManServer | None = None
        self.executor: Executor | None = None
        self.endpoint: Endpoint | None = None

    def start(self) -> Endpoint:
        material = prepare(self.state)
        winrm_demo_setup(self.state, enable=self.winrm_setup)
        state = self.state
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
                # prepare() makes it a member of Administrators; it is not the built-in one.
                filtered_admins={ADMIN_USER},
            ),
            tls_cert_pem=material.server_cert.read_bytes(),
            tls_key_pem=material.server_key.read_bytes(),
            client_ca_pem=self.state.ca_cert.read_bytes(),
            faults=FileFaults(self.state.faults),
            https_port=self.port,
            http_port=self.port + 1 if self.port else 0,
            latency_ms=0 if self.floor else self.latency_ms,
            machine=COMPUTER_NAME,
            config=lambda: WinRMService.from_facts(state.host_facts()),
            winrs=lambda: winrs_config(self.state),
        )
        server.start()
        self.server = server
        self.endpoint = Endpoint(
            state_dir=str(self.state.dir),
            connection={
                "endpoint": server.https_url,
                "transport": "basic",
                "username": ADMIN_USER,
                "password": material.password,
                "ca_bundle": self.state.ca_cert.read_text("utf-8"),
            },
            winrm_http_url=server.http_url,
            ca_file=str(self.state.ca_cert),
            client_cert=str(material.client_cert),
            client_key=str(material.client_key),
            pid=os.getpid(),
            sites={},
        )
        write_json(endpoint_file(self.state.dir), self.endpoint.as_json(), 0o600)
        return self.endpoint

    def stop(self) -> None:
        if self.server is not None:
            self.server.stop()
            self.server = None
            # Keep endpoint.json (it holds the password for the next start) but show that
            # nothing serves it now, so `reset` and scripts do not wait for a dead server.
            path = endpoint_file(self.state.dir)
            with self.state.locked():
                data = read_json(path, {}) or {}
                if data.get("pid") == os.getpid():
                    write_json(path, {**data, "pid": None}, 0o600)

    def __enter__(self) -> Endpoint:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
