"""ClientCertSite and ClientCertHost under Pulumi's mocks: Inputs everywhere, checks that
run when values are known and name the site and property, one owner per host-scoped object,
port checks per host endpoint (with its port), both argument styles, typed exports."""

from __future__ import annotations

import base64
import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import pulumi
import pytest

from iis_clientcert import (
    ArgsError,
    ClientCertHost,
    ClientCertHostArgs,
    ClientCertSite,
    ClientCertSiteArgs,
    ConnectionArgs,
    HttpsEndpoint,
    ManyToOne,
    OneToOne,
    Rule,
    ServerPfx,
    SiteUser,
    TrustedCa,
)
from iis_clientcert.components import moved_from_site, read_site
from iis_clientcert.errors import IisClientCertError
from iis_clientcert.framework.inputs import ConnectionArgsDict
from iis_clientcert.host.connection import Connection, endpoint_authority
from iis_clientcert_simulator import pki
from tests.support.mocks import installed, run

PFX_PASSWORD = "Pfx-Pa55word!"
WEB01: ConnectionArgsDict = {
    "endpoint": "https://web01:5986/wsman",
    "transport": "basic",
    "username": "admin",
    "password": "S3cret!pw",
}
# Pulumi's wire envelope of a secret value (pulumi.runtime.rpc).
SECRET_SIG = "4dabf18193072939515e22adb298388d"


@dataclass
class Made:
    type: str
    name: str
    inputs: dict[str, Any]


@dataclass
class _Mocks(pulumi.runtime.Mocks):
    made: dict[str, Made] = field(default_factory=dict)

    def new_resource(self, args: pulumi.runtime.MockResourceArgs) -> tuple[str, dict[str, Any]]:
        self.made[args.name] = Made(args.typ, args.name, dict(args.inputs))
        outputs = dict(args.inputs)
        if args.typ == "pulumi:pulumi:StackReference":
            outputs = {"name": args.name, "outputs": STACK_OUTPUTS}
        # What the providers compute: a thumbprint, the mapped users, a URL.
        outputs.setdefault("thumbprint", f"THUMB-{args.name}")
        if "one_to_one" in args.inputs:
            outputs["mapped_users"] = {
                f"cert{i}": o["user_name"] for i, o in enumerate(args.inputs["one_to_one"] or [])
            }
        return f"{args.name}-id", outputs

    def call(self, args: pulumi.runtime.MockCallArgs) -> tuple[dict[Any, Any], None]:
        return {}, None


STACK_OUTPUTS: dict[str, Any] = {}


@pytest.fixture(scope="module", autouse=True)
def _quiet_asyncio() -> None:
    """A failed check leaves futures nobody awaits; Pulumi's language host silences
    asyncio's complaints about them for the whole process, and so do these tests (the
    futures may be collected only when the process ends)."""
    logging.getLogger("asyncio").setLevel(logging.CRITICAL)


@pytest.fixture
def mocks() -> Iterator[_Mocks]:
    with installed(_Mocks()) as found:
        yield found


