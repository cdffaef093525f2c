"""CertificateMapping: a site's whole iisClientCertificateMappingAuthentication section.

Owned authoritatively, like hand-written config that starts each collection with
``<clear />``: entries found on the host that the program does not declare are drift and
``up`` removes them. Certificates arrive in any form (PEM, DER, PFX, base64 with line
breaks) and are written as the single-line base64 DER IIS compares byte for byte; a blob
that is cut or badly joined is what makes IIS answer 401.1 with 0x80093102.

Passwords come in one secret map ``passwords`` keyed by user name (an account has one
password), so the mapping lists stay readable in previews: each one-to-one entry shows
thumbprint, subject and user; the certificates themselves sit in a separate map.
After writing, every mapping's logon is tried on the host, so a wrong password
(0x8007052E) fails ``pulumi up`` instead of every request later. Logons are tried only
while they cannot lock the account (contract.py, "Logons"); a stored password found not
to log on is kept in state (``stale_passwords`` says so, and the next ``up`` rewrites it).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, cast

import pulumi

from iis_clientcert import certs
from iis_clientcert.errors import CertificateError, ValidationError
from iis_clientcert.framework.base import (
    Change,
    IisProvider,
    require_site,
    site_exists,
    validate_site,
)
from iis_clientcert.framework.inputs import Input, Inputs, fields_of, get_bool, get_list, get_str
from iis_clientcert.framework.resource import TYPE_MODULE, IisResource
from iis_clientcert.host import contract
from iis_clientcert.host.client import ReadKey, ReadPlan, Reads
from iis_clientcert.host.connection import Connection
from iis_clientcert.host.contract import LogonResult, SiteInfo, VerifyPasswordResult

KIND = "CertificateMapping"

# The certificateSubField values IIS documents (iis-docs, manyToOneMappings rules:
# CN, OU, O, L, S, C). What IIS does with any other (E, ST, an OID) is undocumented, so a
# rule naming one is refused rather than left to fail silently on a host.
SUB_FIELDS = ("CN", "OU", "O", "L", "S", "C")
SUB_FIELD_PROBLEM = "is not a certificate sub-field IIS documents for many-to-one rules"
SUB_FIELD_FIX = "Use one of " + ", ".join(SUB_FIELDS) + "."


def canonical_sub_field(value: str) -> str | None:
    """The documented spelling of a rule's sub-field (case-insensitive), or None."""
    return {s.lower(): s for s in SUB_FIELDS}.get(value.strip().lower())


def repeated_rdn_notes(
    label: str, info: certs.CertInfo, rules: Iterable[tuple[str, str]], as_issuer: bool = False
) -> list[str]:
    """Warnings for a certificate the product sees whose name repeats an RDN (two OUs) that
    a rule compares (``rules``: (field, sub_field) pairs). For a one-to-one certificate the
    rule's field is its own Subject or Issuer; for a trusted CA (``as_issuer``) Issuer rules
    read its subject, the issuer of the client certificates it signs. IIS documents neither
    which value it compares nor whether any match is enough: docs/real-host.md."""
    out: list[str] = []
    for field_name, sub in sorted(set(rules)):
        if as_issuer:
            values = info.subject_fields.get(sub, []) if field_name == "Issuer" else []
        else:
            fields = info.subject_fields if field_name == "Subject" else info.issuer_fields
            values = fields.get(sub, [])
        if len(values) > 1:
            out.append(
                f"{label} ({info.subject}) has {len(values)} {sub} values "
                f"({', '.join(values)}) and a many-to-one rule compares {field_name} {sub}: "
                "how IIS matches a repeated RDN is undocumented (check it on the host, "
                "docs/real-host.md, 'Many-to-one rules')"
            )
    return out


FIELDS = ("Subject", "Issuer")
PERMISSIONS = ("Allow", "Deny")
LOGON_METHODS = ("Interactive", "Batch", "Network", "ClearText")

INPUTS = Inputs(
    KIND,
    Input(
        "site",
        "str",
        "The IIS site's name (mappings are read at site level)",
        required=True,
        replace=True,
    ),
    Input(
        "one_to_one",
        "list",
        "[{certificate (PEM, DER, PFX or base64), user_name, enabled}]: each certificate logs "
        "on as its user",
        default=[],
    ),
    Input(
        "many_to_one",
        "list",
        "[{name, user_name, rules: [{field, sub_field, match, case_sensitive}], permission, "
        "description, enabled}]: every trusted certificate matching all rules logs on as "
        "user_name (or is denied)",
        default=[],
    ),
    Input(
        "passwords",
        "map",
        "The password of each mapped account, by user name",
        default={},
        secret=True,
    ),
    Input("enabled", "bool", "Whether IIS client-certificate mapping is on", default=True),
    Input("one_to_one_enabled", "bool", "Whether one-to-one mappings apply", default=True),
    Input("many_to_one_enabled", "bool", "Whether many-to-one mappings apply", default=True),
    Input(
        "logon_method",
        "str",
        "How IIS logs the account on: Interactive, Batch, Network or ClearText",
        default="ClearText",
    ),
    Input("default_logon_domain", "str", "The domain of user names given without one", default=""),
    Input(
        "certificates",
        "map",
        "The one-to-one certificates by thumbprint, as single-line base64 DER",
        derived=True,
    ),
)

