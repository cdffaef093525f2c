"""Acceptance of the host-access layer against a freshly started simulator: every
transport through HostClient, the typed failures, and canary secrets that must not
appear in the audit log, the command line the host received, state files or errors."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from iis_clientcert.errors import AgentError, AuthenticationError, HostError, TlsVerificationError
from iis_clientcert.host import contract, winrm_transport
from iis_clientcert.host.client import HostClient
from iis_clientcert.host.contract import SECTION_MAPPING, Op, element, make_op
from iis_clientcert_simulator import pki
from iis_clientcert_simulator.endpoint import Endpoint
from iis_clientcert_simulator.executor import Executor
from iis_clientcert_simulator.testing import running_simulator
from iis_clientcert_simulator.wsman import ShellCommand
from tests.support.simulator import connection

USER_PASSWORD = "Canary-User-Pw-31337!"
WEAK_PASSWORD = "canaryweakpw"
PFX_PASSWORD = "Canary-Pfx-Pw-27182!"
WRONG_PFX_PASSWORD = "Canary-Wrong-Pfx-16180!"
WRONG_LOGIN_PASSWORD = "Canary-Login-Pw-14142!"
BOOTSTRAP_LINE = " ".join(contract.command_arguments())


@pytest.fixture(scope="module")
def recorded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Endpoint, list[Any]]]:
    """A fresh simulator whose executor records every command line it receives."""
    seen: list[Any] = []
    original = Executor.start

    def recording(self: Executor, command: ShellCommand, control: Any) -> Any:
        # pywinrm sends the arguments as one <rsp:Arguments> text.
        seen.append((command.executable, " ".join(command.arguments), command.auth))
        return original(self, command, control)

    patch = pytest.MonkeyPatch()
    patch.setattr(Executor, "start", recording)
    try:
        with running_simulator(tmp_path_factory.mktemp("acceptance")) as endpoint:
            yield endpoint, seen
    finally:
        patch.undo()
        winrm_transport.close_pool()


@pytest.mark.parametrize("transport", ["basic", "certificate", "ntlm"])
def test_every_transport_works_through_host_client(
    recorded: tuple[Endpoint, list[Any]], transport: str
) -> None:
    endpoint, seen = recorded
    conn = connection(endpoint, transport)
    assert conn.endpoint.startswith("http://" if transport == "ntlm" else "https://")
    facts, sites = HostClient(conn).call([make_op("host.facts"), make_op("site.list")])
    assert facts["computer_name"] and sites["sites"]
    assert seen[-1] == (contract.POWERSHELL, BOOTSTRAP_LINE, transport)


def test_wrong_password_is_an_authentication_error(recorded: tuple[Endpoint, list[Any]]) -> None:
    endpoint, _ = recorded
    conn = connection(endpoint, password=WRONG_LOGIN_PASSWORD)
    with pytest.raises(AuthenticationError) as caught:
        HostClient(conn).call_one("host.facts")
    assert WRONG_LOGIN_PASSWORD not in str(caught.value)


def test_https_without_the_ca_bundle_fails_verification(
    recorded: tuple[Endpoint, list[Any]],
) -> None:
    endpoint, _ = recorded
    conn = connection(endpoint, ca_bundle=None)
    with pytest.raises(TlsVerificationError):
        HostClient(conn).call_one("host.facts")


def test_canary_secrets_appear_nowhere(recorded: tuple[Endpoint, list[Any]]) -> None:
    endpoint, seen = recorded
    client = HostClient(connection(endpoint))
    ca = pki.make_ca("Canary CA", key_type="rsa")
    server = pki.make_server(ca, "canary.test", key_type="rsa")
    pfx = base64.b64encode(server.pfx(PFX_PASSWORD.encode(), legacy=True)).decode()
    key_pem = server.key_pem().decode()
    key_body = "".join(line for line in key_pem.splitlines() if "-----" not in line)
    canaries = [
        USER_PASSWORD,
        WEAK_PASSWORD,
        PFX_PASSWORD,
        WRONG_PFX_PASSWORD,
        WRONG_LOGIN_PASSWORD,
        pfx,
        key_body,
        key_body[:64],
    ]
    errors: list[str] = []

    def failing(*ops: Op[Any]) -> None:
        with pytest.raises(HostError) as caught:
            client.call(list(ops))
        errors.append(str(caught.value))
        errors.append(repr(caught.value))
        if isinstance(caught.value, AgentError):
            errors.append(json.dumps(caught.value.results))

    # Successful uses of every secret-bearing argument ...
    client.call_one("user.set", name="canary1", password=USER_PASSWORD)
    client.call_one("user.verify_password", name="canary1", password=USER_PASSWORD)
    imported = client.call_one("cert.import", store="My", pfx_b64=pfx, pfx_password=PFX_PASSWORD)
    mapping = element(
        {"enabled": "true"},
        children={
            "oneToOneMappings": element(
                items=[
                    element(
                        {
                            "userName": "canary1",
                            "password": USER_PASSWORD,
                            "certificate": base64.b64encode(server.cert_der()).decode(),
                        }
                    )
                ],
                clear=True,
            )
        },
    )
    client.call_one("config.set", section=SECTION_MAPPING, location="shop", element=mapping)
    got = client.call_one("config.get", section=SECTION_MAPPING, location="shop")
    logons = client.call_one("mapping.verify_logons", site="shop")
    # ... and failing ones, whose messages must not echo them.
    failing(make_op("user.set", name="canary2", password=WEAK_PASSWORD))
    failing(make_op("cert.import", store="My", pfx_b64=pfx, pfx_password=WRONG_PFX_PASSWORD))
    failing(
        make_op("user.set", name="canary1", password=USER_PASSWORD),
        make_op(
            "config.set",
            section=SECTION_MAPPING,
            location="shop",
            element=element(
                children={
                    "oneToOneMappings": element(
                        items=[element({"userName": "x", "password": USER_PASSWORD})] * 2
                    )
                }
            ),
        ),
    )
    bad_login = connection(endpoint, password=WRONG_LOGIN_PASSWORD)
    with pytest.raises(HostError) as caught:
        HostClient(bad_login).call_one("host.facts")
    errors.append(str(caught.value))

    state = Path(endpoint.state_dir)
    looked_at = {
        "results": json.dumps([imported, got, logons]),
        "errors": "\n".join(errors),
        "command lines": json.dumps(seen),
        "audit.log": (state / "audit.log").read_text(),
    }
    for name in ("applicationHost.config", "users.json", "acl.json", "httpsys.json"):
        if (state / name).exists():
            looked_at[name] = (state / name).read_text()
    for where, text in looked_at.items():
        for canary in canaries:
            assert canary not in text, f"a canary secret appears in {where}"
    # Every command the host received is the constant bootstrap.
    assert {(exe, args) for exe, args, _ in seen} == {(contract.POWERSHELL, BOOTSTRAP_LINE)}
    assert "[enc:" in looked_at["applicationHost.config"]
