"""LocalUser: a local Windows account for certificate mappings, its groups and folder access.

The account a one-to-one or many-to-one mapping logs on as. The password is a secret: it
travels to the host only as JSON data, and the host only ever says whether it logs on
(so ``pulumi refresh`` notices a password changed behind Pulumi's back without reading
it). That logon is tried only while it cannot lock the account (contract.py, "Logons":
below half the host's lockout threshold, once per account per run); otherwise the
password is "not verified", the last verdict stands and a warning says why.

A rename is a replacement; a password change is an update. Group membership is managed
for the listed groups only. Delete removes the account and the access rules it added; an
account that existed before is adopted and left in place (only our rules go).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import pulumi

from iis_clientcert.errors import ValidationError
from iis_clientcert.framework.base import Change, IisProvider
from iis_clientcert.framework.inputs import Input, Inputs, get_list, get_str
from iis_clientcert.framework.resource import TYPE_MODULE, IisResource
from iis_clientcert.host import contract
from iis_clientcert.host.client import ReadKey, ReadPlan, Reads
from iis_clientcert.host.connection import Connection

KIND = "LocalUser"

SAM_FORBIDDEN = set('"/\\[]:;|=,+*?<>')
FOLDER_RIGHTS = ("Read", "ReadAndExecute", "Modify")
_WINDOWS_PATH = re.compile(r"^[A-Za-z]:\\")

INPUTS = Inputs(
    KIND,
    Input("name", "str", "The account name (at most 20 characters)", required=True, replace=True),
    Input("password", "str", "The account's password", required=True, secret=True),
    Input("full_name", "str", "The account's full name", default=""),
    Input("description", "str", "The account's description (at most 48 characters)", default=""),
    Input("password_never_expires", "bool", "The password never expires", default=True),
    Input("user_cannot_change_password", "bool", "The user cannot change it", default=True),
    Input("disabled", "bool", "The account is disabled", default=False),
    Input(
        "groups",
        "list",
        "Local groups the account is a member of (only these are managed)",
        default=[],
    ),
    Input(
        "folder_access",
        "list",
        "Folders the account may read: [{path, rights}] with rights Read, ReadAndExecute "
        "(default) or Modify",
        default=[],
    ),
)

LOCKED_OUT = contract.logon_hresult(contract.ERROR_ACCOUNT_LOCKED_OUT)

FACTS = ReadKey[contract.HostFactsResult]("facts")
USER = ReadKey[contract.UserGetResult]("user")
PASSWORD = ReadKey[contract.VerifyPasswordResult]("password")
# What a read without a logon knows of the password (delete_read_plan).
_NOT_VERIFIED: contract.VerifyPasswordResult = {"valid": False, "hresult": None, "checked": False}


def _acl(path: str) -> ReadKey[contract.AclGetResult]:
    return ReadKey(f"acl {path}")


def validate_account_name(kind: str, value: str, key: str = "name") -> str:
    """SAM account-name rules: Windows refuses anything else with an unhelpful error."""
    bad = sorted({ch for ch in value if ch in SAM_FORBIDDEN or ord(ch) < 32})
    if bad:
        shown = " ".join(repr(ch) for ch in bad)
        raise ValidationError(
            kind,
            key,
            value,
            f"contains characters Windows does not allow in an account name: {shown}",
            'Account names cannot contain " / \\ [ ] : ; | = , + * ? < > or control characters.',
        )
    if len(value) > 20:
        raise ValidationError(
            kind, key, value, f"is {len(value)} characters long; Windows allows at most 20"
        )
    if not value.strip(" ."):
        raise ValidationError(kind, key, value, "cannot consist only of dots and spaces")
    # SAM's rule for local accounts (Microsoft docs, New-LocalUser -Name: no "@"; "Naming
    # conventions in Active Directory": no final period); Windows answers 0x8007089A.
    if "@" in value:
        raise ValidationError(
            kind,
            key,
            value,
            "contains '@', which Windows does not allow in a local account name",
            "Use the account name alone (user@domain is a sign-in name, not an account).",
        )
    if value.endswith("."):
        raise ValidationError(
            kind, key, value, "ends with a period, which Windows does not allow", "Drop it."
        )
    return value


# The special characters Windows' complexity rule counts (Microsoft docs, "Password must
# meet complexity requirements"); currency symbols such as the euro or pound do not.
COMPLEXITY_SPECIALS = frozenset("~!@#$%^&*_-+=`|\\(){}[]:;\"'<>,.?/")


def complexity_categories(password: str) -> int:
    """How many of the rule's five categories a password uses: upper case, lower case,
    digits 0-9, the listed special characters, and letters without case (Unicode letters
    that are neither upper nor lower case, such as CJK ideographs)."""
    return sum(
        [
            any(c.isupper() for c in password),
            any(c.islower() for c in password),
            any(c in "0123456789" for c in password),
            any(c in COMPLEXITY_SPECIALS for c in password),
            any(c.isalpha() and not (c.isupper() or c.islower()) for c in password),
        ]
    )


def password_problems(
    password: str, account: str, min_length: int, complexity: bool, full_name: str = ""
) -> list[str]:
    """What the host's password policy would refuse, in words (never the password)."""
    problems = []
    if len(password) < min_length:
        problems.append(f"is shorter than the host's minimum of {min_length} characters")
    if complexity:
        if complexity_categories(password) < 3:
            problems.append(
                "needs characters from three of: lower case, upper case, digits, symbols "
                "(currency symbols do not count), letters without case"
            )
        if len(account) >= 3 and account.lower() in password.lower():
            problems.append("must not contain the account name")
        # Windows also refuses any part of the full name of three or more characters.
        parts = [p for p in re.split(r"[,.\-_#\s]+", full_name) if len(p) >= 3]
        if any(part.lower() in password.lower() for part in parts):
            problems.append("must not contain a part of the full name")
    return problems


