"""The doctor against the simulator: each way of breaking the host is found, and only that.

Every test starts its own simulator on a fresh state folder, sets up a site that works
(trusted root, user, one-to-one mapping, sslFlags, anonymous off, handshake negotiation),
breaks it one way (through agent ops, or by editing the state files the simulator
documents), and runs ``python -m iis_clientcert.tools.doctor --simulator DIR --json`` in process.
"""

from __future__ import annotations

import datetime as dt
import json
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import winrm
from cryptography.hazmat.primitives import serialization

from iis_clientcert.host import client as host
from iis_clientcert.host import contract, winrm_transport
from iis_clientcert.host.contract import Op, element, make_op
from iis_clientcert.tools import doctor
from iis_clientcert_simulator import endpoint_connection, iis_log, pki, read_endpoint
from iis_clientcert_simulator.endpoint import ENDPOINT_FILE
from iis_clientcert_simulator.state import HostState
from iis_clientcert_simulator.testing import (
    AgentRunner,
    agent_script,
    deny_logon_right,
    running_simulator,
    set_lockout_policy,
)
from tests.support.pki import CRL_URL, ClientPki, make_client_pki

SITE = "shop"
ALICE_PASSWORD = "Mapped-Passw0rd!x"


@pytest.fixture(scope="module")
def client_pki() -> ClientPki:
    return make_client_pki(dt.datetime.now(dt.UTC))


@dataclass
class Host:
    dir: Path
    agent: AgentRunner
    pki: ClientPki

    def ok(self, *ops: Op[Any]) -> list[Any]:
        return self.agent.ok(*ops)

    def mapping(self, entries: list[tuple[str, str]], *, enabled: bool = True) -> None:
        """Replace the site's mapping section with one-to-one entries (blob, user)."""
        items = [
            element(
                {
                    "enabled": "true",
                    "userName": user,
                    "password": ALICE_PASSWORD,
                    "certificate": blob,
                }
            )
            for blob, user in entries
        ]
        section = element(
            {"enabled": "true" if enabled else "false"},
            children={"oneToOneMappings": element(items=items, clear=True)},
        )
        self.ok(
            make_op("config.set", section=contract.SECTION_MAPPING, location=SITE, element=section)
        )

    def set(self, section: str, **attributes: str) -> None:
        self.ok(make_op("config.set", section=section, location=SITE, element=element(attributes)))

    def edit_json(self, name: str, **values: Any) -> None:
        path = self.dir / name
        data = json.loads(path.read_text("utf-8"))
        data.update(values)
        path.write_text(json.dumps(data), "utf-8")

    def https_binding(self, *, negotiate: bool) -> None:
        my = self.ok(make_op("cert.list", store="My"))[0]["certificates"]
        thumb = next(c["thumbprint"] for c in my if c["has_private_key"])
        self.ok(
            make_op(
                "binding.set",
                site=SITE,
                binding_information="*:443:",
                ssl_flags=0,
                certificate_hash=thumb,
                certificate_store="My",
                client_cert_negotiation=negotiate,
            )
        )


@pytest.fixture
def sim(tmp_path: Path, client_pki: ClientPki, monkeypatch: pytest.MonkeyPatch) -> Iterator[Host]:
    # The agent script the simulator expects (a placeholder until
    # iis_clientcert/host/agent.ps1 lands).
    monkeypatch.setattr(host, "agent_script", agent_script)
    state = tmp_path / "sim"
    with running_simulator(state):
        h = Host(state, AgentRunner(state), client_pki)
        h.ok(
            make_op("cert.import", store="Root", der_b64=client_pki.ca.blob),
            make_op("user.set", name="alice", password=ALICE_PASSWORD),
        )
        h.https_binding(negotiate=True)
        h.set(contract.SECTION_SSL, sslFlags="Ssl, SslNegotiateCert, SslRequireCert")
        h.set(contract.SECTION_ANONYMOUS, enabled="false")
        h.mapping([(client_pki.alice.blob, "alice")])
        try:
            yield h
        finally:
            winrm_transport.close_pool()


def run_doctor(
    h: Host, capsys: pytest.CaptureFixture[str], *extra: str
) -> tuple[int, list[dict[str, Any]]]:
    code = doctor.main(["--simulator", str(h.dir), "--json", *extra], {})
    out, err = capsys.readouterr()
    assert code in (0, 1), err
    report = json.loads(out)
    # The simulator's WinRM password never shows up.
    password = read_endpoint(h.dir).password
    assert password not in out + err and ALICE_PASSWORD not in out + err
    return code, report["findings"]