SITES = ReadKey[contract.SiteListResult]("sites")
SECTION = ReadKey[contract.ConfigGetResult]("section")
LOGONS = ReadKey[contract.VerifyLogonsResult]("logons")
# What a read without logons knows (delete_read_plan).
_NO_LOGONS: contract.VerifyLogonsResult = {"results": []}


def _password_check(user: str) -> ReadKey[VerifyPasswordResult]:
    return ReadKey(f"password of {user}")


@dataclass(frozen=True)
class OneToOne:
    thumbprint: str
    subject: str
    user_name: str
    enabled: bool


@dataclass(frozen=True)
class Rule:
    field: str
    sub_field: str
    match: str
    case_sensitive: bool


@dataclass(frozen=True)
class ManyToOne:
    name: str
    description: str
    user_name: str
    permission: str
    enabled: bool
    rules: tuple[Rule, ...]


@dataclass(frozen=True)
class MappingDesired:
    site: str
    enabled: bool
    one_to_one_enabled: bool
    many_to_one_enabled: bool
    logon_method: str
    default_logon_domain: str
    one_to_one: tuple[OneToOne, ...]
    many_to_one: tuple[ManyToOne, ...]
    certificates: dict[str, str]  # thumbprint -> single-line blob
    passwords: dict[str, str]  # user name -> password
    notes: tuple[str, ...] = ()  # warnings for the user at check time


@dataclass(frozen=True)
class MappingCurrent:
    sites: list[SiteInfo]
    site_found: bool
    present: bool
    element: contract.Element | None  # written at the site location (passwords encrypted)
    logons: list[LogonResult]  # mapping.verify_logons results (stored passwords)
    # user name -> whether the password we hold logs on (user.verify_password)
    accounts: dict[str, VerifyPasswordResult]
    # The section in force at the site (config.get's effective: inherited entries too).
    effective: contract.Element | None = None

    def in_force(self) -> contract.Element | None:
        """The site's own section plus the entries it inherits (a server-level mapping
        applies to every site whose collection has no <clear/>). Whether IIS writes a
        <clear/> where nothing is inherited is for a real host to say (docs/real-host.md):
        going by what is in force, the answer does not matter."""
        local = self.element if self.present else None
        inherited = inherited_entries(local, self.effective)
        if not any(inherited.values()):
            return local
        base: dict[str, Any] = dict(local or contract.element())
        children: dict[str, Any] = dict(base.get("children") or {})
        for name, extra in inherited.items():
            own = dict(children.get(name) or contract.element())
            own["items"] = [*(own.get("items") or []), *extra]
            children[name] = own
        base["children"] = children
        return cast(contract.Element, base)

    def stored_password_logs_on(self, user: str) -> bool | None:
        """Whether the section's stored password for ``user`` logs on (None: unknown).

        From the mapping's own logons when they were tried; else from the password the
        program holds, which is what the section stores unless someone edited it."""
        key = contract.logon_account_key(user)
        mine = [r for r in self.logons if contract.logon_account_key(r["user_name"]) == key]
        if any(r["checked"] and not r["valid"] for r in mine):
            return False
        if mine and all(r["checked"] for r in mine):
            return True
        verdict = next((v for u, v in self.accounts.items() if u.lower() == user.lower()), None)
        if verdict is not None and verdict["checked"]:
            return verdict["valid"]
        return None

    def stale_users(self, previous: Mapping[str, Any] | None) -> list[str]:
        """The users whose stored password does not log on; the last verdict where this
        read could not tell."""
        before = {u.lower() for u in (previous or {}).get("stale_passwords") or []}
        stale = []
        for user in sorted(self.accounts):
            known = self.stored_password_logs_on(user)
            if known is False or (known is None and user.lower() in before):
                stale.append(user)
        return stale


# --- validation ----------------------------------------------------------------------


def _user_name(kind: str, key: str, value: Any) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ValidationError(kind, key, value, "must name the account the certificate maps to")
    if any(ord(ch) < 32 for ch in value) or len(value) > 256:
        raise ValidationError(kind, key, value, "is not a valid account name")
    return value


