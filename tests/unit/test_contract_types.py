"""Typed op results: the shape checker, the typed op builders against OPS, and results read
by name (ReadPlan / Reads) with HostClient refusing a result that drifted from the contract."""

from __future__ import annotations

import inspect
import json
from typing import Any, Literal, NotRequired, TypedDict, get_args, get_type_hints, is_typeddict

import pytest

from iis_clientcert.errors import AgentProtocolError, ContractError, IisClientCertError
from iis_clientcert.host import client as client_module
from iis_clientcert.host import contract, shapes
from iis_clientcert.host.client import HostClient, ReadKey, ReadPlan, Reads
from iis_clientcert.host.connection import Connection
from iis_clientcert_simulator import audit

# --- the checker ---------------------------------------------------------------------------


class Inner(TypedDict):
    kind: Literal["a", "b"]
    note: NotRequired[str]


class Outer(TypedDict):
    name: str
    count: int
    flag: bool
    maybe: str | None
    items: list[Inner]
    table: dict[str, int]


GOOD: dict[str, Any] = {
    "name": "x",
    "count": 3,
    "flag": False,
    "maybe": None,
    "items": [{"kind": "a"}, {"kind": "b", "note": "n"}],
    "table": {"k": 1},
}


def test_the_checker_accepts_the_declared_shape() -> None:
    assert shapes.problems(GOOD, Outer) == []
    assert shapes.problems({**GOOD, "maybe": "text"}, Outer) == []


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        ({"name": 1}, "result.name: expected str, got int"),
        ({"count": True}, "result.count: expected int, got bool"),  # bool is not an int
        ({"count": "3"}, "result.count: expected int, got str"),
        ({"flag": 0}, "result.flag: expected bool, got int"),
        ({"maybe": 5}, "result.maybe: expected str or null, got int"),
        ({"items": {"kind": "a"}}, "result.items: expected a list, got dict"),
        ({"items": [{"kind": "c"}]}, "result.items[0].kind: expected one of 'a', 'b', got 'c'"),
        ({"items": [{}]}, "result.items[0]: missing 'kind'"),
        ({"items": [{"kind": "a", "note": None}]}, "result.items[0].note: expected str, got null"),
        ({"items": [{"kind": "a", "extra": 1}]}, "result.items[0]: unexpected key 'extra'"),
        ({"table": {"k": "1"}}, "result.table['k']: expected int, got str"),
        ({"table": []}, "result.table: expected an object, got list"),
    ],
    ids=[
        "str",
        "bool-for-int",
        "str-for-int",
        "int-for-bool",
        "optional",
        "list",
        "literal",
        "missing-key",
        "not-required-still-typed",
        "extra-key",
        "dict-value",
        "dict",
    ],
)
def test_the_checker_rejects_a_wrong_shape(change: dict[str, Any], expected: str) -> None:
    found = shapes.problems({**GOOD, **change}, Outer)
    assert len(found) == 1 and found[0].startswith(expected), found
    with pytest.raises(ContractError):
        shapes.check({**GOOD, **change}, Outer)


def test_the_checker_names_a_missing_key_and_a_wrong_root() -> None:
    without = {k: v for k, v in GOOD.items() if k != "count"}
    assert shapes.problems(without, Outer) == ["result: missing 'count'"]
    assert shapes.problems([GOOD], Outer) == ["result: expected an object (Outer), got list"]
    assert shapes.problems(None, Outer) == ["result: expected an object (Outer), got null"]


def test_the_checker_follows_the_recursive_config_element() -> None:
    leaf = contract.element({"sslFlags": "Ssl"})
    good = contract.element(children={"rules": contract.element(items=[leaf])})
    assert shapes.problems(good, contract.Element) == []
    bad = contract.element(
        children={"rules": contract.element(items=[contract.element({"n": 1})])}  # type: ignore[dict-item]
    )
    assert shapes.problems(bad, contract.Element) == [
        "result.children['rules'].items[0].attributes['n']: expected str, got int"
    ]


# --- the contract's result types and builders ---------------------------------------------


@pytest.mark.parametrize("name", sorted(contract.OPS))
def test_each_op_has_a_typed_builder_that_matches_its_spec(name: str) -> None:
    spec = contract.OPS[name]
    builder = getattr(contract, name.replace(".", "_"))
    params = inspect.signature(builder).parameters
    assert list(params) == list(spec.args)
    for arg_name, arg in spec.args.items():
        has_default = params[arg_name].default is not inspect.Parameter.empty
        assert has_default == (not arg.required), arg_name
    (result_type,) = get_args(get_type_hints(builder, vars(contract))["return"])
    assert result_type is spec.result
    assert is_typeddict(spec.result)


