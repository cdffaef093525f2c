"""HttpsBinding: a site's https binding and its HTTP.sys certificate binding.

``bindingInformation`` is ``ip:port:host_name``; binding ``sslFlags`` bit 1 is SNI. The
client certificate is negotiated in the TLS handshake by default (netsh
``clientcertnegotiation=enable``): IIS's SslNegotiateCert otherwise asks for it after the
handshake, which TLS 1.3 forbids (Windows Server 2022 resets the connection, 2025 answers
500 with 0x80070032). A binding found at create is adopted: delete puts back its settings
instead of removing it.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import pulumi

from iis_clientcert.errors import ValidationError
from iis_clientcert.framework.base import (
    Change,
    IisProvider,
    require_site,
    site_exists,
    validate_site,
)
from iis_clientcert.framework.inputs import Input, Inputs
from iis_clientcert.framework.resource import TYPE_MODULE, IisResource
from iis_clientcert.host import contract
from iis_clientcert.host.client import ReadKey, ReadPlan, Reads
from iis_clientcert.host.connection import Connection
from iis_clientcert.host.contract import BindingInfo, SiteInfo

KIND = "HttpsBinding"

SSL_FLAG_SNI = 1
SSL_FLAG_CENTRAL_STORE = 2
# The binding sslFlags bits this resource decides; others (DisableTLS13, DisableQUIC, ...
# on newer Windows) are the host owner's and are kept as found.
MANAGED_FLAGS = SSL_FLAG_SNI | SSL_FLAG_CENTRAL_STORE

# Windows copy-paste of a thumbprint from the certificate dialog brings invisible marks.
_INVISIBLE = dict.fromkeys(map(ord, "\u200e\u200f\u200b\ufeff\u202a\u202c"), None)
_THUMBPRINT = re.compile(r"^[0-9A-F]{40}$")
_LABEL = r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?"
_HOST_NAME = re.compile(rf"^(?:\*\.)?{_LABEL}(?:\.{_LABEL})*$")
_STORES = {s.lower(): s for s in contract.STORES}
TLS13_WARNING = (
    "client_cert_negotiation is false: the client certificate is then requested after "
    "the handshake (SslNegotiateCert renegotiation), which fails under TLS 1.3 (Windows "
    "Server 2022 resets the connection, 2025 answers 500 with 0x80070032). Keep it true "
    "unless clients must connect without a certificate prompt"
)

INPUTS = Inputs(
    KIND,
    Input("site", "str", "The IIS site's name", required=True, replace=True),
    Input(
        "certificate_thumbprint",
        "str",
        "SHA-1 thumbprint of the server certificate (ServerCertificate's thumbprint output)",
        required=True,
    ),
    Input(
        "ip",
        "str",
        "The IP address to listen on; '*' for all unassigned",
        default="*",
        replace=True,
    ),
    Input("port", "int", "The TCP port", default=443, replace=True),
    Input(
        "host_name",
        "str",
        "The host name of the binding ('' for none; '*.example.com' for a wildcard)",
        default="",
        replace=True,
    ),
    Input("sni", "bool", "Select the certificate by the name the client asks for", default=False),
    Input(
        "certificate_store", "str", "The store of the certificate (My, or Root/CA)", default="My"
    ),
    Input(
        "client_cert_negotiation",
        "bool",
        "Ask for the client certificate in the TLS handshake (needed under TLS 1.3)",
        default=True,
    ),
)

SITES = ReadKey[contract.SiteListResult]("sites")
CERTS = ReadKey[contract.CertListResult]("certificates")


@dataclass(frozen=True)
class BindingDesired:
    site: str
    ip: str
    port: int
    host_name: str
    sni: bool
    thumbprint: str
    store: str
    negotiation: bool
    connection_host: str  # for the url output

    @property
    def binding_information(self) -> str:
        return f"{self.ip}:{self.port}:{self.host_name}"

    @property
    def url(self) -> str:
        host = self.host_name if self.host_name and "*" not in self.host_name else ""
        host = host or self.connection_host or "localhost"
        if ":" in host:
            host = f"[{host}]"
        return f"https://{host}:{self.port}/"


@dataclass(frozen=True)
class BindingSettings:
    """What binding.set writes besides the binding's key."""

    ssl_flags: int
    certificate_hash: str
    certificate_store: str
    client_cert_negotiation: bool

    @classmethod
    def from_host(cls, binding: Mapping[str, Any]) -> BindingSettings:
        """From a site.list binding, or from the ``prior_binding`` output stored in state."""
        return cls(
            ssl_flags=int(binding.get("ssl_flags") or 0),
            certificate_hash=str(binding.get("certificate_hash") or "").upper(),
            certificate_store=str(binding.get("certificate_store") or "My"),
            client_cert_negotiation=bool(binding.get("client_cert_negotiation")),
        )

    @classmethod
    def from_stored(cls, value: Any) -> BindingSettings | None:
        if not isinstance(value, Mapping):
            return None
        return cls.from_host(value)

    def to_output(self) -> dict[str, Any]:
        return {
            "ssl_flags": self.ssl_flags,
            "certificate_hash": self.certificate_hash,
            "certificate_store": self.certificate_store,
            "client_cert_negotiation": self.client_cert_negotiation,
        }

    def same_as(self, other: BindingSettings) -> bool:
        return (
            self.ssl_flags == other.ssl_flags
            and self.certificate_hash == other.certificate_hash
            and self.certificate_store.lower() == other.certificate_store.lower()
            and self.client_cert_negotiation == other.client_cert_negotiation
        )


