"""Logons by LocalUser and CertificateMapping against a simulated host with Windows 11's
account lockout policy (10 bad attempts in 10 minutes lock an account for 10 minutes).

Issue 10, points 7 and 8: reading must never lock an account (FACTS.md "Logons lock
accounts"), and a logon refused for a reason that proves the password right (1385 logon
type not granted, ...) reads as a right password in every op (no never-ending diff).
Providers are driven directly (check -> create -> read -> update), each ``read`` standing
for one ``pulumi refresh``: a new provider process, so nothing is remembered between them.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from iis_clientcert.framework import logons
from iis_clientcert.host import winrm_transport
from iis_clientcert.host.client import HostClient
from iis_clientcert.host.connection import Connection
from iis_clientcert.providers.certificate_mapping import CertificateMappingProvider
from iis_clientcert.providers.local_user import LocalUserProvider
from iis_clientcert_simulator import pki
from iis_clientcert_simulator.state import HostState
from iis_clientcert_simulator.testing import (
    WINDOWS_11_LOCKOUT,
    account_record,
    deny_logon_right,
    running_simulator,
    set_lockout_policy,
)

PASSWORD = "Logon-Guard-2024!"
CHANGED = "Changed-Behind-77#"
THRESHOLD = WINDOWS_11_LOCKOUT["threshold"]


@dataclass(frozen=True)
class Sim:
    connection: dict[str, Any]
    state: Path

    def client(self) -> HostClient:
        return HostClient(Connection.from_input(self.connection))


@pytest.fixture
def sim(tmp_path: Path) -> Iterator[Sim]:
    with running_simulator(tmp_path / "host") as endpoint:
        set_lockout_policy(Path(endpoint.state_dir))
        yield Sim(endpoint.connection_input(), Path(endpoint.state_dir))
    winrm_transport.close_pool()
    logons.LEDGER.clear()


def _new_run() -> None:
    """A new `pulumi refresh` or `up`: a new provider process remembers no logon."""
    logons.LEDGER.clear()


def _checked(provider: Any, inputs: dict[str, Any]) -> dict[str, Any]:
    result = provider.check({}, inputs)
    assert result.failures == [], [f.reason for f in result.failures]
    return dict(result.inputs)


# Providers as Any: their results' outs are Optional in the SDK's types.
def _user(sim: Sim, name: str) -> tuple[Any, dict[str, Any], Any]:
    provider: Any = LocalUserProvider()
    inputs = _checked(provider, {"connection": sim.connection, "name": name, "password": PASSWORD})
    created = provider.create(inputs)
    assert created.outs["password_valid"] is True
    return provider, inputs, created


def _mapping(sim: Sim, user: str) -> tuple[Any, dict[str, Any], Any]:
    ca = pki.make_ca("Logon Test CA")
    client = pki.make_leaf(ca, f"{user}-client")
    provider: Any = CertificateMappingProvider()
    inputs = _checked(
        provider,
        {
            "connection": sim.connection,
            "site": "shop",
            "one_to_one": [{"certificate": client.cert_pem().decode(), "user_name": user}],
            "passwords": {user: PASSWORD},
        },
    )
    return provider, inputs, provider.create(inputs)


def _someone_else_fails(sim: Sim, name: str, times: int) -> None:
    """Failed logons by something else on the host (a person, a service, IIS)."""
    for _ in range(times):
        HostState(sim.state).logon(name, "Someone-Else-1!", 3)


def _agent_calls(sim: Sim) -> int:
    return len((sim.state / "audit.log").read_text("utf-8").splitlines())


def _locked(sim: Sim, name: str) -> bool:
    return account_record(sim.state, name).get("locked_at") is not None


def test_twenty_refreshes_with_a_drifted_password_never_lock_the_account(sim: Sim) -> None:
    user, user_inputs, created = _user(sim, "drifty")
    mapping, mapping_inputs, mapped = _mapping(sim, "drifty")
    # An administrator sets another password behind Pulumi's back.
    sim.client().call_one("user.set", name="drifty", password=CHANGED)

    user_props, mapping_props = created.outs, mapped.outs
    seen: list[tuple[Any, Any]] = []
    for _ in range(20):
        _new_run()
        user_props = user.read(created.id, user_props).outs
        mapping_props = mapping.read(mapped.id, mapping_props).outs
        seen.append((user_props["password_valid"], mapping_props["stale_passwords"]))

    record = account_record(sim.state, "drifty")
    assert record.get("locked_at") is None, "reading locked the account"
    # The reads used at most half of the threshold; the rest stays for people and IIS.
    assert record["bad_password_count"] <= THRESHOLD // 2
    # The drift was found while it was safe to look, and every refresh still reports it.
    assert seen == [(False, ["drifty"])] * 20

    # `up` sees it (the diff is pure: stored outputs against the program) and repairs it.
    _new_run()
    assert user.diff(created.id, user_props, user_inputs).changes
    assert mapping.diff(mapped.id, mapping_props, mapping_inputs).changes
    repaired = user.update(created.id, user_props, user_inputs)
    assert repaired.outs["password_valid"] is True
    rewritten = mapping.update(mapped.id, mapping_props, mapping_inputs)
    assert rewritten.outs["stale_passwords"] == []
    assert account_record(sim.state, "drifty")["bad_password_count"] == 0
    assert not _locked(sim, "drifty")


def test_one_provider_process_tries_a_failing_account_once(sim: Sim) -> None:
    user, _inputs, created = _user(sim, "once")
    mapping, _mapping_inputs, mapped = _mapping(sim, "once")
    sim.client().call_one("user.set", name="once", password=CHANGED)
    before = account_record(sim.state, "once")["bad_password_count"]
    _new_run()
    for _ in range(20):  # one long `pulumi refresh` of many stacks' worth of reads
        assert user.read(created.id, created.outs).outs["password_valid"] is False
        assert mapping.read(mapped.id, mapped.outs).outs["stale_passwords"] == ["once"]
    assert account_record(sim.state, "once")["bad_password_count"] == before + 1


def test_an_account_near_the_threshold_is_not_tried_and_shows_as_not_verified(
    sim: Sim, capsys: pytest.CaptureFixture[str]
) -> None:
    user, _inputs, created = _user(sim, "nearly")
    sim.client().call_one("user.set", name="nearly", password=CHANGED)
    _someone_else_fails(sim, "nearly", THRESHOLD // 2)
    count = account_record(sim.state, "nearly")["bad_password_count"]
    assert count >= THRESHOLD // 2
    _new_run()
    read = user.read(created.id, created.outs)
    assert account_record(sim.state, "nearly")["bad_password_count"] == count, "it tried"
    # Not verified: the stored verdict stands (here: valid at create) and a warning says so.
    assert read.outs["password_valid"] is True
    err = capsys.readouterr().err
    assert "not verified" in err and f"{count} of {THRESHOLD}" in err


def test_a_locked_account_is_not_a_wrong_password(sim: Sim) -> None:
    user, inputs, created = _user(sim, "locked")
    _someone_else_fails(sim, "locked", THRESHOLD)
    assert _locked(sim, "locked")
    _new_run()
    read = user.read(created.id, created.outs)
    assert read.outs["password_valid"] is True  # nothing learnt: the stored verdict stands
    assert not user.diff(created.id, read.outs, inputs).changes


def test_a_right_password_with_the_logon_type_denied_is_right_everywhere(sim: Sim) -> None:
    user, user_inputs, created = _user(sim, "netdenied")
    mapping, mapping_inputs, mapped = _mapping(sim, "netdenied")
    deny_logon_right(sim.state, "netdenied", "SeDenyNetworkLogonRight")
    _new_run()
    client = sim.client()
    verified = client.call_one("user.verify_password", name="netdenied", password=PASSWORD)
    assert verified["valid"] is True and verified["hresult"] == "0x80070569"
    logons_ = client.call_one("mapping.verify_logons", site="shop")["results"]
    assert [(r["valid"], r["hresult"]) for r in logons_] == [(True, "0x80070569")]

    # The providers agree: no password drift, nothing to write, no endless update.
    for _ in range(3):
        _new_run()
        read = user.read(created.id, created.outs)
        assert read.outs["password_valid"] is True
        assert not user.diff(created.id, read.outs, user_inputs).changes
        mapped_read = mapping.read(mapped.id, mapped.outs)
        assert mapped_read.outs["stale_passwords"] == []
        assert not mapping.diff(mapped.id, mapped_read.outs, mapping_inputs).changes
        calls = _agent_calls(sim)
        user.update(created.id, created.outs, user_inputs)
        mapping.update(mapped.id, mapped.outs, mapping_inputs)
        assert _agent_calls(sim) == calls + 2, "an update wrote (one read each, no writes)"
    assert account_record(sim.state, "netdenied")["bad_password_count"] == 0


def test_the_mapping_logs_on_with_its_logon_method(sim: Sim) -> None:
    _user(sim, "batchonly")
    mapping, inputs, mapped = _mapping(sim, "batchonly")
    deny_logon_right(sim.state, "batchonly", "SeDenyBatchLogonRight")
    client = sim.client()
    # ClearText (IIS's default) is not denied: the logon succeeds.
    assert client.call_one("mapping.verify_logons", site="shop")["results"][0]["hresult"] is None
    batch = _checked(mapping, {**inputs, "logon_method": "Batch"})
    mapping.update(mapped.id, mapped.outs, batch)
    result = client.call_one("mapping.verify_logons", site="shop")["results"][0]
    assert (result["valid"], result["hresult"]) == (True, "0x80070569")


def test_deleting_a_mapping_and_its_account_tries_no_logon(sim: Sim) -> None:
    # `pulumi destroy` only needs to know what is there to remove: a logon would count
    # towards lockout (the password may have changed behind Pulumi's back) and costs the
    # LogonUser setup on a fresh agent for nothing.
    user, _inputs, created = _user(sim, "leaving")
    mapping, _mapping_inputs, mapped = _mapping(sim, "leaving")
    sim.client().call_one("user.set", name="leaving", password=CHANGED)
    before = account_record(sim.state, "leaving")["bad_password_count"]
    calls = _agent_calls(sim)
    _new_run()
    mapping.delete(mapped.id, mapped.outs)
    assert account_record(sim.state, "leaving")["bad_password_count"] == before
    user.delete(created.id, created.outs)
    with pytest.raises(KeyError):
        account_record(sim.state, "leaving")  # deleted
    lines = (sim.state / "audit.log").read_text("utf-8").splitlines()[calls:]
    ops = [op["op"] for line in lines for op in json.loads(line).get("ops") or []]
    assert "user.delete" in ops
    assert not {"user.verify_password", "mapping.verify_logons"} & set(ops), ops
