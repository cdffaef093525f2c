"""The simulated applicationHost.config: sections at locations and IIS's rules."""

from __future__ import annotations

import difflib
import threading
from pathlib import Path
from typing import Any

import pytest
from lxml import etree

from iis_clientcert.host.contract import (
    SECTION_ANONYMOUS,
    SECTION_MAPPING,
    SECTION_SSL,
    element,
    is_encrypted_value,
    make_op,
)
from iis_clientcert_simulator.state import HostState
from iis_clientcert_simulator.testing import AgentRunner

CANARY = "Canary-Pw-7f3a!"
BLOB = "MIIBszCCAVmgAwIBAgIUJ"  # the shape of a certificate blob; the model does not parse it


@pytest.fixture
def host(tmp_path: Path) -> AgentRunner:
    return AgentRunner(tmp_path / "host")


def apphost(host: AgentRunner) -> Path:
    return host.state_dir / "applicationHost.config"


def mapping(
    *one_to_one: dict[str, str], many: list[dict[str, object]] | None = None
) -> dict[str, Any]:
    children = {
        "oneToOneMappings": element(clear=True, items=[element(attrs) for attrs in one_to_one]),
    }
    if many is not None:
        children["manyToOneMappings"] = element(clear=True, items=many)
    return element({"enabled": "true"}, children)


def map_bob(
    host: AgentRunner,
    *,
    user: str = "bob",
    password: str = CANARY,
    many: list[dict[str, object]] | None = None,
) -> None:
    """The account bob (password CANARY), mapped one to one at the shop as ``user`` with
    ``password``, and the ``many`` many-to-one mappings."""
    host.one("user.set", name="bob", password=CANARY)
    host.one(
        "config.set",
        section=SECTION_MAPPING,
        location="shop",
        element=mapping({"certificate": BLOB, "userName": user, "password": password}, many=many),
    )


def test_fresh_host_has_iis_layout(host: AgentRunner) -> None:
    root = etree.parse(str(apphost(host))).getroot()
    auth = root.find(
        "configSections/sectionGroup[@name='system.webServer']"
        "/sectionGroup[@name='security']/sectionGroup[@name='authentication']"
    )
    assert auth is not None
    modes = {s.get("name"): s.get("overrideModeDefault") for s in auth}
    assert modes["iisClientCertificateMappingAuthentication"] == "Deny"
    assert modes["anonymousAuthentication"] == "Deny"
    sites = {s.get("name"): s for s in root.iter("site")}
    assert set(sites) == {"Default Web Site", "shop"}
    shop_bindings = [b.get("bindingInformation") for b in sites["shop"].iter("binding")]
    assert shop_bindings == ["*:8080:", "*:443:"]
    listed = host.one("site.list")["sites"]
    https = next(b for b in listed[1]["bindings"] if b["protocol"] == "https")
    assert https["certificate_store"] == "My" and len(https["certificate_hash"]) == 40


def test_set_then_get_with_effective_values(host: AgentRunner) -> None:
    got = host.one("config.get", section=SECTION_ANONYMOUS, location="shop")
    assert got["present"] is False and got["element"] is None
    assert got["effective"]["attributes"]["enabled"] == "true"  # server level
    assert got["effective"]["attributes"]["logonMethod"] == "ClearText"  # schema default

    assert host.one(
        "config.set",
        section=SECTION_ANONYMOUS,
        location="shop",
        element=element({"enabled": "false"}),
    ) == {"changed": True}
    got = host.one("config.get", section=SECTION_ANONYMOUS, location="shop")
    assert got["present"] is True
    assert got["element"]["attributes"] == {"enabled": "false"}
    assert got["effective"]["attributes"]["enabled"] == "false"
    assert got["effective"]["attributes"]["userName"] == "IUSR"
    # The other site still inherits the server level.
    other = host.one("config.get", section=SECTION_ANONYMOUS, location="Default Web Site")
    assert other["effective"]["attributes"]["enabled"] == "true"
    text = apphost(host).read_text()
    assert '<location path="shop">' in text


