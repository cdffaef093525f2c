"""The simulated host's state folder: layout, first start, locking, and per-request sessions.

DIR/
  applicationHost.config         IIS configuration (see apphost.py)
  machine.key                    AES key for [enc:AesProvider:...:enc] values (0600)
  httpsys.json                   HTTP.sys SSL bindings (netsh http show sslcert)
  certstore/LocalMachine/<Store>/<THUMBPRINT>.cer (+ .key in My, 0600); Root, CA, My and
                                 Disallowed (distrusted certificates; Schannel honours it)
  users.json, acl.json           local accounts (password hashes only), folder ACEs
  host.json                      host facts (OS, Schannel settings, CDP reachability...)
  crl/index.json, crl/*.crl      CRLs as the network serves them: {url: file} (see publish_crl)
  webconfig/<site>/.../web.config   web.config files written with target="webconfig"
  pki/                           the simulator's CA (issues the shop and endpoint certificates)
  audit.log                      one JSON line per command
  faults.json                    injected faults (optional): fail_op, fail_step, ...

Installed IIS features show where Windows shows them: as native modules in
applicationHost.config's <globalModules> (Web-Cert-Auth is IISCertificateMappingAuthentication
Module, which the agent looks for). State folders made by older simulators, whose
applicationHost.config has no <globalModules>, fall back to their features.json.
"""

from __future__ import annotations

import copy
import fcntl
import hashlib
import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from importlib import resources
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from lxml import etree

from iis_clientcert_simulator import pki
from iis_clientcert_simulator.accounts import (
    DOMAIN_MEMBER_PASSWORD_POLICY,
    STAND_ALONE_PASSWORD_POLICY,
    Accounts,
    Domain,
    Folders,
    LockoutPolicy,
    PasswordPolicy,
    RequestLogons,
    default_aces,
    split_logon_name,
)
from iis_clientcert_simulator.apphost import Apphost, ConfigFile
from iis_clientcert_simulator.errors import injected_error
from iis_clientcert_simulator.files import atomic_write, read_json, write_json
from iis_clientcert_simulator.machinekey import MachineKey
from iis_clientcert_simulator.stores import CertStores, HttpSys, sslcert_key
from iis_clientcert_simulator.wsman import faults_lock
from iis_clientcert_simulator.xmldoc import append_child, remove_child

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
    # {CDP URL: reachable?} for the CRL distribution points of client certificates: a URL
    # not listed is reachable when a CRL is published there (see publish_crl).
    "cdp_reachable": {},
    # PowerShell editions installed: "Desktop" (Windows PowerShell 5.1, powershell.exe, part
    # of every Windows Server) and "Core" (PowerShell 7, pwsh.exe, a separate install). The
    # default is a stock server: 5.1 only.
    "powershell_editions": ["Desktop"],
    # Whether the WinRM account has a usable TEMP folder. One that never logged on
    # interactively, reached with WinRS's noprofile, may have none (FACTS.md, "Real-host
    # pitfalls"); the agent must not need it, so the default is the harder host.
    "account_has_temp": False,
    # A fresh Windows Server: no account lockout (see accounts.LockoutPolicy). Tests set
    # Windows 11 22H2+'s 10 / 10 min / 10 min with testing.set_lockout_policy.
    "lockout_policy": {"threshold": 0, "observation_window_s": 1800, "duration_s": 1800},
}

