"""The one classification of logons (contract.py, "Logons") and the per-process ledger
that keeps a run to one failed logon per account (framework/logons.py)."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from typing import Any

import pytest

from iis_clientcert.errors import AgentError
from iis_clientcert.framework import logons
from iis_clientcert.framework.logons import LogonLedger, ProviderClient
from iis_clientcert.host import contract
from iis_clientcert.host.client import HostClient
from iis_clientcert.host.connection import Connection
from iis_clientcert.host.contract import Op

HOST = "web01"


@pytest.mark.parametrize(
    ("code", "expected"),
    [
        (0, {"valid": True, "hresult": None, "checked": True}),
        (1326, {"valid": False, "hresult": "0x8007052E", "checked": True}),
        (1385, {"valid": True, "hresult": "0x80070569", "checked": True}),
        (1327, {"valid": True, "hresult": "0x8007052F", "checked": True}),
        (1328, {"valid": True, "hresult": "0x80070530", "checked": True}),
        (1329, {"valid": True, "hresult": "0x80070531", "checked": True}),
        (1331, {"valid": True, "hresult": "0x80070533", "checked": True}),
        # Locked out: the right password fails too, so the answer says nothing.
        (1909, {"valid": False, "hresult": "0x80070775", "checked": False}),
    ],
)
def test_logon_verdicts(code: int, expected: dict[str, Any]) -> None:
    assert contract.logon_verdict(code) == expected


def test_ansibles_valid_codes_are_all_in_the_contract() -> None:
    # Test-LocalCredential (ansible.windows win_user): 0x52F, 0x530, 0x531, 0x569.
    assert {0x52F, 0x530, 0x531, 0x569} <= set(contract.LOGON_VALID_CODES)
    assert contract.ERROR_LOGON_FAILURE not in contract.LOGON_VALID_CODES
    assert contract.ERROR_ACCOUNT_LOCKED_OUT not in contract.LOGON_VALID_CODES


@pytest.mark.parametrize(
    ("count", "threshold", "allowed"),
    [
        (100, 0, True),  # no lockout policy
        (4, 10, True),  # Windows 11: at most 5 of the 10 for reads
        (5, 10, False),
        (0, 3, True),  # a domain's 3: one try
        (1, 3, False),
        (0, 1, False),  # nothing to spare
        (0, -1, True),  # unreadable policy: only an untouched account
        (1, -1, False),
        (-1, 10, False),  # unreadable count
    ],
)
def test_the_logon_guard(count: int, threshold: int, allowed: bool) -> None:
    assert contract.logon_guard_allows(count, threshold) is allowed


def test_account_keys() -> None:
    assert contract.logon_account_key("SIMIIS01\\Alice") == "alice"
    assert contract.logon_account_key(".\\alice") == "alice"
    assert contract.logon_account_key("alice@contoso.com") == "alice"


def _verify(name: str, password: str) -> Op[Any]:
    return contract.user_verify_password(name, password)


WRONG = {"valid": False, "hresult": "0x8007052E", "checked": True}
RIGHT = {"valid": True, "hresult": None, "checked": True}


def test_the_ledger_answers_a_repeated_logon_and_spares_a_failed_account() -> None:
    ledger = LogonLedger()
    first = [_verify("alice", "pw-1")]
    send, known = ledger.prepare(HOST, first)
    assert send == first and known == {}
    ledger.record(HOST, first, [WRONG])
    # The same password: the same answer, without a logon.
    send, known = ledger.prepare(HOST, [_verify("ALICE", "pw-1")])
    assert send == [] and known == {0: WRONG}
    # Another password for an account that failed in this run: not tried.
    send, known = ledger.prepare(HOST, [_verify("alice", "pw-2")])
    assert send == [] and known == {0: contract.not_checked()}
    # The mapping leaves the account alone; other hosts are not affected.
    send, _ = ledger.prepare(HOST, [contract.mapping_verify_logons("shop")])
    assert send[0].args["skip_users"] == ["alice"]
    send, _ = ledger.prepare("web02", [contract.mapping_verify_logons("shop")])
    assert "skip_users" not in send[0].args


def test_a_password_set_in_the_batch_is_verified_on_the_host() -> None:
    ledger = LogonLedger()
    ledger.record(HOST, [_verify("alice", "pw-1")], [WRONG])
    batch = [contract.user_set("alice", password="pw-1"), _verify("alice", "pw-1")]
    send, known = ledger.prepare(HOST, batch)
    assert send == batch and known == {}
    ledger.record(HOST, batch, [{"created": False, "changed": ["password"]}, RIGHT])
    send, known = ledger.prepare(HOST, [_verify("alice", "pw-1")])
    assert known == {0: RIGHT}
    send, _ = ledger.prepare(HOST, [contract.mapping_verify_logons("shop")])
    assert "skip_users" not in send[0].args


def test_failed_mapping_logons_are_remembered_and_unchecked_answers_are_not() -> None:
    ledger = LogonLedger()
    ledger.record(HOST, [_verify("bob", "pw")], [contract.not_checked()])
    send, known = ledger.prepare(HOST, [_verify("bob", "pw")])
    assert known == {}, "a logon that was not tried teaches nothing"
    result = {
        "results": [
            {"kind": "one_to_one", "key": "k", "user_name": "SIMIIS01\\bob", **WRONG},
        ]
    }
    ledger.record(HOST, [contract.mapping_verify_logons("shop")], [result])
    send, known = ledger.prepare(HOST, [_verify("bob", "other")])
    assert send == [] and known == {0: contract.not_checked()}


class _FakeHost:
    """HostClient.call as the host would answer: every verify is a wrong password."""

    def __init__(self, fail_at: int | None = None) -> None:
        self.sent: list[list[str]] = []
        self.fail_at = fail_at

    def patch(self) -> Callable[[HostClient, Sequence[Op[Any]]], list[Any]]:
        return lambda _client, ops: self.call(ops)

    def call(self, ops: Sequence[Op[Any]]) -> list[Any]:
        self.sent.append([op.name for op in ops])
        results = [dict(WRONG) if op.name == "user.verify_password" else {} for op in ops]
        if self.fail_at is not None:
            raise AgentError(
                HOST,
                ops[self.fail_at].name,
                "Fault",
                "boom",
                None,
                self.fail_at,
                results[: self.fail_at],
            )
        return results


@pytest.fixture
def fresh_ledger() -> Iterator[None]:
    logons.LEDGER.clear()
    yield
    logons.LEDGER.clear()


CONNECTION = Connection.from_input(
    {"endpoint": "https://web01:5986/wsman", "transport": "basic", "username": "a", "password": "b"}
)


def test_the_provider_client_puts_known_answers_in_place(
    monkeypatch: pytest.MonkeyPatch, fresh_ledger: None
) -> None:
    host = _FakeHost()
    monkeypatch.setattr(HostClient, "call", host.patch())
    client = ProviderClient(CONNECTION)
    assert client.call([_verify("alice", "pw")]) == [WRONG]
    ops = [contract.site_list(), _verify("alice", "pw"), contract.user_get("alice")]
    assert client.call(ops) == [{}, WRONG, {}]
    assert host.sent == [["user.verify_password"], ["site.list", "user.get"]]


def test_the_provider_client_maps_an_error_back_to_the_callers_ops(
    monkeypatch: pytest.MonkeyPatch, fresh_ledger: None
) -> None:
    monkeypatch.setattr(HostClient, "call", _FakeHost().patch())
    client = ProviderClient(CONNECTION)
    client.call([_verify("alice", "pw")])
    monkeypatch.setattr(HostClient, "call", _FakeHost(fail_at=1).patch())
    ops = [_verify("alice", "pw"), contract.site_list(), contract.user_get("alice")]
    with pytest.raises(AgentError) as raised:
        client.call(ops)
    # The host saw [site.list, user.get] and failed at user.get: index 2 of the caller's.
    assert raised.value.index == 2
    assert raised.value.results == [WRONG, {}]


def test_hosts_behind_one_name_keep_their_own_logons(
    monkeypatch: pytest.MonkeyPatch, fresh_ledger: None
) -> None:
    # Two hosts behind one name on different WinRM ports (NAT; examples/automation runs two
    # such simulated hosts): the account exists on the first only. The second's failed
    # logon must neither answer the first's logon nor make the first's mapping skip the
    # account (its create would be refused: "does not log on ... 0x8007052E").
    sent: dict[str, list[Op[Any]]] = {}

    def answer(client: HostClient, ops: Sequence[Op[Any]]) -> list[Any]:
        authority = client.connection.authority
        sent.setdefault(authority, []).extend(ops)
        verdict = RIGHT if authority.endswith(":5986") else WRONG
        return [dict(verdict) if op.name == "user.verify_password" else {} for op in ops]

    monkeypatch.setattr(HostClient, "call", answer)

    def client(port: int) -> ProviderClient:
        endpoint = f"https://hosts.example:{port}/wsman"
        return ProviderClient(
            Connection.from_input(
                {"endpoint": endpoint, "transport": "basic", "username": "a", "password": "b"}
            )
        )

    first, second = client(5986), client(5987)
    assert second.call([_verify("app-client", "pw")]) == [WRONG]
    assert first.call([_verify("app-client", "pw")]) == [RIGHT]
    first.call([contract.mapping_verify_logons("shop")])
    mapping = sent["https://hosts.example:5986"][-1]
    assert mapping.name == "mapping.verify_logons"
    assert "skip_users" not in mapping.args
    # The second host still spares its account: one failed logon per account and run.
    assert second.call([_verify("app-client", "other")]) == [contract.not_checked()]