def test_flags_are_stored_as_comma_separated_names(host: AgentRunner) -> None:
    host.one(
        "config.set",
        section=SECTION_SSL,
        location="shop",
        element=element({"sslFlags": "SslRequireCert, Ssl,  SslNegotiateCert"}),
    )
    got = host.one("config.get", section=SECTION_SSL, location="shop")
    # As IIS writes flags (appcmd, Microsoft.Web.Administration): names joined by ", ".
    assert got["element"]["attributes"]["sslFlags"] == "Ssl, SslNegotiateCert, SslRequireCert"


def test_second_identical_set_changes_nothing(host: AgentRunner) -> None:
    section = mapping({"certificate": BLOB, "userName": "bob", "password": CANARY})
    first = host.one("config.set", section=SECTION_MAPPING, location="shop", element=section)
    before = apphost(host).read_bytes()
    second = host.one("config.set", section=SECTION_MAPPING, location="shop", element=section)
    assert (first, second) == ({"changed": True}, {"changed": False})
    assert apphost(host).read_bytes() == before
    # Flags spelled differently but meaning the same: no change either.
    host.one(
        "config.set", section=SECTION_SSL, location="shop", element=element({"sslFlags": "Ssl"})
    )
    assert (
        host.one(
            "config.set", section=SECTION_SSL, location="shop", element=element({"sslFlags": "ssl"})
        )["changed"]
        is False
    )


def test_clear_removes_section_and_empty_location(host: AgentRunner) -> None:
    before = apphost(host).read_text()
    host.one(
        "config.set", section=SECTION_SSL, location="shop", element=element({"sslFlags": "Ssl"})
    )
    assert host.one("config.clear", section=SECTION_SSL, location="shop") == {"changed": True}
    assert host.one("config.clear", section=SECTION_SSL, location="shop") == {"changed": False}
    after = apphost(host).read_text()
    assert etree.fromstring(after.encode()).findall("location") == []
    # Only whitespace at the insertion point may differ.
    assert after.split() == before.split()


@pytest.mark.parametrize(
    ("section", "location", "bad"),
    [
        (SECTION_SSL, "shop", element({"sslFlags": "Ssl, SslMapCert"})),
        (SECTION_SSL, "shop", element({"sslFlags": "Ssl, Bogus"})),
        (SECTION_ANONYMOUS, "shop", element({"logonMethod": "Remote"})),
        (SECTION_ANONYMOUS, "shop", element({"enabled": "yes"})),
        (SECTION_MAPPING, "shop", element({"logonMethod": "Kerberos"})),
        (
            SECTION_MAPPING,
            "shop",
            element(
                children={
                    "manyToOneMappings": element(
                        items=[element({"name": "m", "permissionMode": "Maybe"})]
                    )
                }
            ),
        ),
        (
            SECTION_MAPPING,
            "shop",
            element(
                children={
                    "manyToOneMappings": element(
                        items=[
                            element(
                                {"name": "m"},
                                children={
                                    "rules": element(
                                        items=[
                                            element(
                                                {
                                                    "certificateField": "Subjekt",
                                                    "certificateSubField": "CN",
                                                    "matchCriteria": "x",
                                                }
                                            )
                                        ]
                                    )
                                },
                            )
                        ]
                    )
                }
            ),
        ),
    ],
    ids=[
        "SslMapCert",
        "unknown-flag",
        "logonMethod",
        "bool",
        "mapping-logonMethod",
        "permissionMode",
        "certificateField",
    ],
)
def test_enum_and_flag_values_are_checked(host, section, location, bad) -> None:
    error = host.error("config.set", section=section, location=location, element=bad)
    assert error["code"] == "InvalidValue"
    assert error["hresult"] == "0x8007000D"


def test_sslmapcert_gets_an_explanation(host: AgentRunner) -> None:
    error = host.error(
        "config.set",
        section=SECTION_SSL,
        location="shop",
        element=element({"sslFlags": "SslMapCert"}),
    )
    assert "IIS 7" in error["message"]


def test_unknown_attribute_and_element_are_refused(host: AgentRunner) -> None:
    error = host.error(
        "config.set", section=SECTION_SSL, location="shop", element=element({"sslflags": "Ssl"})
    )
    assert (error["code"], "Unrecognized attribute 'sslflags'" in error["message"]) == (
        "InvalidValue",
        True,
    )
    error = host.error(
        "config.set",
        section=SECTION_MAPPING,
        location="shop",
        element=element(children={"oneToOneMapping": element()}),
    )
    assert error["code"] == "InvalidValue"
    error = host.error(
        "config.set",
        section=SECTION_SSL,
        location="shop",
        element=element(items=[element({"x": "y"})]),
    )
    assert error["code"] == "InvalidValue"