# Windows feature -> the native module its installation adds to <globalModules> (the name
# IIS Manager and the agent's Test-WebCertAuthInstalled look for) and its image in
# %windir%\System32\inetsrv. Microsoft's "Introduction to IIS Architectures" (Security
# Modules) lists IISCertificateMappingAuthenticationModule as Inetsrv\Authmap.dll (authcert.dll
# is the Active Directory mapping module), as a default applicationHost.config registers it.
FEATURE_MODULES: dict[str, tuple[str, str]] = {
    "Web-Cert-Auth": ("IISCertificateMappingAuthenticationModule", "authmap.dll"),
    "Web-Basic-Auth": ("BasicAuthenticationModule", "authbas.dll"),
    "Web-Windows-Auth": ("WindowsAuthenticationModule", "authsspi.dll"),
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

# One lock per simulated host (its state folder): threads of its server serialise there,
# processes on the file lock. Hosts are separate machines: a fleet simulated in one
# process must not make one host's requests wait for another's (before, one lock per
# process serialised every host of `make bench`'s fleets).
_HOST_LOCKS: dict[str, threading.RLock] = {}
_HELD = threading.local()  # per thread: state folder -> how deep it holds that host's lock
# The agent's named mutex (Global\iis-clientcert-agent), one per simulated host.
_MUTEXES: dict[str, threading.Lock] = {}
# Guards the creation of entries in _HOST_LOCKS and _MUTEXES.
_LOCKS_GUARD = threading.Lock()


class HostState:
    """Paths of the state folder, its creation at first start, and the request lock."""

    def __init__(self, directory: Path) -> None:
        self.dir = Path(directory)
        self.apphost = self.dir / "applicationHost.config"
        self.machine_key = self.dir / "machine.key"
        self.httpsys = self.dir / "httpsys.json"
        self.certstore = self.dir / "certstore" / "LocalMachine"
        self.users = self.dir / "users.json"
        # The SAM's own counter (the next relative id): Windows never gives a RID twice,
        # and a person reading the host does not see it (not part of users.json).
        self.sam = self.dir / "sam.json"
        self.acl = self.dir / "acl.json"
        self.features = self.dir / "features.json"
        self.host = self.dir / "host.json"
        self.audit = self.dir / "audit.log"
        self.faults = self.dir / "faults.json"
        self.webconfig = self.dir / "webconfig"
        self.pki = self.dir / "pki"
        self.ca_cert = self.pki / "ca.pem"
        self.ca_key = self.pki / "ca.key"
        self.crl = self.dir / "crl"
        self._key = str(self.dir.resolve())

    @contextmanager
    def locked(self) -> Iterator[None]:
        """Serialise read-modify-write of this host's state across threads and processes."""
        key = self._key
        with _LOCKS_GUARD:
            lock = _HOST_LOCKS.setdefault(key, threading.RLock())
        held: dict[str, int] = _HELD.__dict__.setdefault("depths", {})
        with lock:
            depth = held.get(key, 0)
            if depth:  # re-entered by the same thread: the file lock is already ours
                held[key] = depth + 1
                try:
                    yield
                finally:
                    held[key] = depth
                return
            self.dir.mkdir(parents=True, exist_ok=True)
            with open(self.dir / ".lock", "a+b") as handle:
                fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
                held[key] = 1
                try:
                    yield
                finally:
                    held[key] = 0
                    fcntl.flock(handle.fileno(), fcntl.LOCK_UN)

    @contextmanager
    def agent_mutex(self, timeout: float) -> Iterator[bool]:
        """The host-wide named mutex the agent takes around a write batch: yields whether it
        was acquired within ``timeout`` seconds (threads here, processes on a file lock)."""
        with _LOCKS_GUARD:
            lock = _MUTEXES.setdefault(self._key, threading.Lock())
        if not lock.acquire(timeout=timeout):
            yield False
            return
        try:
            self.dir.mkdir(parents=True, exist_ok=True)
            with open(self.dir / ".agent-mutex", "a+b") as handle:
                fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
                try:
                    yield True
                finally:
                    fcntl.flock(handle.fileno(), fcntl.LOCK_UN)
        finally:
            lock.release()

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
        httpsys.put(sslcert_key("*:443:", 0), shop_thumb, "My")
        write_json(self.httpsys, httpsys.data)
        write_json(self.users, Accounts.initial(COMPUTER_NAME))
        folders = Folders({})
        iis = [
            {
                "identity": "BUILTIN\\IIS_IUSRS",
                "sid": "S-1-5-32-568",
                "rights": "ReadAndExecute",
                "type": "Allow",
                "inherited": True,
            }
        ]
        for folder in SITE_FOLDERS.values():
            folders.add_folder(folder, default_aces(iis))
        folders.add_folder("C:\\inetpub", default_aces())
        write_json(self.acl, folders.data)
        write_json(self.host, HOST_FACTS)
        self.audit.touch()
        # Last: its presence marks a complete first start.
        atomic_write(self.apphost, apphost_template(COMPUTER_NAME))

    # --- facts ------------------------------------------------------------------------

    def host_facts(self) -> dict[str, Any]:
        facts: dict[str, Any] = dict(HOST_FACTS)
        facts.update(read_json(self.host, {}) or {})
        return facts

    def powershell_editions(self) -> tuple[str, ...]:
        editions = self.host_facts().get("powershell_editions") or []
        return tuple(str(e) for e in editions)

    def feature(self, name: str) -> bool:
        """Whether a Windows feature is installed (its module in <globalModules>)."""
        if not self.apphost.exists():
            return False
        return feature_installed(Apphost(self.apphost), name, self.features)

    def set_feature(self, name: str, installed: bool) -> bool:
        """Install or remove a feature's module, as Install-/Uninstall-WindowsFeature do."""
        with self.locked():
            config = Apphost(self.apphost)
            changed = set_feature_module(config, name, installed)
            config.save()
            return changed

    # --- CRLs as the network serves them ----------------------------------------------

    def publish_crl(self, url: str, crl_der: bytes) -> None:
        """Serve ``crl_der`` at ``url`` (replacing what was there), as a CA's web server would."""
        with self.locked():
            index = read_json(self.crl / "index.json", {}) or {}
            name = hashlib.sha256(url.encode("utf-8")).hexdigest()[:32] + ".crl"
            atomic_write(self.crl / name, crl_der)
            index[url] = name
            write_json(self.crl / "index.json", index)

    def unpublish_crl(self, url: str) -> bool:
        with self.locked():
            index = read_json(self.crl / "index.json", {}) or {}
            name = index.pop(url, None)
            if name is None:
                return False
            (self.crl / str(name)).unlink(missing_ok=True)
            write_json(self.crl / "index.json", index)
            return True

    def published_crls(self) -> dict[str, bytes]:
        """{url: CRL DER} of every published CRL (reachability is a host fact on top)."""
        index = read_json(self.crl / "index.json", {}) or {}
        out: dict[str, bytes] = {}
        for url, name in index.items():
            path = self.crl / str(name)
            if path.is_file():
                out[str(url)] = path.read_bytes()
        return out

    def cdp_reachable(self) -> dict[str, bool]:
        facts = self.host_facts().get("cdp_reachable") or {}
        return {str(url): bool(ok) for url, ok in dict(facts).items()}

    def password_policy(self) -> PasswordPolicy:
        """host.json's ``password_policy``; what it leaves out is the Windows default of a
        stand-alone server, or of a domain member when host.json names a domain (accounts.py,
        STAND_ALONE_PASSWORD_POLICY). The simulated host sets 8 characters (HOST_FACTS)."""
        facts = self.host_facts()
        policy = facts.get("password_policy") or {}
        member = Domain.from_facts(facts) is not None
        default = DOMAIN_MEMBER_PASSWORD_POLICY if member else STAND_ALONE_PASSWORD_POLICY
        return PasswordPolicy(
            int(policy.get("min_length", default.min_length)),
            bool(policy.get("complexity", default.complexity)),
            int(policy.get("max_age_days", default.max_age_days)),
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
        self._sam: _JsonDoc | None = None
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

    def feature(self, name: str) -> bool:
        """Whether a Windows feature is installed, from this session's applicationHost.config."""
        return feature_installed(self.apphost, name, self.state.features)

    @property
    def accounts(self) -> Accounts:
        if self._users is None:
            self._users = _JsonDoc(self.state.users, {})
        if self._sam is None:
            self._sam = _JsonDoc(self.state.sam, {})
        return Accounts(
            self._users.data,
            self.computer,
            self.state.password_policy(),
            Domain.from_facts(self.facts),
            lockout=self.state.lockout_policy(),
            request=self.logons,
            sam=self._sam.data,
        )

    @property
    def folders(self) -> Folders:
        if self._acl is None:
            self._acl = _JsonDoc(self.state.acl, {})
        return Folders(self._acl.data, self.accounts)

    @property
    def httpsys(self) -> HttpSys:
        if self._httpsys is None:
            self._httpsys = _JsonDoc(self.state.httpsys, {})
        return HttpSys(self._httpsys.data)

    def checkpoint(self, step: str) -> None:
        """A point in the middle of an op (e.g. "binding.set:after_config") where faults.json
        ``fail_step: {"step": ...}`` makes the op fail, once: the proof that an op failing
        half way leaves the host as it found it (issue 10, point 9)."""
        with faults_lock(self.state.faults):
            try:
                faults = read_json(self.state.faults, {}) or {}
            except (ValueError, OSError):
                return
            spec = faults.get("fail_step") if isinstance(faults, dict) else None
            if not isinstance(spec, dict) or spec.get("step") != step:
                return
            del faults["fail_step"]
            write_json(self.state.faults, faults)
        raise injected_error(spec)

    def begin_op(self) -> None:
        """Start an op: accounts, ACLs, HTTP.sys and web.config files are read afresh (on
        Windows each op sees what other batches did since). applicationHost.config is kept:
        the batch's copy, whose version on disk a commit checks (Apphost.save)."""
        self._webconfigs.clear()
        self._users = self._sam = self._acl = self._httpsys = None

    def save(self) -> None:
        if self._apphost is not None:
            self._apphost.save()
        for config in self._webconfigs.values():
            config.save()
        for doc in (self._users, self._sam, self._acl, self._httpsys):
            if doc is not None:
                doc.save()

    def discard(self) -> None:
        """Forget unsaved changes (an op failed half way): reload from disk next time."""
        self._apphost = None
        self._webconfigs.clear()
        self._users = self._sam = self._acl = self._httpsys = None


def _global_modules(config: ConfigFile) -> etree._Element | None:
    web = next((c for c in config.root if c.tag == "system.webServer"), None)
    return next((c for c in web if c.tag == "globalModules"), None) if web is not None else None


def feature_installed(config: ConfigFile, name: str, legacy: Path) -> bool:
    """A feature is installed when its module is in <globalModules>; Web-Server always is.
    Without a <globalModules> (an older simulator's state) features.json says."""
    if name == "Web-Server":
        return True
    modules = _global_modules(config)
    if modules is None:
        return bool((read_json(legacy, {}) or {}).get(name, False))
    module = FEATURE_MODULES.get(name, (name, ""))[0]
    return any(c.tag == "add" and c.get("name") == module for c in modules)


def set_feature_module(config: ConfigFile, name: str, installed: bool) -> bool:
    """Add or remove a feature's module in <globalModules> and the server's <modules>."""
    if name not in FEATURE_MODULES:
        raise ValueError(f"unknown feature {name!r}; known: {sorted(FEATURE_MODULES)}")
    module, dll = FEATURE_MODULES[name]
    web = next((c for c in config.root if c.tag == "system.webServer"), None)
    if web is None:
        raise ValueError("applicationHost.config has no <system.webServer>")
    changed = False
    for tag, attributes in (
        ("globalModules", {"name": module, "image": f"%windir%\\System32\\inetsrv\\{dll}"}),
        ("modules", {"name": module, "lockItem": "true"}),
    ):
        holder = next((c for c in web if c.tag == tag), None)
        if holder is None:
            continue
        found = [c for c in holder if c.tag == "add" and c.get("name") == module]
        if installed and not found:
            append_child(holder, etree.Element("add", attributes))
            changed = True
        elif not installed and found:
            for el in found:
                remove_child(el)
            changed = True
    return changed
