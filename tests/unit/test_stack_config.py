"""The program's stack configuration: every mistake names the key and the fix."""

from __future__ import annotations

import asyncio
import base64
import json
from pathlib import Path
from typing import Any, cast

import pulumi
import pytest

from iis_clientcert.components import SiteUser, TrustedCa
from iis_clientcert.framework.inputs import ConnectionArgs
from iis_clientcert_simulator.pki import make_ca, make_leaf
from stack_config import ConfigError, Secrets, StackConfig
from tests.support.simulator import fake_endpoint

HOSTS = {"web01": {"endpoint": "https://web01:5986/wsman", "username": "WEB01\\deployer"}}


def _secret_stub(name: str) -> pulumi.Output[str]:
    # Stands in for the secret Output; the tests only look at which key was asked for.
    return cast("pulumi.Output[str]", f"<secret {name}>")


@pytest.fixture
def stack(tmp_path: Path) -> StackConfig:
    ca = make_ca("Config Root")
    (tmp_path / "certs").mkdir()
    (tmp_path / "certs" / "root.pem").write_bytes(ca.cert_pem())
    (tmp_path / "certs" / "alice.der").write_bytes(make_leaf(ca, "alice").cert_der())
    names = {"web01", "alice", "shop/pfx"}
    return StackConfig(tmp_path, Secrets(names, _secret_stub))


def _site(**extra: Any) -> dict[str, Any]:
    site: dict[str, Any] = {
        "name": "shop",
        "host": "web01",
        "trusted_roots": ["certs/root.pem"],
        "users": [{"name": "alice"}],
        "one_to_one": [{"certificate": "certs/alice.der", "user": "alice"}],
    }
    site.update(extra)
    return site


def test_a_good_configuration(stack: StackConfig, tmp_path: Path) -> None:
    ((name, args),) = stack.sites(HOSTS, [_site()])
    assert name == "web01-shop"
    assert cast("SiteUser", args.users[0]).password == "<secret alice>"
    assert args.connection.password == "<secret web01>"  # type: ignore[union-attr]
    # A DER file is handed on as base64 (the providers accept it in any form).
    der = (tmp_path / "certs" / "alice.der").read_bytes()
    assert cast("Any", args.one_to_one[0]).certificate == base64.b64encode(der).decode()
    assert args.ssl_flags == ["Ssl", "SslNegotiateCert", "SslRequireCert"]


@pytest.mark.parametrize(
    ("hosts", "sites", "key", "words"),
    [
        (HOSTS, [_site(one_to_onee=[])], "sites[0].one_to_onee", "Did you mean 'one_to_one'?"),
        (
            {"web01": {**HOSTS["web01"], "password": "hunter2"}},
            [_site()],
            "hosts.web01.password",
            "pulumi config set --secret",
        ),
        (HOSTS, [_site(host="web02")], "sites[0].host", "Use one of: web01"),
        (
            HOSTS,
            [_site(https={"pfx": "certs/root.pem", "port": "443x"})],
            "sites[0].https.port",
            "1 to 65535",
        ),
        (
            HOSTS,
            [_site(trusted_roots=["certs/nope.pem"])],
            "sites[0].trusted_roots[0]",
            "not found",
        ),
        (
            HOSTS,
            [_site(users=[{"name": "bob"}], one_to_one=[])],
            "passwords.shop/bob",
            "'passwords.bob'",
        ),
        (HOSTS, [_site(anonymous_enabled="no")], "sites[0].anonymous_enabled", "true or false"),
        (
            HOSTS,
            [_site(many_to_one=[{"name": "x", "user": "alice", "rules": [{"sub_field": "O"}]}])],
            "sites[0].many_to_one[0].rules[0].match",
            "non-empty",
        ),
        ({}, [_site()], "hosts", "at least one host"),
        (HOSTS, [], "sites", "at least one site"),
    ],
    ids=[
        "typo",
        "plain-secret",
        "unknown-host",
        "bad-port",
        "missing-file",
        "missing-password",
        "not-bool",
        "rule-without-match",
        "no-hosts",
        "no-sites",
    ],
)
def test_mistakes_name_the_key_and_the_fix(
    stack: StackConfig, hosts: Any, sites: Any, key: str, words: str
) -> None:
    with pytest.raises(ConfigError) as err:
        stack.sites(hosts, sites)
    assert err.value.key == key
    assert f"config iis-clientcert:{key}:" in str(err.value)
    assert words in str(err.value)
    assert "hunter2" not in str(err.value)


