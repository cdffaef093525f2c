"""A running simulator as the tests see it: connections and clients to it, its audit log,
its faults, and snapshots of its host state.

Every connection to a simulator comes from its endpoint (``Endpoint.connection_input``,
the conversion ``iis_clientcert_simulator.endpoint_connection`` uses); nothing here
builds one by hand.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from lxml import etree

from iis_clientcert.host import winrm_transport
from iis_clientcert.host.client import HostClient
from iis_clientcert.host.connection import Connection
from iis_clientcert_simulator.endpoint import Endpoint, endpoint_file
from iis_clientcert_simulator.serve import Simulator
from iis_clientcert_simulator.state import HostState
from iis_clientcert_simulator.wsman import faults_lock, write_faults


@contextmanager
def in_process_simulator(state_dir: Path) -> Iterator[Simulator]:
    """A simulated host in this process (its server object at hand); the client's pool,
    the persistent agents' shells with it, closed before it stops."""
    simulator = Simulator(state_dir)
    simulator.start()
    try:
        yield simulator
    finally:
        winrm_transport.close_pool()
        simulator.stop()


def connection(endpoint: Endpoint, transport: str = "basic", **overrides: Any) -> Connection:
    """The simulator's connection for ``transport`` (basic, certificate, ntlm), validated;
    ``overrides`` replace properties (None removes one)."""
    value = {**endpoint.connection_input(transport), **overrides}
    return Connection.from_input({k: v for k, v in value.items() if v is not None})


def host_client(endpoint: Endpoint, transport: str = "basic") -> HostClient:
    return HostClient(connection(endpoint, transport))


def fake_endpoint(state_dir: Path, ca_pem: str, *, password: str, pid: int | None = -1) -> Endpoint:
    """Write DIR/endpoint.json as a simulator (``pid``; -1: this process) would, with no
    server behind it: for tests of what reads the file."""
    endpoint = Endpoint(
        state_dir=str(state_dir),
        connection={
            "endpoint": "https://127.0.0.1:5986/wsman",
            "transport": "basic",
            "username": "sim-admin",
            "password": password,
            "ca_bundle": ca_pem,
        },
        winrm_http_url="http://127.0.0.1:5987/wsman",
        ca_file=str(state_dir / "pki" / "ca.pem"),
        client_cert=str(state_dir / "pki" / "client.pem"),
        client_key=str(state_dir / "pki" / "client.key"),
        pid=os.getpid() if pid == -1 else pid,
    )
    state_dir.mkdir(parents=True, exist_ok=True)
    endpoint_file(state_dir).write_text(json.dumps(endpoint.as_json()))
    return endpoint


# --- the state folder -------------------------------------------------------------------


def audit_lines(endpoint: Endpoint) -> list[dict[str, Any]]:
    """The audit log: one entry per command the host received."""
    path = Path(endpoint.state_dir) / "audit.log"
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def ops_of(lines: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [op for line in lines for op in line.get("ops", [])]


def set_faults(state_dir: str | Path, faults: dict[str, Any]) -> None:
    """Replace the host's injected faults (under the lock the executor also takes)."""
    path = HostState(Path(state_dir)).faults
    with faults_lock(path):
        write_faults(path, faults)


def apphost_tree(endpoint: Endpoint) -> Any:
    """applicationHost.config parsed strictly (raises if it is not well-formed)."""
    return etree.parse(str(Path(endpoint.state_dir) / "applicationHost.config"))


def add_sites(state_dir: Path, names: list[str]) -> None:
    """Create the host at ``state_dir`` (if new) and add sites to its applicationHost.config
    (test-only: IIS sites are not something the providers create)."""
    state = HostState(state_dir)
    state.ensure()
    with state.locked():
        tree = etree.parse(str(state.apphost))
        sites = tree.find("system.applicationHost/sites")
        assert sites is not None
        ids = [int(s.get("id", "0")) for s in sites.findall("site")]
        anchor = sites.find("siteDefaults")
        for offset, name in enumerate(names, start=1):
            site = etree.Element("site", name=name, id=str(max(ids) + offset))
            app = etree.SubElement(site, "application", path="/")
            etree.SubElement(app, "virtualDirectory", path="/", physicalPath=f"C:\\inetpub\\{name}")
            bindings = etree.SubElement(site, "bindings")
            etree.SubElement(
                bindings, "binding", protocol="http", bindingInformation=f"*:80:{name}.test"
            )
            if anchor is not None:
                anchor.addprevious(site)
            else:
                sites.append(site)
        tree.write(str(state.apphost), xml_declaration=True, encoding="UTF-8")


# --- snapshots --------------------------------------------------------------------------


def _canonical_xml(path: Path) -> bytes:
    parser = etree.XMLParser(remove_blank_text=True, remove_comments=False)
    return etree.tostring(etree.parse(str(path), parser), method="c14n")


def host_snapshot(endpoint: Endpoint) -> dict[str, Any]:
    """What "the host as it was" means: config (semantically), stores, users, ACLs,
    HTTP.sys bindings. The audit log and the endpoint's own files are left out."""
    state = Path(endpoint.state_dir)
    stores = sorted(
        str(p.relative_to(state)) for p in (state / "certstore").rglob("*") if p.is_file()
    )
    users = json.loads((state / "users.json").read_text())
    return {
        "apphost": _canonical_xml(state / "applicationHost.config"),
        "stores": stores,
        "users": users,
        "acl": json.loads((state / "acl.json").read_text()),
        "httpsys": json.loads((state / "httpsys.json").read_text()),
    }


_ENC = re.compile(rb"\[enc:[A-Za-z0-9]+:[^:\]]*:enc\]")


_LOCAL_SID = re.compile(r"^S-1-5-21-\d+-\d+-\d+-\d{4,}$")


def normalise_sid(value: Any) -> Any:
    """A SID of an account made on the host becomes a marker: relative ids are never given
    twice, so an account made again after a rolled-back attempt has another one."""
    return "<sid>" if isinstance(value, str) and _LOCAL_SID.match(value) else value


def normalised_snapshot(endpoint: Endpoint) -> dict[str, Any]:
    """host_snapshot with what is random by design made comparable: encrypted values (fresh
    nonce per write) and password hashes (fresh salt) become markers."""
    snap = host_snapshot(endpoint)
    snap["apphost"] = _ENC.sub(b"[enc]", snap["apphost"])
    for user in snap["users"].get("users", {}).values():
        if user.get("password_hash"):
            user["password_hash"] = "<hash>"
        # When a logon failed is a clock reading, not a write (the count itself is compared).
        for stamp in ("last_bad_password_time", "locked_at", "password_last_set"):
            if user.get(stamp) is not None:
                user[stamp] = "<time>"
        user["sid"] = normalise_sid(user.get("sid"))
    for folder in snap["acl"].values():
        for ace in folder.get("aces", []):
            ace["sid"] = normalise_sid(ace.get("sid"))
            ace["identity"] = normalise_sid(ace.get("identity"))
    return snap
