"""The provider framework's seams: one plan hook (with the stored outputs on update),
NotConvergedError when the verifying read still differs, inputs declared once, and one
exception hierarchy for everything the project raises."""

from __future__ import annotations

import ast
import base64
import importlib
import inspect
import pkgutil
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import pulumi
import pytest

import iis_clientcert
from iis_clientcert import errors
from iis_clientcert.framework import base
from iis_clientcert.framework.base import Change, IisProvider
from iis_clientcert.framework.inputs import Input, Inputs, connection_input
from iis_clientcert.host import contract
from iis_clientcert.host.client import ReadKey, ReadPlan, Reads
from iis_clientcert.host.connection import Connection
from iis_clientcert.host.contract import Op
from iis_clientcert.providers import (
    anonymous_authentication,
    certificate_mapping,
    https_binding,
    local_user,
    server_certificate,
    ssl_settings,
    trusted_root,
)
from iis_clientcert_simulator import pki

REPO = Path(__file__).resolve().parents[2]
CONNECTION = {
    "endpoint": "https://web01:5986/wsman",
    "transport": "basic",
    "username": "admin",
    "password": "S3cret!pw",
}

# --- a toy resource over a fake host: the base's create/update machinery ------------------

FLAG = ReadKey[contract.ConfigGetResult]("flag")


class FakeHost:
    """Stands in for HostClient: the attribute ``value`` at one location, and the calls."""

    def __init__(self, value: str, *, writes_stick: bool = True) -> None:
        self.value = value
        self.writes_stick = writes_stick
        self.calls: list[list[str]] = []

    def _result(self) -> Any:
        el = contract.element({"v": self.value})
        return {"present": True, "element": el, "effective": el}

    def read(self, plan: ReadPlan) -> Reads:
        self.calls.append([op.name for op in plan.ops])
        return plan.bind([self._result() for _ in plan.ops])

    def write_and_read(self, writes: list[Op[Any]], plan: ReadPlan) -> Reads:
        self.calls.append([op.name for op in [*writes, *plan.ops]])
        if self.writes_stick:
            self.value = writes[-1].args["element"]["attributes"]["v"]
        return plan.bind([self._result() for _ in plan.ops])

    def call(self, ops: list[Op[Any]]) -> list[Any]:
        self.calls.append([op.name for op in ops])
        return [{"changed": True} for _ in ops]


class ToyProvider(IisProvider[str, str]):
    kind = "Toy"
    inputs = Inputs("Toy", Input("value", "str", "The value", default="on"))

    def __init__(self) -> None:
        super().__init__()
        self.previous_seen: list[Mapping[str, Any] | None] = []

    def validate(self, inputs: Mapping[str, Any]) -> str:
        return self.inputs.get_str(inputs, "value")

    def normalised_inputs(self, desired: str) -> dict[str, Any]:
        return {"value": desired}

    def resource_id(self, connection: Connection, desired: str) -> str:
        return f"{connection.host}/toy"

    def read_plan(self, desired: str) -> ReadPlan:
        return ReadPlan().add(FLAG, contract.config_get(contract.SECTION_SSL, "shop"))

    def parse_current(self, desired: str, reads: Reads) -> str:
        written = reads[FLAG]["element"]
        return written["attributes"]["v"] if written is not None else ""

    def plan(
        self, current: str, desired: str, previous: Mapping[str, Any] | None = None
    ) -> list[Change]:
        self.previous_seen.append(previous)
        if current == desired:
            return []
        element = contract.element({"v": desired})
        return [Change(f"v: {current} -> {desired}", [contract.config_set("s", "shop", element)])]

    def delete_changes(self, desired: str, current: str, stored: Mapping[str, Any]) -> list[Change]:
        return []


def _with_host(monkeypatch: pytest.MonkeyPatch, host: FakeHost) -> None:
    monkeypatch.setattr(base, "ProviderClient", lambda connection: host)


