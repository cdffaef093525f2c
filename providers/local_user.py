"""LocalUser: a local Windows account for certificate mappings, its groups and folder access.

The account a one-to-one or many-to-one mapping logs on as. The password is a secret: it
travels to the host only as JSON data, and the host only ever says whether it logs on
(so ``pulumi refresh`` notices a password changed behind Pulumi's back without reading
it). A rename is a replacement; a password change is an update. Group membership is
managed for the listed groups only. Delete removes the account and the access rules it
added; an account that existed before is adopted and left in place (only our rules go).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import pulumi
import pulumi.dynamic

from iis_clientcert.errors import ValidationError
from iis_clientcert.framework.base import Change, IisProvider, get_bool, get_list, get_str
from iis_clientcert.framework.inputs import connection_input, secret
from iis_clientcert.host import contract
from iis_clientcert.host.connection import Connection

KIND = "LocalUser"

SAM_FORBIDDEN = set('"/\\[]:;|=,+*?<>')
FOLDER_RIGHTS = ("Read", "ReadAndExecute", "Modify")
_WINDOWS_PATH = re.compile(r"^[A-Za-z]:\\")


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
    return value


def password_problems(
    password: str, account: str, min_length: int, complexity: bool, full_name: str = ""
) -> list[str]:
    """What the host's password policy would refuse, in words (never the password)."""
    problems = []
    if len(password) < min_length:
        problems.append(f"is shorter than the host's minimum of {min_length} characters")
    if complexity:
        classes = sum(
            [
                any(c.islower() for c in password),
                any(c.isupper() for c in password),
                any(c.isdigit() for c in password),
                any(not c.isalnum() for c in password),
            ]
        )
        if classes < 3:
            problems.append(
                "needs characters from three of: lower case, upper case, digits, symbols"
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
    password_valid: bool = False
    min_length: int = 0
    complexity: bool = False
    # folder path -> rights granted to this account explicitly
    access: dict[str, list[str]] = field(default_factory=dict)
    missing_folders: tuple[str, ...] = ()


def _same_identity(identity: str, name: str) -> bool:
    return identity.rsplit("\\", 1)[-1].lower() == name.lower()


def _has_rights(granted: list[str], wanted: str) -> bool:
    return any(wanted.lower() in [p.strip().lower() for p in g.split(",")] for g in granted)


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
                    contract.make_op(
                        "user.set", name=desired.name, password=desired.password, **props
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
        if not current.password_valid:
            args["password"] = desired.password
            what.append("password")
        if args:
            changes.append(
                Change(
                    f"update account {desired.name!r}: {', '.join(what)}",
                    [contract.make_op("user.set", name=desired.name, **args)],
                )
            )
        held = {g.lower() for g in current.groups}
        access = current.access
    for group in desired.groups:
        if group.lower() not in held:
            changes.append(
                Change(
                    f"add {desired.name!r} to group {group!r}",
                    [contract.make_op("group.add_member", group=group, member=desired.name)],
                )
            )
    wanted_groups = {g.lower() for g in desired.groups}
    for group in (previous or {}).get("groups") or []:
        if group.lower() not in wanted_groups and group.lower() in held:
            changes.append(
                Change(
                    f"remove {desired.name!r} from group {group!r} (no longer listed)",
                    [contract.make_op("group.remove_member", group=group, member=desired.name)],
                )
            )
    for entry in desired.folder_access:
        if not _has_rights(access.get(entry.path) or [], entry.rights):
            changes.append(
                Change(
                    f"grant {entry.rights} on {entry.path!r} to {desired.name!r}",
                    [
                        contract.make_op(
                            "acl.grant", path=entry.path, identity=desired.name, rights=entry.rights
                        )
                    ],
                )
            )
    wanted_paths = {e.path.lower() for e in desired.folder_access}
    for old in (previous or {}).get("folder_access") or []:
        path = str(old.get("path", ""))
        if path.lower() not in wanted_paths and access.get(path):
            changes.append(
                Change(
                    f"revoke {desired.name!r} on {path!r} (no longer listed)",
                    [contract.make_op("acl.revoke", path=path, identity=desired.name)],
                )
            )
    return changes


class LocalUserProvider(IisProvider[UserDesired, UserCurrent]):
    kind = KIND
    replace_on = ("name",)
    computed = ("adopted", "password_valid")

    def validate(self, inputs: Mapping[str, Any]) -> UserDesired:
        name = validate_account_name(KIND, get_str(KIND, inputs, "name"))
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
            full_name=get_str(KIND, inputs, "full_name", default="", required=False, max_len=256),
            description=get_str(
                KIND, inputs, "description", default="", required=False, max_len=48
            ),
            password_never_expires=get_bool(KIND, inputs, "password_never_expires", True),
            user_cannot_change_password=get_bool(KIND, inputs, "user_cannot_change_password", True),
            disabled=get_bool(KIND, inputs, "disabled", False),
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

    def read_ops(self, desired: UserDesired) -> list[dict[str, Any]]:
        ops = [
            contract.make_op("host.facts"),
            contract.make_op("user.get", name=desired.name),
            contract.make_op("user.verify_password", name=desired.name, password=desired.password),
        ]
        ops += [contract.make_op("acl.get", path=f.path) for f in desired.folder_access]
        return ops

    def parse_current(self, desired: UserDesired, results: list[Any]) -> UserCurrent:
        facts, user, verify = results[0], results[1], results[2]
        policy = facts.get("password_policy") or {}
        access: dict[str, list[str]] = {}
        missing = tuple(
            entry.path
            for entry, acl in zip(desired.folder_access, results[3:], strict=True)
            if acl.get("exists") is False
        )
        for entry, acl in zip(desired.folder_access, results[3:], strict=True):
            access[entry.path] = [
                str(ace.get("rights", ""))
                for ace in acl.get("aces", [])
                if ace.get("type", "Allow") == "Allow"
                and not ace.get("inherited")
                and _same_identity(str(ace.get("identity", "")), desired.name)
            ]
        if not user.get("exists"):
            return UserCurrent(
                exists=False,
                min_length=int(policy.get("min_length", 0)),
                complexity=bool(policy.get("complexity", False)),
                access=access,
                missing_folders=missing,
            )
        return UserCurrent(
            exists=True,
            full_name=str(user.get("full_name") or ""),
            description=str(user.get("description") or ""),
            disabled=bool(user.get("disabled")),
            password_never_expires=bool(user.get("password_never_expires")),
            user_cannot_change_password=bool(user.get("user_cannot_change_password")),
            groups=tuple(str(g) for g in user.get("groups") or []),
            # A disabled account with the right password answers ERROR_ACCOUNT_DISABLED,
            # not a logon failure: the password is right.
            password_valid=bool(verify.get("valid"))
            or str(verify.get("hresult") or "").upper() == "0X80070533",
            min_length=int(policy.get("min_length", 0)),
            complexity=bool(policy.get("complexity", False)),
            access=access,
            missing_folders=missing,
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
        if current.exists and current.password_valid:
            return  # the password is not going to be set
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

    def plan(self, current: UserCurrent, desired: UserDesired) -> list[Change]:
        return plan(current, desired)

    def plan_from(
        self, current: UserCurrent, desired: UserDesired, previous: Mapping[str, Any] | None
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
        return {"adopted": adopted, "password_valid": after.password_valid}

    def exists(self, current: UserCurrent) -> bool:
        return current.exists

    def live_inputs(
        self, desired: UserDesired, current: UserCurrent, stored: Mapping[str, Any]
    ) -> dict[str, Any]:
        held = {g.lower() for g in current.groups}
        return {
            "name": desired.name,
            # Never read back: a password that no longer logs on shows as a change.
            "password": desired.password if current.password_valid else "",
            "full_name": current.full_name,
            "description": current.description,
            "password_never_expires": current.password_never_expires,
            "user_cannot_change_password": current.user_cannot_change_password,
            "disabled": current.disabled,
            "groups": [g for g in desired.groups if g.lower() in held],
            "folder_access": [
                {"path": f.path, "rights": f.rights}
                for f in desired.folder_access
                if _has_rights(current.access.get(f.path) or [], f.rights)
            ],
        }

    def delete_changes(
        self, desired: UserDesired, current: UserCurrent, stored: Mapping[str, Any]
    ) -> list[Change]:
        changes = [
            Change(
                f"revoke {desired.name!r} on {f.path!r}",
                [contract.make_op("acl.revoke", path=f.path, identity=desired.name)],
            )
            for f in desired.folder_access
            if current.access.get(f.path)
        ]
        if current.exists and not stored.get("adopted"):
            changes.append(
                Change(
                    f"delete account {desired.name!r}",
                    [contract.make_op("user.delete", name=desired.name)],
                )
            )
        return changes


class LocalUser(pulumi.dynamic.Resource):
    """A local Windows account (see README, "LocalUser")."""

    name: pulumi.Output[str]
    adopted: pulumi.Output[bool]
    password_valid: pulumi.Output[bool]

    def __init__(
        self,
        resource_name: str,
        *,
        connection: Any,
        name: pulumi.Input[str],
        password: pulumi.Input[str],
        full_name: pulumi.Input[str] | None = None,
        description: pulumi.Input[str] | None = None,
        password_never_expires: pulumi.Input[bool] = True,
        user_cannot_change_password: pulumi.Input[bool] = True,
        disabled: pulumi.Input[bool] = False,
        groups: pulumi.Input[list[str]] | None = None,
        folder_access: pulumi.Input[list[dict[str, str]]] | None = None,
        opts: pulumi.ResourceOptions | None = None,
    ) -> None:
        props = {
            "connection": connection_input(connection),
            "name": name,
            "password": secret(password),
            "full_name": full_name,
            "description": description,
            "password_never_expires": password_never_expires,
            "user_cannot_change_password": user_cannot_change_password,
            "disabled": disabled,
            "groups": groups,
            "folder_access": folder_access,
            "adopted": None,
            "password_valid": None,
        }
        super().__init__(LocalUserProvider(), resource_name, props, opts)
