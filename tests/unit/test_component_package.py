"""The component package (iis_clientcert.package, components/remote.py): one definition of
ClientCertSite's arguments (the schema's types mirror the Python component's, checked), a
schema that reads well in every language, the published schema current, errors in the
schema's spelling, the provider building the Python component from schema inputs."""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import re
import stat
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any, NotRequired, Required, TypedDict

import pulumi
import pytest
from pulumi.errors import InputPropertiesError
from pulumi.provider.provider import ConstructResult

from iis_clientcert import package
from iis_clientcert.components import ArgsError, remote
from iis_clientcert.framework.inputs import CONNECTION_SECRETS
from iis_clientcert.providers import local_user, server_certificate
from iis_clientcert_simulator import pki
from tests.support.mocks import installed, run

REPO = Path(__file__).resolve().parents[2]
PUBLISHED = REPO / "schema" / "iis-clientcert.json"
TS_CLASS = REPO / "examples" / "typescript" / "clientCertSite.ts"
TYPE = "iis-clientcert:index:"


@pytest.fixture(scope="module")
def schema() -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(package.ClientCertSiteProvider().schema or "{}")
    return loaded


def _objects(schema: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any], set[str]]]:
    """(name, properties, required) of the component's inputs, its outputs and each type."""
    site = schema["resources"][TYPE + "ClientCertSite"]
    yield "ClientCertSite inputs", site["inputProperties"], set(site["requiredInputs"])
    yield "ClientCertSite outputs", site["properties"], set(site["required"])
    for token, typ in schema["types"].items():
        yield token.removeprefix(TYPE), typ["properties"], set(typ.get("required", []))


# ======================================================================== one definition


def test_the_schema_types_mirror_the_python_component() -> None:
    assert remote.drift() == []


class _Rule(TypedDict, total=False):
    """A schema type that drifted from RuleDict in every way drift() knows."""

    sub_field: Required[pulumi.Input[int]]
    """Changed type."""
    field: Required[pulumi.Input[str]]
    """Required here only."""
    case_sensitive: pulumi.Input[bool]
    """Compare with case. Default: false."""
    extra: NotRequired[str]
    """Not in Python."""


def test_drift_names_each_difference() -> None:
    # The checker can fail: a copy of the Rule mirror with a drifted schema side.
    (rule,) = [m for m in remote.mirrors() if m.schema is remote.Rule]
    found = remote.drift([dataclasses.replace(rule, schema=_Rule)])
    assert "_Rule: the Python component takes 'match', the schema does not" in found
    assert "_Rule: 'extra' is in the schema, not in the Python component" in found
    assert "_Rule.sub_field: input[int] here, input[str] in Python" in found
    assert any(f.startswith("_Rule: required ['field', 'sub_field'] here") for f in found)
    assert any("case_sensitive: the description must say 'Default: true.'" in f for f in found)


def test_drift_sees_a_python_only_key_python_dropped() -> None:
    (user,) = [m for m in remote.mirrors() if m.schema is remote.SiteUser]
    found = remote.drift([dataclasses.replace(user, python_only={"gone": "no longer"})])
    assert found[-1] == "SiteUser: python_only names 'gone', which Python does not take"
    assert "SiteUser: the Python component takes 'aliases', the schema does not" in found


def test_folder_access_has_the_keys_local_user_reads() -> None:
    # FolderAccess mirrors no TypedDict (Python takes a plain mapping): LocalUser reads it.
    assert set(remote.FolderAccess.__annotations__) == {"path", "rights"}
    assert remote.FolderAccess.__required_keys__ == frozenset({"path"})
    desired = local_user.LocalUserProvider().validate(
        {
            "name": "alice",
            "password": "Al1ce!pw-long",
            "folder_access": [{"path": "C:\\shop", "rights": "Modify"}, {"path": "D:\\x"}],
        }
    )
    assert [(f.path, f.rights) for f in desired.folder_access] == [
        ("C:\\shop", "Modify"),
        ("D:\\x", "ReadAndExecute"),  # the default FolderAccess.rights states
    ]
    assert 'Default: "ReadAndExecute".' in remote.field_docs(remote.FolderAccess)["rights"]


# ====================================================================== schema reads well


def test_the_component_has_its_type_token(schema: dict[str, Any]) -> None:
    assert list(schema["resources"]) == ["iis-clientcert:index:ClientCertSite"]
    assert schema["name"] == "iis-clientcert"
    assert schema["version"] == package.version()


def test_every_property_is_camel_case_and_documented(schema: dict[str, Any]) -> None:
    for name, properties, _ in _objects(schema):
        assert properties, name
        for key, prop in properties.items():
            assert re.fullmatch(r"[a-z][A-Za-z0-9]*", key), f"{name}.{key}"
            text = prop.get("description", "")
            assert len(text) > 10, f"{name}.{key} has no description"
            # Paragraphs, not the docstring's source lines.
            assert "\n" not in text.replace("\n\n", ""), f"{name}.{key}: {text!r}"
    for token, typ in schema["types"].items():
        assert typ.get("description"), token
    assert schema["resources"][TYPE + "ClientCertSite"]["description"]