def test_required_attributes(host: AgentRunner) -> None:
    no_cert = mapping({"userName": "bob", "password": CANARY})
    error = host.error("config.set", section=SECTION_MAPPING, location="shop", element=no_cert)
    assert error["code"] == "InvalidValue" and "'certificate'" in error["message"]
    no_name = mapping(many=[element({"userName": "bob"})])
    error = host.error("config.set", section=SECTION_MAPPING, location="shop", element=no_name)
    assert error["code"] == "InvalidValue" and "'name'" in error["message"]
    empty_name = mapping(many=[element({"name": ""})])
    error = host.error("config.set", section=SECTION_MAPPING, location="shop", element=empty_name)
    assert error["code"] == "InvalidValue"


def test_unique_keys(host: AgentRunner) -> None:
    dup = mapping({"certificate": BLOB, "userName": "a"}, {"certificate": BLOB, "userName": "b"})
    error = host.error("config.set", section=SECTION_MAPPING, location="shop", element=dup)
    assert (error["code"], error["hresult"]) == ("DuplicateKey", "0x800700B7")
    # certificate is case sensitive: a different case is a different key.
    ok = mapping(
        {"certificate": BLOB, "userName": "a"}, {"certificate": BLOB.lower(), "userName": "b"}
    )
    assert host.one("config.set", section=SECTION_MAPPING, location="shop", element=ok)["changed"]
    # manyToOne names are not.
    dup_many = mapping(many=[element({"name": "Partners"}), element({"name": "partners"})])
    error = host.error("config.set", section=SECTION_MAPPING, location="shop", element=dup_many)
    assert error["code"] == "DuplicateKey"
    rule = {"certificateField": "Issuer", "certificateSubField": "CN", "matchCriteria": "Corp CA"}
    dup_rules = mapping(
        many=[
            element(
                {"name": "p"},
                children={
                    "rules": element(
                        items=[element(rule), element({**rule, "compareCaseSensitive": "true"})]
                    )
                },
            )
        ]
    )
    error = host.error("config.set", section=SECTION_MAPPING, location="shop", element=dup_rules)
    assert error["code"] == "DuplicateKey" and "combined key" in error["message"]
    ok_rules = mapping(
        many=[
            element(
                {"name": "p"},
                children={
                    "rules": element(
                        items=[element(rule), element({**rule, "compareCaseSensitive": "false"})]
                    )
                },
            )
        ]
    )
    assert host.one("config.set", section=SECTION_MAPPING, location="shop", element=ok_rules)


def test_add_without_clear_conflicts_with_inherited_entry(host: AgentRunner) -> None:
    host.one(
        "config.set",
        section=SECTION_MAPPING,
        location="",
        element=mapping({"certificate": BLOB, "userName": "a"}),
    )
    inherit = element(
        {"enabled": "true"},
        {"oneToOneMappings": element(items=[element({"certificate": BLOB, "userName": "b"})])},
    )
    error = host.error("config.set", section=SECTION_MAPPING, location="shop", element=inherit)
    assert error["code"] == "DuplicateKey"
    # With <clear/> the site starts from an empty collection.
    assert host.one(
        "config.set",
        section=SECTION_MAPPING,
        location="shop",
        element=mapping({"certificate": BLOB, "userName": "b"}),
    )["changed"]
    eff = host.one("config.get", section=SECTION_MAPPING, location="shop")["effective"]
    users = [i["attributes"]["userName"] for i in eff["children"]["oneToOneMappings"]["items"]]
    assert users == ["b"]


def test_locked_section_at_webconfig_path(host: AgentRunner) -> None:
    for section in (SECTION_SSL, SECTION_ANONYMOUS, SECTION_MAPPING):
        error = host.error(
            "config.set",
            section=section,
            location="shop",
            target="webconfig",
            element=element({"enabled": "true"} if section != SECTION_SSL else {}),
        )
        assert (error["code"], error["hresult"]) == ("Locked", "0x80070021")
        assert (
            error["message"]
            .split(": ", 1)[1]
            .startswith(
                "This configuration section cannot be used at this path. This happens when the "
                "section is locked at a parent level."
            )
        )
    error = host.error("config.clear", section=SECTION_SSL, location="shop", target="webconfig")
    assert error["code"] == "Locked"


