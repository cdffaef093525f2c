"""Table-driven tests of the pure parts of SslSettings, AnonymousAuthentication, LocalUser and
CertificateMapping: validation (each bad input -> the error naming property and value) and
plan(current, desired) -> the ops a run would send."""

from __future__ import annotations

import base64
from typing import Any, cast

import pytest

from iis_clientcert.errors import ValidationError
from iis_clientcert.framework.location_attribute import AttributeCurrent
from iis_clientcert.host import contract
from iis_clientcert.providers.anonymous_authentication import AnonymousAuthenticationProvider
from iis_clientcert.providers.certificate_mapping import (
    MappingCurrent,
    comparable,
    desired_element,
    inputs_from_element,
)
from iis_clientcert.providers.certificate_mapping import plan as mapping_plan
from iis_clientcert.providers.certificate_mapping import validate as validate_mapping
from iis_clientcert.providers.local_user import (
    FolderAccess,
    LocalUserProvider,
    UserCurrent,
    UserDesired,
)
from iis_clientcert.providers.local_user import plan as user_plan
from iis_clientcert.providers.ssl_settings import SslSettingsProvider, normalise_flags
from iis_clientcert_simulator.pki import Issued, make_ca, make_leaf

CONNECTION = {
    "endpoint": "https://web01:5986/wsman",
    "transport": "ntlm",
    "username": "u",
    "password": "p",
}
SITES: list[Any] = [{"name": "shop"}, {"name": "Default Web Site"}]


def _ops(changes: list[Any]) -> list[tuple[str, dict[str, Any]]]:
    return [(op.name, dict(op.args)) for change in changes for op in change.ops]


# --- SslSettings ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("given", "expected", "note"),
    [
        (None, ["Ssl", "SslNegotiateCert", "SslRequireCert"], None),
        (["sslrequirecert", "SSL"], ["Ssl", "SslNegotiateCert", "SslRequireCert"], "added it"),
        (["Ssl128", "Ssl", "Ssl"], ["Ssl", "Ssl128"], None),
        ("Ssl, SslNegotiateCert", ["Ssl", "SslNegotiateCert"], None),
        ([], [], None),
        (["None"], [], None),
    ],
    ids=["default", "require-adds-negotiate", "set-semantics", "iis-text", "empty", "none"],
)
def test_ssl_flags_normalise(given: Any, expected: list[str], note: str | None) -> None:
    desired = SslSettingsProvider().validate({"site": "shop", "flags": given})
    assert desired.fields["flags"] == expected
    _, notes = normalise_flags("SslSettings", given or ["Ssl", "SslRequireCert"])
    if note:
        assert any(note in n for n in notes)


@pytest.mark.parametrize(
    ("inputs", "prop", "words"),
    [
        ({"site": "shop", "flags": ["SslMapCert"]}, "flags", "not a flag of IIS 7"),
        ({"site": "shop", "flags": ["Tls13"]}, "flags", "Valid flags: Ssl, SslNegotiateCert"),
        ({"site": "shop", "flags": 8}, "flags", "must be a list"),
        ({"site": ""}, "site", "must not be empty"),
        ({"site": "sh/op"}, "site", "does not allow in a site name"),
        ({"site": "shop", "path": "app"}, "path", "/app"),
        ({"site": "shop", "path": "/app/"}, "path", "no trailing slash"),
    ],
    ids=[
        "sslmapcert",
        "unknown-flag",
        "not-a-list",
        "empty-site",
        "bad-site",
        "path-no-slash",
        "path-trailing",
    ],
)
def test_ssl_settings_rejects(inputs: dict[str, Any], prop: str, words: str) -> None:
    result = SslSettingsProvider().check({}, {"connection": CONNECTION, **inputs})
    assert len(result.failures) == 1
    assert result.failures[0].property == prop
    assert words in result.failures[0].reason
    assert "SslSettings" in result.failures[0].reason


def _attr_current(
    local: dict[str, str] | None, effective: str | None = None, attr: str = "sslFlags"
) -> AttributeCurrent:
    return AttributeCurrent(
        sites=SITES,
        site_found=True,
        local=local or {},
        local_present=local is not None,
        effective=effective,
        local_value=(local or {}).get(attr),
    )