def test_the_python_spelling_becomes_camel_case(schema: dict[str, Any]) -> None:
    site = schema["resources"][TYPE + "ClientCertSite"]
    assert {"oneToOne", "manyToOne", "trustedRoots", "allowUntrustedClientCertificates"} <= set(
        site["inputProperties"]
    )
    assert set(site["requiredInputs"]) == {"connection", "site"}
    assert {"httpsUrl", "mappedUsers", "rootThumbprints"} <= set(site["properties"])
    rule = schema["types"][TYPE + "Rule"]
    assert set(rule["properties"]) == {"subField", "match", "field", "caseSensitive"}
    assert rule["required"] == ["match", "subField"]


def test_secrets_are_marked_and_documented(schema: dict[str, Any]) -> None:
    marked = {
        (name, key)
        for name, properties, _ in _objects(schema)
        for key, prop in properties.items()
        if prop.get("secret")
    }
    assert marked == {
        ("Connection", "password"),
        ("Connection", "clientKeyPem"),
        ("HttpsEndpoint", "pfx"),
        ("HttpsEndpoint", "password"),
        ("SiteUser", "password"),
    }
    for name, key in marked:
        prop = schema["types"][TYPE + name]["properties"][key]
        assert prop["description"].startswith("Secret."), (name, key)
    # Nothing else says it is one.
    for name, properties, _ in _objects(schema):
        for key, prop in properties.items():
            if (name, key) not in marked:
                assert "Secret." not in prop.get("description", ""), (name, key)


def test_the_secrets_are_the_ones_the_resources_declare() -> None:
    assert set(remote.SECRETS[remote.Connection]) == set(CONNECTION_SECRETS)
    assert set(remote.SECRETS[remote.HttpsEndpoint]) == set(server_certificate.INPUTS.secrets)
    assert set(remote.SECRETS[remote.SiteUser]) == set(local_user.INPUTS.secrets)


def test_plain_lists_are_marked_plain(schema: dict[str, Any]) -> None:
    # Each entry becomes a resource: the lists are written in the program.
    inputs = schema["resources"][TYPE + "ClientCertSite"]["inputProperties"]
    for key in ("users", "oneToOne", "manyToOne", "trustedRoots", "https"):
        assert inputs[key].get("plain") is True, key
    assert package.PLAIN_INPUTS == ("https", "trusted_roots", "users", "one_to_one", "many_to_one")
    for key in ("connection", "site", "sslFlags", "anonymousEnabled"):
        assert not inputs[key].get("plain"), key


def test_the_published_schema_is_current(schema: dict[str, Any]) -> None:
    # tests/engine/test_other_languages.py checks it is what `pulumi package get-schema`
    # prints; this one needs no CLI.
    published = json.loads(PUBLISHED.read_text())
    assert published == schema, "schema/iis-clientcert.json is stale: run `make schema`"


def test_the_typescript_class_has_the_schema_names(schema: dict[str, Any]) -> None:
    source = TS_CLASS.read_text()
    interfaces = dict(re.findall(r"export interface (\w+) \{(.*?)\n\}", source, re.DOTALL))
    types = {token.removeprefix(TYPE): typ for token, typ in schema["types"].items()}
    site = schema["resources"][TYPE + "ClientCertSite"]
    types["ClientCertSiteArgs"] = {
        "properties": site["inputProperties"],
        "required": site["requiredInputs"],
    }
    assert set(interfaces) == set(types)
    for name, body in interfaces.items():
        fields = dict(re.findall(r"^\s+(\w+)(\??):", body, re.MULTILINE))
        assert set(fields) == set(types[name]["properties"]), name
        required = {k for k, optional in fields.items() if not optional}
        assert required == set(types[name].get("required", [])), name
    outputs = set(re.findall(r"public readonly (\w+)!", source))
    assert outputs == set(site["properties"])


# ======================================================================= names and errors


def test_paths_and_messages_in_the_schema_spelling() -> None:
    assert package.spelled("many_to_one[0].rules[1].sub_field") == "manyToOne[0].rules[1].subField"
    assert package.spelled("users[2].folder_access[0].path") == "users[2].folderAccess[0].path"
    assert (
        package.spelled_text(
            "Add its issuing CA to trusted_roots, or set allow_untrusted_client_certificates=True"
        )
        == "Add its issuing CA to trustedRoots, or set allowUntrustedClientCertificates: true"
    )
    # Words that are no property stay.
    assert package.spelled_text("a non_property and the site_name") == (
        "a non_property and the site_name"
    )


