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
  then refused for another reason, in MSV1_0's order: disabled (1331), expired account
  (1793, ``account_expires``), a blank password over the network (1327
  ERROR_ACCOUNT_RESTRICTION: "Accounts: Limit local account use of blank passwords to
  console logon only", on by default), must change the password at the next logon (1907,
  ``password_must_change``), an expired password (1330: older than the host's maximum
  password age, 42 days by default, unless ``password_never_expires``), and then the
  logon right of the logon type (1385 ERROR_LOGON_TYPE_NOT_GRANTED).
* Logon rights (Microsoft docs, "User Rights Assignment" and the page of each right): the
  account, or a group in its token, must hold the right of the logon type ("Allow log on
  locally" for Interactive, "Access this computer from the network" for Network and
  ClearText, "Log on as a batch job" for Batch) and none of its "Deny ..." counterparts.
  A server grants them by default as :data:`DEFAULT_LOGON_RIGHTS` says; every local
  account's token holds Everyone and BUILTIN\\Users (through Authenticated Users), so
  network and interactive logons are granted and batch logons are not.
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
    is_sid,
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
# SAM's rule for local account names (Microsoft docs, New-LocalUser -Name: no " / \\ [ ] :
# ; | = , + * ? < > @, not only periods and spaces; "Naming conventions": no final period).
# Security identifiers. An ACE holds a SID, not a name: the name shown is looked up when
# the ACL is read, and an ACE of a deleted account shows (and is removed) by its SID
# (Microsoft docs, "Security identifiers": well-known SIDs; local accounts are the machine
# SID plus a relative id, 500 Administrator, 501 Guest, 1000 and up for new accounts, never
# reused).
MACHINE_SID = "S-1-5-21-2911532517-1437394741-3187006512"
FIRST_RID = 1000
WELL_KNOWN_SIDS: dict[str, str] = {
    "NT AUTHORITY\\SYSTEM": "S-1-5-18",
    "NT AUTHORITY\\IUSR": "S-1-5-17",
    "CREATOR OWNER": "S-1-3-0",
    "Everyone": "S-1-1-0",
}
BUILTIN_GROUP_SIDS: dict[str, str] = {
    "Administrators": "S-1-5-32-544",
    "Users": "S-1-5-32-545",
    "IIS_IUSRS": "S-1-5-32-568",
}
_BAD_NAME_CHARS = set('"/\\[]:;|=,+*?<>@')
# Salted and memory-hard (Windows keeps an unsalted NT hash). n=2**12 costs ~13 ms a logon;
# each hash names its n ("scrypt:4096$salt$digest"). Hashes of earlier versions
# ("scrypt$salt$digest") were made with n=2**14 (~55 ms, a fifth of a simulated host's CPU
# in a fleet benchmark) and still verify with it.
_SCRYPT = {"n": 2**12, "r": 8, "p": 1}
_EARLIER_N = 2**14


@dataclass(frozen=True)
class PasswordPolicy:
    min_length: int = 8
    complexity: bool = True
    max_age_days: int = 42  # Maximum password age; 0: passwords never expire


# What a host applies when nothing set its password policy (Microsoft docs, "Minimum
# password length", "Maximum password age", "Password must meet complexity requirements"):
# a stand-alone server's local policy (no minimum length; complexity as Windows Server's
# setup leaves it, enabled: the docs' table says disabled, a real host settles it,
# docs/real-host.md), a domain member the Default Domain Policy (7 characters, complex).
# Both keep passwords for 42 days.
STAND_ALONE_PASSWORD_POLICY = PasswordPolicy(min_length=0, complexity=True, max_age_days=42)
DOMAIN_MEMBER_PASSWORD_POLICY = PasswordPolicy(min_length=7, complexity=True, max_age_days=42)


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
ERROR_ACCOUNT_RESTRICTION = 1327
ERROR_PASSWORD_EXPIRED = 1330
ERROR_ACCOUNT_DISABLED = 1331
ERROR_LOGON_TYPE_NOT_GRANTED = 1385
ERROR_ACCOUNT_EXPIRED = 1793
ERROR_PASSWORD_MUST_CHANGE = 1907
ERROR_ACCOUNT_LOCKED_OUT = 1909