@pytest.mark.parametrize(
    ("local", "ops"),
    [
        (None, [("config.set", "Ssl, SslNegotiateCert, SslRequireCert")]),
        ({"sslFlags": "Ssl"}, [("config.set", "Ssl, SslNegotiateCert, SslRequireCert")]),
        ({"sslFlags": "SslRequireCert,Ssl,SslNegotiateCert"}, []),
        ({"sslFlags": "Ssl, SslNegotiateCert, SslRequireCert"}, []),
    ],
    ids=["inherited", "different", "same-other-order", "same"],
)
def test_ssl_settings_plan(local: dict[str, str] | None, ops: list[tuple[str, str]]) -> None:
    provider = SslSettingsProvider()
    desired = provider.validate({"site": "shop"})
    got = _ops(provider.plan(_attr_current(local), desired))
    assert [(name, args["element"]["attributes"]["sslFlags"]) for name, args in got] == ops
    for _, args in got:
        assert args["location"] == "shop" and "target" not in args  # apphost, never web.config


@pytest.mark.parametrize(
    ("prior_present", "prior", "local", "expected"),
    [
        (False, None, {"sslFlags": "Ssl"}, [("config.clear", None)]),
        (True, "Ssl", {"sslFlags": "Ssl, SslNegotiateCert"}, [("config.set", "Ssl")]),
        (True, "Ssl", {"sslFlags": "Ssl"}, []),
        (False, None, None, []),
    ],
    ids=["created-clears", "restores-prior", "prior-already-back", "already-gone"],
)
def test_ssl_settings_delete_restores(
    prior_present: bool, prior: str | None, local: dict[str, str] | None, expected: list[Any]
) -> None:
    provider = SslSettingsProvider()
    desired = provider.validate({"site": "shop"})
    stored = {"prior_present": prior_present, "prior_value": prior}
    got = _ops(provider.delete_changes(desired, _attr_current(local), stored))
    shown = [
        (name, args["element"]["attributes"]["sslFlags"] if name == "config.set" else None)
        for name, args in got
    ]
    assert shown == expected


def test_anonymous_keeps_other_attributes_and_reads_default() -> None:
    provider = AnonymousAuthenticationProvider()
    desired = provider.validate({"site": "shop"})
    current = _attr_current({"enabled": "true", "userName": "IUSR"}, attr="enabled")
    ((name, args),) = _ops(provider.plan(current, desired))
    assert name == "config.set"
    assert args["element"]["attributes"] == {"enabled": "false", "userName": "IUSR"}
    # No value anywhere means the schema default: anonymous on.
    assert provider.inputs_from_value(None) == {"enabled": True}


# --- LocalUser --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("inputs", "prop", "words"),
    [
        ({"name": "a" * 21}, "name", "at most 20"),
        ({"name": "bad/name"}, "name", "does not allow in an account name"),
        ({"name": "..."}, "name", "only of dots and spaces"),
        ({"name": "ok", "password": ""}, "password", "is required"),
        (
            {"name": "ok", "folder_access": [{"path": "inetpub\\shop"}]},
            "folder_access[0].path",
            "absolute",
        ),
        (
            {"name": "ok", "folder_access": [{"path": "C:\\x", "rights": "All"}]},
            "folder_access[0].rights",
            "Read, ReadAndExecute, Modify",
        ),
        ({"name": "ok", "groups": [""]}, "groups[0]", "group name"),
    ],
    ids=[
        "long",
        "forbidden-char",
        "dots",
        "no-password",
        "relative-path",
        "bad-rights",
        "empty-group",
    ],
)
def test_local_user_rejects(inputs: dict[str, Any], prop: str, words: str) -> None:
    props = {"connection": CONNECTION, "password": "Good-Pa55word!", **inputs}
    result = LocalUserProvider().check({}, props)
    assert [f.property for f in result.failures] == [prop]
    assert words in result.failures[0].reason
    assert "Good-Pa55word!" not in result.failures[0].reason


def _user(**kw: Any) -> UserDesired:
    base: dict[str, Any] = {
        "name": "alice",
        "password": "Good-Pa55word!",
        "full_name": "",
        "description": "",
        "password_never_expires": True,
        "user_cannot_change_password": True,
        "disabled": False,
        "groups": ("IIS_IUSRS",),
        "folder_access": (FolderAccess("C:\\inetpub\\shop", "ReadAndExecute"),),
    }
    base.update(kw)
    return UserDesired(**base)


EXISTING = UserCurrent(
    exists=True,
    password_never_expires=True,
    user_cannot_change_password=True,
    groups=("Users", "IIS_IUSRS"),
    password_valid=True,
    access={"C:\\inetpub\\shop": ["ReadAndExecute, Synchronize"]},
)