def test_running_simulator_gives_its_connection(stack: StackConfig, tmp_path: Path) -> None:
    ca = make_ca("Simulator Root").cert_pem().decode()
    fake_endpoint(tmp_path / "sim", ca, password="Sim-Pa55-word!")
    # Outputs resolve on the event loop they were made on; the loop the other tests' Outputs
    # use is put back afterwards.
    previous = asyncio.get_event_loop_policy().get_event_loop()
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    try:
        ((_, args),) = stack.sites({"sim": {"simulator": "sim"}}, [_site(host="sim")])
        conn = args.connection
        assert isinstance(conn, ConnectionArgs)
        assert (conn.endpoint, conn.transport, conn.username, conn.ca_bundle) == (
            "https://127.0.0.1:5986/wsman",
            "basic",
            "sim-admin",
            ca,
        )
        # The password goes on as a secret Output, never as plain text.
        assert isinstance(conn.password, pulumi.Output)
        assert loop.run_until_complete(conn.password.is_secret())
        assert loop.run_until_complete(conn.password.future()) == "Sim-Pa55-word!"
    finally:
        asyncio.set_event_loop(previous)
        loop.close()


def test_connection_args_from_an_unknown_key() -> None:
    with pytest.raises(TypeError, match="not connection properties: pasword"):
        ConnectionArgs.from_dict({"endpoint": "https://h:5986/wsman", "pasword": "x"})


def test_simulator_that_is_not_running(stack: StackConfig, tmp_path: Path) -> None:
    state = tmp_path / "sim"
    state.mkdir()
    (state / "endpoint.json").write_text(json.dumps({"pid": None}))  # stopped cleanly
    with pytest.raises(ConfigError) as err:
        stack.sites({"sim": {"simulator": "sim"}}, [_site(host="sim")])
    assert err.value.key == "hosts.sim.simulator"
    assert "make demo" in str(err.value)


def test_a_mistake_is_a_run_error_pulumi_prints_without_a_traceback(stack: StackConfig) -> None:
    with pytest.raises(pulumi.RunError):
        stack.sites(HOSTS, [_site(anonymous_enabled="no")])


def test_the_program_gives_each_host_one_owner_of_what_its_sites_share(
    stack: StackConfig, tmp_path: Path
) -> None:
    sites = [
        _site(users=[{"name": "alice", "folder_access": [{"path": "C:\\inetpub\\shop"}]}]),
        _site(
            name="intranet",
            users=[{"name": "alice", "folder_access": [{"path": "C:\\inetpub\\intranet"}]}],
        ),
    ]
    program = stack.program(HOSTS, sites)
    host = program.hosts["web01"]
    # The CA and the account both sites list: once, on the host.
    assert len(host.trusted_roots) == 1 and len(host.users) == 1
    (ca,) = host.trusted_roots
    (alice,) = host.users
    assert isinstance(ca, TrustedCa) and isinstance(alice, SiteUser)
    assert [f["path"] for f in alice.folder_access] == [  # type: ignore[union-attr, index]
        "C:\\inetpub\\shop",
        "C:\\inetpub\\intranet",
    ]
    assert [(p.resource_name, p.host) for p in program.sites] == [
        ("web01-shop", "web01"),
        ("web01-intranet", "web01"),
    ]
    for plan in program.sites:
        assert plan.args.trusted_roots == [ca.name]  # by name
        assert plan.args.users == [] and plan.args.connection is None
        assert cast("Any", plan.args.one_to_one[0]).user == "alice"
    # Existing stacks keep the objects: each alias names the first site that listed it.
    assert (
        len(ca.aliases) == 2 and len(alice.aliases) == 2
    )  # this version's type and the legacy one


def test_one_account_with_two_passwords_is_refused_naming_both(
    stack: StackConfig, tmp_path: Path
) -> None:
    names = {"web01", "alice", "shop/alice", "intranet/alice"}
    two = StackConfig(tmp_path, Secrets(names, _secret_stub))
    with pytest.raises(ConfigError) as err:
        two.program(HOSTS, [_site(), _site(name="intranet")])
    assert err.value.key == "sites[1].users[0]"
    assert "again (sites[0].users[0])" in str(err.value)
    assert "passwords.intranet/alice, there passwords.shop/alice" in str(err.value)
    assert "set passwords.alice" in str(err.value)