def problems(findings: list[dict[str, Any]]) -> set[tuple[str, str, str | None]]:
    return {(f["check"], f["level"], f["site"]) for f in findings if f["level"] != "ok"}


def test_clean_host_is_clean(sim: Host, capsys: pytest.CaptureFixture[str]) -> None:
    code, findings = run_doctor(sim, capsys)
    assert problems(findings) == set()
    assert code == 0
    ok = {f["check"] for f in findings if f["level"] == "ok" and f["site"] == SITE}
    assert {"ssl-flags", "mapping-enabled", "anonymous", "mapping-trust", "mapping-logon"} <= ok


def test_named_site_and_missing_site(sim: Host, capsys: pytest.CaptureFixture[str]) -> None:
    code, findings = run_doctor(sim, capsys, "--site", SITE)
    assert (code, problems(findings)) == (0, set())
    code, findings = run_doctor(sim, capsys, "--site", "nosuchsite")
    assert (code, problems(findings)) == (1, {("sites", "error", "nosuchsite")})


Breakage = Callable[[Host], None]


def non_self_signed_in_root(h: Host) -> None:
    h.ok(make_op("cert.import", store="Root", der_b64=h.pki.intermediate.blob))


def web_cert_auth_missing(h: Host) -> None:
    HostState(h.dir).set_feature("Web-Cert-Auth", False)


def multi_line_blob(h: Host) -> None:
    blob = h.pki.alice.blob
    h.mapping([("\r\n".join(blob[i : i + 64] for i in range(0, len(blob), 64)), "alice")])


def pem_blob(h: Host) -> None:
    h.mapping([(h.pki.alice.cert_pem().decode(), "alice")])


def truncated_blob(h: Host) -> None:
    h.mapping([(h.pki.alice.blob[:120], "alice")])


def password_changed(h: Host) -> None:
    h.ok(make_op("user.set", name="alice", password="Changed-Passw0rd!y"))


def untrusted_mapping(h: Host) -> None:
    h.mapping([(h.pki.alice.blob, "alice"), (h.pki.stranger.blob, "alice")])


def expired_mapping(h: Host) -> None:
    h.mapping([(h.pki.alice.blob, "alice"), (h.pki.expired.blob, "alice")])


def anonymous_on(h: Host) -> None:
    h.set(contract.SECTION_ANONYMOUS, enabled="true")


def certificates_optional(h: Host) -> None:
    h.set(contract.SECTION_SSL, sslFlags="Ssl, SslNegotiateCert")


def no_negotiate(h: Host) -> None:
    h.set(contract.SECTION_SSL, sslFlags="Ssl, SslRequireCert")


def mapping_disabled(h: Host) -> None:
    h.mapping([(h.pki.alice.blob, "alice")], enabled=False)


def tls13_post_handshake(h: Host) -> None:
    h.https_binding(negotiate=False)


def ad_mapping_on(h: Host) -> None:
    h.set(contract.SECTION_AD_MAPPING, enabled="true")


def exclusive_ca_trust(h: Host) -> None:
    h.edit_json("host.json", client_auth_trust_mode=2)


def _carol(h: Host) -> pki.Issued:
    """A mapped client certificate that names the CA's CRL distribution point."""
    h.mapping([(h.pki.alice.blob, "alice"), (h.pki.carol.blob, "alice")])
    return h.pki.carol


def _publish(h: Host, revoked: list[pki.Issued]) -> None:
    crl = pki.make_crl(h.pki.ca, revoked).public_bytes(serialization.Encoding.DER)
    HostState(h.dir).publish_crl(CRL_URL, crl)


def unreachable_crl(h: Host) -> None:
    _carol(h)
    _publish(h, [])
    h.edit_json("host.json", cdp_reachable={CRL_URL: False})  # a firewall in the way


def no_crl_published(h: Host) -> None:
    _carol(h)


def revoked_mapping(h: Host) -> None:
    _publish(h, [_carol(h)])


def reachable_crl(h: Host) -> None:
    _carol(h)
    _publish(h, [])