def test_unlocked_section_at_webconfig_path(host: AgentRunner) -> None:
    # defaultDocument is overrideModeDefault="Allow"; directoryBrowse declares none (Allow).
    assert host.one(
        "config.set",
        section="system.webServer/directoryBrowse",
        location="shop",
        target="webconfig",
        element=element({"enabled": "true"}),
    )["changed"]
    web = host.state_dir / "webconfig" / "shop" / "web.config"
    assert 'directoryBrowse enabled="true"' in web.read_text()
    got = host.one("config.get", section="system.webServer/directoryBrowse", location="shop")
    assert got["present"] is False  # not in applicationHost.config
    assert got["effective"]["attributes"]["enabled"] == "true"
    assert host.one(
        "config.clear",
        section="system.webServer/directoryBrowse",
        location="shop",
        target="webconfig",
    )["changed"]


def test_location_override_mode_allow_unlocks(host: AgentRunner) -> None:
    text = (
        apphost(host)
        .read_text()
        .replace(
            "</configuration>",
            '    <location path="shop" overrideMode="Allow">\n        <system.webServer>\n'
            "            <security>\n                <access />\n            </security>\n"
            "        </system.webServer>\n    </location>\n</configuration>",
        )
    )
    apphost(host).write_text(text)
    assert host.one(
        "config.set",
        section=SECTION_SSL,
        location="shop",
        target="webconfig",
        element=element({"sslFlags": "Ssl"}),
    )["changed"]


def test_site_must_exist(host: AgentRunner) -> None:
    for op, args in (
        ("config.set", {"element": element({"sslFlags": "Ssl"})}),
        ("config.clear", {}),
    ):
        error = host.error(op, section=SECTION_SSL, location="nosuchsite/app", **args)
        assert (error["code"], error["hresult"]) == ("NotFound", "0x80070490")
    # Reading there is no error (as IIS's GetSection): nothing local, the inherited value.
    got = host.one("config.get", section=SECTION_SSL, location="nosuchsite/app")
    assert got["present"] is False and got["element"] is None
    assert host.one(
        "config.set", section=SECTION_SSL, location="SHOP/app", element=element({"sslFlags": "Ssl"})
    )["changed"]
    assert '<location path="shop/app">' in apphost(host).read_text()


def test_unknown_section(host: AgentRunner) -> None:
    error = host.error("config.get", section="system.webServer/nope", location="shop")
    assert error["code"] == "NotFound"


def test_feature_missing(host: AgentRunner) -> None:
    HostState(host.state_dir).set_feature("Web-Cert-Auth", False)
    error = host.error(
        "config.set",
        section=SECTION_MAPPING,
        location="shop",
        element=mapping({"certificate": BLOB, "userName": "a"}),
    )
    assert error["code"] == "FeatureMissing" and "Web-Cert-Auth" in error["message"]
    assert host.one("host.facts")["web_cert_auth_installed"] is False


def test_hand_edits_survive_byte_for_byte(host: AgentRunner) -> None:
    path = apphost(host)
    hand = (
        "    <!-- hand-written: ask Dana before changing shop -->\n"
        '    <location path="shop">\n'
        "        <!-- shop notes, keep -->\n"
        "        <system.webServer>\n"
        '            <defaultDocument   enabled = "false" ></defaultDocument>\n'
        "            <security>\n"
        "                <access sslFlags='Ssl' />\n"
        "            </security>\n"
        "        </system.webServer>\n"
        "    </location>\n"
        "\t<system.unrelated  someAttr='x' other=\"&amp;y\"><inner/></system.unrelated>\n"
    )
    original = path.read_text().replace("</configuration>", hand + "</configuration>")
    path.write_text(original)

    host.one(
        "config.set",
        section=SECTION_SSL,
        location="shop",
        element=element({"sslFlags": "Ssl,SslRequireCert"}),
    )
    host.one(
        "config.set",
        section=SECTION_ANONYMOUS,
        location="Default Web Site",
        element=element({"enabled": "false"}),
    )
    after = path.read_text()

    # Everything hand-written is still there, byte for byte, except the one targeted line.
    expected_hand = hand.replace(
        "<access sslFlags='Ssl' />", '<access sslFlags="Ssl, SslRequireCert" />'
    )
    assert expected_hand in after
    old_lines, new_lines = original.splitlines(), after.splitlines()
    ops = difflib.SequenceMatcher(a=old_lines, b=new_lines, autojunk=False).get_opcodes()
    changed = [
        (tag, old_lines[i1:i2], new_lines[j1:j2]) for tag, i1, i2, j1, j2 in ops if tag != "equal"
    ]
    replaced = [c for c in changed if c[0] != "insert"]
    assert replaced == [
        (
            "replace",
            ["                <access sslFlags='Ssl' />"],
            ['                <access sslFlags="Ssl, SslRequireCert" />'],
        )
    ]
    # The new location for Default Web Site is an insertion, nothing else moved.
    inserted = [line for c in changed if c[0] == "insert" for line in c[2]]
    assert '    <location path="Default Web Site">' in inserted