# The logon rights and the logon types each grants (User Rights Assignment: "Allow log on
# locally", "Access this computer from the network", "Log on as a batch job").
LOGON_RIGHTS: dict[str, frozenset[int]] = {
    "SeInteractiveLogonRight": frozenset({2}),
    "SeNetworkLogonRight": frozenset({3, 8}),
    "SeBatchLogonRight": frozenset({4}),
}
# Whom a Windows Server grants them by default (the "Default values" table of each right's
# page, member and stand-alone servers).
DEFAULT_LOGON_RIGHTS: dict[str, tuple[str, ...]] = {
    "SeInteractiveLogonRight": ("Administrators", "Backup Operators", "Users"),
    "SeNetworkLogonRight": ("Everyone", "Administrators", "Users", "Backup Operators"),
    "SeBatchLogonRight": ("Administrators", "Backup Operators", "Performance Log Users"),
}
# Logon types a blank password is refused for ("Limit local account use of blank passwords
# to console logon only": network logons; IIS's ClearText is one).
BLANK_PASSWORD_REFUSED: frozenset[int] = frozenset({3, 8})

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
        problem = 'must not contain any of " / \\ [ ] : ; | = , + * ? < > @'
    elif set(name) <= {".", " "}:
        problem = "must not consist only of periods and spaces"
    elif name.endswith("."):
        problem = "must not end with a period"
    if problem:
        raise OpError(
            "PolicyViolation",
            f"The account name '{name}' is not valid: a local account name {problem}",
            HR_INVALID_ACCOUNT_NAME,
        )


# The special characters the complexity rule counts (Microsoft docs, "Password must meet
# complexity requirements"); currency symbols such as the euro or the pound do not count.
COMPLEXITY_SPECIALS = frozenset("~!@#$%^&*_-+=`|\\(){}[]:;\"'<>,.?/")


def complexity_categories(password: str) -> int:
    """How many of the five categories of Windows' complexity rule a password uses: upper
    case, lower case, base-10 digits, the listed special characters, and letters with no
    case (Unicode alphabetic characters that are neither, such as CJK ideographs)."""
    return sum(
        [
            any(c.isupper() for c in password),
            any(c.islower() for c in password),
            any(c in "0123456789" for c in password),
            any(c in COMPLEXITY_SPECIALS for c in password),
            any(c.isalpha() and not c.isupper() and not c.islower() for c in password),
        ]
    )


