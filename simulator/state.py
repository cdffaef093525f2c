"""The simulated host's state folder: layout, first start, locking, and per-request sessions.

DIR/
  applicationHost.config         IIS configuration (see apphost.py)
  machine.key                    AES key for [enc:AesProvider:...:enc] values (0600)
  httpsys.json                   HTTP.sys SSL bindings (netsh http show sslcert)
  certstore/LocalMachine/<Store>/<THUMBPRINT>.cer (+ .key in My, 0600)
  users.json, acl.json           local accounts (password hashes only), folder ACEs
  features.json, host.json       installed features, host facts
  webconfig/<site>/.../web.config   web.config files written with target="webconfig"
  pki/                           the simulator's CA (issues the shop and endpoint certificates)
  audit.log                      one JSON line per command
  faults.json                    injected faults (optional)
"""

from __future__ import annotations

import copy
import fcntl
import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from importlib import resources
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from iis_clientcert_simulator import pki
from iis_clientcert_simulator.accounts import (
    Accounts,
    Folders,
    LockoutPolicy,
    PasswordPolicy,
    RequestLogons,
    default_aces,
    split_logon_name,
)
from iis_clientcert_simulator.apphost import Apphost, ConfigFile
from iis_clientcert_simulator.files import atomic_write, read_json, write_json
from iis_clientcert_simulator.machinekey import MachineKey
from iis_clientcert_simulator.stores import CertStores, HttpSys, sslcert_key

COMPUTER_NAME = "SIMIIS01"
SHOP_HOST = "shop.simiis01.local"

HOST_FACTS: dict[str, Any] = {
    "computer_name": COMPUTER_NAME,
    "os_caption": "Microsoft Windows Server 2022 Datacenter",
    "os_build": 20348,
    "iis_version": "10.0",
    "tls13_enabled": True,
    "client_auth_trust_mode": 0,
    "send_trusted_issuer_list": 0,
    "password_policy": {"min_length": 8, "complexity": True},
    # A fresh Windows Server: no account lockout (see accounts.LockoutPolicy). Tests set
    # Windows 11 22H2+'s 10 / 10 min / 10 min with testing.set_lockout_policy.
    "lockout_policy": {"threshold": 0, "observation_window_s": 1800, "duration_s": 1800},
}

# Physical paths of the two initial sites, as acl.json keys.
SITE_FOLDERS = {"Default Web Site": "C:\\inetpub\\wwwroot", "shop": "C:\\inetpub\\shop"}


def apphost_template(computer: str) -> bytes:
    """The applicationHost.config of a fresh host (apphost_template.xml, IIS 10's layout)."""
    text = (
        resources.files("iis_clientcert_simulator")
        .joinpath("apphost_template.xml")
        .read_text("utf-8")
    )
    return text.replace("{computer}", computer).encode("utf-8")


WEBCONFIG_TEMPLATE = '<?xml version="1.0" encoding="UTF-8"?>\n<configuration>\n</configuration>\n'

# One lock per process: threads of one server serialise here, processes on the file lock.
_PROCESS_LOCK = threading.RLock()
_HELD = threading.local()