def test_an_args_error_is_one_line_without_python() -> None:
    error = ArgsError(
        "ClientCertSite 'shop'",
        "one_to_one[0].certificate",
        "CN=alice",
        "does not chain to any of trusted_roots: IIS would answer 403.16",
        "Add its issuing CA to trusted_roots, or set "
        "allow_untrusted_client_certificates=True if the host trusts it already.",
    )
    converted = package.user_error(error)
    assert isinstance(converted, InputPropertiesError)
    assert converted.message == (
        'oneToOne[0].certificate = "CN=alice": does not chain to any of trustedRoots: IIS '
        "would answer 403.16. Add its issuing CA to trustedRoots, or set "
        "allowUntrustedClientCertificates: true if the host trusts it already."
    )
    assert converted.errors == []


def test_the_error_behind_a_failed_registration_is_found() -> None:
    error = ArgsError("ClientCertSite 'shop'", "site", None, "is required")
    try:
        try:
            raise error
        except ArgsError as inner:
            raise RuntimeError("registration failed") from inner
    except RuntimeError as outer:
        assert package._args_error(outer) is error
    assert package._args_error(RuntimeError("other")) is None


# ============================================================ the provider builds the site


@pytest.fixture(scope="module", autouse=True)
def _quiet_asyncio() -> None:
    # A failed check leaves futures nobody awaits (as in tests/unit/test_components.py).
    logging.getLogger("asyncio").setLevel(logging.CRITICAL)


class _Mocks(pulumi.runtime.Mocks):
    def __init__(self) -> None:
        self.made: dict[str, pulumi.runtime.MockResourceArgs] = {}

    def new_resource(self, args: pulumi.runtime.MockResourceArgs) -> tuple[str, dict[str, Any]]:
        self.made[args.name] = args
        outputs = dict(args.inputs)
        outputs.setdefault("thumbprint", f"THUMB-{args.name}")
        return f"{args.name}-id", outputs

    def call(self, args: pulumi.runtime.MockCallArgs) -> tuple[dict[Any, Any], None]:
        return {}, None


@pytest.fixture
def mocks() -> Iterator[_Mocks]:
    with installed(_Mocks()) as found:
        yield found


@pytest.fixture(scope="module")
def certs() -> dict[str, str]:
    ca = pki.make_ca("Package Root")
    return {
        "ca": ca.cert_pem().decode(),
        "alice": pki.make_leaf(ca, "alice").cert_pem().decode(),
    }


def _inputs(certs: dict[str, str], **extra: Any) -> dict[str, Any]:
    """Inputs as the engine sends them: the schema's names."""
    return {
        "connection": {
            "endpoint": "https://web01:5986/wsman",
            "transport": "basic",
            "username": "admin",
            "password": "S3cret!pw",
        },
        "site": "shop",
        "trustedRoots": [certs["ca"]],
        "users": [{"name": "alice", "password": "Al1ce!pw", "folderAccess": [{"path": "C:\\x"}]}],
        "oneToOne": [{"certificate": certs["alice"], "user": "alice"}],
        "manyToOne": [
            {"name": "staff", "user": "alice", "rules": [{"subField": "O", "match": "Ex*"}]}
        ],
        **extra,
    }


# Pulumi's wire envelope of a secret value (pulumi.runtime.rpc).
SECRET_SIG = "4dabf18193072939515e22adb298388d"


def _plain(value: Any) -> Any:
    """A mock input without Pulumi's secret envelope (the connection holds a secret)."""
    if isinstance(value, dict) and value.get(SECRET_SIG):
        return _plain(value["value"])
    return value


STACK_URN = "urn:pulumi:test::proj::pulumi:pulumi:Stack::proj-test"


def _construct(
    provider: package.ClientCertSiteProvider, name: str, inputs: dict[str, Any]
) -> ConstructResult:
    # As the SDK's provider server calls it: each request starts without a root resource
    # (settings.reset_options), the options always set protect.
    pulumi.runtime.settings.ROOT.set(None)
    options = pulumi.ResourceOptions(
        parent=pulumi.resource.DependencyResource(STACK_URN), protect=False
    )
    return provider.construct(name, package.TOKEN, inputs, options)


@pytest.fixture
def provider(monkeypatch: pytest.MonkeyPatch) -> package.ClientCertSiteProvider:
    # The resources' provider would run in this very interpreter.
    monkeypatch.setenv("PULUMI_PYTHON_CMD", sys.executable)
    monkeypatch.delenv("PULUMI_RUNTIME_VIRTUALENV", raising=False)
    package._dynamic_python_problem.cache_clear()
    return package.ClientCertSiteProvider()