def check_password(password: str, name: str, full_name: str, policy: PasswordPolicy) -> None:
    """Windows' length and complexity rules. The message never repeats the password."""
    problems: list[str] = []
    if len(password) < policy.min_length:
        problems.append(f"it is shorter than {policy.min_length} characters")
    if policy.complexity:
        if complexity_categories(password) < 3:
            problems.append(
                "it needs characters from three of: upper case, lower case, digits, symbols, "
                "letters without case"
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
    encoded = base64.b64encode(salt).decode() + "$" + base64.b64encode(digest).decode()
    return f"scrypt:{_SCRYPT['n']}${encoded}"


def password_matches(password: str, stored: str | None) -> bool:
    prefix, _, rest = (stored or "").partition("$")
    if prefix == "scrypt":
        n = _EARLIER_N
    elif prefix.startswith("scrypt:") and prefix[7:].isdigit():
        n = int(prefix[7:])
    else:
        return False
    if rest.count("$") != 1:
        return False
    salt_b64, digest_b64 = rest.split("$")
    digest = hashlib.scrypt(
        password.encode("utf-8"), salt=base64.b64decode(salt_b64), dklen=32, n=n, r=8, p=1
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

    @property
    def sid(self) -> str:
        """The domain's SID (stable for a name: the simulator makes no real one)."""
        digest = hashlib.sha256(self.name.lower().encode()).digest()
        parts = [int.from_bytes(digest[i : i + 4], "big") for i in (0, 4, 8)]
        return "S-1-5-21-" + "-".join(str(p) for p in parts)

    def account_sid(self, account: str) -> str | None:
        for index, name in enumerate(self.accounts):
            if name.lower() == account.lower():
                return f"{self.sid}-{1100 + index}"
        return None

    @classmethod
    def from_facts(cls, facts: dict[str, Any]) -> Domain | None:
        value = facts.get("domain")
        if not isinstance(value, dict) or not value.get("name"):
            return None
        return cls(str(value["name"]), tuple(str(a) for a in value.get("accounts") or ()))


# The properties of a local account that user.set changes, and a new account's values.
USER_PROPS = (
    "full_name",
    "description",
    "disabled",
    "password_never_expires",
    "user_cannot_change_password",
)


def _new_user() -> dict[str, Any]:
    return {
        "full_name": "",
        "description": "",
        "disabled": False,
        "password_never_expires": False,
        "user_cannot_change_password": False,
        "groups": [],
    }


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
        sam: dict[str, Any] | None = None,
    ) -> None:
        self.data = data
        # sam.json: the next relative id, kept apart from the accounts (see HostState.sam).
        self.sam = sam if sam is not None else {}
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
                "sid": f"{MACHINE_SID}-{500 if name == 'Administrator' else 501}",
            }
        return accounts.data

    # --- users --------------------------------------------------------------------

    def _key(self, name: str, kind: str = "users") -> str | None:
        """The stored spelling of a user's (or group's) name: names are case-insensitive."""
        bare = bare_name(name, self.computer).lower()
        for key in self.data[kind]:
            if key.lower() == bare:
                return str(key)
        return None

    def user(self, name: str) -> dict[str, Any] | None:
        key = self._key(name)
        return None if key is None else dict(self.data["users"][key])

    def _new_sid(self) -> str:
        """The next SID of this host: relative ids go up and are never given twice (an
        account deleted and made again under its name is another account)."""
        rid = int(self.sam.get("next_rid") or FIRST_RID)
        taken = {str(u.get("sid", "")) for u in self.data["users"].values()}
        while f"{MACHINE_SID}-{rid}" in taken:
            rid += 1
        self.sam["next_rid"] = rid + 1
        return f"{MACHINE_SID}-{rid}"

    def user_sid(self, key: str) -> str:
        """The SID of the account stored under ``key`` (given one now if an older state
        folder made it without)."""
        record: dict[str, Any] = self.data["users"][key]
        if not record.get("sid"):
            record["sid"] = self._new_sid()
        return str(record["sid"])

    def public(self, name: str) -> dict[str, Any]:
        user = self.user(name)
        if user is None:
            return {
                "exists": False,
                "name": bare_name(name, self.computer),
                **_new_user(),
                "bad_password_count": 0,
                "locked_out": False,
                "sid": None,
            }
        key = self._key(name)
        assert key is not None
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
            "sid": self.user_sid(key),
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
            record: dict[str, Any] = {"name": name, **_new_user(), "password_hash": None}
            # New-LocalUser (like net user /add) makes every new account a member of Users,
            # which the default folder ACLs grant read to (FACTS, "IIS request semantics").
            users_group = self._group_key("Users")
            if users_group is not None:
                record["groups"] = [users_group]
            record["sid"] = self._new_sid()
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
                record["password_last_set"] = self.now  # the maximum age counts from here
                record["password_must_change"] = False
                changed.append("password")
            self.request.just_set[record["name"].lower()] = password
        for prop in USER_PROPS:
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
        stored = record.get("password_hash")
        blank = stored is None and password == ""  # an account created with no password
        if not blank and not password_matches(password, stored):
            self._bad_attempt(record)
            return ERROR_LOGON_FAILURE
        if record.get("bad_password_count"):
            record["bad_password_count"] = 0
        return self._restriction(record, logon_type, blank)

    def _restriction(self, record: dict[str, Any], logon_type: int, blank: bool) -> int:
        """What refuses a logon whose password is right (module docstring's order), or 0."""
        if record.get("disabled"):
            return ERROR_ACCOUNT_DISABLED
        expires = record.get("account_expires")
        if expires is not None and self.now >= float(expires):
            return ERROR_ACCOUNT_EXPIRED
        if blank and logon_type in BLANK_PASSWORD_REFUSED:
            return ERROR_ACCOUNT_RESTRICTION
        if record.get("password_must_change"):
            return ERROR_PASSWORD_MUST_CHANGE
        last_set = record.get("password_last_set")
        max_age = self.policy.max_age_days * 86400
        if (
            not record.get("password_never_expires")
            and max_age > 0
            and last_set is not None
            and self.now - float(last_set) >= max_age
        ):
            return ERROR_PASSWORD_EXPIRED
        if not self.has_logon_right(record, logon_type):
            return ERROR_LOGON_TYPE_NOT_GRANTED
        return 0

    def token_names(self, record: dict[str, Any]) -> set[str]:
        """The names in a local account's logon token (lower case): itself, its groups,
        Everyone, and Users (Authenticated Users is a member of BUILTIN\\Users)."""
        names = {str(record["name"]), "Everyone", "Users"}
        names.update(str(g) for g in record.get("groups") or [])
        return {n.lower() for n in names}

    def logon_right_holders(self, right: str) -> list[str]:
        rights: dict[str, Any] = self.data.get("user_rights") or {}
        return list(rights.get(right, DEFAULT_LOGON_RIGHTS[right]))

    def has_logon_right(self, record: dict[str, Any], logon_type: int) -> bool:
        denied: set[int] = set()
        for right in record.get("deny_logon_rights") or []:
            denied |= DENY_RIGHTS.get(str(right), frozenset())
        if logon_type in denied:
            return False
        token = self.token_names(record)
        for right, types in LOGON_RIGHTS.items():
            if logon_type in types:
                holders = {
                    bare_name(h, self.computer).lower() for h in self.logon_right_holders(right)
                }
                return bool(token & holders)
        return True  # a logon type without a right of its own here (service, unlock)

    def grant_logon_right(self, principal: str, right: str, grant: bool = True) -> None:
        """Add (or remove) an account or group to a logon right (User Rights Assignment);
        the first change starts from the host's defaults."""
        if right not in LOGON_RIGHTS:
            raise ValueError(f"unknown logon right {right!r}: one of {sorted(LOGON_RIGHTS)}")
        holders = [h for h in self.logon_right_holders(right) if h.lower() != principal.lower()]
        self.data.setdefault("user_rights", {})[right] = [*holders, principal] if grant else holders

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
        return self._key(name, "groups")

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
        # "." is LogonUser's name for this computer, not LookupAccountName's: ".\x" is an
        # unknown domain there (the agent names the computer instead).
        if not sep or prefix.lower() in (self.computer.lower(), "builtin"):
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

    def sid_of_name(self, name: str) -> str | None:
        """The SID of an account name as lookup_account_name shows it (None: no account)."""
        for known, sid in WELL_KNOWN_SIDS.items():
            if known.lower() == name.lower():
                return sid
        prefix, sep, rest = name.rpartition("\\")
        if not sep:
            return None
        if prefix.lower() == "builtin":
            gkey = self._group_key(rest)
            return BUILTIN_GROUP_SIDS.get(gkey or "") if gkey else None
        if prefix.lower() in (".", self.computer.lower()):
            key = self._key(rest)
            return self.user_sid(key) if key is not None else None
        if self.domain is not None and prefix.lower() == self.domain.name.lower():
            return self.domain.account_sid(rest)
        return None

    def name_of_sid(self, sid: str) -> str | None:
        """LookupAccountSid: the account a SID names now (None: none, e.g. deleted)."""
        for name, known in WELL_KNOWN_SIDS.items():
            if known == sid:
                return name
        for group, known in BUILTIN_GROUP_SIDS.items():
            if known == sid:
                return f"BUILTIN\\{group}"
        for key, record in self.data["users"].items():
            if record.get("sid") == sid:
                return f"{self.computer}\\{key}"
        if self.domain is not None:
            for account in self.domain.accounts:
                if self.domain.account_sid(account) == sid:
                    return f"{self.domain.name}\\{account}"
        return None

    def resolve_sid(self, identity: str) -> str:
        """An ACE identity as the agent resolves it, to the SID the ACE holds: a SID string
        as it is (an account that may be gone), else the name as resolve_identity says."""
        if is_sid(identity):
            return identity
        name = self.resolve_identity(identity)
        sid = self.sid_of_name(name)
        if sid is None:
            raise OpError(
                "NotFound",
                f"Some or all identity references could not be translated: '{identity}'",
                0x80070534,  # ERROR_NONE_MAPPED
            )
        return sid

    def resolve_identity(self, identity: str) -> str:
        """An ACE identity as the agent resolves it: SIMIIS01\\bob, BUILTIN\\Users, NT
        AUTHORITY\\..., or a DOMAIN\\name given as such."""
        if identity.startswith(".\\"):
            # As agent.ps1's Resolve-Identity: ".\name" is this computer's account.
            identity = f"{self.computer}\\{identity[2:]}"
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
        ("NT AUTHORITY\\SYSTEM", "S-1-5-18", "FullControl"),
        ("BUILTIN\\Administrators", "S-1-5-32-544", "FullControl"),
        ("BUILTIN\\Users", "S-1-5-32-545", "ReadAndExecute"),
        ("CREATOR OWNER", "S-1-3-0", "FullControl"),
    ]
    aces = [
        {"identity": i, "sid": sid, "rights": r, "type": "Allow", "inherited": True}
        for i, sid, r in base
    ]
    return aces + list(extra or [])