def validate(inputs: Mapping[str, Any]) -> MappingDesired:
    site = validate_site(KIND, INPUTS.get_str(inputs, "site"))
    raw_passwords = inputs.get("passwords") or {}
    if not isinstance(raw_passwords, Mapping):
        raise ValidationError(KIND, "passwords", None, "must map user names to passwords")
    passwords = {str(k): v for k, v in raw_passwords.items()}
    lower_passwords = {k.lower(): k for k in passwords}

    def need_password(key: str, user: str) -> None:
        found = lower_passwords.get(user.lower())
        if found is None or not isinstance(passwords[found], str) or not passwords[found]:
            raise ValidationError(
                KIND,
                key,
                user,
                "has no password: IIS logs on as the mapped account with a stored password",
                f"Add passwords[{user!r}] (a secret), or map through ClientCertSite, which "
                "takes it from the user.",
            )

    notes: list[str] = []
    certificates: dict[str, str] = {}
    seen: dict[str, str] = {}
    one_to_one: list[OneToOne] = []
    mapped_infos: list[tuple[str, certs.CertInfo]] = []
    for i, entry in enumerate(get_list(KIND, inputs, "one_to_one")):
        key = f"one_to_one[{i}]"
        if not isinstance(entry, Mapping):
            raise ValidationError(KIND, key, entry, "must be {certificate, user_name, enabled}")
        user = _user_name(KIND, f"{key}.user_name", entry.get("user_name"))
        need_password(f"{key}.user_name", user)
        if entry.get("password") is not None:
            raise ValidationError(
                KIND,
                f"{key}.password",
                None,
                "goes in the passwords map of the resource, keyed by user name",
            )
        cert = entry.get("certificate")
        if cert is None and entry.get("thumbprint") and "certificates" in inputs:
            # Stored form (after check): thumbprint plus the certificates map.
            thumb = str(entry["thumbprint"])
            blob = (inputs.get("certificates") or {}).get(thumb)
            if not blob:
                raise ValidationError(KIND, f"{key}.thumbprint", thumb, "has no certificate")
            cert = blob
        if cert is None:
            raise ValidationError(KIND, f"{key}.certificate", None, "is required")
        try:
            info = certs.load_certificate(cert)
        except CertificateError as exc:
            raise ValidationError(
                KIND,
                f"{key}.certificate",
                None,
                f"cannot be read ({exc.kind}): {exc}",
                "Give the client certificate as PEM, DER, PFX or base64.",
            ) from None
        if info.thumbprint in seen:
            raise ValidationError(
                KIND,
                f"{key}.certificate",
                info.thumbprint,
                f"is the same certificate as {seen[info.thumbprint]} "
                f"(subject {info.subject!r}); IIS keys one-to-one mappings by certificate",
                "Map each certificate once.",
            )
        seen[info.thumbprint] = key
        mapped_infos.append((key, info))
        now = datetime.now(UTC)
        if not info.valid_at(now):
            notes.append(
                f"{site}: {key} certificate {info.thumbprint} ({info.subject}) is not valid "
                f"now (not after {info.not_after:%Y-%m-%d}): IIS will answer 403.17"
            )
        if info.eku_present and not info.client_auth_eku:
            notes.append(
                f"{site}: {key} certificate {info.thumbprint} lacks the client-authentication "
                "EKU: clients will not offer it"
            )
        certificates[info.thumbprint] = info.blob
        one_to_one.append(
            OneToOne(
                info.thumbprint,
                info.subject,
                user,
                get_bool(KIND, entry, "enabled", True, f"{key}."),
            )
        )
    many: list[ManyToOne] = []
    names: set[str] = set()
    for i, entry in enumerate(get_list(KIND, inputs, "many_to_one")):
        key = f"many_to_one[{i}]"
        if not isinstance(entry, Mapping):
            raise ValidationError(KIND, key, entry, "must be {name, user_name, rules, ...}")
        name = get_str(KIND, entry, "name", max_len=256, prefix=f"{key}.")
        if any(ord(ch) < 32 for ch in name):
            raise ValidationError(KIND, f"{key}.name", name, "contains control characters")
        if name.lower() in names:
            raise ValidationError(KIND, f"{key}.name", name, "is used by two many-to-one mappings")
        names.add(name.lower())
        permission = get_str(KIND, entry, "permission", default="Allow", prefix=f"{key}.")
        canonical = {p.lower(): p for p in PERMISSIONS}.get(permission.lower())
        if canonical is None:
            raise ValidationError(KIND, f"{key}.permission", permission, "must be Allow or Deny")
        user = ""
        if canonical == "Allow" or entry.get("user_name"):
            user = _user_name(KIND, f"{key}.user_name", entry.get("user_name"))
            need_password(f"{key}.user_name", user)
        rules: list[Rule] = []
        for j, rule in enumerate(get_list(KIND, entry, "rules")):
            rkey = f"{key}.rules[{j}]"
            if not isinstance(rule, Mapping):
                raise ValidationError(KIND, rkey, rule, "must be {field, sub_field, match}")
            field = get_str(KIND, rule, "field", default="Subject", prefix=f"{rkey}.")
            field_c = {f.lower(): f for f in FIELDS}.get(field.lower())
            if field_c is None:
                raise ValidationError(KIND, f"{rkey}.field", field, "must be Subject or Issuer")
            sub = get_str(KIND, rule, "sub_field", prefix=f"{rkey}.")
            sub_c = canonical_sub_field(sub)
            if sub_c is None:
                raise ValidationError(
                    KIND, f"{rkey}.sub_field", sub, SUB_FIELD_PROBLEM, SUB_FIELD_FIX
                )
            match = rule.get("match")
            if not isinstance(match, str) or not match:
                raise ValidationError(
                    KIND, f"{rkey}.match", match, "must not be empty", "Use * to match any value."
                )
            if any(ord(ch) < 32 for ch in match) or len(match) > 1024:
                raise ValidationError(KIND, f"{rkey}.match", match, "is not a valid match string")
            new_rule = Rule(
                field_c, sub_c, match, get_bool(KIND, rule, "case_sensitive", True, f"{rkey}.")
            )
            if new_rule in rules:
                raise ValidationError(KIND, rkey, match, "repeats an earlier rule")
            rules.append(new_rule)
        if not rules:
            # What IIS does with a rule-less mapping is undocumented: it may match every
            # trusted certificate or none, and the two mean opposite things for security.
            raise ValidationError(
                KIND,
                f"{key}.rules",
                name,
                "is empty: what IIS does with a many-to-one mapping without rules is "
                "undocumented (every trusted certificate, or none)",
                "Give at least one rule; to admit every certificate of a CA, match its "
                "Issuer CN, e.g. {field: Issuer, sub_field: CN, match: 'My CA'}.",
            )
        many.append(
            ManyToOne(
                name=name,
                description=get_str(
                    KIND, entry, "description", default="", required=False, prefix=f"{key}."
                ),
                user_name=user,
                permission=canonical,
                enabled=get_bool(KIND, entry, "enabled", True, f"{key}."),
                rules=tuple(rules),
            )
        )
    compared = [(r.field, r.sub_field) for m in many for r in m.rules]
    for key, info in mapped_infos:
        notes.extend(repeated_rdn_notes(f"{site}: {key} certificate", info, compared))
    logon = INPUTS.get_str(inputs, "logon_method")
    logon_c = {m.lower(): m for m in LOGON_METHODS}.get(logon.lower())
    if logon_c is None:
        raise ValidationError(
            KIND, "logon_method", logon, "is not one of " + ", ".join(LOGON_METHODS)
        )
    used = {e.user_name.lower() for e in one_to_one} | {
        e.user_name.lower() for e in many if e.user_name
    }
    return MappingDesired(
        site=site,
        enabled=INPUTS.get_bool(inputs, "enabled"),
        one_to_one_enabled=INPUTS.get_bool(inputs, "one_to_one_enabled"),
        many_to_one_enabled=INPUTS.get_bool(inputs, "many_to_one_enabled"),
        logon_method=logon_c,
        default_logon_domain=INPUTS.get_str(inputs, "default_logon_domain"),
        one_to_one=tuple(one_to_one),
        many_to_one=tuple(many),
        certificates=certificates,
        # Only the passwords of accounts in use are kept (and stored, encrypted, in state).
        passwords={k: v for k, v in passwords.items() if k.lower() in used},
        notes=tuple(notes),
    )