BREAKAGES: list[tuple[Breakage, set[tuple[str, str, str | None]]]] = [
    (non_self_signed_in_root, {("root-store", "error", None)}),
    (web_cert_auth_missing, {("web-cert-auth", "error", None)}),
    (multi_line_blob, {("mapping-blob", "error", SITE)}),
    (pem_blob, {("mapping-blob", "error", SITE)}),
    (truncated_blob, {("mapping-blob", "error", SITE)}),
    (password_changed, {("mapping-logon", "error", SITE)}),
    (untrusted_mapping, {("mapping-trust", "error", SITE)}),
    (expired_mapping, {("mapping-expiry", "error", SITE)}),
    (anonymous_on, {("anonymous", "error", SITE)}),
    (certificates_optional, {("ssl-flags", "error", SITE)}),
    (no_negotiate, {("negotiate-cert", "error", SITE)}),
    (mapping_disabled, {("mapping-enabled", "error", SITE)}),
    (tls13_post_handshake, {("tls13", "error", SITE)}),
    (ad_mapping_on, {("ad-mapping", "error", SITE)}),
    (exclusive_ca_trust, {("schannel-trust", "warning", None)}),
    (unreachable_crl, {("revocation", "error", None)}),
    (no_crl_published, {("revocation", "error", None)}),
    (revoked_mapping, {("revocation", "error", None)}),
    (reachable_crl, set()),
]


@pytest.mark.parametrize(
    ("breakage", "expected"), BREAKAGES, ids=[b.__name__ for b, _ in BREAKAGES]
)
def test_doctor_finds_exactly_the_breakage(
    sim: Host,
    capsys: pytest.CaptureFixture[str],
    breakage: Breakage,
    expected: set[tuple[str, str, str | None]],
) -> None:
    breakage(sim)
    code, findings = run_doctor(sim, capsys)
    assert problems(findings) == expected
    assert code == (1 if any(level == "error" for _, level, _ in expected) else 0)
    for finding in findings:
        if finding["level"] != "ok":
            assert finding["fix"]


def test_locked_section_in_web_config(sim: Host, capsys: pytest.CaptureFixture[str]) -> None:
    # What a hand edit (or appcmd without /commit:apphost) leaves behind; config.set refuses it.
    web_config = sim.dir / "webconfig" / SITE / "web.config"
    web_config.parent.mkdir(parents=True, exist_ok=True)
    web_config.write_text(
        '<?xml version="1.0" encoding="UTF-8"?>\n<configuration>\n<system.webServer>\n'
        "<security><authentication>"
        '<iisClientCertificateMappingAuthentication enabled="true" />'
        "</authentication></security>\n</system.webServer>\n</configuration>\n",
        "utf-8",
    )
    code, findings = run_doctor(sim, capsys)
    assert ("locked-section", "error", SITE) in problems(findings)
    assert code == 1


def test_connection_failure_exits_2(sim: Host, capsys: pytest.CaptureFixture[str]) -> None:
    wrong = {**endpoint_connection(sim.dir), "password": "not-the-password-1A"}
    sim.edit_json(ENDPOINT_FILE, connection=wrong)
    assert doctor.main(["--simulator", str(sim.dir)], {}) == 2
    err = capsys.readouterr().err
    assert "AuthenticationError" in err and "not-the-password-1A" not in err


def test_command_line_on_clean_host(sim: Host) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "iis_clientcert.tools.doctor", "--simulator", str(sim.dir)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "0 error(s)" in done.stdout


# --- the acceptance items of issue 11: logon right, locked account ----------------------


def logon_right_missing(h: Host) -> None:
    # IIS logs mapped users on with logonMethod ClearText, a network logon (1385 if denied).
    deny_logon_right(h.dir, "alice", "SeDenyNetworkLogonRight")


def locked_account(h: Host) -> None:
    set_lockout_policy(h.dir)
    users = json.loads((h.dir / "users.json").read_text("utf-8"))
    record = next(r for k, r in users["users"].items() if k.lower() == "alice")
    record.update(locked_at=time.time(), bad_password_count=10)
    (h.dir / "users.json").write_text(json.dumps(users), "utf-8")