def test_passwords_are_encrypted_at_rest(host: AgentRunner) -> None:
    map_bob(host)
    host.one(
        "config.set",
        section=SECTION_ANONYMOUS,
        location="shop",
        element=element({"userName": "bob", "password": CANARY}),
    )
    got = host.one("config.get", section=SECTION_MAPPING, location="shop")["element"]
    stored = got["children"]["oneToOneMappings"]["items"][0]["attributes"]["password"]
    assert is_encrypted_value(stored) and stored.startswith("[enc:AesProvider:")
    for file in host.state_dir.rglob("*"):
        if file.is_file():
            assert CANARY.encode() not in file.read_bytes(), file
    # The stored ciphertext decrypts to the user's password.
    logons = host.one("mapping.verify_logons", site="shop")["results"]
    assert logons == [
        {
            "kind": "one_to_one",
            "key": BLOB,
            "user_name": "bob",
            "valid": True,
            "hresult": None,
            "checked": True,
        }
    ]


def test_encrypted_value_is_stored_as_is(host: AgentRunner) -> None:
    map_bob(host)
    found = host.one("config.get", section=SECTION_MAPPING, location="shop")["element"]
    # Put back what was read (a restore): same ciphertext, no change.
    assert (
        host.one("config.set", section=SECTION_MAPPING, location="shop", element=found)["changed"]
        is False
    )
    host.one("config.set", section=SECTION_MAPPING, location="Default Web Site", element=found)
    copied = host.one("config.get", section=SECTION_MAPPING, location="Default Web Site")
    assert copied["element"] == found


def test_verify_logons_reports_wrong_password(host: AgentRunner) -> None:
    map_bob(
        host,
        user="SIMIIS01\\bob",
        password="Wrong-Pw-123",
        many=[element({"name": "partners", "userName": "nobody", "password": CANARY})],
    )
    results = host.one("mapping.verify_logons", site="shop")["results"]
    assert [(r["kind"], r["valid"], r["hresult"]) for r in results] == [
        ("one_to_one", False, "0x8007052E"),
        ("many_to_one", False, "0x8007052E"),
    ]