# --- the section as config elements --------------------------------------------------


def _bool(value: bool) -> str:
    return "true" if value else "false"


def _password_of(desired: MappingDesired, user: str) -> str:
    for name, password in desired.passwords.items():
        if name.lower() == user.lower():
            return password
    return ""


def desired_element(desired: MappingDesired, with_passwords: bool) -> dict[str, Any]:
    """The section as IIS should hold it. Without passwords it is comparable with a read."""
    attributes = {
        "enabled": _bool(desired.enabled),
        "oneToOneCertificateMappingsEnabled": _bool(desired.one_to_one_enabled),
        "manyToOneCertificateMappingsEnabled": _bool(desired.many_to_one_enabled),
        "logonMethod": desired.logon_method,
    }
    if desired.default_logon_domain:
        attributes["defaultLogonDomain"] = desired.default_logon_domain
    one = []
    for entry in desired.one_to_one:
        attrs = {
            "enabled": _bool(entry.enabled),
            "userName": entry.user_name,
            "certificate": desired.certificates[entry.thumbprint],
        }
        if with_passwords:
            attrs["password"] = _password_of(desired, entry.user_name)
        one.append(contract.element(attrs))
    many = []
    for mapping in desired.many_to_one:
        attrs = {
            "name": mapping.name,
            "description": mapping.description,
            "enabled": _bool(mapping.enabled),
            "permissionMode": mapping.permission,
            "userName": mapping.user_name,
        }
        if with_passwords and mapping.user_name:
            attrs["password"] = _password_of(desired, mapping.user_name)
        rules = [
            contract.element(
                {
                    "certificateField": r.field,
                    "certificateSubField": r.sub_field,
                    "matchCriteria": r.match,
                    "compareCaseSensitive": _bool(r.case_sensitive),
                }
            )
            for r in mapping.rules
        ]
        many.append(
            contract.element(attrs, children={"rules": contract.element(items=rules, clear=True)})
        )
    return contract.element(
        attributes,
        children={
            "oneToOneMappings": contract.element(items=one, clear=True),
            "manyToOneMappings": contract.element(items=many, clear=True),
        },
    )