@dataclass(frozen=True)
class BindingCurrent:
    site_found: bool
    binding: BindingSettings | None  # the https binding with our binding_information
    used_by_other_site: str | None  # another site holding the same binding information
    cert_present: bool
    cert_has_key: bool
    sites: tuple[SiteInfo, ...] = ()


# --- validation ------------------------------------------------------------------------


def normalise_thumbprint(value: Any, key: str = "certificate_thumbprint") -> str:
    if not isinstance(value, str):
        raise ValidationError(KIND, key, value, "must be a string of 40 hex digits")
    text = value.translate(_INVISIBLE)
    text = re.sub(r"[\s:]", "", text).upper()
    if not _THUMBPRINT.match(text):
        raise ValidationError(
            KIND,
            key,
            value,
            "is not a certificate thumbprint (40 hex digits, SHA-1)",
            "Use ServerCertificate's thumbprint output, or copy it from the certificate's "
            "Details tab",
        )
    return text


def normalise_ip(value: str) -> str:
    text = value.strip()
    if text in ("", "*"):
        return "*"
    try:
        address = ipaddress.ip_address(text.strip("[]"))
    except ValueError:
        raise ValidationError(
            KIND, "ip", value, "is not an IP address", "Use '*' (all unassigned) or an address"
        ) from None
    # IIS writes IPv6 addresses in brackets inside bindingInformation.
    return f"[{address}]" if address.version == 6 else str(address)


def normalise_host_name(value: str) -> str:
    text = value.strip().lower().rstrip(".")
    if text and (len(text) > 253 or not _HOST_NAME.match(text)):
        raise ValidationError(
            KIND,
            "host_name",
            value,
            "is not a DNS host name",
            "Use letters, digits, hyphens and dots (optionally a leading '*.'), no port or scheme",
        )
    return text


def _connection_host(inputs: Mapping[str, Any]) -> str:
    connection = inputs.get("connection")
    if not isinstance(connection, Mapping):
        return ""
    endpoint = connection.get("endpoint")
    return (urlsplit(endpoint).hostname or "") if isinstance(endpoint, str) else ""


