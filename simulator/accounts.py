"""Local accounts (users.json) and folder ACLs (acl.json) with Windows' rules.

users.json keeps a salted scrypt hash of each password, never the password. SAM account
names and passwords are checked like Windows does (NERR codes surfaced as HRESULTs).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import re
from dataclasses import dataclass
from pathlib import PureWindowsPath
from typing import Any

from iis_clientcert_simulator.errors import (
    HR_ACCOUNT_DISABLED,
    HR_ALREADY_EXISTS,
    HR_FILE_NOT_FOUND,
    HR_INVALID_ACCOUNT_NAME,
    HR_LOGON_FAILURE,
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
    ) -> None:
        self.data = data
        self.computer = computer
        self.policy = policy
        self.domain = domain
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

    def public(self, name: str) -> dict[str, Any]:
        user = self.user(name)
        if user is None:
            return {"exists": False, "name": bare_name(name, self.computer), **_new_user()}
        return {
            "exists": True,
            "name": user["name"],
            "full_name": user.get("full_name", ""),
            "description": user.get("description", ""),
            "disabled": bool(user.get("disabled")),
            "password_never_expires": bool(user.get("password_never_expires")),
            "user_cannot_change_password": bool(user.get("user_cannot_change_password")),
            "groups": list(user.get("groups", [])),
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
        else:
            assert key is not None
            record = dict(self.data["users"][key])
        changed: list[str] = []
        full_name = props.get("full_name", record["full_name"])
        if password is not None:
            check_password(password, record["name"], full_name, self.policy)
            if not password_matches(password, record.get("password_hash")):
                record["password_hash"] = hash_password(password)
                changed.append("password")
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

    def verify(self, name: str, password: str) -> dict[str, Any]:
        """LogonUser: {valid, hresult}; a wrong name or password is 0x8007052E."""
        user = self.user(name)
        if user is None or not password_matches(password, user.get("password_hash")):
            return {"valid": False, "hresult": f"0x{HR_LOGON_FAILURE:08X}"}
        if user.get("disabled"):
            return {"valid": False, "hresult": f"0x{HR_ACCOUNT_DISABLED:08X}"}
        return {"valid": True, "hresult": None}

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