_DEFAULTS = {
    "enabled": "false",
    "oneToOneCertificateMappingsEnabled": "true",
    "manyToOneCertificateMappingsEnabled": "true",
    "logonMethod": "ClearText",
    "defaultLogonDomain": "",
    "description": "",
    "permissionMode": "Allow",
    "userName": "",
    "compareCaseSensitive": "true",
}


def comparable(element: Mapping[str, Any] | None) -> Any:
    """An element reduced to what decides equality: no passwords, defaults filled in,
    booleans lower-cased, so a read and a desired element compare like with like."""
    if element is None:
        return None

    def norm_attrs(attrs: Mapping[str, Any]) -> dict[str, str]:
        out = {k: v for k, v in _DEFAULTS.items() if k in _ATTRS_OF.get(_kind(attrs), ())}
        for k, v in attrs.items():
            # Locks and configSource are the host owner's; every write keeps them.
            if k == "password" or k in contract.META_ATTRIBUTES:
                continue
            text = str(v)
            out[k] = text.lower() if text.lower() in ("true", "false") else text
        return out

    def walk(el: Mapping[str, Any]) -> dict[str, Any]:
        return {
            "attributes": norm_attrs(el.get("attributes") or {}),
            "children": {k: walk(v) for k, v in sorted((el.get("children") or {}).items())},
            "items": [walk(i) for i in el.get("items") or []],
        }

    return walk(element)


_ATTRS_OF: dict[str, tuple[str, ...]] = {
    "section": (
        "enabled",
        "oneToOneCertificateMappingsEnabled",
        "manyToOneCertificateMappingsEnabled",
        "logonMethod",
        "defaultLogonDomain",
    ),
    "one": ("enabled", "userName"),
    "many": ("description", "enabled", "permissionMode", "userName"),
    "rule": ("compareCaseSensitive",),
}


def _kind(attrs: Mapping[str, Any]) -> str:
    if "certificate" in attrs:
        return "one"
    if "certificateSubField" in attrs or "matchCriteria" in attrs:
        return "rule"
    if "name" in attrs:
        return "many"
    return "section"


def _entries(element: Mapping[str, Any] | None, child: str) -> list[dict[str, Any]]:
    if not element:
        return []
    return list(((element.get("children") or {}).get(child) or {}).get("items") or [])


# The mapping collections and the attribute that is each entry's key.
_COLLECTION_KEYS = {"oneToOneMappings": "certificate", "manyToOneMappings": "name"}


def inherited_entries(
    local: Mapping[str, Any] | None, effective: Mapping[str, Any] | None
) -> dict[str, list[dict[str, Any]]]:
    """Per collection, the entries in force at the site that the site does not write
    itself: inherited from the server level because its collection has no <clear/>."""
    out: dict[str, list[dict[str, Any]]] = {name: [] for name in _COLLECTION_KEYS}
    for name, key in _COLLECTION_KEYS.items():
        written = ((local or {}).get("children") or {}).get(name) or {}
        if written.get("clear"):
            continue
        own = {str((e.get("attributes") or {}).get(key, "")) for e in _entries(local, name)}
        out[name] = [
            dict(e)
            for e in _entries(effective, name)
            if str((e.get("attributes") or {}).get(key, "")) not in own
        ]
    return out