@dataclass(frozen=True)
class FolderAccess:
    path: str
    rights: str


@dataclass(frozen=True)
class UserDesired:
    name: str
    password: str
    full_name: str
    description: str
    password_never_expires: bool
    user_cannot_change_password: bool
    disabled: bool
    groups: tuple[str, ...]
    folder_access: tuple[FolderAccess, ...]


@dataclass(frozen=True)
class UserCurrent:
    exists: bool
    full_name: str = ""
    description: str = ""
    disabled: bool = False
    password_never_expires: bool = False
    user_cannot_change_password: bool = False
    groups: tuple[str, ...] = ()
    # Whether the desired password is the account's: None when no logon could say so.
    password_valid: bool | None = False
    password_hresult: str | None = None  # why the logon failed (even with the right one)
    bad_password_count: int = 0
    locked_out: bool = False
    lockout_threshold: int = 0
    min_length: int = 0
    complexity: bool = False
    # folder path -> rights granted to this account explicitly
    access: dict[str, list[str]] = field(default_factory=dict)
    missing_folders: tuple[str, ...] = ()
    # The account's SID, and per folder the SIDs that hold an explicit Allow rule there:
    # ACEs hold SIDs, so this account's rules are found by its SID (never by a name a
    # domain account may share), and a deleted account's rules by the SID it had.
    sid: str | None = None
    granted_sids: dict[str, tuple[str, ...]] = field(default_factory=dict)


def _orphan_revokes(
    current: UserCurrent, name: str, old_sid: Any, paths: list[str]
) -> list[Change]:
    """Rules of the account this resource made before, if that account is gone (deleted,
    or deleted and made again under the same name, with a new SID): by its SID, the one
    way to name them now (issue 10, point 13 g)."""
    if not isinstance(old_sid, str) or not old_sid or old_sid == current.sid:
        return []
    changes = []
    seen: set[str] = set()
    for path in paths:
        if path.lower() in seen or old_sid not in current.granted_sids.get(path, ()):
            continue
        seen.add(path.lower())
        changes.append(
            Change(
                f"revoke the rules of the deleted account {name!r} ({old_sid}) on {path!r}",
                [contract.acl_revoke(path, old_sid)],
            )
        )
    return changes


def _has_rights(granted: list[str], wanted: str) -> bool:
    return any(wanted.lower() in [p.strip().lower() for p in g.split(",")] for g in granted)