def validate_inputs(inputs: Mapping[str, Any]) -> BindingDesired:
    site = validate_site(KIND, INPUTS.get_str(inputs, "site"))
    ip = normalise_ip(INPUTS.get_str(inputs, "ip"))
    port = INPUTS.get_int(inputs, "port", 1, 65535)
    host_name = normalise_host_name(INPUTS.get_str(inputs, "host_name", allow_empty=True))
    sni = INPUTS.get_bool(inputs, "sni")
    if sni and not host_name:
        raise ValidationError(
            KIND,
            "sni",
            True,
            "needs a host_name (SNI selects the certificate by the name the client asks for)",
            "Set host_name, or sni to false",
        )
    thumbprint = normalise_thumbprint(inputs.get("certificate_thumbprint"))
    raw_store = INPUTS.get_str(inputs, "certificate_store") or INPUTS.default("certificate_store")
    store = _STORES.get(raw_store.strip().lower())
    if store is None:
        raise ValidationError(
            KIND,
            "certificate_store",
            raw_store,
            "is not a certificate store the agent knows",
            "Valid stores: " + ", ".join(contract.STORES) + " (server certificates live in My)",
        )
    negotiation = INPUTS.get_bool(inputs, "client_cert_negotiation")
    return BindingDesired(
        site, ip, port, host_name, sni, thumbprint, store, negotiation, _connection_host(inputs)
    )


def assess(desired: BindingDesired) -> list[str]:
    return [] if desired.negotiation else [TLS13_WARNING]


# --- reading and planning --------------------------------------------------------------


def _find_binding(site: SiteInfo, binding_information: str) -> BindingInfo | None:
    for binding in site["bindings"]:
        if (
            binding["protocol"].lower() == "https"
            # Host names are case-insensitive; IIS keeps what was typed.
            and binding["binding_information"].lower() == binding_information.lower()
        ):
            return binding
    return None


def parse_current(desired: BindingDesired, reads: Reads) -> BindingCurrent:
    sites = tuple(reads[SITES]["sites"])
    own = site_exists(sites, desired.site)
    found = _find_binding(own, desired.binding_information) if own is not None else None
    other = next(
        (
            s["name"]
            for s in sites
            if s["name"] != desired.site and _find_binding(s, desired.binding_information)
        ),
        None,
    )
    cert = next(
        (c for c in reads[CERTS]["certificates"] if c["thumbprint"].upper() == desired.thumbprint),
        None,
    )
    return BindingCurrent(
        site_found=own is not None,
        binding=BindingSettings.from_host(found) if found is not None else None,
        used_by_other_site=other,
        cert_present=cert is not None,
        cert_has_key=cert is not None and cert["has_private_key"],
        sites=sites,
    )


def desired_settings(current: BindingCurrent, desired: BindingDesired) -> BindingSettings:
    kept = current.binding.ssl_flags & ~MANAGED_FLAGS if current.binding is not None else 0
    return BindingSettings(
        ssl_flags=kept | (SSL_FLAG_SNI if desired.sni else 0),
        certificate_hash=desired.thumbprint,
        certificate_store=desired.store,
        client_cert_negotiation=desired.negotiation,
    )


def _set_op(desired: BindingDesired, settings: BindingSettings) -> contract.Op[Any]:
    return contract.binding_set(
        desired.site,
        desired.binding_information,
        settings.ssl_flags,
        settings.certificate_hash,
        settings.certificate_store,
        settings.client_cert_negotiation,
    )


def _differences(old: BindingSettings, new: BindingSettings) -> list[str]:
    out: list[str] = []
    for name, a, b in (
        ("ssl_flags", old.ssl_flags, new.ssl_flags),
        ("certificate", old.certificate_hash or "(none)", new.certificate_hash),
        ("store", old.certificate_store, new.certificate_store),
        ("client_cert_negotiation", old.client_cert_negotiation, new.client_cert_negotiation),
    ):
        if (a.lower() != b.lower()) if isinstance(a, str) and isinstance(b, str) else a != b:
            out.append(f"{name} {a} -> {b}")
    return out