@pytest.mark.parametrize(
    ("breakage", "word"), [(logon_right_missing, "logon right"), (locked_account, "locked")]
)
def test_doctor_finds_account_states(
    sim: Host, capsys: pytest.CaptureFixture[str], breakage: Breakage, word: str
) -> None:
    breakage(sim)
    code, findings = run_doctor(sim, capsys)
    assert problems(findings) == {("mapping-logon", "error", SITE)}
    assert code == 1
    finding = next(f for f in findings if f["check"] == "mapping-logon")
    assert word in (finding["problem"] + finding["fix"]).lower()


# --- WinRM refusals of the doctor itself (WinRM as Windows ships it) --------------------


def _winrm(h: Host, **values: Any) -> None:
    facts = json.loads((h.dir / "host.json").read_text("utf-8"))
    facts["winrm"].update(values)
    (h.dir / "host.json").write_text(json.dumps(facts), "utf-8")


def _refusal(h: Host, capsys: pytest.CaptureFixture[str]) -> dict[str, Any]:
    winrm_transport.close_pool()  # a fresh logon, as a new doctor process makes
    assert doctor.main(["--simulator", str(h.dir), "--json"], {}) == 2
    out, err = capsys.readouterr()
    assert read_endpoint(h.dir).password not in out + err
    finding: dict[str, Any] = json.loads(out)["error"]["finding"]
    assert finding["check"] == "winrm" and finding["level"] == "error"
    return finding


def test_basic_off_is_explained(sim: Host, capsys: pytest.CaptureFixture[str]) -> None:
    _winrm(sim, auth_basic=False)
    finding = _refusal(sim, capsys)
    assert "does not offer Basic" in finding["problem"]
    assert '@{Basic="true"}' in finding["fix"]


def test_token_filter_policy_is_explained(sim: Host, capsys: pytest.CaptureFixture[str]) -> None:
    _winrm(sim, local_account_token_filter_policy=0)
    finding = _refusal(sim, capsys)
    assert "LocalAccountTokenFilterPolicy" in finding["problem"]
    assert "LocalAccountTokenFilterPolicy /t REG_DWORD /d 1" in finding["fix"]


def test_envelope_size_is_explained(sim: Host, capsys: pytest.CaptureFixture[str]) -> None:
    _winrm(sim, max_envelope_size_kb=32)  # the agent's stdin goes in 96 KiB chunks
    finding = _refusal(sim, capsys)
    assert "MaxEnvelopeSizekb" in finding["problem"]
    assert "MaxEnvelopeSizekb" in finding["fix"]


def test_shells_quota_is_explained(sim: Host, capsys: pytest.CaptureFixture[str]) -> None:
    _winrm(sim, max_shells_per_user=1)
    endpoint = read_endpoint(sim.dir)
    other = winrm.protocol.Protocol(
        endpoint.winrm_https_url,
        transport="basic",
        username=endpoint.username,
        password=endpoint.password,
        ca_trust_path=endpoint.ca_file,
    )
    shell_id = other.open_shell()  # another session of the same account holds the one shell
    try:
        finding = _refusal(sim, capsys)
    finally:
        other.close_shell(shell_id)
    assert "MaxShellsPerUser" in finding["problem"]
    assert "MaxShellsPerUser" in finding["fix"]


# --- the IIS log: what a real IIS says only there (issue 11, point 12) --------------------


def test_refusals_in_the_iis_log_are_reported(
    sim: Host, capsys: pytest.CaptureFixture[str]
) -> None:
    sites = sim.ok(make_op("site.list"))[0]["sites"]
    site_id = next(s["id"] for s in sites if s["name"] == SITE)
    entry = {"cs-method": "GET", "cs-uri-stem": "/", "s-port": 443, "c-ip": "10.0.0.7"}
    # What IIS logs for an untrusted client certificate (0x800B0109 as sc-win32-status),
    # and a request that got in.
    iis_log.write_entry(
        sim.dir,
        site_id,
        {**entry, "sc-status": 403, "sc-substatus": 16, "sc-win32-status": 2148204809},
    )
    iis_log.write_entry(sim.dir, site_id, {**entry, "sc-status": 200, "sc-substatus": 0})
    code, findings = run_doctor(sim, capsys)
    assert problems(findings) == {("recent-requests", "warning", SITE)}
    assert code == 0
    (finding,) = [f for f in findings if f["check"] == "recent-requests"]
    assert "403.16" in finding["problem"] and "0x800b0109" in finding["problem"]
    assert f"W3SVC{site_id}" in finding["problem"]