def _password_to_set(
    current: UserCurrent, desired: UserDesired, previous: Mapping[str, Any] | None
) -> bool:
    """Whether to set the password: it does not log on, or it could not be verified and
    the last run knows it changed (another input, or a refresh that found it drifted)."""
    if current.password_valid is not None:
        return not current.password_valid
    if previous is None:
        return False  # nothing known either way: leave the account's password alone
    return previous.get("password_valid") is False or previous.get("password") != desired.password


def plan(
    current: UserCurrent, desired: UserDesired, previous: Mapping[str, Any] | None = None
) -> list[Change]:
    changes: list[Change] = []
    props = {
        "full_name": desired.full_name,
        "description": desired.description,
        "disabled": desired.disabled,
        "password_never_expires": desired.password_never_expires,
        "user_cannot_change_password": desired.user_cannot_change_password,
    }
    if not current.exists:
        changes.append(
            Change(
                f"create account {desired.name!r}",
                [
                    contract.user_set(
                        desired.name,
                        password=desired.password,
                        full_name=desired.full_name,
                        description=desired.description,
                        disabled=desired.disabled,
                        password_never_expires=desired.password_never_expires,
                        user_cannot_change_password=desired.user_cannot_change_password,
                    )
                ],
            )
        )
        held: set[str] = set()
        access: dict[str, list[str]] = {}
    else:
        differing = {k: v for k, v in props.items() if getattr(current, k) != v}
        args: dict[str, Any] = dict(differing)
        what = sorted(differing)
        if _password_to_set(current, desired, previous):
            args["password"] = desired.password
            what.append("password")
        if args:
            changes.append(
                Change(
                    f"update account {desired.name!r}: {', '.join(what)}",
                    [contract.user_set(desired.name, **args)],
                )
            )
        held = {g.lower() for g in current.groups}
        access = current.access
    for group in desired.groups:
        if group.lower() not in held:
            changes.append(
                Change(
                    f"add {desired.name!r} to group {group!r}",
                    [contract.group_add_member(group, desired.name)],
                )
            )
    wanted_groups = {g.lower() for g in desired.groups}
    for group in (previous or {}).get("groups") or []:
        if group.lower() not in wanted_groups and group.lower() in held:
            changes.append(
                Change(
                    f"remove {desired.name!r} from group {group!r} (no longer listed)",
                    [contract.group_remove_member(group, desired.name)],
                )
            )
    previous_paths = [str(f.get("path", "")) for f in (previous or {}).get("folder_access") or []]
    changes.extend(
        _orphan_revokes(
            current,
            desired.name,
            (previous or {}).get("sid"),
            [e.path for e in desired.folder_access] + previous_paths,
        )
    )
    for entry in desired.folder_access:
        if not _has_rights(access.get(entry.path) or [], entry.rights):
            changes.append(
                Change(
                    f"grant {entry.rights} on {entry.path!r} to {desired.name!r}",
                    [contract.acl_grant(entry.path, desired.name, entry.rights)],
                )
            )
    wanted_paths = {e.path.lower() for e in desired.folder_access}
    for old in (previous or {}).get("folder_access") or []:
        path = str(old.get("path", ""))
        if path.lower() not in wanted_paths and access.get(path):
            changes.append(
                Change(
                    f"revoke {desired.name!r} on {path!r} (no longer listed)",
                    [contract.acl_revoke(path, desired.name)],
                )
            )
    return changes