def plain(value: Any) -> Any:
    """A mock input without Pulumi's secret envelope."""
    if isinstance(value, dict) and value.get(SECRET_SIG):
        return plain(value["value"])
    if isinstance(value, dict):
        return {k: plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [plain(v) for v in value]
    return value


def is_secret(value: Any) -> bool:
    return isinstance(value, dict) and bool(value.get(SECRET_SIG))


def later(value: Any) -> pulumi.Output[Any]:
    """A value a program computes (another resource's output, say)."""
    return pulumi.Output.from_input(value).apply(lambda v: v)


@pytest.fixture(scope="module")
def pki_set() -> dict[str, pki.Issued]:
    ca = pki.make_ca("Components Root")
    other = pki.make_ca("Components Other Root")
    return {
        "ca": ca,
        "other": other,
        "alice": pki.make_leaf(ca, "alice", subject_extra={"O": "Example"}),
        "bob": pki.make_leaf(ca, "bob"),
        "mallory": pki.make_leaf(other, "mallory"),
        "server": pki.make_server(ca, "web01"),
    }


def pem(issued: pki.Issued) -> str:
    return issued.cert_pem().decode()


def pfx(issued: pki.Issued) -> str:
    return base64.b64encode(issued.pfx(PFX_PASSWORD.encode())).decode()


def own_site(p: dict[str, pki.Issued], **extra: Any) -> ClientCertSiteArgs:
    args = ClientCertSiteArgs(
        connection=ConnectionArgs(**WEB01),
        site="shop",
        https=HttpsEndpoint(pfx=pfx(p["server"]), password=PFX_PASSWORD),
        trusted_roots=[pem(p["ca"])],
        users=[SiteUser(name="Alice", password="Al1ce-pw!")],
        one_to_one=[OneToOne(certificate=pem(p["alice"]), user="alice")],
    )
    for key, value in extra.items():
        setattr(args, key, value)
    return args


# --- the form of a site of its own stays as it was -------------------------------------------


def test_a_site_of_its_own_keeps_its_resource_names_and_inputs(
    mocks: _Mocks, pki_set: dict[str, pki.Issued]
) -> None:
    run(lambda: ClientCertSite("shop", own_site(pki_set)).urn)
    assert set(mocks.made) == {
        "shop",
        "shop-root-0",
        "shop-user-Alice",
        "shop-server-cert",
        "shop-https",
        "shop-ssl",
        "shop-anonymous",
        "shop-mapping",
    }
    mapping = mocks.made["shop-mapping"].inputs
    # The declared spelling, and the password taken from the user (secret).
    assert plain(mapping["one_to_one"])[0]["user_name"] == "Alice"
    assert is_secret(mapping["passwords"])
    assert plain(mapping["passwords"]) == {"Alice": "Al1ce-pw!"}
    assert is_secret(mocks.made["shop-https"].inputs["connection"])


def test_dict_style_arguments_make_the_same_resources(
    mocks: _Mocks, pki_set: dict[str, pki.Issued]
) -> None:
    args = {
        "connection": dict(WEB01),
        "site": "shop",
        "https": {"pfx": pfx(pki_set["server"]), "password": PFX_PASSWORD, "port": 8443},
        "trusted_roots": [pem(pki_set["ca"])],
        "users": [{"name": "alice", "password": "Al1ce-pw!"}],
        "many_to_one": [
            {"name": "staff", "user": "alice", "rules": [{"sub_field": "O", "match": "Example"}]}
        ],
    }
    run(lambda: ClientCertSite("shop", args).urn)  # type: ignore[arg-type]
    assert plain(mocks.made["shop-https"].inputs["port"]) == 8443
    rules = plain(mocks.made["shop-mapping"].inputs["many_to_one"])[0]["rules"]
    assert rules == [
        {"field": "Subject", "sub_field": "O", "match": "Example", "case_sensitive": True}
    ]


def test_a_misspelt_dict_key_is_named_with_a_suggestion(mocks: _Mocks) -> None:
    with pytest.raises(ArgsError) as err:
        misspelt: Any = {"connection": WEB01, "site": "shop", "trusted_root": []}
        ClientCertSite("shop", misspelt)
    assert "ClientCertSite 'shop': trusted_root" in str(err.value)
    assert "Did you mean 'trusted_roots'?" in str(err.value)


# --- Inputs everywhere ---------------------------------------------------------------------


def test_outputs_everywhere_reach_the_resources(
    mocks: _Mocks, pki_set: dict[str, pki.Issued]
) -> None:
    connection = later(dict(WEB01))  # the whole connection is an Output
    args = ClientCertSiteArgs(
        connection=connection,
        site=later("shop"),
        https=HttpsEndpoint(
            pfx=pulumi.Output.secret(pfx(pki_set["server"])),
            password=pulumi.Output.secret(PFX_PASSWORD),
            port=later(8443),
            host_name=later("shop.example"),
        ),
        trusted_roots=[pulumi.Output.secret(pem(pki_set["ca"]))],
        users=[SiteUser(name=later("alice"), password=pulumi.Output.secret("Al1ce-pw!"))],
        one_to_one=[OneToOne(certificate=later(pem(pki_set["alice"])), user=later("ALICE"))],
        many_to_one=[
            ManyToOne(name="staff", user=later("alice"), rules=[Rule(sub_field="O", match="X")])
        ],
    )
    run(lambda: ClientCertSite("shop", args).urn)
    # A user whose name is an Output is named by its position.
    assert "shop-user-0" in mocks.made
    mapping = mocks.made["shop-mapping"].inputs
    assert plain(mapping["one_to_one"])[0]["user_name"] == "alice"
    assert plain(mapping["many_to_one"])[0]["user_name"] == "alice"
    assert plain(mapping["passwords"]) == {"alice": "Al1ce-pw!"}
    assert plain(mapping["site"]) == "shop"
    conn = plain(mocks.made["shop-https"].inputs["connection"])
    assert conn["endpoint"] == WEB01["endpoint"] and conn["transport"] == "basic"
    assert is_secret(mocks.made["shop-https"].inputs["connection"])
    assert is_secret(mocks.made["shop-root-0"].inputs["certificate"])


@pytest.mark.parametrize(
    ("change", "prop", "words"),
    [
        (
            lambda p: {"one_to_one": [OneToOne(certificate=later(pem(p["alice"])), user="bob")]},
            "one_to_one[0].user",
            "is not one of this site's users",
        ),
        (
            lambda p: {
                "one_to_one": [OneToOne(certificate=later(pem(p["mallory"])), user="alice")]
            },
            "one_to_one[0].certificate",
            "IIS would answer 403.16",
        ),
        (
            lambda p: {
                "one_to_one": [
                    OneToOne(certificate=pem(p["alice"]), user="alice"),
                    OneToOne(certificate=later(pem(p["alice"])), user="alice"),
                ]
            },
            "one_to_one[1].certificate",
            "is mapped twice",
        ),
        (
            lambda p: {"trusted_roots": [pulumi.Output.secret("not a certificate")]},
            "trusted_roots[0]",
            "cannot be read",
        ),
    ],
    ids=["undeclared-user", "untrusted-cert", "mapped-twice", "unreadable-root"],
)
def test_checks_of_outputs_run_when_they_resolve_and_name_site_and_property(
    mocks: _Mocks,
    pki_set: dict[str, pki.Issued],
    change: Callable[[dict[str, pki.Issued]], dict[str, Any]],
    prop: str,
    words: str,
) -> None:
    args = own_site(pki_set, **change(pki_set))
    with pytest.raises(pulumi.RunError) as err:
        run(lambda: ClientCertSite("shop", args).urn)
    text = str(err.value)
    assert text.startswith(f"ClientCertSite 'shop': {prop}"), text
    assert words in text
    assert "Al1ce-pw!" not in text
    # The site's resources waited for the check: no mapping was registered.
    assert "shop-mapping" not in mocks.made


def test_plain_values_are_still_checked_before_anything_is_registered(
    mocks: _Mocks, pki_set: dict[str, pki.Issued]
) -> None:
    args = own_site(
        pki_set, one_to_one=[OneToOne(certificate=pem(pki_set["mallory"]), user="alice")]
    )
    with pytest.raises(ArgsError) as err:
        ClientCertSite("shop", args)
    assert isinstance(err.value, pulumi.RunError) and isinstance(err.value, IisClientCertError)
    assert err.value.property == "one_to_one[0].certificate"
    assert not mocks.made


def test_a_connection_output_with_an_unknown_key_is_refused(
    mocks: _Mocks, pki_set: dict[str, pki.Issued]
) -> None:
    args = own_site(pki_set, connection=later({**WEB01, "pasword": "x"}))
    with pytest.raises(pulumi.RunError) as err:
        run(lambda: ClientCertSite("shop", args).urn)
    assert "ClientCertSite 'shop': connection.pasword: is not a connection property" in str(
        err.value
    )


# --- ports per host endpoint, with the port ------------------------------------------------------


@pytest.mark.parametrize(
    ("endpoints", "conflict"),
    [
        (("https://web01:5986/wsman", "https://web01:5986/wsman"), True),
        (("https://web01:5986/wsman", "https://WEB01/wsman"), True),  # 5986 is the default
        (("https://web01:5986/wsman", "https://web01:6986/wsman"), False),  # two hosts, one name
        (("https://web01:5986/wsman", "http://web01:5985/wsman"), False),
        (("https://web01:5986/wsman", "https://web02:5986/wsman"), False),
    ],
)
@pytest.mark.parametrize("as_output", [False, True], ids=["plain", "outputs"])
def test_port_conflicts_are_per_host_endpoint_with_its_port(
    mocks: _Mocks,
    pki_set: dict[str, pki.Issued],
    endpoints: tuple[str, str],
    conflict: bool,
    as_output: bool,
) -> None:
    def program() -> Any:
        sites = []
        for i, (endpoint, site) in enumerate(zip(endpoints, ("shop", "intranet"), strict=True)):
            value = later(endpoint) if as_output else endpoint
            sites.append(
                ClientCertSite(
                    site,
                    ClientCertSiteArgs(
                        connection={**WEB01, "endpoint": value},
                        site=site,
                        https=HttpsEndpoint(pfx=pfx(pki_set["server"]), password=PFX_PASSWORD),
                        trusted_roots=[pem(pki_set["ca"])] if i == 0 else [],
                    ),
                )
            )
        return [s.urn for s in sites]

    if not conflict:
        run(program)
        assert {"shop-https", "intranet-https"} <= set(mocks.made)
        return
    with pytest.raises((ArgsError, pulumi.RunError)) as err:
        run(program)
    # With Outputs, whichever site resolves second is the one refused; both are named.
    text = str(err.value)
    assert "https.port = 443: is also bound by site" in text
    assert "ClientCertSite 'intranet'" in text and "ClientCertSite 'shop'" in text
    assert "https://web01:5986 (*:443)" in text


def test_sni_sites_share_a_port_and_a_second_run_starts_afresh(
    mocks: _Mocks, pki_set: dict[str, pki.Issued]
) -> None:
    def program() -> Any:
        return [
            ClientCertSite(
                site,
                ClientCertSiteArgs(
                    connection=WEB01,
                    site=site,
                    https=HttpsEndpoint(
                        pfx=pfx(pki_set["server"]),
                        password=PFX_PASSWORD,
                        sni=True,
                        host_name=f"{site}.example",
                    ),
                ),
            ).urn
            for site in ("shop", "intranet")
        ]

    run(program)
    # The Automation API runs a program again in the same process (preview, then up): the
    # first run's declarations are not the second's.
    pulumi.runtime.settings.ROOT.set(None)
    pulumi.runtime.set_mocks(mocks, preview=False)
    run(program)


# --- one owner per host-scoped object ------------------------------------------------------------


def test_two_sites_of_their_own_declaring_one_ca_are_refused_naming_both(
    mocks: _Mocks, pki_set: dict[str, pki.Issued]
) -> None:
    def program() -> Any:
        shop = ClientCertSite("shop", own_site(pki_set))
        intranet = ClientCertSite(
            "intranet",
            ClientCertSiteArgs(
                connection=WEB01, site="Default Web Site", trusted_roots=[pem(pki_set["ca"])]
            ),
        )
        return [shop.urn, intranet.urn]

    with pytest.raises(ArgsError) as err:
        run(program)
    text = str(err.value)
    assert text.startswith("ClientCertSite 'intranet': trusted_roots[0] = 'CN=Components Root")
    assert (
        "is also declared by ClientCertSite 'shop': trusted_roots[0] on https://web01:5986" in text
    )
    assert "Declare it once on a ClientCertHost" in text


def test_two_sites_of_their_own_declaring_one_account_are_refused(
    mocks: _Mocks, pki_set: dict[str, pki.Issued]
) -> None:
    def program() -> Any:
        shop = ClientCertSite("shop", own_site(pki_set))
        other = ClientCertSite(
            "intranet",
            ClientCertSiteArgs(
                connection=later(WEB01),
                site="Default Web Site",
                users=[SiteUser(name="ALICE", password="x")],
            ),
        )
        return [shop.urn, other.urn]

    with pytest.raises(pulumi.RunError) as err:
        run(program)
    text = str(err.value)
    assert "users[0]" in text and "is also declared by ClientCertSite" in text


def test_a_host_owns_what_its_sites_share(mocks: _Mocks, pki_set: dict[str, pki.Issued]) -> None:
    def program() -> Any:
        host = ClientCertHost(
            "web01",
            ClientCertHostArgs(
                connection=later(WEB01),
                trusted_roots=[
                    TrustedCa(name="corp", certificate=pulumi.Output.secret(pem(pki_set["ca"])))
                ],
                users=[SiteUser(name="alice", password=pulumi.Output.secret("Al1ce-pw!"))],
                server_certificates=[
                    ServerPfx(name="web", pfx=pfx(pki_set["server"]), password=PFX_PASSWORD)
                ],
            ),
        )
        sites = [
            ClientCertSite(
                resource,
                ClientCertSiteArgs(
                    host=host,
                    site=site,
                    https=HttpsEndpoint(certificate="web", port=port),
                    trusted_roots=["corp"],
                    one_to_one=[OneToOne(certificate=pem(pki_set["alice"]), user="Alice")],
                ),
            )
            for resource, site, port in (
                ("shop", "shop", 443),
                ("intranet", "Default Web Site", 8443),
            )
        ]
        return [host.exports(), *[s.exports() for s in sites]]

    host_out, shop_out, intranet_out = run(program)
    # One CA, one account, one server certificate: the host's, whatever the sites.
    assert [n for n in mocks.made if "-root-" in n] == ["web01-root-corp"]
    assert [n for n in mocks.made if "-user-" in n] == ["web01-user-alice"]
    assert [n for n in mocks.made if "cert" in n] == ["web01-cert-web"]
    for site in ("shop", "intranet"):
        mapping = mocks.made[f"{site}-mapping"].inputs
        assert plain(mapping["passwords"]) == {"alice": "Al1ce-pw!"}
        assert plain(mapping["one_to_one"])[0]["user_name"] == "alice"
    assert host_out["endpoint"] == "https://web01:5986"
    assert host_out["accounts"] == ["alice"]
    assert host_out["root_thumbprints"] == {"corp": "THUMB-web01-root-corp"}
    assert shop_out["host"] == "https://web01:5986" and shop_out["site"] == "shop"
    assert shop_out["root_thumbprints"] == ["THUMB-web01-root-corp"]
    assert shop_out["accounts"] == ["alice"]
    assert intranet_out["server_thumbprint"] == "THUMB-web01-cert-web"


@pytest.mark.parametrize(
    ("host_args", "words"),
    [
        (
            lambda p: {
                "trusted_roots": [
                    pem(p["ca"]),
                    TrustedCa(name="again", certificate=later(pem(p["ca"]))),
                ]
            },
            "trusted_roots[1] = 'CN=Components Root",
        ),
        (
            lambda p: {
                "users": [
                    SiteUser(name="alice", password="a"),
                    SiteUser(name=later("ALICE"), password="b"),
                ]
            },
            "users[1].name = 'ALICE': is the same account as users[0]",
        ),
        (
            lambda p: {"trusted_roots": [TrustedCa(certificate=later(pem(p["ca"])))]},
            "trusted_roots[0].name: is required when the certificate is an Output",
        ),
        (
            lambda p: {"trusted_roots": [pem(p["ca"]), pem(p["ca"])]},
            "is the same certificate as trusted_roots[0]",
        ),
    ],
    ids=["ca-twice", "account-twice", "output-without-name", "plain-ca-twice"],
)
def test_a_host_refuses_the_same_object_twice(
    mocks: _Mocks,
    pki_set: dict[str, pki.Issued],
    host_args: Callable[[dict[str, pki.Issued]], dict[str, Any]],
    words: str,
) -> None:
    with pytest.raises(pulumi.RunError) as err:
        args: Any = {"connection": WEB01, **host_args(pki_set)}
        run(lambda: ClientCertHost("web01", args).urn)
    assert str(err.value).startswith("ClientCertHost 'web01': "), str(err.value)
    assert words in str(err.value)


def test_a_host_and_a_site_of_its_own_on_one_endpoint_cannot_both_declare_a_ca(
    mocks: _Mocks, pki_set: dict[str, pki.Issued]
) -> None:
    def program() -> Any:
        host = ClientCertHost(
            "web01", ClientCertHostArgs(connection=WEB01, trusted_roots=[pem(pki_set["ca"])])
        )
        site = ClientCertSite(
            "shop", own_site(pki_set, connection={**WEB01, "endpoint": "https://WEB01/wsman"})
        )
        return [host.urn, site.urn]

    with pytest.raises(ArgsError) as err:
        run(program)
    assert "is also declared by ClientCertHost 'web01': trusted_roots[0]" in str(err.value)


@pytest.mark.parametrize(
    ("site_args", "prop", "words"),
    [
        ({"trusted_roots": ["nope"]}, "trusted_roots[0]", "Use one of: corp"),
        ({"users": [SiteUser(name="x", password="y")]}, "users", "Declare the accounts on"),
        ({"connection": WEB01}, "connection", "uses its ClientCertHost's connection"),
        (
            {"https": HttpsEndpoint(pfx="x", password="y")},
            "https.certificate",
            "server_certificates",
        ),
        (
            {"one_to_one": [OneToOne(certificate="", user="bob")]},
            "one_to_one[0].user",
            "is not one of the host's accounts",
        ),
    ],
    ids=["unknown-ca", "site-users", "connection-too", "pfx-in-site", "unknown-account"],
)
def test_a_site_of_a_host_refers_to_its_objects_by_name(
    mocks: _Mocks, pki_set: dict[str, pki.Issued], site_args: dict[str, Any], prop: str, words: str
) -> None:
    def program() -> Any:
        host = ClientCertHost(
            "web01",
            ClientCertHostArgs(
                connection=WEB01,
                trusted_roots=[TrustedCa(name="corp", certificate=pem(pki_set["ca"]))],
                users=[SiteUser(name="alice", password="pw")],
            ),
        )
        return ClientCertSite("shop", ClientCertSiteArgs(host=host, site="shop", **site_args)).urn

    with pytest.raises(ArgsError) as err:
        run(program)
    assert err.value.property == prop
    assert words in str(err.value)


# --- ids, aliases, stack references -------------------------------------------------------------


@pytest.mark.parametrize(
    ("endpoint", "authority"),
    [
        ("https://WEB01.example.com/wsman", "https://web01.example.com:5986"),
        ("http://web01/wsman", "http://web01:5985"),
        ("https://web01:6986/wsman", "https://web01:6986"),
        ("https://[::1]:5986/wsman", "https://[::1]:5986"),
    ],
)
def test_the_connections_part_of_an_id_has_scheme_host_and_port(
    endpoint: str, authority: str
) -> None:
    assert endpoint_authority(endpoint) == authority
    connection = Connection.from_input({**WEB01, "endpoint": endpoint, "transport": "ntlm"})
    assert connection.authority == authority


def test_moved_from_site_names_the_old_child_with_either_type(mocks: _Mocks) -> None:
    urns = run(
        lambda: pulumi.Output.all(
            *moved_from_site("web01-shop", "web01-shop-root-0", "TrustedRoot")
        )
    )
    prefix = "urn:pulumi:stack::project::iis-clientcert:index:ClientCertSite$"
    assert urns == [
        prefix + "pulumi-python:dynamic/iis-clientcert:TrustedRoot::web01-shop-root-0",
        prefix + "pulumi-python:dynamic:Resource::web01-shop-root-0",
    ]


def test_read_site_checks_the_shape_of_another_stacks_outputs(mocks: _Mocks) -> None:
    site = {
        "host": "https://web01:5986",
        "site": "shop",
        "url": "https://web01:443/",
        "server_thumbprint": "AB",
        "root_thumbprints": ["CD"],
        "mapped_users": {"EF": "alice"},
        "accounts": ["alice"],
    }
    STACK_OUTPUTS.clear()
    STACK_OUTPUTS.update({"sites": {"shop": site, "old": {"url": "x"}}})
    ref = pulumi.StackReference("org/proj/prod")
    assert run(lambda: read_site(ref, "sites", "shop")) == site
    with pytest.raises(pulumi.RunError) as err:
        run(lambda: read_site(ref, "sites", "old"))
    assert "sites.old: lacks host, site" in str(err.value)
    with pytest.raises(pulumi.RunError) as err:
        run(lambda: read_site(ref, "sites", "nope"))
    assert "sites.nope: is not among the stack's outputs. Outputs there: old, shop" in str(
        err.value
    )