class HostState:
    """Paths of the state folder, its creation at first start, and the request lock."""

    def __init__(self, directory: Path) -> None:
        self.dir = Path(directory)
        self.apphost = self.dir / "applicationHost.config"
        self.machine_key = self.dir / "machine.key"
        self.httpsys = self.dir / "httpsys.json"
        self.certstore = self.dir / "certstore" / "LocalMachine"
        self.users = self.dir / "users.json"
        self.acl = self.dir / "acl.json"
        self.features = self.dir / "features.json"
        self.host = self.dir / "host.json"
        self.audit = self.dir / "audit.log"
        self.faults = self.dir / "faults.json"
        self.webconfig = self.dir / "webconfig"
        self.pki = self.dir / "pki"
        self.ca_cert = self.pki / "ca.pem"
        self.ca_key = self.pki / "ca.key"

    @contextmanager
    def locked(self) -> Iterator[None]:
        """Serialise read-modify-write of the state across threads and processes."""
        with _PROCESS_LOCK:
            depth = getattr(_HELD, "depth", 0)
            if depth:  # re-entered by the same thread: the file lock is already ours
                _HELD.depth = depth + 1
                try:
                    yield
                finally:
                    _HELD.depth = depth
                return
            self.dir.mkdir(parents=True, exist_ok=True)
            with open(self.dir / ".lock", "a+b") as handle:
                fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
                _HELD.depth = 1
                try:
                    yield
                finally:
                    _HELD.depth = 0
                    fcntl.flock(handle.fileno(), fcntl.LOCK_UN)

    def ensure(self) -> None:
        """Create the host at first start; later starts keep what is there."""
        with self.locked():
            if not self.apphost.exists():
                self._create()

    def ca(self) -> pki.Issued:
        """The simulator's CA (its key stays in DIR/pki, 0600)."""
        cert = x509.load_pem_x509_certificate(self.ca_cert.read_bytes())
        key = serialization.load_pem_private_key(self.ca_key.read_bytes(), None)
        if not isinstance(key, pki.PrivateKey):
            raise TypeError("the simulator CA key is not EC or RSA")
        return pki.Issued(certificate=cert, key=key)

    def _create(self) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        MachineKey.load_or_create(self.machine_key)
        ca = pki.make_ca(f"{COMPUTER_NAME} Simulator Root CA")
        atomic_write(self.ca_cert, ca.cert_pem())
        atomic_write(self.ca_key, ca.key_pem(), 0o600)
        stores = CertStores(self.certstore)
        stores.ensure()
        stores.add("Root", ca.certificate, None)
        shop = pki.make_server(ca, SHOP_HOST, extra_dns=["shop", "localhost"])
        shop_thumb, _ = stores.add("My", shop.certificate, shop.key_pem())
        httpsys = HttpSys({})
        httpsys.set(sslcert_key("*:443:", 0), shop_thumb, "My", False)
        write_json(self.httpsys, httpsys.data)
        write_json(self.users, Accounts.initial(COMPUTER_NAME))
        folders = Folders({})
        iis = [
            {
                "identity": "BUILTIN\\IIS_IUSRS",
                "rights": "ReadAndExecute",
                "type": "Allow",
                "inherited": True,
            }
        ]
        for folder in SITE_FOLDERS.values():
            folders.add_folder(folder, default_aces(iis))
        folders.add_folder("C:\\inetpub", default_aces())
        write_json(self.acl, folders.data)
        write_json(
            self.features,
            {
                "Web-Server": True,
                "Web-Cert-Auth": True,
                "Web-Basic-Auth": False,
                "Web-Windows-Auth": False,
            },
        )
        write_json(self.host, HOST_FACTS)
        self.audit.touch()
        # Last: its presence marks a complete first start.
        atomic_write(self.apphost, apphost_template(COMPUTER_NAME))

    # --- facts ------------------------------------------------------------------------

    def host_facts(self) -> dict[str, Any]:
        facts: dict[str, Any] = dict(HOST_FACTS)
        facts.update(read_json(self.host, {}) or {})
        return facts

    def feature(self, name: str) -> bool:
        return bool((read_json(self.features, {}) or {}).get(name, False))

    def password_policy(self) -> PasswordPolicy:
        policy = self.host_facts().get("password_policy") or {}
        return PasswordPolicy(
            int(policy.get("min_length", 8)), bool(policy.get("complexity", True))
        )

    def lockout_policy(self) -> LockoutPolicy:
        policy = self.host_facts().get("lockout_policy") or {}
        default = LockoutPolicy()
        return LockoutPolicy(
            int(policy.get("threshold", default.threshold)),
            int(policy.get("observation_window_s", default.observation_window_s)),
            int(policy.get("duration_s", default.duration_s)),
        )

    def logon(
        self, user_name: str, password: str, logon_type: int, default_domain: str = ""
    ) -> tuple[int, str | None]:
        """A logon by another part of the host (IIS for the HTTPS front), counted in
        users.json like the agent's: (Win32 error or 0, the account's name when found)."""
        with self.locked():
            session = Session(self)
            accounts = session.accounts
            code = accounts.logon(user_name, password, logon_type, default_domain)
            record = accounts.user(split_logon_name(user_name, default_domain)[1])
            session.save()
        return code, (str(record["name"]) if record is not None else None)


class _JsonDoc:
    def __init__(self, path: Path, default: dict[str, Any]) -> None:
        self.path = path
        self.data: dict[str, Any] = read_json(path, None) or default
        self._original = copy.deepcopy(self.data)

    def save(self, mode: int | None = None) -> None:
        if json.dumps(self.data, sort_keys=True) != json.dumps(self._original, sort_keys=True):
            write_json(self.path, self.data, mode)
            self._original = copy.deepcopy(self.data)


class Session:
    """What one request reads and writes; loaded lazily, saved after each successful op."""

    def __init__(self, state: HostState) -> None:
        self.state = state
        self.key = MachineKey.load_or_create(state.machine_key)
        self.facts = state.host_facts()
        self.computer = str(self.facts.get("computer_name", COMPUTER_NAME))
        self.stores = CertStores(state.certstore)
        self._apphost: Apphost | None = None
        self._webconfigs: dict[Path, ConfigFile] = {}
        self._users: _JsonDoc | None = None
        self._acl: _JsonDoc | None = None
        self._httpsys: _JsonDoc | None = None
        self.logons = RequestLogons()

    @property
    def apphost(self) -> Apphost:
        if self._apphost is None:
            self._apphost = Apphost(self.state.apphost)
        return self._apphost

    def webconfig(self, location: str, create: bool) -> ConfigFile | None:
        """The web.config of a site path (DIR/webconfig/<site>/<path>/web.config)."""
        parts = [p for p in location.replace("\\", "/").split("/") if p and p not in (".", "..")]
        path = self.state.webconfig.joinpath(*parts, "web.config")
        if path not in self._webconfigs:
            if not path.exists():
                if not create:
                    return None
                atomic_write(path, WEBCONFIG_TEMPLATE.encode())
            self._webconfigs[path] = ConfigFile(path)
        return self._webconfigs[path]

    @property
    def accounts(self) -> Accounts:
        if self._users is None:
            self._users = _JsonDoc(self.state.users, {})
        return Accounts(
            self._users.data,
            self.computer,
            self.state.password_policy(),
            self.state.lockout_policy(),
            request=self.logons,
        )

    @property
    def folders(self) -> Folders:
        if self._acl is None:
            self._acl = _JsonDoc(self.state.acl, {})
        return Folders(self._acl.data)

    @property
    def httpsys(self) -> HttpSys:
        if self._httpsys is None:
            self._httpsys = _JsonDoc(self.state.httpsys, {})
        return HttpSys(self._httpsys.data)

    def save(self) -> None:
        if self._apphost is not None:
            self._apphost.save()
        for config in self._webconfigs.values():
            config.save()
        for doc in (self._users, self._acl, self._httpsys):
            if doc is not None:
                doc.save()

    def discard(self) -> None:
        """Forget unsaved changes (an op failed half way): reload from disk next time."""
        self._apphost = None
        self._webconfigs.clear()
        self._users = self._acl = self._httpsys = None