def plan(current: BindingCurrent, desired: BindingDesired) -> list[Change]:
    want = desired_settings(current, desired)
    where = f"https binding {desired.binding_information!r} of site {desired.site!r}"
    if current.binding is None:
        return [
            Change(
                f"add {where} with certificate {want.certificate_hash} "
                f"(sni={desired.sni}, client_cert_negotiation={desired.negotiation})",
                [_set_op(desired, want)],
            )
        ]
    if current.binding.same_as(want):
        return []
    changed = ", ".join(_differences(current.binding, want))
    return [Change(f"update {where}: {changed}", [_set_op(desired, want)])]


def preflight(current: BindingCurrent, desired: BindingDesired) -> None:
    require_site(KIND, "the host", current.sites, desired.site)
    if current.binding is not None and current.binding.ssl_flags & SSL_FLAG_CENTRAL_STORE:
        # Its certificate is a file on the CCS share, chosen by host name; binding a hash
        # from LocalMachine\My would leave IIS serving the share's certificate (or take
        # another site's ip:port record). The agent and the simulator refuse it too.
        raise ValidationError(
            KIND,
            "host_name" if desired.host_name else "port",
            desired.host_name or desired.port,
            f"the https binding {desired.binding_information!r} of site {desired.site!r} "
            "uses the Central Certificate Store (sslFlags bit 2), whose certificates come "
            "from the CCS share",
            "Manage that binding's certificate in the Central Certificate Store, or remove "
            "the binding and let this resource create one bound to a certificate of "
            "LocalMachine\\My",
        )
    if current.used_by_other_site is not None:
        raise ValidationError(
            KIND,
            "port",
            desired.port,
            f"the https binding {desired.binding_information!r} already belongs to site "
            f"{current.used_by_other_site!r}",
            "Choose another ip, port or host_name, or remove that binding",
        )
    if not current.cert_present:
        raise ValidationError(
            KIND,
            "certificate_thumbprint",
            desired.thumbprint,
            f"no such certificate in LocalMachine\\{desired.store} on the host",
            "Create a ServerCertificate first (or import it into LocalMachine\\My)",
        )
    if not current.cert_has_key:
        raise ValidationError(
            KIND,
            "certificate_thumbprint",
            desired.thumbprint,
            f"the certificate in LocalMachine\\{desired.store} has no private key, so "
            "HTTP.sys cannot use it",
            "Import it from a PFX with its private key (ServerCertificate)",
        )


def delete_changes(
    current: BindingCurrent, desired: BindingDesired, stored: Mapping[str, Any]
) -> list[Change]:
    if not current.site_found:
        return []  # the site and its bindings are gone
    where = f"https binding {desired.binding_information!r} of site {desired.site!r}"
    prior = BindingSettings.from_stored(stored.get("prior_binding"))
    if stored.get("adopted") and prior is not None:
        if current.binding is not None and current.binding.same_as(prior):
            return []
        return [Change(f"put back the settings {where} had before", [_set_op(desired, prior)])]
    if current.binding is None:
        return []
    return [
        Change(
            f"remove {where}",
            [contract.binding_remove(desired.site, desired.binding_information)],
        )
    ]


def live_inputs(desired: BindingDesired, current: BindingCurrent) -> dict[str, Any]:
    binding = current.binding
    assert binding is not None  # read() only asks when exists() said so
    return {
        "site": desired.site,
        "ip": desired.ip,
        "port": desired.port,
        "host_name": desired.host_name,
        "sni": bool(binding.ssl_flags & SSL_FLAG_SNI),
        "certificate_thumbprint": binding.certificate_hash,
        "certificate_store": binding.certificate_store,
        "client_cert_negotiation": binding.client_cert_negotiation,
    }


# --- provider and resource -------------------------------------------------------------