def describe_drift(current: Mapping[str, Any] | None, desired: MappingDesired) -> list[str]:
    """Words for what differs, for the plan's summary."""
    if current is None:
        return ["no mapping section at the site yet"]
    notes = []
    wanted = {desired.certificates[e.thumbprint] for e in desired.one_to_one}
    for entry in _entries(current, "oneToOneMappings"):
        blob = str((entry.get("attributes") or {}).get("certificate", ""))
        if blob not in wanted:
            try:
                who = certs.load_certificate(blob).subject
            except CertificateError:
                who = "an unreadable certificate blob"
            notes.append(f"remove unmanaged one-to-one mapping for {who}")
    names = {m.name for m in desired.many_to_one}
    for entry in _entries(current, "manyToOneMappings"):
        name = str((entry.get("attributes") or {}).get("name", ""))
        if name not in names:
            notes.append(f"remove unmanaged many-to-one mapping {name!r}")
    return notes or ["update mapping settings"]


def plan(
    current: MappingCurrent, desired: MappingDesired, force_passwords: bool = False
) -> list[Change]:
    # What is in force at the site, not only what it writes: an entry inherited through a
    # missing <clear/> maps certificates as surely as one of its own.
    local = current.in_force()
    same = comparable(local) == comparable(desired_element(desired, with_passwords=False))
    # Only logons that were tried and proved a password wrong (contract.logon_verdict).
    failing = [r for r in current.logons if r["checked"] and not r["valid"]]
    if same and not failing and not force_passwords:
        return []
    notes = [] if same else describe_drift(local, desired)
    if failing:
        notes.append(
            "rewrite passwords: " + ", ".join(f"{r['user_name']} ({r['hresult']})" for r in failing)
        )
    if force_passwords and same and not failing:
        notes.append("write the changed passwords")
    return [
        Change(
            f"{contract.SECTION_MAPPING} at {desired.site!r}: " + "; ".join(notes),
            [
                contract.config_set(
                    contract.SECTION_MAPPING,
                    desired.site,
                    desired_element(desired, with_passwords=True),
                )
            ],
        )
    ]


def one_to_one_outputs(desired: MappingDesired) -> list[dict[str, Any]]:
    return [
        {
            "thumbprint": e.thumbprint,
            "subject": e.subject,
            "user_name": e.user_name,
            "enabled": e.enabled,
        }
        for e in desired.one_to_one
    ]


def many_to_one_outputs(desired: MappingDesired) -> list[dict[str, Any]]:
    return [{**fields_of(m), "rules": [fields_of(r) for r in m.rules]} for m in desired.many_to_one]


def inputs_from_element(
    element: Mapping[str, Any] | None, stored: Mapping[str, Any]
) -> dict[str, Any]:
    """The inputs that would produce a section found on the host (refresh)."""
    attrs = (element or {}).get("attributes") or {}

    def flag(value: Any, default: bool) -> bool:
        return default if value is None else str(value).lower() == "true"

    certificates: dict[str, str] = {}
    one = []
    for entry in _entries(element, "oneToOneMappings"):
        a = entry.get("attributes") or {}
        blob = str(a.get("certificate", ""))
        try:
            info = certs.load_certificate(blob)
            thumb, subject = info.thumbprint, info.subject
        except CertificateError as exc:
            thumb, subject = f"unreadable:{exc.kind}", "(unreadable certificate blob)"
        certificates[thumb] = blob
        one.append(
            {
                "thumbprint": thumb,
                "subject": subject,
                "user_name": str(a.get("userName", "")),
                "enabled": flag(a.get("enabled"), True),
            }
        )
    many = []
    for entry in _entries(element, "manyToOneMappings"):
        a = entry.get("attributes") or {}
        rules = [
            {
                "field": str((r.get("attributes") or {}).get("certificateField", "")),
                "sub_field": str((r.get("attributes") or {}).get("certificateSubField", "")),
                "match": str((r.get("attributes") or {}).get("matchCriteria", "")),
                "case_sensitive": flag(
                    (r.get("attributes") or {}).get("compareCaseSensitive"), True
                ),
            }
            for r in _entries(entry, "rules")
        ]
        many.append(
            {
                "name": str(a.get("name", "")),
                "description": str(a.get("description", "")),
                "user_name": str(a.get("userName", "")),
                "permission": str(a.get("permissionMode", "Allow")),
                "enabled": flag(a.get("enabled"), True),
                "rules": rules,
            }
        )
    return {
        "site": stored.get("site"),
        "enabled": flag(attrs.get("enabled"), False),
        "one_to_one_enabled": flag(attrs.get("oneToOneCertificateMappingsEnabled"), True),
        "many_to_one_enabled": flag(attrs.get("manyToOneCertificateMappingsEnabled"), True),
        "logon_method": str(attrs.get("logonMethod", "ClearText")),
        "default_logon_domain": str(attrs.get("defaultLogonDomain", "")),
        "one_to_one": one,
        "many_to_one": many,
        "certificates": certificates,
        "passwords": stored.get("passwords") or {},
    }


