"""Local users, groups and folder ACLs of the simulated host."""

from __future__ import annotations

import base64
import hashlib
import json
from pathlib import Path

import pytest

from iis_clientcert_simulator.testing import AgentRunner

PASSWORD = "Str0ng-Canary!"


@pytest.fixture
def host(tmp_path: Path) -> AgentRunner:
    return AgentRunner(tmp_path / "host")


@pytest.mark.parametrize(
    "name",
    [
        "a" * 21,
        "bad/name",
        "bad\\name",
        "semi;colon",
        "q?",
        "star*",
        "br[ack]et",
        "eq=ual",
        "pl+us",
        "co,mma",
        "lt<",
        "gt>",
        "pi|pe",
        'quo"te',
        "col:on",
        "...",
        " . ",
        "",
    ],
)
def test_sam_account_names(host: AgentRunner, name: str) -> None:
    error = host.error("user.set", name=name, password=PASSWORD)
    assert (error["code"], error["hresult"]) == ("PolicyViolation", "0x80070523")


def test_sam_name_of_twenty_characters_is_fine(host: AgentRunner) -> None:
    assert host.one("user.set", name="a" * 20, password=PASSWORD)["created"] is True


@pytest.mark.parametrize(
    ("password", "why"),
    [
        ("Sh0rt!", "shorter than 8"),
        ("alllowercase1", "three of"),
        ("ALLUPPER-CASE", "three of"),
        ("Xalice-1234", "account name"),
    ],
)
def test_password_policy(host: AgentRunner, password: str, why: str) -> None:
    error = host.error("user.set", name="alice", password=password)
    assert (error["code"], error["hresult"]) == ("PolicyViolation", "0x800708C5")
    assert why in error["message"]
    assert password not in error["message"]
    assert host.one("user.get", name="alice")["exists"] is False


def test_password_must_not_contain_full_name_parts(host: AgentRunner) -> None:
    error = host.error("user.set", name="svc", password="Dana-Scully-99", full_name="Dana Scully")
    assert error["code"] == "PolicyViolation"


def test_create_update_and_idempotency(host: AgentRunner) -> None:
    assert host.one(
        "user.set",
        name="alice",
        password=PASSWORD,
        full_name="Alice",
        description="mapped",
        password_never_expires=True,
    ) == {"created": True, "changed": []}
    again = host.one(
        "user.set",
        name="ALICE",
        password=PASSWORD,
        full_name="Alice",
        description="mapped",
        password_never_expires=True,
    )
    assert again == {"created": False, "changed": []}
    update = host.one("user.set", name="alice", description="changed", disabled=True)
    assert update == {"created": False, "changed": ["description", "disabled"]}
    assert host.one("user.set", name="alice", password="Another-Pw-2")["changed"] == ["password"]
    got = host.one("user.get", name="SIMIIS01\\alice")
    assert got == {
        "exists": True,
        "name": "alice",
        "full_name": "Alice",
        "description": "changed",
        "disabled": True,
        "password_never_expires": True,
        "user_cannot_change_password": False,
        "groups": ["Users"],  # every new local account is a member of Users
        # user.set tried "Another-Pw-2" (a logon) before setting it: one bad attempt.
        "bad_password_count": 1,
        "locked_out": False,
        "sid": got["sid"],
    }
    assert got["sid"].startswith("S-1-5-21-") and int(got["sid"].rsplit("-", 1)[1]) >= 1000
    assert host.one("user.delete", name="alice") == {"removed": True}
    assert host.one("user.delete", name="alice") == {"removed": False}
    assert host.one("user.get", name="alice")["exists"] is False


def test_users_json_holds_only_a_salted_hash(host: AgentRunner) -> None:
    host.one("user.set", name="alice", password=PASSWORD)
    host.one("user.set", name="bob", password=PASSWORD)
    raw = (host.state_dir / "users.json").read_text()
    assert PASSWORD not in raw
    users = json.loads(raw)["users"]
    assert users["alice"]["password_hash"].startswith("scrypt:4096$")
    assert users["alice"]["password_hash"] != users["bob"]["password_hash"]  # salted