class Folders:
    """acl.json: {normalised folder path: {"path": shown path, "aces": [...]}}.

    An ACE holds a SID (``identity`` keeps the name it was granted to, for a reader of the
    file). acl.get shows each ACE under the name its SID has now, or the SID itself when
    it names no account any more, as Windows shows an ACE of a deleted account."""

    def __init__(self, data: dict[str, Any], accounts: Accounts | None = None) -> None:
        self.data = data
        self.accounts = accounts

    def _sid(self, ace: dict[str, Any]) -> str:
        sid = ace.get("sid")
        if sid:
            return str(sid)
        # An ACE written by an older simulator: by name.
        name = str(ace.get("identity", ""))
        found = self.accounts.sid_of_name(name) if self.accounts is not None else None
        return found or name

    def _shown(self, ace: dict[str, Any]) -> dict[str, Any]:
        sid = self._sid(ace)
        name = self.accounts.name_of_sid(sid) if self.accounts is not None else None
        if name is None and not is_sid(sid):
            name = sid  # no SID known for it (an older state): the name as stored
        return {
            "identity": name or sid,
            "sid": sid,
            "rights": ace["rights"],
            "type": ace["type"],
            "inherited": bool(ace.get("inherited")),
        }

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

    def require(self, path: str) -> None:
        """NotFound for a folder that is not there (what changing its ACL meets)."""
        self._entry(path)

    def get(self, path: str) -> dict[str, Any]:
        # A missing folder is an answer, not an error: read batches go on (as agent.ps1).
        try:
            entry = self._entry(path)
        except OpError:
            return {"exists": False, "aces": []}
        return {"exists": True, "aces": [self._shown(a) for a in entry["aces"]]}

    def _put(self, path: str, aces: list[dict[str, Any]]) -> None:
        key = norm_folder(path).lower()
        for k in self.data:
            if k.lower() == key:
                self.data[k]["aces"] = aces
                return

    def grant(self, path: str, sid: str, rights: str, name: str = "") -> bool:
        aces: list[dict[str, Any]] = self._entry(path)["aces"]
        mine = [a for a in aces if self._explicit_allow_for(a, sid)]
        if len(mine) == 1 and mine[0]["rights"] == rights:
            return False
        # SetAccessRule semantics: the identity's explicit Allow rule is replaced.
        kept = [a for a in aces if not self._explicit_allow_for(a, sid)]
        kept.append(
            {
                "identity": name or sid,
                "sid": sid,
                "rights": rights,
                "type": "Allow",
                "inherited": False,
            }
        )
        self._put(path, kept)
        return True

    def revoke(self, path: str, sid: str) -> bool:
        aces: list[dict[str, Any]] = self._entry(path)["aces"]
        kept = [a for a in aces if not self._explicit_allow_for(a, sid)]
        if len(kept) == len(aces):
            return False
        self._put(path, kept)
        return True

    def _explicit_allow_for(self, ace: dict[str, Any], sid: str) -> bool:
        return not ace.get("inherited") and ace.get("type") == "Allow" and self._sid(ace) == sid