class LocalUserProvider(IisProvider[UserDesired, UserCurrent]):
    kind = KIND
    inputs = INPUTS
    computed = ("adopted", "password_valid", "sid")

    def validate(self, inputs: Mapping[str, Any]) -> UserDesired:
        name = validate_account_name(KIND, INPUTS.get_str(inputs, "name"))
        password = inputs.get("password")
        if not isinstance(password, str) or not password:
            raise ValidationError(
                KIND, "password", None, "is required", "Set it with `pulumi config set --secret`."
            )
        groups: list[str] = []
        for i, group in enumerate(get_list(KIND, inputs, "groups")):
            if not isinstance(group, str) or not group.strip():
                raise ValidationError(KIND, f"groups[{i}]", group, "must be a group name")
            if any(ch in SAM_FORBIDDEN - {" "} or ord(ch) < 32 for ch in group):
                raise ValidationError(KIND, f"groups[{i}]", group, "is not a valid group name")
            if group.lower() not in [g.lower() for g in groups]:
                groups.append(group)
        folders: list[FolderAccess] = []
        for i, entry in enumerate(get_list(KIND, inputs, "folder_access")):
            key = f"folder_access[{i}]"
            if not isinstance(entry, Mapping):
                raise ValidationError(KIND, key, entry, "must be {path, rights}")
            path = get_str(KIND, entry, "path", prefix=f"{key}.")
            if not _WINDOWS_PATH.match(path) or any(ch in path for ch in '<>"|?*\x00'):
                raise ValidationError(
                    KIND,
                    f"{key}.path",
                    path,
                    "must be an absolute local folder such as C:\\inetpub\\shop",
                )
            rights = get_str(KIND, entry, "rights", default="ReadAndExecute", prefix=f"{key}.")
            canonical = {r.lower(): r for r in FOLDER_RIGHTS}.get(rights.lower())
            if canonical is None:
                raise ValidationError(
                    KIND, f"{key}.rights", rights, "is not one of " + ", ".join(FOLDER_RIGHTS)
                )
            if any(f.path.lower() == path.lower() for f in folders):
                raise ValidationError(KIND, f"{key}.path", path, "is listed twice")
            folders.append(FolderAccess(path.rstrip("\\") or path, canonical))
        return UserDesired(
            name=name,
            password=password,
            full_name=INPUTS.get_str(inputs, "full_name", max_len=256),
            description=INPUTS.get_str(inputs, "description", max_len=48),
            password_never_expires=INPUTS.get_bool(inputs, "password_never_expires"),
            user_cannot_change_password=INPUTS.get_bool(inputs, "user_cannot_change_password"),
            disabled=INPUTS.get_bool(inputs, "disabled"),
            groups=tuple(groups),
            folder_access=tuple(folders),
        )

    def normalised_inputs(self, desired: UserDesired) -> dict[str, Any]:
        return {
            "name": desired.name,
            "password": desired.password,
            "full_name": desired.full_name,
            "description": desired.description,
            "password_never_expires": desired.password_never_expires,
            "user_cannot_change_password": desired.user_cannot_change_password,
            "disabled": desired.disabled,
            "groups": list(desired.groups),
            "folder_access": [{"path": f.path, "rights": f.rights} for f in desired.folder_access],
        }

    def resource_id(self, connection: Connection, desired: UserDesired) -> str:
        return f"{connection.authority}/{desired.name}"

    def read_plan(self, desired: UserDesired) -> ReadPlan:
        reads = (
            ReadPlan()
            .add(FACTS, contract.host_facts())
            .add(USER, contract.user_get(desired.name))
            .add(PASSWORD, contract.user_verify_password(desired.name, desired.password))
        )
        for entry in desired.folder_access:
            reads.add(_acl(entry.path), contract.acl_get(entry.path))
        return reads

    def delete_read_plan(self, desired: UserDesired) -> ReadPlan:
        # No logon: a delete needs the account and its folder rules, not its password.
        reads = (
            ReadPlan().add(FACTS, contract.host_facts()).add(USER, contract.user_get(desired.name))
        )
        for entry in desired.folder_access:
            reads.add(_acl(entry.path), contract.acl_get(entry.path))
        return reads

    def parse_current(self, desired: UserDesired, reads: Reads) -> UserCurrent:
        facts = reads[FACTS]
        policy = facts["password_policy"]
        user = reads[USER]
        verify = reads.get(PASSWORD, _NOT_VERIFIED)
        acls = {entry.path: reads[_acl(entry.path)] for entry in desired.folder_access}
        missing = tuple(path for path, acl in acls.items() if not acl["exists"])
        explicit = {
            path: [a for a in acl["aces"] if a["type"] == "Allow" and not a["inherited"]]
            for path, acl in acls.items()
        }
        granted = {path: tuple(a["sid"] for a in aces) for path, aces in explicit.items()}
        sid = user["sid"] if user["exists"] else None
        # By SID: CONTOSO\name (a domain account of the same name) is not this account.
        access = {
            path: [a["rights"] for a in aces if sid is not None and a["sid"] == sid]
            for path, aces in explicit.items()
        }
        if not user["exists"]:
            return UserCurrent(
                exists=False,
                min_length=policy["min_length"],
                complexity=policy["complexity"],
                access=access,
                missing_folders=missing,
                granted_sids=granted,
            )
        return UserCurrent(
            exists=True,
            full_name=user["full_name"],
            description=user["description"],
            disabled=user["disabled"],
            password_never_expires=user["password_never_expires"],
            user_cannot_change_password=user["user_cannot_change_password"],
            groups=tuple(user["groups"]),
            # The contract's one classification: a disabled account, or one denied this
            # logon type, with the right password is a right password.
            password_valid=verify["valid"] if verify["checked"] else None,
            password_hresult=verify["hresult"],
            bad_password_count=user["bad_password_count"],
            locked_out=user["locked_out"],
            lockout_threshold=facts["lockout_policy"]["threshold"],
            min_length=policy["min_length"],
            complexity=policy["complexity"],
            access=access,
            missing_folders=missing,
            sid=sid,
            granted_sids=granted,
        )

    def preflight(self, current: UserCurrent, desired: UserDesired) -> None:
        for i, entry in enumerate(desired.folder_access):
            if entry.path in current.missing_folders:
                raise ValidationError(
                    KIND,
                    f"folder_access[{i}].path",
                    entry.path,
                    "does not exist on the host",
                    "Create the site folder first, or correct the path.",
                )
        if current.exists and current.password_valid is not False:
            return  # the password is right, or unknown and then set only if it changed
        problems = password_problems(
            desired.password,
            desired.name,
            current.min_length,
            current.complexity,
            desired.full_name,
        )
        if problems:
            raise ValidationError(
                KIND,
                "password",
                None,
                "does not meet the host's password policy: " + "; ".join(problems),
                "Choose a longer password with mixed character classes and set it with "
                "`pulumi config set --secret`.",
            )

    def plan(
        self,
        current: UserCurrent,
        desired: UserDesired,
        previous: Mapping[str, Any] | None = None,
    ) -> list[Change]:
        return plan(current, desired, previous)

    def outputs(
        self,
        desired: UserDesired,
        before: UserCurrent | None,
        after: UserCurrent,
        previous: Mapping[str, Any] | None,
    ) -> dict[str, Any]:
        adopted = before.exists if before is not None else bool((previous or {}).get("adopted"))
        valid = after.password_valid
        if valid is None:
            # Not verified this time: the last verdict stands (a drift found stays found).
            valid = (previous or {}).get("password_valid")
        # The SID of the account while it exists; the last one known once it is gone (its
        # folder rules can then still be found and revoked).
        sid = after.sid if after.exists else (previous or {}).get("sid")
        return {"adopted": adopted, "password_valid": valid, "sid": sid}

    def exists(self, current: UserCurrent) -> bool:
        return current.exists

    def leftovers(self, current: UserCurrent, stored: Mapping[str, Any]) -> bool:
        # The account was deleted behind Pulumi's back, its folder rules were not: a refresh
        # that forgot the resource would forget the SID that alone names them. Kept, the
        # resource shows drift; up makes the account again and replaces them, destroy
        # removes them.
        paths = [str(f.get("path", "")) for f in stored.get("folder_access") or []]
        return not current.exists and bool(_orphan_revokes(current, "", stored.get("sid"), paths))

    def stale_inputs(self, olds: Mapping[str, Any]) -> list[str]:
        # A refresh found that the password no longer logs on: `up` sets it again.
        return ["password"] if olds.get("password_valid") is False else []

    def notices(self, desired: UserDesired, current: UserCurrent) -> list[str]:
        if not current.exists:
            return []
        if current.password_valid is None:
            if current.locked_out or current.password_hresult == LOCKED_OUT:
                why = "the account is locked out (too many logons with a wrong password)"
            elif current.lockout_threshold > 0 and not contract.logon_guard_allows(
                current.bad_password_count, current.lockout_threshold
            ):
                why = (
                    f"the account has {current.bad_password_count} of "
                    f"{current.lockout_threshold} bad logons that lock it, and another try "
                    "could lock it"
                )
            else:
                why = "the host did not try a logon (its bad-logon count could not be read)"
            return [
                f"the password of {desired.name!r} was not verified: {why}. It may have "
                "drifted; the last verdict stands until a logon is safe to try."
            ]
        if current.password_valid and current.password_hresult:
            explained = contract.explain_hresult(current.password_hresult)
            meaning = f"{explained.name}: {explained.meaning}" if explained else "refused"
            return [
                f"the password of {desired.name!r} is right, but a network logon is refused "
                f"({current.password_hresult} {meaning})"
            ]
        return []

    def live_inputs(
        self, desired: UserDesired, current: UserCurrent, stored: Mapping[str, Any]
    ) -> dict[str, Any]:
        held = {g.lower() for g in current.groups}
        if current.exists:
            kept = [
                f
                for f in desired.folder_access
                if _has_rights(current.access.get(f.path) or [], f.rights)
            ]
        else:
            # The account is gone (leftovers): its rules are still there, under the SID it
            # had. They stay listed, so a destroy after this refresh still knows where to
            # revoke them; the drift shows in password_valid (no account logs on).
            old_sid = stored.get("sid")
            kept = [
                f for f in desired.folder_access if old_sid in current.granted_sids.get(f.path, ())
            ]
        return {
            "name": desired.name,
            # Never read back, and kept (so later reads can try it again): a password that
            # no longer logs on shows in password_valid, and the diff names it.
            "password": desired.password,
            "full_name": current.full_name,
            "description": current.description,
            "password_never_expires": current.password_never_expires,
            "user_cannot_change_password": current.user_cannot_change_password,
            "disabled": current.disabled,
            "groups": [g for g in desired.groups if g.lower() in held],
            "folder_access": [{"path": f.path, "rights": f.rights} for f in kept],
        }

    def delete_changes(
        self, desired: UserDesired, current: UserCurrent, stored: Mapping[str, Any]
    ) -> list[Change]:
        changes = [
            Change(
                f"revoke {desired.name!r} on {f.path!r}",
                [contract.acl_revoke(f.path, desired.name)],
            )
            for f in desired.folder_access
            if current.access.get(f.path)
        ]
        # The account was deleted behind our back: its rules are left under its SID.
        changes += _orphan_revokes(
            current, desired.name, stored.get("sid"), [f.path for f in desired.folder_access]
        )
        if current.exists and not stored.get("adopted"):
            changes.append(
                Change(
                    f"delete account {desired.name!r}",
                    [contract.user_delete(desired.name)],
                )
            )
        return changes