def test_accounts_a_host_of_an_earlier_version_stored_still_log_on(host: AgentRunner) -> None:
    # Hosts kept from earlier versions (a demo host's state) hold scrypt hashes with n=2**14.
    host.one("user.set", name="alice", password=PASSWORD)
    path = host.state_dir / "users.json"
    data = json.loads(path.read_text())
    salt = b"0123456789abcdef"
    digest = hashlib.scrypt(PASSWORD.encode(), salt=salt, dklen=32, n=2**14, r=8, p=1)
    data["users"]["alice"]["password_hash"] = (
        f"scrypt${base64.b64encode(salt).decode()}${base64.b64encode(digest).decode()}"
    )
    path.write_text(json.dumps(data))
    assert host.one("user.verify_password", name="alice", password=PASSWORD)["valid"] is True
    assert (
        host.one("user.verify_password", name="alice", password="Wrong-Pw-1234!")["valid"] is False
    )


def test_verify_password(host: AgentRunner) -> None:
    host.one("user.set", name="alice", password=PASSWORD)
    assert host.one("user.verify_password", name="alice", password=PASSWORD) == {
        "valid": True,
        "hresult": None,
        "checked": True,
    }
    assert host.one("user.verify_password", name="alice", password="nope") == {
        "valid": False,
        "hresult": "0x8007052E",
        "checked": True,
    }
    assert host.one("user.verify_password", name="ghost", password=PASSWORD)["hresult"] == (
        "0x8007052E"
    )
    host.one("user.set", name="alice", disabled=True)
    # Windows answers "disabled" only once the password is right: a right password.
    disabled = host.one("user.verify_password", name="alice", password=PASSWORD)
    assert disabled == {"valid": True, "hresult": "0x80070533", "checked": True}
    wrong = host.one("user.verify_password", name="alice", password="nope")
    assert (wrong["valid"], wrong["hresult"]) == (False, "0x8007052E")


def test_groups(host: AgentRunner) -> None:
    host.one("user.set", name="alice", password=PASSWORD)
    assert host.one("group.add_member", group="IIS_IUSRS", member="alice") == {"changed": True}
    assert host.one("group.add_member", group="iis_iusrs", member=".\\alice") == {"changed": False}
    assert host.one("user.get", name="alice")["groups"] == ["Users", "IIS_IUSRS"]
    assert host.one("group.remove_member", group="IIS_IUSRS", member="alice") == {"changed": True}
    assert host.one("group.remove_member", group="IIS_IUSRS", member="alice") == {"changed": False}
    assert host.error("group.add_member", group="Nope", member="alice")["code"] == "NotFound"
    assert host.error("group.add_member", group="Users", member="ghost")["code"] == "NotFound"


def test_acl_grant_and_revoke(host: AgentRunner) -> None:
    host.one("user.set", name="alice", password=PASSWORD)
    path = "%SystemDrive%\\inetpub\\wwwroot"
    before = host.one("acl.get", path=path)
    assert before["exists"] is True
    assert all(ace["inherited"] for ace in before["aces"])
    assert host.one(
        "acl.grant", path="C:/inetpub/wwwroot/", identity="alice", rights="ReadAndExecute"
    ) == {"changed": True}
    assert host.one(
        "acl.grant", path=path, identity="SIMIIS01\\alice", rights="ReadAndExecute"
    ) == {"changed": False}
    aces = host.one("acl.get", path=path)["aces"]
    assert {
        "identity": "SIMIIS01\\alice",
        "sid": host.one("user.get", name="alice")["sid"],
        "rights": "ReadAndExecute",
        "type": "Allow",
        "inherited": False,
    } in aces
    assert host.one("acl.grant", path=path, identity="alice", rights="Modify") == {"changed": True}
    mine = [a for a in host.one("acl.get", path=path)["aces"] if "alice" in a["identity"]]
    assert [a["rights"] for a in mine] == ["Modify"]
    assert host.one("acl.revoke", path=path, identity="alice") == {"changed": True}
    assert host.one("acl.revoke", path=path, identity="alice") == {"changed": False}
    assert host.one("acl.get", path=path) == before


def test_acl_errors(host: AgentRunner) -> None:
    # Reading a missing folder answers exists=false (a read batch goes on)...
    assert host.one("acl.get", path="C:\\nowhere") == {"exists": False, "aces": []}
    # ...changing one is an error.
    error = host.error("acl.grant", path="C:\\nowhere", identity="IIS_IUSRS", rights="Read")
    assert (error["code"], error["hresult"]) == ("NotFound", "0x80070002")
    error = host.error("acl.grant", path="C:\\inetpub\\shop", identity="ghost", rights="Read")
    assert error["code"] == "NotFound"
    assert host.one("acl.grant", path="C:\\inetpub\\shop", identity="IIS_IUSRS", rights="Read")[
        "changed"
    ]
    ids = [a["identity"] for a in host.one("acl.get", path="C:\\inetpub\\shop")["aces"]]
    assert "BUILTIN\\IIS_IUSRS" in ids
