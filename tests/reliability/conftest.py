"""Shared pieces of the reliability suite: the figures it reports, PKI material, simulated
hosts with extra sites, normalised host snapshots and provider-level helpers.

Every test records what it tried into the session's :class:`Figures`; at the end of the
session they are written to ``.work/reliability-figures.json`` and printed as a table
(``benchmarks/reliability_report.py`` prints the same table from the file).
"""

from __future__ import annotations

import base64
import json
import re
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from lxml import etree

from iis_clientcert.host import winrm_transport
from iis_clientcert.host.connection import Connection
from iis_clientcert_simulator.pki import Issued, make_ca, make_leaf, make_server
from iis_clientcert_simulator.serve import Endpoint
from iis_clientcert_simulator.state import HostState
from iis_clientcert_simulator.testing import running_simulator

# Re-exported engine fixtures, so the engine tests of this suite find them.
from tests.engine.conftest import REPO_ROOT, pulumi_cli, pulumi_env  # noqa: F401
from tests.engine.hostkit import host_snapshot

FIGURES_FILE = REPO_ROOT / ".work" / "reliability-figures.json"
FIGURE_NAMES = (
    "inputs_tried",
    "faults_injected",
    "runs_converged",
    "runs_not_converged",
    "secrets_found",
    "lost_writes",
)
# Figures that must be zero for the suite to pass.
MUST_BE_ZERO = ("runs_not_converged", "secrets_found", "lost_writes")

USER_PASSWORD = "Bl0ssom-Pw-4242!"
PFX_PASSWORD = "rel-pfx-pw"


@dataclass
class Figures:
    """Counters per figure, broken down by the part of the suite that counted them."""

    counts: dict[str, dict[str, int]] = field(
        default_factory=lambda: {name: {} for name in FIGURE_NAMES}
    )
    lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, figure: str, part: str, n: int = 1) -> None:
        if figure not in self.counts:
            raise KeyError(figure)
        with self.lock:
            self.counts[figure][part] = self.counts[figure].get(part, 0) + n

    def total(self, figure: str) -> int:
        return sum(self.counts[figure].values())

    def as_json(self) -> dict[str, Any]:
        return {
            name: {"total": self.total(name), "by_part": dict(sorted(parts.items()))}
            for name, parts in self.counts.items()
        }


_FIGURES = Figures()


@pytest.fixture(scope="session")
def figures() -> Figures:
    return _FIGURES


def figures_table(data: dict[str, Any]) -> list[str]:
    """The figures as printed lines (shared with benchmarks/reliability_report.py)."""
    lines = [f"{'figure':<20} {'total':>7}  by part"]
    for name in FIGURE_NAMES:
        entry = data.get(name) or {"total": 0, "by_part": {}}
        parts = ", ".join(f"{k}={v}" for k, v in entry["by_part"].items()) or "-"
        flag = "  (must be 0)" if name in MUST_BE_ZERO else ""
        lines.append(f"{name:<20} {entry['total']:>7}  {parts}{flag}")
    return lines


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


# --- PKI -----------------------------------------------------------------------------


@dataclass
class Pki:
    root: Issued
    other_root: Issued
    client: Issued
    client2: Issued
    server: Issued  # for ServerCertificate
    binding_server: Issued  # pre-imported in the baseline host, for HttpsBinding

    def pfx_b64(self, issued: Issued, password: str = PFX_PASSWORD) -> str:
        return base64.b64encode(issued.pfx(password.encode())).decode()


@pytest.fixture(scope="session")
def pki() -> Pki:
    root = make_ca("Reliability Root")
    return Pki(
        root=root,
        other_root=make_ca("Reliability Other Root"),
        client=make_leaf(root, "rel-client", subject_extra={"O": "Rel Corp"}),
        client2=make_leaf(root, "rel-client-2", subject_extra={"O": "Rel Corp"}),
        server=make_server(root, "rel-server.test"),
        binding_server=make_server(root, "rel-binding.test"),
    )


# --- simulated hosts -------------------------------------------------------------------


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


@pytest.fixture
def simulator(tmp_path: Path) -> Iterator[Endpoint]:
    with running_simulator(tmp_path / "host") as endpoint:
        yield endpoint
    winrm_transport.close_pool()


def connection_of(endpoint: Endpoint) -> dict[str, Any]:
    """A basic-over-HTTPS ``connection`` input for the simulator (normalised)."""
    return Connection.from_input(
        {
            "endpoint": endpoint.winrm_https_url,
            "transport": "basic",
            "username": endpoint.username,
            "password": endpoint.password,
            "ca_bundle": Path(endpoint.ca_bundle).read_text(),
        }
    ).to_input()


_ENC = re.compile(rb"\[enc:[A-Za-z0-9]+:[^:\]]*:enc\]")


_LOCAL_SID = re.compile(r"^S-1-5-21-\d+-\d+-\d+-\d{4,}$")


def normalise_sid(value: Any) -> Any:
    """A SID of an account made on the host becomes a marker: relative ids are never given
    twice, so an account made again after a rolled-back attempt has another one."""
    return "<sid>" if isinstance(value, str) and _LOCAL_SID.match(value) else value


def normalised_snapshot(endpoint: Endpoint) -> dict[str, Any]:
    """host_snapshot with what is random by design made comparable: encrypted values (fresh
    nonce per write), password hashes (fresh salt) and the SIDs of accounts made on the
    host (never reused) become markers."""
    snap = host_snapshot(endpoint)
    snap["apphost"] = _ENC.sub(b"[enc]", snap["apphost"])
    for user in snap["users"].get("users", {}).values():
        if user.get("password_hash"):
            user["password_hash"] = "<hash>"
        user["sid"] = normalise_sid(user.get("sid"))
    for folder in snap["acl"].values():
        for ace in folder.get("aces", []):
            ace["sid"] = normalise_sid(ace.get("sid"))
            ace["identity"] = normalise_sid(ace.get("identity"))
    return snap


def apphost_tree(endpoint: Endpoint) -> Any:
    """applicationHost.config parsed strictly (raises if it is not well-formed)."""
    return etree.parse(str(Path(endpoint.state_dir) / "applicationHost.config"))


@pytest.fixture(scope="module", autouse=True)
def _cheap_password_hashes() -> Iterator[None]:
    """The in-process simulators hash passwords with scrypt at n=2**14 (50 ms each); the
    suite runs thousands of logons, and what it tests does not depend on the cost."""
    patch = pytest.MonkeyPatch()
    patch.setattr("iis_clientcert_simulator.accounts._SCRYPT", {"n": 2**4, "r": 8, "p": 1})
    try:
        yield
    finally:
        patch.undo()