class CertificateMappingProvider(IisProvider[MappingDesired, MappingCurrent]):
    kind = KIND
    inputs = INPUTS
    computed = ("prior_present", "prior_section", "mapped_users", "stale_passwords")

    def validate(self, inputs: Mapping[str, Any]) -> MappingDesired:
        return validate(inputs)

    def advise(self, desired: MappingDesired) -> list[str]:
        return list(desired.notes)

    def normalised_inputs(self, desired: MappingDesired) -> dict[str, Any]:
        return {
            "site": desired.site,
            "enabled": desired.enabled,
            "one_to_one_enabled": desired.one_to_one_enabled,
            "many_to_one_enabled": desired.many_to_one_enabled,
            "logon_method": desired.logon_method,
            "default_logon_domain": desired.default_logon_domain,
            "one_to_one": one_to_one_outputs(desired),
            "many_to_one": many_to_one_outputs(desired),
            "certificates": dict(desired.certificates),
            "passwords": dict(desired.passwords),
        }

    def resource_id(self, connection: Connection, desired: MappingDesired) -> str:
        return f"{connection.authority}/{desired.site}"

    def read_plan(self, desired: MappingDesired) -> ReadPlan:
        reads = (
            ReadPlan()
            .add(SITES, contract.site_list())
            .add(SECTION, contract.config_get(contract.SECTION_MAPPING, desired.site))
            .add(LOGONS, contract.mapping_verify_logons(desired.site))
        )
        for user, password in sorted(desired.passwords.items()):
            # The account IIS logs on as: a bare name is in defaultLogonDomain.
            logon_name = user
            if desired.default_logon_domain and "\\" not in user and "@" not in user:
                logon_name = f"{desired.default_logon_domain}\\{user}"
            reads.add(_password_check(user), contract.user_verify_password(logon_name, password))
        return reads

    def delete_read_plan(self, desired: MappingDesired) -> ReadPlan:
        # The section and the site only: no logon (see IisProvider.delete_read_plan).
        return (
            ReadPlan()
            .add(SITES, contract.site_list())
            .add(SECTION, contract.config_get(contract.SECTION_MAPPING, desired.site))
        )

    def parse_current(self, desired: MappingDesired, reads: Reads) -> MappingCurrent:
        sites = reads[SITES]["sites"]
        got = reads[SECTION]
        return MappingCurrent(
            sites=sites,
            site_found=site_exists(sites, desired.site) is not None,
            present=got["present"],
            element=got["element"] if got["present"] else None,
            logons=reads.get(LOGONS, _NO_LOGONS)["results"],
            accounts={
                user: reads[_password_check(user)]
                for user in desired.passwords
                if _password_check(user) in reads
            },
            effective=got["effective"],
        )

    def preflight(self, current: MappingCurrent, desired: MappingDesired) -> None:
        require_site(KIND, "the host", current.sites, desired.site)
        # IIS would store these and answer 401.1 (0x8007052E) to every such certificate:
        # better to fail here, before anything is written.
        for user, verdict in current.accounts.items():
            if verdict["checked"] and not verdict["valid"]:
                raise ValidationError(
                    KIND,
                    f"passwords[{user!r}]",
                    None,
                    f"does not log on as {user!r} on the host "
                    f"({verdict['hresult'] or '0x8007052E'} ERROR_LOGON_FAILURE: the user "
                    "does not exist or the password is wrong)",
                    "Create the account first (LocalUser, or ClientCertSite's users) and give "
                    "the mapping the account's current password.",
                )

    def plan(
        self,
        current: MappingCurrent,
        desired: MappingDesired,
        previous: Mapping[str, Any] | None = None,
    ) -> list[Change]:
        # The host never shows a password: a changed password input is known from the
        # stored outputs only, and is written even though the section looks the same.
        changed = previous is not None and (
            (previous.get("passwords") or {}) != desired.passwords
            # A refresh found a stored password that no longer logs on.
            or bool(previous.get("stale_passwords"))
        )
        return plan(current, desired, force_passwords=changed)

    def outputs(
        self,
        desired: MappingDesired,
        before: MappingCurrent | None,
        after: MappingCurrent,
        previous: Mapping[str, Any] | None,
    ) -> dict[str, Any]:
        if before is not None:
            prior_present, prior = before.present, before.element
        else:
            prior_present = bool((previous or {}).get("prior_present"))
            prior = (previous or {}).get("prior_section")
        mapped = {e.thumbprint: e.user_name for e in desired.one_to_one}
        mapped.update({f"rule:{m.name}": m.user_name for m in desired.many_to_one})
        return {
            "prior_present": prior_present,
            # Encrypted passwords only ([enc:...:enc]); kept secret in state all the same.
            "prior_section": prior,
            "mapped_users": mapped,
            "stale_passwords": after.stale_users(previous),
        }

    def exists(self, current: MappingCurrent) -> bool:
        return current.site_found

    def stale_inputs(self, olds: Mapping[str, Any]) -> list[str]:
        # A refresh found stored passwords that no longer log on: `up` rewrites them.
        return ["passwords"] if olds.get("stale_passwords") else []

    def notices(self, desired: MappingDesired, current: MappingCurrent) -> list[str]:
        notes = []
        for user in sorted(desired.passwords):
            if current.stored_password_logs_on(user) is None:
                notes.append(
                    f"{desired.site}: the logon of {user!r} was not verified (not safe to try "
                    "without risking an account lockout, or not an account of this host); "
                    "its password may have drifted"
                )
        refused = {
            (r["user_name"], r["hresult"])
            for r in current.logons
            if r["checked"] and r["valid"] and r["hresult"]
        }
        for user, hresult in sorted(refused, key=lambda pair: (pair[0], pair[1] or "")):
            explained = contract.explain_hresult(hresult)
            meaning = f"{explained.name}: {explained.meaning}" if explained else "refused"
            notes.append(
                f"{desired.site}: the password of {user!r} is right, but IIS's logon "
                f"({desired.logon_method}) is refused ({hresult} {meaning}): its "
                "certificates get 401.1"
            )
        return notes

    def live_inputs(
        self, desired: MappingDesired, current: MappingCurrent, stored: Mapping[str, Any]
    ) -> dict[str, Any]:
        # Passwords are never read back and stay as they are (so later reads can try them):
        # one that no longer logs on shows in stale_passwords, and the diff names it.
        return inputs_from_element(current.in_force(), stored)

    def delete_changes(
        self, desired: MappingDesired, current: MappingCurrent, stored: Mapping[str, Any]
    ) -> list[Change]:
        if not current.site_found:
            return []
        prior = stored.get("prior_section") if stored.get("prior_present") else None
        if prior:
            return [
                Change(
                    f"put back the mapping section found at {desired.site!r}",
                    [contract.config_set(contract.SECTION_MAPPING, desired.site, prior)],
                )
            ]
        if not current.present:
            return []
        return [
            Change(
                f"remove the mapping section from {desired.site!r}",
                [contract.config_clear(contract.SECTION_MAPPING, desired.site)],
            )
        ]


