"""Local accounts (users.json) and folder ACLs (acl.json) with Windows' rules.

users.json keeps a salted scrypt hash of each password, never the password. SAM account
names and passwords are checked like Windows does (NERR codes surfaced as HRESULTs).

Logons (:meth:`Accounts.logon`, LogonUser as the agent calls it) follow Windows' account
lockout policy and logon rights, whoever tries them (agent ops, the HTTPS front):

* Every wrong password counts as a bad attempt; the count restarts when the previous bad
  attempt is older than the observation window, and reaching the threshold locks the
  account (Microsoft docs, "Account lockout threshold", "Reset account lockout counter
  after", "Account lockout duration"; FACTS.md "Logons lock accounts").
* A locked account fails every logon with ERROR_ACCOUNT_LOCKED_OUT (1909, 0x80070775), the
  right password included, until the lockout duration has passed (0: until an
  administrator unlocks it).
* A right password resets the count (SAM's successful validation), even when the logon is
  then refused for another reason: disabled (1331), or a logon type the account is denied
  (1385 ERROR_LOGON_TYPE_NOT_GRANTED, from "Deny access to this computer from the network"
  and its siblings: Microsoft docs, "User Rights Assignment").
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import re
import time
from dataclasses import dataclass, field
from pathlib import PureWindowsPath
from typing import Any

from iis_clientcert.host.contract import (
    PASSWORD_CHECK_LOGON_TYPE,
    VerifyPasswordResult,
    logon_guard_allows,
    logon_hresult,
    logon_verdict,
    not_checked,
)
from iis_clientcert_simulator.errors import (
    HR_ALREADY_EXISTS,
    HR_FILE_NOT_FOUND,
    HR_INVALID_ACCOUNT_NAME,
    HR_NOT_FOUND,
    HR_PASSWORD_POLICY,
    OpError,
)

BUILTIN_GROUPS: dict[str, str] = {
    "Administrators": "Administrators have complete and unrestricted access to the computer",
    "Users": "Users are prevented from making accidental or intentional system-wide changes",
    "IIS_IUSRS": "Built-in group used by Internet Information Services.",
}
# Identities an ACE may name that are not local SAM accounts.
WELL_KNOWN = {
    "nt authority\\system": "NT AUTHORITY\\SYSTEM",
    "system": "NT AUTHORITY\\SYSTEM",
    "nt authority\\iusr": "NT AUTHORITY\\IUSR",
    "iusr": "NT AUTHORITY\\IUSR",
    "creator owner": "CREATOR OWNER",
    "everyone": "Everyone",
}
_BAD_NAME_CHARS = set('"/\\[]:;|=,+*?<>')
_SCRYPT = {"n": 2**14, "r": 8, "p": 1}


@dataclass(frozen=True)
class PasswordPolicy:
    min_length: int = 8
    complexity: bool = True


@dataclass(frozen=True)
class LockoutPolicy:
    """NetUserModalsGet level 3. A fresh Windows Server has no lockout (threshold 0; the
    window and duration then default to 30 minutes, as `net accounts` shows); Windows 11
    22H2+ ships 10 attempts / 10 minutes / 10 minutes; domain policies often say 3 to 5."""

    threshold: int = 0
    observation_window_s: int = 1800
    duration_s: int = 1800


# Win32 errors of LogonUser (winerror.h).
ERROR_LOGON_FAILURE = 1326
ERROR_ACCOUNT_DISABLED = 1331
ERROR_LOGON_TYPE_NOT_GRANTED = 1385
ERROR_ACCOUNT_LOCKED_OUT = 1909

# The "Deny ..." user rights and the logon types each refuses (Microsoft docs, User Rights
# Assignment: network access covers the network (3) and network-cleartext (8) logons;
# IIS's logonMethod names map onto these types as contract.LOGON_TYPES says).
DENY_RIGHTS: dict[str, frozenset[int]] = {
    "SeDenyInteractiveLogonRight": frozenset({2}),
    "SeDenyNetworkLogonRight": frozenset({3, 8}),
    "SeDenyBatchLogonRight": frozenset({4}),
}


@dataclass
class RequestLogons:
    """What one agent request has done with logons (the contract's "at most once per
    account per request", and the passwords user.set has just set)."""

    just_set: dict[str, str] = field(default_factory=dict)  # account key -> password
    failed: set[str] = field(default_factory=set)  # account keys with a wrong password
    tried: int = 0  # LogonUser calls made (the agent compiles its LogonUser type at the first)


def split_logon_name(user_name: str, default_domain: str) -> tuple[str | None, str]:
    """(domain, user) as agent.ps1's Test-Logon hands them to LogonUser: DOMAIN\\user wins,
    user@domain is a UPN (no domain), else the default domain ('' means '.', this host)."""
    if "\\" in user_name:
        domain, _, user = user_name.partition("\\")
        return domain, user
    if "@" in user_name:
        return None, user_name
    return default_domain or ".", user_name


def check_account_name(name: str) -> None:
    problem = ""
    if not name or len(name) > 20:
        problem = "must be 1 to 20 characters long"
    elif any(ch in _BAD_NAME_CHARS for ch in name) or any(ord(ch) < 32 for ch in name):
        problem = 'must not contain any of " / \\ [ ] : ; | = , + * ? < >'
    elif set(name) <= {".", " "}:
        problem = "must not consist only of periods and spaces"
    if problem:
        raise OpError(
            "PolicyViolation",
            f"The account name '{name}' is not valid: a local account name {problem}",
            HR_INVALID_ACCOUNT_NAME,
        )


def check_password(password: str, name: str, full_name: str, policy: PasswordPolicy) -> None:
    """Windows' length and complexity rules. The message never repeats the password."""
    problems: list[str] = []
    if len(password) < policy.min_length:
        problems.append(f"it is shorter than {policy.min_length} characters")
    if policy.complexity:
        classes = sum(
            [
                any(c.isupper() for c in password),
                any(c.islower() for c in password),
                any(c.isdigit() for c in password),
                any(not c.isalnum() for c in password),
            ]
        )
        if classes < 3:
            problems.append(
                "it needs characters from three of: upper case, lower case, digits, symbols"
            )
        lowered = password.lower()
        tokens = [name, *re.split(r"[,.\-_#\t ]+", full_name or "")]
        if any(len(t) >= 3 and t.lower() in lowered for t in tokens):
            problems.append("it contains the account name or parts of the full name")
    if problems:
        raise OpError(
            "PolicyViolation",
            "The password does not meet the password policy requirements: " + "; ".join(problems),
            HR_PASSWORD_POLICY,
        )


def hash_password(password: str) -> str:
    salt = os.urandom(16)
    digest = hashlib.scrypt(password.encode("utf-8"), salt=salt, dklen=32, **_SCRYPT)
    return "scrypt$" + base64.b64encode(salt).decode() + "$" + base64.b64encode(digest).decode()


def password_matches(password: str, stored: str | None) -> bool:
    if not stored or not stored.startswith("scrypt$"):
        return False
    _, salt_b64, digest_b64 = stored.split("$")
    digest = hashlib.scrypt(
        password.encode("utf-8"), salt=base64.b64decode(salt_b64), dklen=32, **_SCRYPT
    )
    return hmac.compare_digest(digest, base64.b64decode(digest_b64))


def bare_name(identity: str, computer: str) -> str:
    """'SIMIIS01\\bob', '.\\bob', 'bob' -> 'bob'."""
    prefix, sep, rest = identity.partition("\\")
    if sep and prefix.lower() in (".", computer.lower(), "builtin"):
        return rest
    return identity


@dataclass(frozen=True)
class Domain:
    """The domain a host is a member of (host.json ``domain: {name, accounts}``): only the
    account names matter here, to show which lookups could reach them."""

    name: str
    accounts: tuple[str, ...] = ()

    @classmethod
    def from_facts(cls, facts: dict[str, Any]) -> Domain | None:
        value = facts.get("domain")
        if not isinstance(value, dict) or not value.get("name"):
            return None
        return cls(str(value["name"]), tuple(str(a) for a in value.get("accounts") or ()))


class Accounts:
    """users.json as a mutable document: {"users": {...}, "groups": {...}}."""

    def __init__(
        self,
        data: dict[str, Any],
        computer: str,
        policy: PasswordPolicy,
        domain: Domain | None = None,
        lockout: LockoutPolicy | None = None,
        now: float | None = None,
        request: RequestLogons | None = None,
    ) -> None:
        self.data = data
        self.computer = computer
        self.policy = policy
        self.domain = domain
        self.lockout = lockout or LockoutPolicy()
        self.now = time.time() if now is None else now
        self.request = request or RequestLogons()
        data.setdefault("users", {})
        groups = data.setdefault("groups", {})
        for name, description in BUILTIN_GROUPS.items():
            groups.setdefault(name, {"description": description, "builtin": True})

    @staticmethod
    def initial(computer: str) -> dict[str, Any]:
        accounts = Accounts({}, computer, PasswordPolicy())
        for name, disabled, groups, description in (
            (
                "Administrator",
                True,
                ["Administrators"],
                "Built-in account for administering the computer/domain",
            ),
            ("Guest", True, [], "Built-in account for guest access to the computer/domain"),
        ):
            accounts.data["users"][name] = {
                "name": name,
                "full_name": "",
                "description": description,
                "disabled": disabled,
                "password_never_expires": True,
                "user_cannot_change_password": name == "Guest",
                "groups": groups,
                "password_hash": None,
            }
        return accounts.data

    # --- users --------------------------------------------------------------------

    def _key(self, name: str) -> str | None:
        bare = bare_name(name, self.computer).lower()
        for key in self.data["users"]:
            if key.lower() == bare:
                return str(key)
        return None

    def user(self, name: str) -> dict[str, Any] | None:
        key = self._key(name)
        return None if key is None else dict(self.data["users"][key])

    def public(self, name: str) -> dict[str, Any]:
        user = self.user(name)
        if user is None:
            return {
                "exists": False,
                "name": bare_name(name, self.computer),
                "full_name": "",
                "description": "",
                "disabled": False,
                "password_never_expires": False,
                "user_cannot_change_password": False,
                "groups": [],
                "bad_password_count": 0,
                "locked_out": False,
            }
        return {
            "exists": True,
            "name": user["name"],
            "full_name": user.get("full_name", ""),
            "description": user.get("description", ""),
            "disabled": bool(user.get("disabled")),
            "password_never_expires": bool(user.get("password_never_expires")),
            "user_cannot_change_password": bool(user.get("user_cannot_change_password")),
            "groups": list(user.get("groups", [])),
            "bad_password_count": int(user.get("bad_password_count") or 0),
            "locked_out": self._locked(user),
        }

    def set_user(self, name: str, password: str | None, props: dict[str, Any]) -> dict[str, Any]:
        name = bare_name(name, self.computer)
        key = self._key(name)
        created = key is None
        if created:
            check_account_name(name)
            if self._group_key(name) is not None:
                raise OpError(
                    "DuplicateKey",
                    f"The account name '{name}' is already used by a local group",
                    HR_ALREADY_EXISTS,
                )
            record: dict[str, Any] = {
                "name": name,
                "full_name": "",
                "description": "",
                "disabled": False,
                "password_never_expires": False,
                "user_cannot_change_password": False,
                "groups": [],
                "password_hash": None,
            }
        else:
            assert key is not None
            record = self.data["users"][key]  # changed in place (saved if the op succeeds)
        changed: list[str] = []
        full_name = props.get("full_name", record["full_name"])
        if password is not None:
            check_password(password, record["name"], full_name, self.policy)
        # Nothing changes before here: a refused password leaves the account as it was.
        if password is not None:
            # agent.ps1 asks LogonUser (guarded, as the verify ops) whether the password is
            # already the account's; if it cannot tell, it sets the password.
            current = (
                not created
                and (
                    self.guarded_logon(record["name"], password, PASSWORD_CHECK_LOGON_TYPE)["valid"]
                )
            )
            if not current:
                record["password_hash"] = hash_password(password)
                changed.append("password")
            self.request.just_set[record["name"].lower()] = password
        for prop in (
            "full_name",
            "description",
            "disabled",
            "password_never_expires",
            "user_cannot_change_password",
        ):
            if prop in props and props[prop] != record.get(prop):
                record[prop] = props[prop]
                changed.append(prop)
        self.data["users"][key or name] = record
        return {"created": created, "changed": [] if created else changed}

    def delete_user(self, name: str) -> bool:
        key = self._key(name)
        if key is None:
            return False
        del self.data["users"][key]
        return True

    def password_is(self, name: str, password: str) -> bool:
        """Whether ``password`` is the account's, without a logon (the simulator's own
        start-up check of its WinRM account; nothing is counted)."""
        user = self.user(name)
        return user is not None and password_matches(password, user.get("password_hash"))

    # --- logons -------------------------------------------------------------------

    def is_local(self, domain: str | None) -> bool:
        """Whether LogonUser's domain names this host's SAM ('.' or the computer name)."""
        return domain is not None and domain.lower() in (".", self.computer.lower())

    def locked_out(self, name: str) -> bool:
        key = self._key(name)
        return key is not None and self._locked(self.data["users"][key])

    def _locked(self, record: dict[str, Any]) -> bool:
        locked_at = record.get("locked_at")
        if locked_at is None:
            return False
        duration = self.lockout.duration_s
        return duration == 0 or self.now - float(locked_at) < duration

    def logon(
        self, user_name: str, password: str, logon_type: int, default_domain: str = ""
    ) -> int:
        """LogonUser(user, domain, password, logon_type): 0 or its Win32 error. Counts bad
        attempts and locks the account as Windows' lockout policy says (module docstring)."""
        domain, user = split_logon_name(user_name, default_domain)
        if not self.is_local(domain):
            return ERROR_LOGON_FAILURE  # no domain (or UPN) account on this host
        key = self._key(user)
        if key is None:
            return ERROR_LOGON_FAILURE  # an unknown account: nothing to count or lock
        record: dict[str, Any] = self.data["users"][key]
        if record.get("locked_at") is not None:
            if self._locked(record):
                return ERROR_ACCOUNT_LOCKED_OUT
            # The lockout duration has passed: unlocked, with a fresh count.
            record["locked_at"] = None
            record["bad_password_count"] = 0
        if not password_matches(password, record.get("password_hash")):
            self._bad_attempt(record)
            return ERROR_LOGON_FAILURE
        if record.get("bad_password_count"):
            record["bad_password_count"] = 0
        if record.get("disabled"):
            return ERROR_ACCOUNT_DISABLED
        denied: set[int] = set()
        for right in record.get("deny_logon_rights") or []:
            denied |= DENY_RIGHTS.get(str(right), frozenset())
        if logon_type in denied:
            return ERROR_LOGON_TYPE_NOT_GRANTED
        return 0

    def guarded_logon(
        self, user_name: str, password: str, logon_type: int, default_domain: str = ""
    ) -> VerifyPasswordResult:
        """A logon by an agent op, under the contract's guard (contract.py, "Logons")."""
        domain, user = split_logon_name(user_name, default_domain)
        if not self.is_local(domain):
            # A domain account's count and policy live on a domain controller.
            return not_checked()
        key = self._key(user)
        if key is None:
            # LogonUser's answer for an unknown account; there is nothing to count or lock.
            return logon_verdict(ERROR_LOGON_FAILURE)
        record: dict[str, Any] = self.data["users"][key]
        account = key.lower()
        if self.request.just_set.get(account) != password:
            if self._locked(record):
                return not_checked(logon_hresult(ERROR_ACCOUNT_LOCKED_OUT))
            count = int(record.get("bad_password_count") or 0)
            if account in self.request.failed or not logon_guard_allows(
                count, self.lockout.threshold
            ):
                return not_checked()
        self.request.tried += 1
        verdict = logon_verdict(self.logon(user_name, password, logon_type, default_domain))
        if verdict["checked"] and not verdict["valid"]:
            self.request.failed.add(account)
        return verdict

    def _bad_attempt(self, record: dict[str, Any]) -> None:
        last = record.get("last_bad_password_time")
        if last is not None and self.now - float(last) >= self.lockout.observation_window_s:
            record["bad_password_count"] = 0  # the observation window has passed
        record["bad_password_count"] = int(record.get("bad_password_count") or 0) + 1
        record["last_bad_password_time"] = self.now
        if 0 < self.lockout.threshold <= record["bad_password_count"]:
            record["locked_at"] = self.now

    def unlock(self, name: str) -> None:
        key = self._key(name)
        if key is not None:
            self.data["users"][key].update(locked_at=None, bad_password_count=0)

    def deny_logon_right(self, name: str, right: str, deny: bool = True) -> None:
        """Assign (or take back) a "Deny ..." user right (User Rights Assignment)."""
        if right not in DENY_RIGHTS:
            raise ValueError(f"unknown logon right {right!r}: one of {sorted(DENY_RIGHTS)}")
        key = self._key(name)
        if key is None:
            raise OpError("NotFound", f"The user '{name}' was not found", HR_NOT_FOUND)
        record = self.data["users"][key]
        rights = [r for r in record.get("deny_logon_rights") or [] if r != right]
        record["deny_logon_rights"] = [*rights, right] if deny else rights

    # --- groups -------------------------------------------------------------------

    def _group_key(self, name: str) -> str | None:
        bare = bare_name(name, self.computer).lower()
        for key in self.data["groups"]:
            if key.lower() == bare:
                return str(key)
        return None

    def _require_member(self, group: str, member: str) -> tuple[str, str]:
        gkey = self._group_key(group)
        if gkey is None:
            raise OpError("NotFound", f"The group '{group}' was not found", HR_NOT_FOUND)
        ukey = self._key(member)
        if ukey is None:
            raise OpError("NotFound", f"The user '{member}' was not found", HR_NOT_FOUND)
        return gkey, ukey

    def add_member(self, group: str, member: str) -> bool:
        gkey, ukey = self._require_member(group, member)
        groups: list[str] = self.data["users"][ukey].setdefault("groups", [])
        if gkey in groups:
            return False
        groups.append(gkey)
        return True

    def remove_member(self, group: str, member: str) -> bool:
        gkey, ukey = self._require_member(group, member)
        groups: list[str] = self.data["users"][ukey].setdefault("groups", [])
        if gkey not in groups:
            return False
        groups.remove(gkey)
        return True

    def lookup_account_name(self, identity: str) -> str:
        """Windows' LookupAccountName (what NTAccount.Translate does): well-known names,
        built-in groups, this computer's accounts, then the domain's. On a domain member a
        bare name that is no local account finds the domain account of that name."""
        known = WELL_KNOWN.get(identity.lower())
        if known is not None:
            return known
        prefix, sep, rest = identity.rpartition("\\")
        bare = rest if sep else identity
        if not sep or prefix.lower() in (".", self.computer.lower(), "builtin"):
            key = self._key(bare)
            if key is not None:
                return f"{self.computer}\\{key}"
            gkey = self._group_key(bare)
            if gkey is not None:
                return f"BUILTIN\\{gkey}"
        domain = self.domain
        if domain is not None and (not sep or prefix.lower() == domain.name.lower()):
            for account in domain.accounts:
                if account.lower() == bare.lower():
                    return f"{domain.name}\\{account}"
        raise OpError(
            "NotFound",
            f"Some or all identity references could not be translated: '{identity}'",
            0x80070534,  # ERROR_NONE_MAPPED
        )

    def resolve_identity(self, identity: str) -> str:
        """An ACE identity as the agent resolves it: SIMIIS01\\bob, BUILTIN\\Users, NT
        AUTHORITY\\..., or a DOMAIN\\name given as such."""
        if "\\" in identity or "@" in identity:
            return self.lookup_account_name(identity)  # the domain was said
        # A bare name: a well-known name, or this computer's account or group; never a
        # domain account of the same name (FACTS.md "Account names").
        known = WELL_KNOWN.get(identity.lower())
        if known is not None:
            return known
        return self.lookup_account_name(f"{self.computer}\\{identity}")


# --- folders -------------------------------------------------------------------------


def norm_folder(path: str) -> str:
    r"""A folder path as a case-insensitive key: %SystemDrive% expanded, backslashes, no
    trailing separator (C:\inetpub\shop)."""
    text = re.sub("%systemdrive%", "C:", path.strip(), flags=re.IGNORECASE)
    text = str(PureWindowsPath(text.replace("/", "\\")))
    return text.rstrip("\\") if len(text) > 3 else text


def default_aces(extra: list[dict[str, Any]] | None = None) -> list[dict[str, Any]]:
    base = [
        ("NT AUTHORITY\\SYSTEM", "FullControl"),
        ("BUILTIN\\Administrators", "FullControl"),
        ("BUILTIN\\Users", "ReadAndExecute"),
        ("CREATOR OWNER", "FullControl"),
    ]
    aces = [{"identity": i, "rights": r, "type": "Allow", "inherited": True} for i, r in base]
    return aces + list(extra or [])


class Folders:
    """acl.json: {normalised folder path: {"path": shown path, "aces": [...]}}."""

    def __init__(self, data: dict[str, Any]) -> None:
        self.data = data

    def _entry(self, path: str) -> dict[str, Any]:
        key = norm_folder(path).lower()
        for k, entry in self.data.items():
            if k.lower() == key:
                return dict(entry)
        raise OpError(
            "NotFound",
            f"Cannot find path '{path}' because it does not exist",
            HR_FILE_NOT_FOUND,
        )

    def add_folder(self, path: str, aces: list[dict[str, Any]]) -> None:
        key = norm_folder(path)
        self.data.setdefault(key, {"path": key, "aces": aces})

    def get(self, path: str) -> dict[str, Any]:
        # A missing folder is an answer, not an error: read batches go on (as agent.ps1).
        try:
            entry = self._entry(path)
        except OpError:
            return {"exists": False, "aces": []}
        return {"exists": True, "aces": [dict(a) for a in entry["aces"]]}

    def _put(self, path: str, aces: list[dict[str, Any]]) -> None:
        key = norm_folder(path).lower()
        for k in self.data:
            if k.lower() == key:
                self.data[k]["aces"] = aces
                return

    def grant(self, path: str, identity: str, rights: str) -> bool:
        aces: list[dict[str, Any]] = self._entry(path)["aces"]
        mine = [a for a in aces if _explicit_allow_for(a, identity)]
        if len(mine) == 1 and mine[0]["rights"] == rights:
            return False
        # SetAccessRule semantics: the identity's explicit Allow rule is replaced.
        kept = [a for a in aces if not _explicit_allow_for(a, identity)]
        kept.append({"identity": identity, "rights": rights, "type": "Allow", "inherited": False})
        self._put(path, kept)
        return True

    def revoke(self, path: str, identity: str) -> bool:
        aces: list[dict[str, Any]] = self._entry(path)["aces"]
        kept = [a for a in aces if not _explicit_allow_for(a, identity)]
        if len(kept) == len(aces):
            return False
        self._put(path, kept)
        return True


def _explicit_allow_for(ace: dict[str, Any], identity: str) -> bool:
    return (
        not ace.get("inherited")
        and ace.get("type") == "Allow"
        and str(ace.get("identity", "")).lower() == identity.lower()
    )