@pytest.mark.parametrize(
    ("current", "desired", "previous", "ops"),
    [
        (UserCurrent(exists=False), _user(), None, ["user.set", "group.add_member", "acl.grant"]),
        (EXISTING, _user(), None, []),
        (
            UserCurrent(**{**EXISTING.__dict__, "password_valid": False}),
            _user(),
            None,
            ["user.set"],
        ),
        (EXISTING, _user(description="new"), None, ["user.set"]),
        (EXISTING, _user(groups=()), {"groups": ["IIS_IUSRS"]}, ["group.remove_member"]),
        (EXISTING, _user(groups=()), None, []),  # not managed before: left alone
        (
            EXISTING,
            _user(folder_access=()),
            {"folder_access": [{"path": "C:\\inetpub\\shop"}]},
            ["acl.revoke"],
        ),
        (
            EXISTING,
            _user(folder_access=(FolderAccess("C:\\inetpub\\shop", "Modify"),)),
            None,
            ["acl.grant"],
        ),
    ],
    ids=[
        "create",
        "same",
        "password-drift",
        "description",
        "group-unlisted",
        "group-never-managed",
        "folder-unlisted",
        "rights-raised",
    ],
)
def test_local_user_plan(
    current: UserCurrent, desired: UserDesired, previous: dict[str, Any] | None, ops: list[str]
) -> None:
    got = _ops(user_plan(current, desired, previous))
    assert [name for name, _ in got] == ops
    for name, args in got:
        if name == "user.set" and "password" in args:
            assert args["password"] == desired.password  # travels as JSON data only


def test_local_user_password_only_sent_when_needed() -> None:
    got = _ops(user_plan(EXISTING, _user(description="x")))
    assert got == [("user.set", {"name": "alice", "description": "x"})]


# --- CertificateMapping -----------------------------------------------------------------------


@pytest.fixture(scope="module")
def ca() -> Issued:
    return make_ca("Plan Test Root")


@pytest.fixture(scope="module")
def alice(ca: Issued) -> Issued:
    return make_leaf(ca, "alice", subject_extra={"O": "Example Corp"})


def _mapping_inputs(alice: Issued, **extra: Any) -> dict[str, Any]:
    inputs: dict[str, Any] = {
        "site": "shop",
        "one_to_one": [{"certificate": alice.cert_pem().decode(), "user_name": "alice"}],
        "many_to_one": [
            {
                "name": "corp",
                "user_name": "staff",
                "rules": [{"sub_field": "O", "match": "Example*"}],
            }
        ],
        "passwords": {"alice": "A-Pa55word!", "staff": "S-Pa55word!"},
    }
    inputs.update(extra)
    return inputs


def test_mapping_normalises_every_certificate_form_to_one_blob(alice: Issued) -> None:
    der = alice.cert_der()
    wrapped = "\r\n".join(
        base64.b64encode(der).decode()[i : i + 64] for i in range(0, len(base64.b64encode(der)), 64)
    )
    blobs = set()
    for form in (alice.cert_pem().decode(), wrapped, base64.b64encode(der).decode()):
        desired = validate_mapping(
            _mapping_inputs(alice, one_to_one=[{"certificate": form, "user_name": "alice"}])
        )
        element = desired_element(desired, with_passwords=False)
        (item,) = element["children"]["oneToOneMappings"]["items"]
        blobs.add(item["attributes"]["certificate"])
    assert blobs == {base64.b64encode(der).decode()}


@pytest.mark.parametrize(
    ("change", "prop", "words"),
    [
        (
            {"one_to_one": [{"certificate": "x", "user_name": "alice"}]},
            "one_to_one[0].certificate",
            "cannot be read",
        ),
        ({"passwords": {"staff": "S-Pa55word!"}}, "one_to_one[0].user_name", "has no password"),
        (
            {
                "many_to_one": [
                    {
                        "name": "corp",
                        "user_name": "staff",
                        "rules": [{"sub_field": "DC", "match": "x"}],
                    }
                ]
            },
            "many_to_one[0].rules[0].sub_field",
            "Use one of CN, OU, O, L, S, C.",
        ),
        (
            {
                "many_to_one": [
                    {
                        "name": "corp",
                        "user_name": "staff",
                        "rules": [{"sub_field": "O", "match": ""}],
                    }
                ]
            },
            "many_to_one[0].rules[0].match",
            "must not be empty",
        ),
        (
            {
                "many_to_one": [
                    {"name": "corp", "user_name": "staff", "permission": "Maybe", "rules": []}
                ]
            },
            "many_to_one[0].permission",
            "Allow or Deny",
        ),
        ({"logon_method": "Service"}, "logon_method", "ClearText"),
    ],
    ids=[
        "not-a-cert",
        "missing-password",
        "unknown-subfield",
        "empty-match",
        "bad-permission",
        "bad-logon",
    ],
)
def test_mapping_rejects(alice: Issued, change: dict[str, Any], prop: str, words: str) -> None:
    with pytest.raises(ValidationError) as err:
        validate_mapping(_mapping_inputs(alice, **change))
    assert err.value.property == prop
    assert words in str(err.value)
    assert "Pa55word" not in str(err.value)