class CertificateMapping(IisResource, module=TYPE_MODULE, name="CertificateMapping"):
    __doc__ = INPUTS.docstring(
        "One site's IIS client-certificate mappings, authoritatively (see README)."
    )

    one_to_one: pulumi.Output[list[dict[str, Any]]]
    many_to_one: pulumi.Output[list[dict[str, Any]]]
    mapped_users: pulumi.Output[dict[str, str]]
    stale_passwords: pulumi.Output[list[str]]

    def __init__(
        self,
        resource_name: str,
        *,
        connection: Any,
        site: pulumi.Input[str],
        one_to_one: pulumi.Input[list[Any]] | None = None,
        many_to_one: pulumi.Input[list[Any]] | None = None,
        passwords: pulumi.Input[dict[str, Any]] | None = None,
        enabled: pulumi.Input[bool] | None = None,
        one_to_one_enabled: pulumi.Input[bool] | None = None,
        many_to_one_enabled: pulumi.Input[bool] | None = None,
        logon_method: pulumi.Input[str] | None = None,
        default_logon_domain: pulumi.Input[str] | None = None,
        opts: pulumi.ResourceOptions | None = None,
    ) -> None:
        props = INPUTS.props(
            connection,
            CertificateMappingProvider.computed,
            site=site,
            one_to_one=one_to_one,
            many_to_one=many_to_one,
            passwords=passwords,
            enabled=enabled,
            one_to_one_enabled=one_to_one_enabled,
            many_to_one_enabled=many_to_one_enabled,
            logon_method=logon_method,
            default_logon_domain=default_logon_domain,
        )
        opts = pulumi.ResourceOptions.merge(
            opts, pulumi.ResourceOptions(additional_secret_outputs=["prior_section"])
        )
        super().__init__(CertificateMappingProvider(), resource_name, props, opts)
