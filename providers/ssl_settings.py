"""SslSettings: ``system.webServer/security/access@sslFlags`` for a site or application.

Written to applicationHost.config at ``<location path="Site[/app]">`` because the section
is locked (overrideModeDefault="Deny"): in web.config it would break every request with
500.19 / 0x80070021. Delete puts back the value found at create.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pulumi

from iis_clientcert.errors import ValidationError
from iis_clientcert.framework.inputs import Input, Inputs
from iis_clientcert.framework.location_attribute import PATH, SITE, LocationAttributeProvider
from iis_clientcert.framework.resource import TYPE_MODULE, IisResource
from iis_clientcert.host import contract

KIND = "SslSettings"

# IIS 7+ schema of access@sslFlags (name -> bit).
SSL_FLAGS: dict[str, int] = {
    "Ssl": 8,
    "SslNegotiateCert": 32,
    "SslRequireCert": 64,
    "Ssl128": 256,
}
_CANONICAL = {name.lower(): name for name in SSL_FLAGS}

INPUTS = Inputs(
    KIND,
    SITE,
    PATH,
    Input(
        "flags",
        "list",
        "sslFlags names, set semantics: Ssl, SslNegotiateCert, SslRequireCert, Ssl128 "
        "(SslRequireCert adds SslNegotiateCert)",
        default=list(contract.DEFAULT_SSL_FLAGS),
    ),
)


def normalise_flags(kind: str, value: Any, key: str = "flags") -> tuple[list[str], list[str]]:
    """Flags as a canonical list (set semantics, case-insensitive) and notes for the user."""
    if isinstance(value, str):
        raw = [part.strip() for part in value.split(",")]
    elif isinstance(value, list | tuple):
        raw = list(value)
    else:
        raise ValidationError(kind, key, value, "must be a list of flag names")
    names: set[str] = set()
    for item in raw:
        if not isinstance(item, str):
            raise ValidationError(kind, key, item, "must be a flag name")
        if item in ("", "None"):
            continue
        if item.lower() == "sslmapcert":
            raise ValidationError(
                kind,
                key,
                item,
                "SslMapCert is not a flag of IIS 7 or later (it appears only in old docs)",
                "Certificate mapping is configured with CertificateMapping; valid flags: "
                + ", ".join(SSL_FLAGS),
            )
        canonical = _CANONICAL.get(item.lower())
        if canonical is None:
            raise ValidationError(
                kind, key, item, "is not an sslFlags name", "Valid flags: " + ", ".join(SSL_FLAGS)
            )
        names.add(canonical)
    notes: list[str] = []
    if "SslRequireCert" in names and "SslNegotiateCert" not in names:
        names.add("SslNegotiateCert")
        notes.append("SslRequireCert needs SslNegotiateCert to ask for the certificate: added it")
    if names & {"SslNegotiateCert", "SslRequireCert", "Ssl128"} and "Ssl" not in names:
        notes.append("client certificates and Ssl128 only apply to HTTPS requests; consider Ssl")
    return sorted(names, key=lambda n: SSL_FLAGS[n]), notes


def flags_to_iis(flags: list[str]) -> str:
    """The attribute text IIS writes: names joined by ', ' ('None' for the empty set)."""
    return ", ".join(flags) if flags else "None"


def flags_from_iis(text: str | None) -> list[str]:
    if not text:
        return []
    names = [_CANONICAL.get(p.strip().lower(), p.strip()) for p in text.split(",")]
    return sorted({n for n in names if n and n != "None"}, key=lambda n: SSL_FLAGS.get(n, 1 << 20))


class SslSettingsProvider(LocationAttributeProvider):
    kind = KIND
    inputs = INPUTS
    section = contract.SECTION_SSL
    attribute = "sslFlags"

    def desired_value(self, inputs: Mapping[str, Any]) -> tuple[str, dict[str, Any], list[str]]:
        flags, notes = normalise_flags(KIND, INPUTS.value(inputs, "flags"))
        return flags_to_iis(flags), {"flags": flags}, notes

    def same_value(self, a: str | None, b: str | None) -> bool:
        return flags_from_iis(a) == flags_from_iis(b)

    def inputs_from_value(self, value: str | None) -> dict[str, Any]:
        return {"flags": flags_from_iis(value)}


class SslSettings(IisResource, module=TYPE_MODULE, name="SslSettings"):
    __doc__ = INPUTS.docstring("sslFlags of a site (or application) in applicationHost.config.")

    location: pulumi.Output[str]
    flags: pulumi.Output[list[str]]

    def __init__(
        self,
        resource_name: str,
        *,
        connection: Any,
        site: pulumi.Input[str],
        path: pulumi.Input[str] | None = None,
        flags: pulumi.Input[list[str]] | None = None,
        opts: pulumi.ResourceOptions | None = None,
    ) -> None:
        props = INPUTS.props(
            connection, SslSettingsProvider.computed, site=site, path=path, flags=flags
        )
        super().__init__(SslSettingsProvider(), resource_name, props, opts)