def test_ops_are_checked_when_made() -> None:
    with pytest.raises(ContractError, match="unknown argument 'nope'"):
        contract.make_op("site.list", nope=1)
    with pytest.raises(ContractError, match="must be one of Root, CA, My"):
        contract.cert_list("Personal")
    with pytest.raises(ContractError, match="unknown op"):
        contract.Op("no.such")
    assert contract.user_set("bob").to_json() == {"op": "user.set", "args": {"name": "bob"}}


# --- reads by name ------------------------------------------------------------------------

SITES = ReadKey[contract.SiteListResult]("sites")
FACTS = ReadKey[contract.HostFactsResult]("facts")


def test_a_read_plan_binds_results_to_names() -> None:
    plan = ReadPlan().add(FACTS, contract.host_facts()).add(SITES, contract.site_list())
    assert [op.name for op in plan.ops] == ["host.facts", "site.list"]
    reads = plan.bind([{"computer_name": "WEB01"}, {"sites": []}])
    assert reads[SITES] == {"sites": []}
    assert reads[FACTS]["computer_name"] == "WEB01"
    with pytest.raises(KeyError, match="nothing was read under 'other'"):
        reads[ReadKey[contract.SiteListResult]("other")]
    with pytest.raises(ContractError, match="1 results for 2 reads"):
        plan.bind([{"sites": []}])


def test_a_read_plan_refuses_writes_and_two_reads_of_one_name() -> None:
    with pytest.raises(ContractError, match="writes"):
        ReadPlan().add(ReadKey[contract.ChangedResult]("x"), contract.config_clear("s", "shop"))
    with pytest.raises(ContractError, match="two reads are named 'sites'"):
        ReadPlan().add(SITES, contract.site_list()).add(SITES, contract.site_list())


CONNECTION = Connection.from_input(
    {
        "endpoint": "https://web01:5986/wsman",
        "transport": "basic",
        "username": "admin",
        "password": "S3cret!pw",
    }
)


def _answer(monkeypatch: pytest.MonkeyPatch, *results: Any) -> None:
    def fake(connection: Connection, script: str, request: dict[str, Any]) -> dict[str, Any]:
        return {"ok": True, "results": list(results)}

    monkeypatch.setattr(client_module, "run_agent_request", fake)


def test_host_client_returns_results_by_name(monkeypatch: pytest.MonkeyPatch) -> None:
    sites = {
        "sites": [{"name": "shop", "id": 2, "physical_path": "C:\\inetpub\\shop", "bindings": []}]
    }
    _answer(monkeypatch, sites)
    reads = HostClient(CONNECTION).read(ReadPlan().add(SITES, contract.site_list()))
    assert isinstance(reads, Reads) and reads[SITES]["sites"][0]["name"] == "shop"


def test_host_client_refuses_a_result_that_drifted_from_the_contract(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # A binding whose ssl_flags came back as text: the provider would otherwise meet it
    # deep inside its plan.
    binding = {
        "protocol": "https",
        "binding_information": "*:443:",
        "ssl_flags": "1",
        "certificate_hash": None,
        "certificate_store": None,
        "client_cert_negotiation": False,
    }
    site = {"name": "shop", "id": 2, "physical_path": "C:\\inetpub\\shop", "bindings": [binding]}
    _answer(monkeypatch, {"sites": [site]})
    with pytest.raises(AgentProtocolError) as caught:
        HostClient(CONNECTION).run(contract.site_list())
    message = str(caught.value)
    assert message.startswith("web01: site.list (op 0 of the batch)")
    assert "result.sites[0].bindings[0].ssl_flags: expected int, got str" in message
    assert isinstance(caught.value, IisClientCertError)


# --- secrets in logs ------------------------------------------------------------------------


def test_redact_args_and_the_simulators_audit_log_hide_every_secret_argument() -> None:
    for spec in contract.OPS.values():
        # Audit lines and error messages name an op's target: never a secret.
        assert spec.target is None or not spec.args[spec.target].secret, spec.name
        args = {name: f"canary-{spec.name}-{name}" for name in spec.args}
        redacted = contract.redact_args(spec.name, args)
        entry = json.dumps(audit.op_entry(spec.name, args))
        for name, arg in spec.args.items():
            if arg.secret:
                assert redacted[name] == "REDACTED"
                assert args[name] not in entry
            else:
                assert redacted[name] == args[name]