class HttpsBindingProvider(IisProvider[BindingDesired, BindingCurrent]):
    kind = KIND
    inputs = INPUTS
    # The thumbprint of a ServerCertificate being created is unknown during preview.
    placeholders = {"certificate_thumbprint": "0" * 40}
    computed = ("binding_information", "url", "adopted", "prior_binding")

    def validate(self, inputs: Mapping[str, Any]) -> BindingDesired:
        return validate_inputs(inputs)

    def normalised_inputs(self, desired: BindingDesired) -> dict[str, Any]:
        return {
            "site": desired.site,
            "ip": desired.ip,
            "port": desired.port,
            "host_name": desired.host_name,
            "sni": desired.sni,
            "certificate_thumbprint": desired.thumbprint,
            "certificate_store": desired.store,
            "client_cert_negotiation": desired.negotiation,
        }

    def resource_id(self, connection: Connection, desired: BindingDesired) -> str:
        return f"{connection.authority}/{desired.site}/https/{desired.binding_information}"

    def read_plan(self, desired: BindingDesired) -> ReadPlan:
        return (
            ReadPlan()
            .add(SITES, contract.site_list())
            .add(CERTS, contract.cert_list(desired.store))
        )

    def parse_current(self, desired: BindingDesired, reads: Reads) -> BindingCurrent:
        return parse_current(desired, reads)

    def preflight(self, current: BindingCurrent, desired: BindingDesired) -> None:
        preflight(current, desired)

    def plan(
        self,
        current: BindingCurrent,
        desired: BindingDesired,
        previous: Mapping[str, Any] | None = None,
    ) -> list[Change]:
        return plan(current, desired)

    def outputs(
        self,
        desired: BindingDesired,
        before: BindingCurrent | None,
        after: BindingCurrent,
        previous: Mapping[str, Any] | None,
    ) -> dict[str, Any]:
        if before is not None:
            adopted = before.binding is not None
            prior = before.binding.to_output() if before.binding is not None else None
        else:
            adopted = bool((previous or {}).get("adopted"))
            prior = (previous or {}).get("prior_binding")
        return {
            "binding_information": desired.binding_information,
            "url": desired.url,
            "adopted": adopted,
            "prior_binding": prior,
        }

    def exists(self, current: BindingCurrent) -> bool:
        return current.site_found and current.binding is not None

    def live_inputs(
        self, desired: BindingDesired, current: BindingCurrent, stored: Mapping[str, Any]
    ) -> dict[str, Any]:
        return live_inputs(desired, current)

    def delete_changes(
        self, desired: BindingDesired, current: BindingCurrent, stored: Mapping[str, Any]
    ) -> list[Change]:
        return delete_changes(current, desired, stored)

    def advise(self, desired: BindingDesired) -> list[str]:
        return assess(desired)


class HttpsBinding(IisResource, module=TYPE_MODULE, name="HttpsBinding"):
    __doc__ = INPUTS.docstring("A site's https binding with its server certificate.")

    site: pulumi.Output[str]
    ip: pulumi.Output[str]
    port: pulumi.Output[int]
    host_name: pulumi.Output[str]
    sni: pulumi.Output[bool]
    certificate_thumbprint: pulumi.Output[str]
    certificate_store: pulumi.Output[str]
    client_cert_negotiation: pulumi.Output[bool]
    binding_information: pulumi.Output[str]
    url: pulumi.Output[str]
    adopted: pulumi.Output[bool]
    prior_binding: pulumi.Output[dict[str, Any] | None]

    def __init__(
        self,
        resource_name: str,
        *,
        connection: Any,
        site: pulumi.Input[str],
        certificate_thumbprint: pulumi.Input[str],
        ip: pulumi.Input[str] | None = None,
        port: pulumi.Input[int] | None = None,
        host_name: pulumi.Input[str] | None = None,
        sni: pulumi.Input[bool] | None = None,
        certificate_store: pulumi.Input[str] | None = None,
        client_cert_negotiation: pulumi.Input[bool] | None = None,
        opts: pulumi.ResourceOptions | None = None,
    ) -> None:
        props = INPUTS.props(
            connection,
            HttpsBindingProvider.computed,
            site=site,
            ip=ip,
            port=port,
            host_name=host_name,
            sni=sni,
            certificate_thumbprint=certificate_thumbprint,
            certificate_store=certificate_store,
            client_cert_negotiation=client_cert_negotiation,
        )
        super().__init__(HttpsBindingProvider(), resource_name, props, opts)
