"""The reliability suite through the real engine: secret canaries under verbose logging,
a representative fault per kind, many sites on many hosts at high parallelism, and the
host-dependent failures (unreachable, wrong credentials, TLS, missing feature)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import pytest
from pulumi.automation import CommandError

from iis_clientcert.host import winrm_transport
from iis_clientcert_simulator.endpoint import ENDPOINT_FILE, Endpoint
from iis_clientcert_simulator.state import HostState
from iis_clientcert_simulator.testing import running_simulator
from tests.reliability.resources import MAP_USER, prepare_host
from tests.support.reliability import USER_PASSWORD, Figures, Pki
from tests.support.simulator import (
    add_sites,
    apphost_tree,
    host_client,
    normalised_snapshot,
    set_faults,
)
from tests.support.spec import WINRM_PASSWORD, SpecProject, spec_connection

pytestmark = [pytest.mark.reliability, pytest.mark.engine]

VERBOSE = ("--logtostderr", "-v=9")


@pytest.fixture
def host(tmp_path: Path, pki: Pki) -> Iterator[Endpoint]:
    with running_simulator(tmp_path / "host") as endpoint:
        prepare_host(host_client(endpoint), pki)
        yield endpoint
    winrm_transport.close_pool()


# --- 1. secret canaries ----------------------------------------------------------------


def _files_text(root: Path, skip: tuple[str, ...] = ()) -> dict[str, str]:
    out = {}
    for path in root.rglob("*"):
        rel = str(path.relative_to(root))
        if path.is_file() and not rel.startswith(skip) and path.stat().st_size < 20_000_000:
            out[f"{root.name}/{rel}"] = path.read_bytes().decode("utf-8", "replace")
    return out


def test_secret_canaries(
    host: Endpoint, pki: Pki, pulumi_env: dict[str, str], tmp_path: Path, figures: Figures
) -> None:
    client_key = Path(host.client_key).read_text()
    key_body = "".join(line for line in client_key.splitlines() if "-----" not in line)
    pfx_b64 = pki.pfx_b64(pki.server, "Canary-Pfx-7741!")
    canaries = {
        "user password": "Canary-User-1-Pw!",
        "changed user password": "Canary-User-2-Pw!",
        "mapping password": "Canary-Map-3-Pw!",
        "pfx password": "Canary-Pfx-7741!",
        "wrong mapping password": "Canary-Wrong-4-Pw!",
        "wrong pfx password": "Canary-Wrong-Pfx-5!",
        "winrm password": host.password,
        "client key": key_body[:64],
        "client key tail": key_body[-64:],
        "pfx": pfx_b64[100:164],
    }
    spec = SpecProject(tmp_path / "project", pulumi_env)
    connections = {
        "main": spec_connection(host, WINRM_PASSWORD),
        "cert": spec_connection(host, "client_key", "certificate"),
    }

    def resources() -> dict[str, Any]:
        return {
            "user": {
                "kind": "LocalUser",
                "inputs": {"name": "cu-one", "password": {"$secret": "user_password"}},
            },
            "mapuser": {
                "kind": "LocalUser",
                "inputs": {"name": "cu-map", "password": {"$secret": "map_user_password"}},
            },
            "mapping": {
                "kind": "CertificateMapping",
                "connection": "cert",
                "depends_on": ["mapuser"],
                "inputs": {
                    "site": "shop",
                    "one_to_one": [
                        {"certificate": pki.client.cert_pem().decode(), "user_name": "cu-map"}
                    ],
                    "passwords": {"cu-map": {"$secret": "map_password"}},
                },
            },
            "cert": {
                "kind": "ServerCertificate",
                "inputs": {"pfx": {"$secret": "pfx"}, "password": {"$secret": "pfx_password"}},
            },
        }

    spec.use_connections(connections)
    spec.set_resources(
        resources(),
        winrm_password=host.password,
        client_key=client_key,
        user_password=canaries["user password"],
        map_user_password=canaries["mapping password"],
        map_password=canaries["mapping password"],
        pfx=pfx_b64,
        pfx_password=canaries["pfx password"],
    )
    project = spec.project
    outputs: dict[str, str] = {}

    def cli(label: str, *args: str, ok: bool = True) -> None:
        proc = project.run(*args, "--stack", "test", *VERBOSE, check=ok)
        outputs[f"{label} stdout"] = proc.stdout
        outputs[f"{label} stderr"] = proc.stderr
        if not ok:
            assert proc.returncode != 0, f"{label} should fail"

    cli("preview", "preview")
    cli("up", "up", "--yes")
    cli("refresh", "refresh", "--yes")
    project.config_set("user_password", canaries["changed user password"], secret=True)
    cli("update", "up", "--yes")
    # The host while the passwords are deployed (destroy removes them later).
    mid_run = _files_text(Path(host.state_dir), skip=(ENDPOINT_FILE, "pki"))
    assert "[enc:" in mid_run[f"{Path(host.state_dir).name}/applicationHost.config"]
    # Failing runs: a wrong mapping password (host check) and a wrong PFX password (check).
    project.config_set("map_password", canaries["wrong mapping password"], secret=True)
    cli("wrong mapping password", "up", "--yes", ok=False)
    project.config_set("map_password", canaries["mapping password"], secret=True)
    project.config_set("pfx_password", canaries["wrong pfx password"], secret=True)
    cli("wrong pfx password", "preview", ok=False)
    project.config_set("pfx_password", canaries["pfx password"], secret=True)
    cli("preview clean", "preview")
    outputs["stack export"] = project.run("stack", "export", "--stack", "test").stdout
    cli("destroy", "destroy", "--yes")
    assert "user" in outputs["up stdout"]
    assert len(outputs["up stderr"]) > 10_000, "verbose engine logging went to stderr"

    backend = Path(pulumi_env["PULUMI_BACKEND_URL"].removeprefix("file://"))
    looked_at = dict(outputs)
    looked_at.update({f"mid-run {k}": v for k, v in mid_run.items()})
    looked_at.update(_files_text(backend))
    looked_at.update(_files_text(Path(pulumi_env["PULUMI_HOME"])))
    # The simulator's own credential files (endpoint.json, pki/) hold its WinRM password
    # and client key by design; everything else of the host is searched.
    looked_at.update(_files_text(Path(host.state_dir), skip=(ENDPOINT_FILE, "pki")))
    found = [
        f"{what} in {where}"
        for where, text in looked_at.items()
        for what, canary in canaries.items()
        if canary in text
    ]
    figures.add("secrets_found", "canaries", len(found))
    figures.add("inputs_tried", "canaries", len(canaries))
    assert not found, "canary secrets leaked:\n" + "\n".join(found)


# --- 3. faults through the engine -------------------------------------------------------


ENGINE_FAULTS = [
    ("LocalUser-drop-after-run", "LocalUser", {"drop": {"command": 2, "when": "after_run"}}),
    ("SslSettings-drop-before-run", "SslSettings", {"drop": {"command": 2, "when": "before_run"}}),
    (
        "CertificateMapping-fail-op",
        "CertificateMapping",
        # op 5 writes the section; op 6 (the verifying read in the same batch) fails.
        {"fail_op": {"nth": 6, "code": "Fault", "hresult": "0x80004005", "message": "boom"}},
    ),
]


def _resource(kind: str, pki: Pki) -> dict[str, Any]:
    if kind == "LocalUser":
        inputs: dict[str, Any] = {
            "name": "fault-user",
            "password": {"$secret": "user_password"},
            "groups": ["IIS_IUSRS"],
            "folder_access": [{"path": "C:\\inetpub\\shop"}],
        }
    elif kind == "SslSettings":
        inputs = {"site": "shop"}
    else:
        inputs = {
            "site": "shop",
            "one_to_one": [{"certificate": pki.client.cert_pem().decode(), "user_name": MAP_USER}],
            "passwords": {MAP_USER: {"$secret": "user_password"}},
        }
    return {"r": {"kind": kind, "inputs": inputs}}


@pytest.mark.parametrize(
    ("kind", "faults"), [c[1:] for c in ENGINE_FAULTS], ids=[c[0] for c in ENGINE_FAULTS]
)
def test_engine_fault_then_converge(
    kind: str,
    faults: dict[str, Any],
    host: Endpoint,
    pki: Pki,
    pulumi_env: dict[str, str],
    tmp_path: Path,
    figures: Figures,
) -> None:
    before = normalised_snapshot(host)
    spec = SpecProject(tmp_path / "project", pulumi_env, host)
    spec.set_resources(_resource(kind, pki), user_password=USER_PASSWORD)
    project = spec.project
    set_faults(host.state_dir, faults)
    with pytest.raises(CommandError):
        project.up()
    figures.add("faults_injected", "engine")
    assert json.loads((Path(host.state_dir) / "faults.json").read_text()) == {}, "never fired"
    assert project.up() == {"create": 1}, "the rerun converges"
    assert project.preview() == {"same": 1}, "and previews clean"
    assert project.refresh() == {"same": 1}, "refresh finds no drift"
    assert project.destroy() == {"delete": 1}
    assert normalised_snapshot(host) == before, "destroy gives the host back as it was"
    figures.add("runs_converged", "engine")


# --- 4. concurrency -----------------------------------------------------------------------


def _site_resources(conn: str, site: str, index: int) -> dict[str, Any]:
    tag = f"{conn}-{index}"
    return {
        f"ssl-{tag}": {"kind": "SslSettings", "connection": conn, "inputs": {"site": site}},
        f"anon-{tag}": {
            "kind": "AnonymousAuthentication",
            "connection": conn,
            "inputs": {"site": site},
        },
        f"map-{tag}": {
            "kind": "CertificateMapping",
            "connection": conn,
            "inputs": {
                "site": site,
                "many_to_one": [
                    {
                        "name": f"rule-{tag}",
                        "user_name": MAP_USER,
                        "rules": [{"sub_field": "O", "match": f"Org {tag}"}],
                    }
                ],
                "passwords": {MAP_USER: {"$secret": "user_password"}},
            },
        },
    }


def _site_configured(endpoint: Endpoint, site: str, rule: str) -> bool:
    root = apphost_tree(endpoint).getroot()
    loc = next((x for x in root.findall("location") if x.get("path") == site), None)
    if loc is None:
        return False
    access = loc.find("system.webServer/security/access")
    anon = loc.find("system.webServer/security/authentication/anonymousAuthentication")
    mapping = loc.find(
        "system.webServer/security/authentication/iisClientCertificateMappingAuthentication"
    )
    return (
        access is not None
        and "SslRequireCert" in (access.get("sslFlags") or "")
        and anon is not None
        and anon.get("enabled") == "false"
        and mapping is not None
        and [e.get("name") for e in mapping.findall("manyToOneMappings/add")] == [rule]
    )


def test_many_sites_many_hosts_in_parallel(
    pki: Pki, pulumi_env: dict[str, str], tmp_path: Path, figures: Figures
) -> None:
    layout = {"big": 20, "h1": 5, "h2": 5, "h3": 5, "h4": 5}
    with ExitStack() as stack:
        endpoints: dict[str, Endpoint] = {}
        sites: dict[str, list[str]] = {}
        for name, count in layout.items():
            state = tmp_path / name
            extra = [f"{name}-site{i:02d}" for i in range(3, count + 1)]
            add_sites(state, extra)
            endpoints[name] = stack.enter_context(running_simulator(state))
            prepare_host(host_client(endpoints[name]), pki)
            sites[name] = ["Default Web Site", "shop", *extra]
        stack.callback(winrm_transport.close_pool)
        spec = SpecProject(tmp_path / "project", pulumi_env)
        resources: dict[str, Any] = {}
        for name, names in sites.items():
            for i, site in enumerate(names):
                resources.update(_site_resources(name, site, i))
        connections = {n: spec_connection(e, f"pw_{n}") for n, e in endpoints.items()}
        spec.use_connections(connections)
        spec.set_resources(
            resources,
            user_password=USER_PASSWORD,
            **{f"pw_{n}": e.password for n, e in endpoints.items()},
        )
        project = spec.project
        total = len(resources)
        for attempt in range(2):
            proc = project.run(
                "up", "--yes", "--skip-preview", "--parallel", "16", "--stack", "test"
            )
            assert proc.returncode == 0
            lost = [
                f"{name}/{site}"
                for name, names in sites.items()
                for i, site in enumerate(names)
                if not _site_configured(endpoints[name], site, f"rule-{name}-{i}")
            ]
            figures.add("lost_writes", "concurrency", len(lost))
            assert not lost, f"up #{attempt + 1}: configuration missing at {lost}"
            figures.add("runs_converged", "concurrency")
        assert project.preview() == {"same": total}
        # Unmanaged parts stay as they were: the shop's http bindings, the sites themselves.
        for endpoint in endpoints.values():
            site_names = {s.get("name") for s in apphost_tree(endpoint).getroot().iter("site")}
            assert {"Default Web Site", "shop"} <= site_names


# --- 5. host-dependent bad input through the engine ----------------------------------------


def _break(kind: str, endpoint: Endpoint, conn: dict[str, Any]) -> tuple[dict[str, Any], str]:
    """A broken connection (or host) and the words its error must contain."""
    if kind == "unreachable":
        return {**conn, "endpoint": "https://127.0.0.1:9/wsman", "connect_timeout": 2}, "127.0.0.1"
    if kind == "wrong credentials":
        return {**conn, "password": {"$secret": "wrong_password"}}, "password"
    if kind == "tls verification":
        return {k: v for k, v in conn.items() if k != "ca_bundle"}, "ca_bundle"
    HostState(Path(endpoint.state_dir)).set_feature("Web-Cert-Auth", False)
    return conn, "Web-Cert-Auth"


def _repair(kind: str, endpoint: Endpoint) -> None:
    if kind == "missing feature":
        HostState(Path(endpoint.state_dir)).set_feature("Web-Cert-Auth", True)


HOST_FAILURES = ["unreachable", "wrong credentials", "tls verification", "missing feature"]


@pytest.mark.parametrize("kind", HOST_FAILURES)
def test_host_failure_is_explained_then_converges(
    kind: str,
    host: Endpoint,
    pki: Pki,
    pulumi_env: dict[str, str],
    tmp_path: Path,
    figures: Figures,
) -> None:
    wrong = "Canary-Wrong-WinRM-9!"
    good = spec_connection(host, WINRM_PASSWORD)
    broken, words = _break(kind, host, good)
    spec = SpecProject(tmp_path / "project", pulumi_env, host)
    resources = _resource("CertificateMapping", pki)
    spec.use_connections({"main": broken})
    spec.set_resources(
        resources,
        wrong_password=wrong,
        user_password=USER_PASSWORD,
    )
    figures.add("inputs_tried", "bad input (engine)")
    proc = spec.project.run("up", "--yes", "--skip-preview", "--stack", "test", check=False)
    text = proc.stdout + proc.stderr
    assert proc.returncode != 0
    assert "CertificateMapping" in text or "r (" in text or "pulumi-python:dynamic" in text
    assert words in text, f"the error should mention {words!r}:\n{text[-3000:]}"
    for secret in (wrong, host.password, USER_PASSWORD):
        assert secret not in text
    _repair(kind, host)
    spec.use_connections({"main": good})
    spec.set_resources(resources)
    assert spec.project.up() == {"create": 1}
    assert spec.project.preview() == {"same": 1}
    figures.add("runs_converged", "bad input (engine)")