def test_update_reads_once_then_writes_and_verifies_in_one_call(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    host = FakeHost("off")
    _with_host(monkeypatch, host)
    provider = ToyProvider()
    olds = {"connection": CONNECTION, "value": "off"}
    result = provider.update("web01/toy", olds, {"connection": CONNECTION, "value": "on"})
    assert result.outs is not None and result.outs["value"] == "on" and host.value == "on"
    assert host.calls == [["config.get"], ["config.set", "config.get"]]
    # The plan of the update sees the stored outputs; the check after writing does not
    # (it asks what is left to do on the host, not what changed since the last run).
    assert provider.previous_seen == [olds, None]


def test_a_write_the_host_does_not_show_is_not_converged(monkeypatch: pytest.MonkeyPatch) -> None:
    host = FakeHost("off", writes_stick=False)
    _with_host(monkeypatch, host)
    with pytest.raises(errors.NotConvergedError) as caught:
        ToyProvider().update(
            "web01/toy",
            {"connection": CONNECTION, "value": "off"},
            {"connection": CONNECTION, "value": "on"},
        )
    error = caught.value
    assert (error.host, error.kind, error.leftover) == ("web01", "Toy", ("v: off -> on",))
    assert str(error) == (
        "web01: Toy: the host does not show the desired state after writing (v: off -> on)"
    )
    assert isinstance(error, errors.HostError) and isinstance(error, RuntimeError)


# --- inputs declared once -------------------------------------------------------------------

Sample = Callable[[], dict[str, Any]]


def _pfx(issued: pki.Issued) -> str:
    return base64.b64encode(issued.pfx(b"Pfx-Pa55word!")).decode()


@pytest.fixture
def samples(root_ca: pki.Issued, server_leaf: pki.Issued) -> dict[str, tuple[Any, Any, Sample]]:
    """provider module -> (provider class, resource class, minimal valid inputs)."""
    return {
        "SslSettings": (
            ssl_settings.SslSettingsProvider,
            ssl_settings.SslSettings,
            lambda: {"site": "shop"},
        ),
        "AnonymousAuthentication": (
            anonymous_authentication.AnonymousAuthenticationProvider,
            anonymous_authentication.AnonymousAuthentication,
            lambda: {"site": "shop"},
        ),
        "TrustedRoot": (
            trusted_root.TrustedRootProvider,
            trusted_root.TrustedRoot,
            lambda: {"certificate": root_ca.cert_pem().decode()},
        ),
        "ServerCertificate": (
            server_certificate.ServerCertificateProvider,
            server_certificate.ServerCertificate,
            lambda: {"pfx": _pfx(server_leaf), "password": "Pfx-Pa55word!"},
        ),
        "HttpsBinding": (
            https_binding.HttpsBindingProvider,
            https_binding.HttpsBinding,
            lambda: {"site": "Default Web Site", "certificate_thumbprint": "AB" * 20},
        ),
        "LocalUser": (
            local_user.LocalUserProvider,
            local_user.LocalUser,
            lambda: {"name": "bob", "password": "Str0ng-Passw0rd!"},
        ),
        "CertificateMapping": (
            certificate_mapping.CertificateMappingProvider,
            certificate_mapping.CertificateMapping,
            lambda: {"site": "shop"},
        ),
    }


KINDS = [
    "SslSettings",
    "AnonymousAuthentication",
    "TrustedRoot",
    "ServerCertificate",
    "HttpsBinding",
    "LocalUser",
    "CertificateMapping",
]


@pytest.mark.parametrize("kind", KINDS)
def test_inputs_are_declared_once_and_used_from_there(
    samples: dict[str, tuple[Any, Any, Sample]], kind: str
) -> None:
    provider_class, resource_class, sample = samples[kind]
    declared: Inputs = provider_class.inputs
    provider = provider_class()
    # check fills the declared defaults and stores exactly the declared inputs.
    result = provider.check({}, {"connection": CONNECTION, **sample()})
    assert result.failures == []
    stored = {k: v for k, v in result.inputs.items() if k != "connection"}
    assert set(stored) == set(declared.names)
    for decl in declared:
        if decl.default is not None:
            assert stored[decl.name] == decl.default, decl.name
    # The resource class takes exactly the declared inputs (derived ones aside).
    params = set(inspect.signature(resource_class.__init__).parameters)
    own = params - {"self", "resource_name", "connection", "opts"}
    assert own == {d.name for d in declared if not d.derived}
    # Replacements come from the declarations; the docs too.
    assert provider.inputs.replace_on == tuple(d.name for d in declared if d.replace)
    for decl in declared:
        if not decl.derived:
            assert f"{decl.name}: {decl.doc}" in (resource_class.__doc__ or "")


def test_a_declared_default_is_the_one_validate_uses() -> None:
    # Change the declaration only: validate follows.
    decl = https_binding.INPUTS["port"]
    assert (
        https_binding.validate_inputs({"site": "s", "certificate_thumbprint": "AB" * 20}).port
        == decl.default
    )
    other = Inputs("HttpsBinding", Input("port", "int", "p", default=8443))
    assert other.get_int({}, "port", 1, 65535) == 8443
    assert other.get_int({"port": None}, "port", 1, 65535) == 8443


def test_inputs_props_fill_defaults_wrap_secrets_and_refuse_unknown_names() -> None:
    declared = local_user.INPUTS
    props = declared.props(CONNECTION, ("adopted",), name="bob", password="pw")
    assert props["disabled"] is False and props["groups"] == [] and props["adopted"] is None
    assert isinstance(props["password"], pulumi.Output)  # Output.secret
    assert props["name"] == "bob"
    assert props["connection"]["endpoint"] == CONNECTION["endpoint"]
    # Defaults are copies: one resource's list is never another's.
    props["groups"].append("x")
    assert declared.props(CONNECTION, (), name="b", password="p")["groups"] == []
    with pytest.raises(errors.InputTypeError, match="LocalUser has no input nmae"):
        declared.props(CONNECTION, (), nmae="bob")


# --- one exception hierarchy ----------------------------------------------------------------


def _project_modules() -> list[Any]:
    names = [m.name for m in pkgutil.walk_packages(iis_clientcert.__path__, "iis_clientcert.")]
    return [importlib.import_module(n) for n in names] + [importlib.import_module("stack_config")]


def test_every_project_exception_derives_from_one_base() -> None:
    found = []
    for module in _project_modules():
        for _, cls in inspect.getmembers(module, inspect.isclass):
            if cls.__module__ == module.__name__ and issubclass(cls, BaseException):
                found.append(cls)
                assert issubclass(cls, errors.IisClientCertError), cls
    assert errors.ContractError in found and errors.NotConvergedError in found
    # Each also subclasses the builtin callers know.
    assert issubclass(errors.ContractError, ValueError)
    assert issubclass(errors.InputTypeError, TypeError)
    assert issubclass(errors.NotConvergedError, errors.HostError)


def _sources() -> list[Path]:
    roots = [REPO / "iis_clientcert", REPO / "providers", REPO / "components"]
    files = {p.resolve() for root in roots for p in root.glob("**/*.py")}
    files |= {REPO / "stack_config.py", REPO / "__main__.py"}
    return sorted(files)


def test_no_project_code_raises_a_bare_builtin_error() -> None:
    # (KeyError stays: a lookup by a name never planned is a mapping's KeyError.)
    bare = {"ValueError", "TypeError", "RuntimeError", "Exception", "OSError", "ConnectionError"}
    offenders = []
    for path in _sources():
        for node in ast.walk(ast.parse(path.read_text("utf-8"))):
            if isinstance(node, ast.Raise) and isinstance(node.exc, ast.Call):
                func = node.exc.func
                if isinstance(func, ast.Name) and func.id in bare:
                    offenders.append(f"{path.relative_to(REPO)}:{node.lineno} {func.id}")
    assert offenders == []


def test_connection_of_the_wrong_type_is_a_project_type_error() -> None:
    with pytest.raises(errors.InputTypeError, match="ConnectionArgs or a dict") as caught:
        connection_input("https://web01:5986/wsman")
    assert isinstance(caught.value, TypeError)