class LocalUser(IisResource, module=TYPE_MODULE, name="LocalUser"):
    __doc__ = INPUTS.docstring('A local Windows account (see README, "LocalUser").')

    name: pulumi.Output[str]
    adopted: pulumi.Output[bool]
    password_valid: pulumi.Output[bool | None]
    sid: pulumi.Output[str | None]

    def __init__(
        self,
        resource_name: str,
        *,
        connection: Any,
        name: pulumi.Input[str],
        password: pulumi.Input[str],
        full_name: pulumi.Input[str] | None = None,
        description: pulumi.Input[str] | None = None,
        password_never_expires: pulumi.Input[bool] | None = None,
        user_cannot_change_password: pulumi.Input[bool] | None = None,
        disabled: pulumi.Input[bool] | None = None,
        groups: pulumi.Input[list[str]] | None = None,
        folder_access: pulumi.Input[list[dict[str, str]]] | None = None,
        opts: pulumi.ResourceOptions | None = None,
    ) -> None:
        props = INPUTS.props(
            connection,
            LocalUserProvider.computed,
            name=name,
            password=password,
            full_name=full_name,
            description=description,
            password_never_expires=password_never_expires,
            user_cannot_change_password=user_cannot_change_password,
            disabled=disabled,
            groups=groups,
            folder_access=folder_access,
        )
        super().__init__(LocalUserProvider(), resource_name, props, opts)