def test_the_provider_builds_the_python_component(
    mocks: _Mocks, provider: package.ClientCertSiteProvider, certs: dict[str, str]
) -> None:
    state = run(
        lambda: pulumi.Output.from_input(
            _construct(
                provider, "shop", _inputs(certs, https={"pfx": "MIIB", "port": 8443.0})
            ).state
        )
    )
    made = mocks.made
    assert made["shop"].typ == package.TOKEN
    # The schema's names reached the resources as the Python component's.
    assert made["shop-user-alice"].inputs["folder_access"] == [{"path": "C:\\x"}]
    mapping = made["shop-mapping"].inputs
    assert mapping["many_to_one"][0]["rules"][0]["sub_field"] == "O"
    assert mapping["one_to_one"][0]["user_name"] == "alice"
    assert made["shop-https"].inputs["port"] == 8443  # an integer, as the engine sends 8443.0
    # The state the program reads has the schema's names.
    assert state["siteName"] == "shop" and state["hostEndpoint"] == "https://web01:5986"
    assert set(state) == {
        "hostEndpoint",
        "siteName",
        "httpsUrl",
        "serverThumbprint",
        "rootThumbprints",
        "mappedUsers",
        "accounts",
    }


def test_a_connection_given_as_an_output_is_mapped_when_it_resolves(
    mocks: _Mocks, provider: package.ClientCertSiteProvider, certs: dict[str, str]
) -> None:
    def program() -> Any:
        inputs = _inputs(certs)
        inputs["connection"] = pulumi.Output.from_input(inputs["connection"]).apply(dict)
        return _construct(provider, "shop", inputs).urn

    run(program)
    connection = _plain(mocks.made["shop-ssl"].inputs["connection"])
    assert connection["endpoint"] == "https://web01:5986/wsman"
    assert connection["username"] == "admin"


def test_a_list_given_as_an_output_is_refused_by_name(
    mocks: _Mocks, provider: package.ClientCertSiteProvider, certs: dict[str, str]
) -> None:
    def program() -> Any:
        inputs = _inputs(certs)
        inputs["oneToOne"] = pulumi.Output.from_input(inputs["oneToOne"]).apply(list)
        return _construct(provider, "shop", inputs).urn

    with pytest.raises(InputPropertiesError) as caught:
        run(program)
    assert caught.value.message.startswith("oneToOne: must be written in the program")


def test_a_mistake_is_told_in_the_schema_spelling(
    mocks: _Mocks, provider: package.ClientCertSiteProvider, certs: dict[str, str]
) -> None:
    inputs = _inputs(certs)
    inputs["manyToOne"][0]["user"] = "bob"
    with pytest.raises(InputPropertiesError) as caught:
        run(lambda: _construct(provider, "shop", inputs).urn)
    assert caught.value.message.startswith('manyToOne[0].user = "bob": is not one of this site')


def test_sites_of_one_program_share_one_register(
    mocks: _Mocks, provider: package.ClientCertSiteProvider, certs: dict[str, str]
) -> None:
    # Two constructs of one stack: one https port without SNI is refused, as in Python.
    def program() -> Any:
        first = _construct(provider, "a", _inputs(certs, https={"pfx": "MIIB"}))
        second = _inputs(certs, site="intranet", https={"pfx": "MIIB"})
        second["trustedRoots"], second["oneToOne"], second["manyToOne"] = [], [], []
        second["users"] = []
        _construct(provider, "b", second)
        return first.urn

    with pytest.raises(InputPropertiesError) as caught:
        run(program)
    assert caught.value.message.startswith("https.port = 443: is also bound by site 'shop'")


def test_a_python_without_the_package_is_named_with_the_fix(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    fake = tmp_path / "python"
    fake.write_text("#!/bin/sh\nexit 1\n")
    fake.chmod(fake.stat().st_mode | stat.S_IXUSR)
    monkeypatch.delenv("PULUMI_RUNTIME_VIRTUALENV", raising=False)
    monkeypatch.setenv("PULUMI_PYTHON_CMD", str(fake))
    package._dynamic_python_problem.cache_clear()
    try:
        problem = package._dynamic_python_problem()
    finally:
        package._dynamic_python_problem.cache_clear()
    assert problem is not None
    assert f"({fake})" in problem and "cannot import iis_clientcert" in problem
    assert f"runtime.options.virtualenv: {sys.prefix}" in problem
    # A virtualenv names its interpreter: this one has the package.
    monkeypatch.setenv("PULUMI_RUNTIME_VIRTUALENV", sys.prefix)
    try:
        assert package._dynamic_python_problem() is None
    finally:
        package._dynamic_python_problem.cache_clear()


def test_the_plugin_executable_is_there() -> None:
    plugin = REPO / "plugin" / "pulumi-resource-iis-clientcert"
    assert plugin.is_file() and os.access(plugin, os.X_OK)
    assert "-m iis_clientcert.package" in plugin.read_text()