def test_mapping_same_certificate_twice_names_both(alice: Issued) -> None:
    pem = alice.cert_pem().decode()
    inputs = _mapping_inputs(
        alice,
        one_to_one=[
            {"certificate": pem, "user_name": "alice"},
            {"certificate": pem.replace("\n", "\r\n"), "user_name": "staff"},
        ],
    )
    with pytest.raises(ValidationError) as err:
        validate_mapping(inputs)
    assert err.value.property == "one_to_one[1].certificate"
    assert "one_to_one[0]" in str(err.value)


def _mapping_current(
    element: dict[str, Any] | None, logons: list[dict[str, Any]] | None = None
) -> MappingCurrent:
    return MappingCurrent(
        sites=SITES,
        site_found=True,
        present=element is not None,
        element=cast(Any, element),
        logons=cast(Any, logons or []),
        accounts={},
    )


def test_mapping_plan_cases(alice: Issued, ca: Issued) -> None:
    desired = validate_mapping(_mapping_inputs(alice))
    live = desired_element(desired, with_passwords=False)
    # Absent -> one authoritative write, with passwords, collections cleared.
    (change,) = mapping_plan(_mapping_current(None), desired)
    (op,) = change.ops
    assert op.name == "config.set" and op.args["location"] == "shop"
    written = op.args["element"]
    assert written["children"]["oneToOneMappings"]["clear"] is True
    assert (
        written["children"]["oneToOneMappings"]["items"][0]["attributes"]["password"]
        == "A-Pa55word!"
    )
    # The same section read back (passwords encrypted) -> nothing to do.
    encrypted = comparable(live)
    assert mapping_plan(_mapping_current(live), desired) == []
    assert comparable(live) == encrypted
    # An unmanaged entry on the host is drift, named in the plan.
    stray = make_leaf(ca, "stray")
    drifted = desired_element(desired, with_passwords=False)
    drifted["children"]["oneToOneMappings"]["items"].append(
        contract.element(
            {"certificate": stray.blob, "userName": "x", "password": "[enc:AesProvider:abc:enc]"}
        )
    )
    (change,) = mapping_plan(_mapping_current(drifted), desired)
    assert "remove unmanaged one-to-one mapping for CN=stray" in change.summary
    # A stored password that no longer logs on -> rewrite, saying whose.
    failing = [
        {
            "kind": "one_to_one",
            "user_name": "alice",
            "valid": False,
            "hresult": "0x8007052E",
            "checked": True,
        }
    ]
    (change,) = mapping_plan(_mapping_current(live, failing), desired)
    assert "alice (0x8007052E)" in change.summary
    # A logon not tried (lockout guard) or refused with the right password is no reason.
    for unknown in (
        {**failing[0], "checked": False, "hresult": None},
        {**failing[0], "checked": False, "hresult": "0x80070775"},
        {**failing[0], "valid": True, "hresult": "0x80070569"},
    ):
        assert mapping_plan(_mapping_current(live, [unknown]), desired) == []
    # A changed password input with everything else equal -> rewrite.
    assert mapping_plan(_mapping_current(live), desired, force_passwords=True)


def test_mapping_refresh_reads_back_readable_inputs(alice: Issued) -> None:
    desired = validate_mapping(_mapping_inputs(alice))
    live = desired_element(desired, with_passwords=False)
    found = inputs_from_element(live, {"site": "shop", "passwords": desired.passwords})
    (entry,) = found["one_to_one"]
    assert entry["thumbprint"] == alice.thumbprint
    assert "CN=alice" in entry["subject"] and entry["user_name"] == "alice" and entry["enabled"]
    assert found["certificates"] == {alice.thumbprint: alice.blob}
    assert found["many_to_one"][0]["rules"] == [
        {"field": "Subject", "sub_field": "O", "match": "Example*", "case_sensitive": True}
    ]
