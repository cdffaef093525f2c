"""Logons on the simulated host: Windows' account lockout policy and logon rights.

Every logon counts, whoever tries it (agent ops here; the HTTPS front in
test_https_front.py). Sources: Microsoft docs "Account lockout threshold", "Account lockout
duration", "Reset account lockout counter after", "User Rights Assignment"; FACTS.md
"Logons lock accounts" and "IIS request semantics" (Logon).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from iis_clientcert.host.contract import LOGON_TYPES, make_op
from iis_clientcert_simulator.accounts import (
    ERROR_ACCOUNT_DISABLED,
    ERROR_ACCOUNT_LOCKED_OUT,
    ERROR_LOGON_FAILURE,
    ERROR_LOGON_TYPE_NOT_GRANTED,
    Accounts,
    LockoutPolicy,
    PasswordPolicy,
    split_logon_name,
)
from iis_clientcert_simulator.state import COMPUTER_NAME, HostState
from iis_clientcert_simulator.testing import (
    WINDOWS_11_LOCKOUT,
    AgentRunner,
    account_record,
    deny_logon_right,
    set_lockout_policy,
)

PASSWORD = "Str0ng-Canary!"
WRONG = "Wr0ng-Canary!"


def _accounts(lockout: LockoutPolicy, now: float = 1000.0) -> Accounts:
    accounts = Accounts(
        Accounts.initial(COMPUTER_NAME), COMPUTER_NAME, PasswordPolicy(), lockout=lockout
    )
    accounts.set_user("alice", PASSWORD, {})
    accounts.now = now
    return accounts


WINDOWS_11 = LockoutPolicy(threshold=10, observation_window_s=600, duration_s=600)


@pytest.fixture
def host(tmp_path: Path) -> AgentRunner:
    runner = AgentRunner(tmp_path / "host")
    runner.one("user.set", name="alice", password=PASSWORD)
    return runner


def test_a_fresh_server_never_locks_an_account(host: AgentRunner) -> None:
    for _ in range(30):  # no lockout policy: the ops try every time
        wrong = host.one("user.verify_password", name="alice", password=WRONG)
        assert (wrong["valid"], wrong["checked"]) == (False, True)
    # The attempts are counted all the same (BadPasswordAttempts), but nothing locks.
    assert account_record(host.state_dir, "alice")["bad_password_count"] == 30
    assert host.one("user.verify_password", name="alice", password=PASSWORD)["valid"] is True
    assert account_record(host.state_dir, "alice")["bad_password_count"] == 0


def test_the_threshold_locks_the_account_even_for_the_right_password(host: AgentRunner) -> None:
    set_lockout_policy(host.state_dir, threshold=3)
    state = HostState(host.state_dir)
    for _ in range(3):  # IIS, a person, a service: any logon counts
        assert state.logon("alice", WRONG, 8) == (ERROR_LOGON_FAILURE, "alice")
    assert account_record(host.state_dir, "alice")["locked_at"] is not None
    assert state.logon("alice", PASSWORD, 8) == (ERROR_ACCOUNT_LOCKED_OUT, "alice")
    got = host.one("user.get", name="alice")
    assert (got["bad_password_count"], got["locked_out"]) == (3, True)
    # The agent does not even try: a locked account says nothing about the password.
    locked = host.one("user.verify_password", name="alice", password=PASSWORD)
    assert locked == {"valid": False, "hresult": "0x80070775", "checked": False}


def test_the_agent_ops_stop_at_half_the_threshold(host: AgentRunner) -> None:
    # contract.logon_guard_allows: Windows 11's 10 leaves the ops 5 bad logons at most.
    set_lockout_policy(host.state_dir)
    answers = [
        host.one("user.verify_password", name="alice", password=WRONG)["checked"] for _ in range(20)
    ]
    assert answers == [True] * 5 + [False] * 15
    assert account_record(host.state_dir, "alice")["bad_password_count"] == 5
    assert host.one("host.facts")["lockout_policy"] == WINDOWS_11_LOCKOUT
    # user.set with a password it cannot verify sets it, and then logs on with it (the
    # password it has just set cannot be wrong): the count is back to 0.
    (_set, verified) = host.ok(
        make_op("user.set", name="alice", password=PASSWORD),
        make_op("user.verify_password", name="alice", password=PASSWORD),
    )
    assert verified == {"valid": True, "hresult": None, "checked": True}
    assert account_record(host.state_dir, "alice")["bad_password_count"] == 0


def test_one_request_tries_an_account_once(host: AgentRunner) -> None:
    set_lockout_policy(host.state_dir)
    results = host.ok(
        *[make_op("user.verify_password", name="alice", password=f"{WRONG}{i}") for i in range(3)]
    )
    assert [r["checked"] for r in results] == [True, False, False]
    assert account_record(host.state_dir, "alice")["bad_password_count"] == 1


def test_a_fresh_host_reports_no_lockout_policy(host: AgentRunner) -> None:
    assert host.one("host.facts")["lockout_policy"] == {
        "threshold": 0,
        "observation_window_s": 1800,
        "duration_s": 1800,
    }


def test_a_lockout_lasts_its_duration() -> None:
    accounts = _accounts(WINDOWS_11)
    for _ in range(10):
        assert accounts.logon("alice", WRONG, 3) == ERROR_LOGON_FAILURE
    accounts.now += 599
    assert accounts.logon("alice", PASSWORD, 3) == ERROR_ACCOUNT_LOCKED_OUT
    assert accounts.locked_out("alice")
    accounts.now += 1
    assert not accounts.locked_out("alice")
    assert accounts.logon("alice", PASSWORD, 3) == 0
    assert accounts.user("alice")["bad_password_count"] == 0  # type: ignore[index]


def test_a_lockout_of_duration_zero_waits_for_an_administrator() -> None:
    accounts = _accounts(LockoutPolicy(threshold=3, observation_window_s=600, duration_s=0))
    for _ in range(3):
        accounts.logon("alice", WRONG, 3)
    accounts.now += 10 * 365 * 86400
    assert accounts.logon("alice", PASSWORD, 3) == ERROR_ACCOUNT_LOCKED_OUT


def test_the_count_restarts_after_the_observation_window() -> None:
    accounts = _accounts(WINDOWS_11)
    for _ in range(9):
        accounts.logon("alice", WRONG, 3)
    accounts.now += 600
    # Nine old attempts and one new one: the window has passed, so the count is 1.
    assert accounts.logon("alice", WRONG, 3) == ERROR_LOGON_FAILURE
    assert accounts.user("alice")["bad_password_count"] == 1  # type: ignore[index]
    assert accounts.logon("alice", PASSWORD, 3) == 0


def test_a_right_password_resets_the_count() -> None:
    accounts = _accounts(WINDOWS_11)
    for _ in range(9):
        accounts.logon("alice", WRONG, 3)
    assert accounts.logon("alice", PASSWORD, 3) == 0
    for _ in range(9):
        accounts.logon("alice", WRONG, 3)
    assert not accounts.locked_out("alice")


def test_deny_network_logon_refuses_network_and_cleartext_logons_only(tmp_path: Path) -> None:
    runner = AgentRunner(tmp_path / "host")
    runner.one("user.set", name="alice", password=PASSWORD)
    deny_logon_right(runner.state_dir, "alice", "SeDenyNetworkLogonRight")
    accounts = _accounts(WINDOWS_11)
    accounts.deny_logon_right("alice", "SeDenyNetworkLogonRight")
    # Batch logons need "Log on as a batch job", which a server grants to no ordinary user.
    accounts.grant_logon_right("alice", "SeBatchLogonRight")
    codes = {method: accounts.logon("alice", PASSWORD, t) for method, t in LOGON_TYPES.items()}
    assert codes == {
        "Interactive": 0,
        "Network": ERROR_LOGON_TYPE_NOT_GRANTED,
        "Batch": 0,
        "ClearText": ERROR_LOGON_TYPE_NOT_GRANTED,
    }
    # The password is checked first: a wrong one is a logon failure and a bad attempt.
    assert accounts.logon("alice", WRONG, 3) == ERROR_LOGON_FAILURE
    assert accounts.user("alice")["bad_password_count"] == 1  # type: ignore[index]
    assert accounts.logon("alice", PASSWORD, 3) == ERROR_LOGON_TYPE_NOT_GRANTED
    assert accounts.user("alice")["bad_password_count"] == 0  # type: ignore[index]
    # Through the agent op (a network logon, as agent.ps1 makes it).
    result = runner.one("user.verify_password", name="alice", password=PASSWORD)
    assert result["hresult"] == "0x80070569"


def test_a_disabled_account_answers_disabled_only_for_the_right_password() -> None:
    accounts = _accounts(WINDOWS_11)
    accounts.set_user("alice", None, {"disabled": True})
    assert accounts.logon("alice", PASSWORD, 3) == ERROR_ACCOUNT_DISABLED
    assert accounts.logon("alice", WRONG, 3) == ERROR_LOGON_FAILURE


@pytest.mark.parametrize(
    ("user_name", "default_domain", "expected"),
    [
        ("alice", "", (".", "alice")),
        ("alice", "CONTOSO", ("CONTOSO", "alice")),
        ("SIMIIS01\\alice", "CONTOSO", ("SIMIIS01", "alice")),
        (".\\alice", "", (".", "alice")),
        ("alice@contoso.com", "CONTOSO", (None, "alice@contoso.com")),
    ],
)
def test_logon_names_split_as_the_agent_splits_them(
    user_name: str, default_domain: str, expected: tuple[str | None, str]
) -> None:
    assert split_logon_name(user_name, default_domain) == expected


def test_only_this_hosts_accounts_log_on_and_others_count_nothing() -> None:
    accounts = _accounts(WINDOWS_11)
    assert accounts.logon("SIMIIS01\\alice", PASSWORD, 8) == 0
    assert accounts.logon("simiis01\\alice", PASSWORD, 8) == 0
    assert accounts.logon(".\\alice", PASSWORD, 8) == 0
    # A default logon domain other than this host makes "alice" a domain account.
    assert accounts.logon("alice", PASSWORD, 8, "CONTOSO") == ERROR_LOGON_FAILURE
    assert accounts.logon("CONTOSO\\alice", WRONG, 8) == ERROR_LOGON_FAILURE
    assert accounts.logon("alice@contoso.com", WRONG, 8) == ERROR_LOGON_FAILURE
    assert not accounts.user("alice").get("bad_password_count")  # type: ignore[union-attr]


def test_user_set_asks_logon_user_first_and_that_attempt_counts(host: AgentRunner) -> None:
    # agent.ps1 tries the new password before setting it: on a drifted account that is
    # one more bad attempt.
    host.one("user.set", name="alice", password=WRONG)
    assert account_record(host.state_dir, "alice")["bad_password_count"] == 1
    assert host.one("user.verify_password", name="alice", password=WRONG)["valid"] is True