def test_concurrent_writers_lose_nothing(tmp_path: Path) -> None:
    state = tmp_path / "host"
    AgentRunner(state)  # create the host once
    runners = [AgentRunner(state), AgentRunner(state)]
    errors: list[BaseException] = []
    barrier = threading.Barrier(2)

    def write(runner: AgentRunner, site: str, flags: list[str]) -> None:
        try:
            barrier.wait()
            for i, flag in enumerate(flags):
                runner.ok(
                    make_op(
                        "config.set",
                        section=SECTION_SSL,
                        location=f"{site}/app{i}",
                        element=element({"sslFlags": flag}),
                    )
                )
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [
        threading.Thread(target=write, args=(runners[0], "shop", ["Ssl"] * 8)),
        threading.Thread(target=write, args=(runners[1], "Default Web Site", ["Ssl128"] * 8)),
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    check = AgentRunner(state)
    for site, flag in (("shop", "Ssl"), ("Default Web Site", "Ssl128")):
        for i in range(8):
            got = check.one("config.get", section=SECTION_SSL, location=f"{site}/app{i}")
            assert got["element"]["attributes"]["sslFlags"] == flag


def test_restart_keeps_state(tmp_path: Path) -> None:
    state = tmp_path / "host"
    first = AgentRunner(state)
    map_bob(first)
    config_before = (state / "applicationHost.config").read_bytes()
    second = AgentRunner(state)  # a new process would do the same: nothing is regenerated
    assert (state / "applicationHost.config").read_bytes() == config_before
    assert second.one("config.get", section=SECTION_MAPPING, location="shop")["present"]
    assert second.one("mapping.verify_logons", site="shop")["results"][0]["valid"] is True


def test_locked_section_found_in_web_config_fails_reads(host: AgentRunner) -> None:
    # What a hand edit (or appcmd without /commit:apphost) leaves behind: IIS answers 500.19.
    web = host.state_dir / "webconfig" / "shop" / "web.config"
    web.parent.mkdir(parents=True)
    web.write_text(
        '<?xml version="1.0" encoding="UTF-8"?>\n<configuration>\n<system.webServer>\n'
        '<security><access sslFlags="None" /></security>\n</system.webServer>\n</configuration>\n'
    )
    error = host.error("config.get", section=SECTION_SSL, location="shop/app")
    assert (error["code"], error["hresult"]) == ("Locked", "0x80070021")
    # Other sections, and other sites, read fine.
    assert host.one("config.get", section=SECTION_ANONYMOUS, location="shop")
    assert host.one("config.get", section=SECTION_SSL, location="Default Web Site")


def test_concurrent_processes_lose_nothing(tmp_path: Path) -> None:
    # Two processes: only the file lock (fcntl on DIR/.lock) serialises them.
    import subprocess
    import sys

    state = tmp_path / "host"
    AgentRunner(state)
    script = (
        "import sys\n"
        "from pathlib import Path\n"
        "from iis_clientcert.host.contract import SECTION_SSL, element, make_op\n"
        "from iis_clientcert_simulator.testing import AgentRunner\n"
        "runner = AgentRunner(Path(sys.argv[1]))\n"
        "for i in range(6):\n"
        "    runner.ok(make_op('config.set', section=SECTION_SSL,\n"
        "              location=f'{sys.argv[2]}/p{i}', element=element({'sslFlags': 'Ssl'})))\n"
    )
    procs = [
        subprocess.Popen([sys.executable, "-c", script, str(state), site])
        for site in ("shop", "Default Web Site")
    ]
    assert [p.wait(120) for p in procs] == [0, 0]
    check = AgentRunner(state)
    for site in ("shop", "Default Web Site"):
        for i in range(6):
            assert check.one("config.get", section=SECTION_SSL, location=f"{site}/p{i}")["present"]


# --- the schema and the template as IIS 10 has them ----------------------------------------


def test_fresh_host_looks_like_a_default_iis_10(host: AgentRunner) -> None:
    root = etree.parse(str(apphost(host))).getroot()
    assert root.find("configProtectedData/providers/add[@name='AesProvider']") is not None
    modules = [m.get("name") for m in root.iterfind("system.webServer/globalModules/add")]
    assert {"AnonymousAuthenticationModule", "StaticFileModule"} <= set(modules)
    # Web-Cert-Auth shows where the agent looks for it: its module in <globalModules>.
    assert "IISCertificateMappingAuthenticationModule" in modules
    assert not (host.state_dir / "features.json").exists()
    listed = host.one("config.get", section="system.webServer/globalModules", location="")
    assert "IISCertificateMappingAuthenticationModule" in {
        item["attributes"]["name"] for item in listed["effective"]["items"]
    }
    assert host.one("host.facts")["web_cert_auth_installed"] is True

    assert HostState(host.state_dir).set_feature("Web-Cert-Auth", False)
    root = etree.parse(str(apphost(host))).getroot()
    modules = [m.get("name") for m in root.iterfind("system.webServer/globalModules/add")]
    assert "IISCertificateMappingAuthenticationModule" not in modules
    assert "AnonymousAuthenticationModule" in modules
    assert host.one("host.facts")["web_cert_auth_installed"] is False


def test_access_has_only_ssl_flags(host: AgentRunner) -> None:
    # IIS_schema.xml declares sslFlags alone; "flags" belongs to handlers@accessPolicy.
    error = host.error(
        "config.set",
        section=SECTION_SSL,
        location="shop",
        element=element({"sslFlags": "Ssl", "flags": "Read, Script"}),
    )
    assert error["code"] == "InvalidValue" and "Unrecognized attribute 'flags'" in error["message"]
    got = host.one("config.get", section=SECTION_SSL, location="shop")
    assert got["effective"]["attributes"] == {"sslFlags": "None"}


def test_anonymous_authentication_attributes_and_defaults(host: AgentRunner) -> None:
    got = host.one(
        "config.get",
        section="system.webServer/security/authentication/anonymousAuthentication",
        location="shop",
    )
    attributes = got["effective"]["attributes"]
    assert set(attributes) == {"enabled", "userName", "password", "logonMethod"}
    assert attributes["enabled"] == "true" and attributes["userName"] == "IUSR"
    error = host.error(
        "config.set",
        section=SECTION_ANONYMOUS,
        location="shop",
        element=element({"enabled": "true", "domain": "CORP"}),
    )
    assert "Unrecognized attribute 'domain'" in error["message"]


def test_mapping_collections_come_in_iis_order(host: AgentRunner) -> None:
    many = [element({"name": "p", "userName": "partner"})]
    section = element(
        {"enabled": "true"},
        {
            "oneToOneMappings": element(clear=True, items=[element({"certificate": BLOB})]),
            "manyToOneMappings": element(clear=True, items=many),
        },
    )
    host.one("config.set", section=SECTION_MAPPING, location="shop", element=section)
    got = host.one("config.get", section=SECTION_MAPPING, location="shop")
    assert list(got["effective"]["children"]) == ["manyToOneMappings", "oneToOneMappings"]
    assert list(got["element"]["children"]) == ["manyToOneMappings", "oneToOneMappings"]
    shop = etree.parse(str(apphost(host))).getroot().find("location[@path='shop']")
    assert shop is not None
    written = next(shop.iter(SECTION_MAPPING.split("/")[-1]))
    assert [c.tag for c in written if isinstance(c.tag, str)] == [
        "manyToOneMappings",
        "oneToOneMappings",
    ]


def test_mapping_keys_and_case_flags_are_iis(host: AgentRunner) -> None:
    # certificateSubField is a case-sensitive part of the rule's key: "CN" and "cn" differ.
    rule = {"certificateField": "Subject", "certificateSubField": "CN", "matchCriteria": "a*"}
    rules = element(items=[element(rule), element({**rule, "certificateSubField": "cn"})])
    two = mapping(many=[element({"name": "p", "userName": "u"}, children={"rules": rules})])
    assert host.one("config.set", section=SECTION_MAPPING, location="shop", element=two)
    # A one-to-one userName has no nonEmptyString validation in IIS_schema.xml.
    empty_user = mapping({"certificate": BLOB, "userName": ""})
    assert host.one("config.set", section=SECTION_MAPPING, location="shop", element=empty_user)


@pytest.mark.parametrize(
    ("edit", "code", "words"),
    [
        (
            ('<site name="shop" id="2">', '<site name="shop" id="1">'),
            "DuplicateKey",
            "unique key attribute 'id' set to '1'",
        ),
        (
            ('<site name="shop" id="2">', '<site name="Default Web Site" id="2">'),
            "DuplicateKey",
            "unique key attribute 'name'",
        ),
        (
            ('bindingInformation="*:8080:"', 'bindingInformation=""'),
            "InvalidValue",
            "'bindingInformation' must be a non-empty string",
        ),
        (
            ('<binding protocol="http" bindingInformation="*:8080:" />', "<binding />"),
            "InvalidValue",
            "Missing required attribute 'protocol'",
        ),
        (('<site name="shop" id="2">', '<site name="shop" id="two">'), "InvalidValue", "uint"),
    ],
    ids=["site-id", "site-name", "empty-binding", "binding-without-protocol", "id-not-uint"],
)
def test_sites_are_checked_as_iis_loads_them(
    host: AgentRunner, edit: tuple[str, str], code: str, words: str
) -> None:
    path = apphost(host)
    text = path.read_text()
    assert edit[0] in text
    path.write_text(text.replace(edit[0], edit[1], 1))
    error = host.error("site.list")
    assert error["code"] == code and words in error["message"], error
