"""ServerCertificate: a PFX imported with its private key into LocalMachine\\My.

The certificate an https binding presents. The PFX and its password are secrets: they are
wrapped secret by the resource class (so they are encrypted in state), travel to the host
only as JSON data, and never appear in a message. The key is imported non-exportable.
Delete removes the certificate unless it was there before (adopted) or a binding still
uses it (removing it would break that site's TLS).
"""

from __future__ import annotations

import base64
import datetime as dt
import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import pulumi
from pulumi.dynamic import DiffResult

from iis_clientcert.certs import CertInfo, legacy_pfx, load_pfx
from iis_clientcert.errors import CertificateError, ValidationError
from iis_clientcert.framework.base import EXPIRY_WARNING_DAYS, Change, IisProvider, warn
from iis_clientcert.framework.diffing import same_object_diff
from iis_clientcert.framework.inputs import Input, Inputs
from iis_clientcert.framework.resource import TYPE_MODULE, IisResource
from iis_clientcert.host import contract
from iis_clientcert.host.client import ReadKey, ReadPlan, Reads
from iis_clientcert.host.connection import Connection

KIND = "ServerCertificate"
STORE = "My"

INPUTS = Inputs(
    KIND,
    Input(
        "pfx",
        "str",
        "The PFX with the private key: a file path (read when the program runs), its bytes, "
        "or its base64",
        required=True,
        secret=True,
        replace=True,
    ),
    Input("password", "str", "The PFX's password", secret=True),
)

CERTS = ReadKey[contract.CertListResult]("certificates")
# Tells delete whether an https binding still uses the certificate.
SITES = ReadKey[contract.SiteListResult]("sites")
FACTS = ReadKey[contract.HostFactsResult]("facts")

# CertificateError kinds that are the password's fault, not the PFX's.
_PASSWORD_KINDS = ("wrong_password", "pfx_needs_password")
_FIXES: dict[str, str] = {
    "wrong_password": "Give the password the PFX was exported with",
    "pfx_needs_password": "Set password (as a secret) to the PFX's password",
    "pfx_without_key": "Export the certificate with its private key (.pfx)",
    "empty": "Give the base64 of the .pfx file, or its path",
    "not_a_certificate": "Give the base64 of the .pfx file, or its path",
    "truncated": "Copy the whole file again (or give its path)",
    "bad_encoding": "Give the base64 of the .pfx file, or its path",
}
# Characters a path has and base64 never does.
_PATH_HINTS = (".", "\\", ":")


def looks_like_path(text: str) -> bool:
    """A short single line with a character base64 never has (PEM text is not a path)."""
    return (
        len(text) < 1024
        and "\n" not in text
        and "-----" not in text
        and any(ch in text for ch in _PATH_HINTS)
    )


@dataclass(frozen=True)
class ServerCertificateDesired:
    pfx_b64: str  # single-line base64 of the PFX (still encrypted)
    password: str | None
    info: CertInfo  # the certificate that belongs to the private key


@dataclass(frozen=True)
class ServerCertificateCurrent:
    present: bool
    has_private_key: bool
    used_by: tuple[str, ...]  # "site (binding information)" of https bindings using it
    os_build: int = 0  # the host's Windows build (0: unknown)


def validate_inputs(inputs: Mapping[str, Any]) -> ServerCertificateDesired:
    pfx = inputs.get("pfx")
    password = inputs.get("password")
    if pfx is None or (isinstance(pfx, str) and not pfx.strip()):
        raise ValidationError(KIND, "pfx", None, "is required", _FIXES["empty"])
    if not isinstance(pfx, str):
        raise ValidationError(KIND, "pfx", None, "must be base64 text of a PFX, or a file path")
    if password is not None and not isinstance(password, str):
        raise ValidationError(KIND, "password", None, "must be a string")
    text = pfx.strip()
    if looks_like_path(text):
        # A path (not a secret) that the resource class could not read at program time.
        raise ValidationError(
            KIND,
            "pfx",
            text,
            "looks like a file path, but no such file was found when the program ran",
            "Give the path of an existing .pfx file, or its content as base64",
        )
    try:
        bundle = load_pfx(text, password, require_key=True)
    except CertificateError as exc:
        prop = "password" if exc.kind in _PASSWORD_KINDS else "pfx"
        raise ValidationError(
            KIND, prop, None, f"{exc.kind}: {exc}", _FIXES.get(exc.kind, "")
        ) from None
    return ServerCertificateDesired(
        base64.b64encode(bundle.pfx_der).decode("ascii"), password, bundle.certificate
    )


def assess(desired: ServerCertificateDesired, now: dt.datetime) -> list[str]:
    """Warnings at check time (time-dependent, so kept out of validate)."""
    cert = desired.info
    warnings: list[str] = []
    if cert.eku_present and not cert.server_auth_eku:
        warnings.append(
            f"{cert.describe()} lacks the server authentication EKU: clients refuse it "
            "as a TLS server certificate"
        )
    if not cert.dns_names:
        warnings.append(
            f"{cert.describe()} has no DNS names (subjectAltName): browsers and most "
            "clients refuse a server certificate without them"
        )
    if cert.not_after < now:
        warnings.append(f"{cert.describe()} expired on {cert.not_after.isoformat()}")
    elif cert.expires_within(EXPIRY_WARNING_DAYS, now):
        warnings.append(
            f"{cert.describe()} expires on {cert.not_after.isoformat()} "
            f"(within {EXPIRY_WARNING_DAYS} days): renew it"
        )
    if cert.not_before > now:
        warnings.append(f"{cert.describe()} is not valid before {cert.not_before.isoformat()}")
    return warnings


def parse_current(thumbprint: str, reads: Reads) -> ServerCertificateCurrent:
    wanted = thumbprint.upper()
    entry = next(
        (c for c in reads[CERTS]["certificates"] if c["thumbprint"].upper() == wanted), None
    )
    used_by = tuple(
        f"{site['name']} ({binding['binding_information']})"
        for site in reads[SITES]["sites"]
        for binding in site["bindings"]
        if (binding["certificate_hash"] or "").upper() == wanted
    )
    return ServerCertificateCurrent(
        present=entry is not None,
        has_private_key=entry is not None and entry["has_private_key"],
        used_by=used_by,
        os_build=reads[FACTS]["os_build"],
    )


def pfx_for_host(desired: ServerCertificateDesired, os_build: int) -> str:
    """The PFX (base64) to send: re-wrapped as PBES1 SHA1/3DES for a host older than build
    17763 (Server 2016), which cannot open AES/PBES2 and would call it a wrong password."""
    if not 0 < os_build < contract.PFX_AES_MIN_BUILD:
        return desired.pfx_b64
    rewrapped = legacy_pfx(base64.b64decode(desired.pfx_b64), desired.password)
    return base64.b64encode(rewrapped).decode("ascii")


def plan(current: ServerCertificateCurrent, desired: ServerCertificateDesired) -> list[Change]:
    if current.present and current.has_private_key:
        return []
    what = "the private key of " if current.present else ""
    return [
        Change(
            f"import {what}{desired.info.describe()} into LocalMachine\\My",
            [
                contract.cert_import(
                    STORE,
                    pfx_b64=pfx_for_host(desired, current.os_build),
                    pfx_password=desired.password,
                    exportable=False,
                )
            ],
        )
    ]


def delete_changes(
    current: ServerCertificateCurrent, desired: ServerCertificateDesired, adopted: bool
) -> list[Change]:
    """What delete does; a Change without ops is a note (kept, and why)."""
    if not current.present or adopted:
        return []
    if current.used_by:
        return [
            Change(
                f"keeping {desired.info.describe()} in LocalMachine\\My: still used by the "
                f"https binding(s) {', '.join(current.used_by)}; remove it by hand once unused"
            )
        ]
    return [
        Change(
            f"remove {desired.info.describe()} (and its private key) from LocalMachine\\My",
            [contract.cert_remove(STORE, desired.info.thumbprint)],
        )
    ]


class ServerCertificateProvider(IisProvider[ServerCertificateDesired, ServerCertificateCurrent]):
    kind = KIND
    inputs = INPUTS
    computed = ("thumbprint", "subject", "dns_names", "not_after", "adopted")

    def validate(self, inputs: Mapping[str, Any]) -> ServerCertificateDesired:
        return validate_inputs(inputs)

    def normalised_inputs(self, desired: ServerCertificateDesired) -> dict[str, Any]:
        return {"pfx": desired.pfx_b64, "password": desired.password}

    def resource_id(self, connection: Connection, desired: ServerCertificateDesired) -> str:
        return f"{connection.authority}/{STORE}/{desired.info.thumbprint}"

    def read_plan(self, desired: ServerCertificateDesired) -> ReadPlan:
        # site.list tells delete whether a binding still uses the certificate; host.facts
        # the Windows build (Server 2016 needs the PFX re-wrapped).
        return (
            ReadPlan()
            .add(CERTS, contract.cert_list(STORE))
            .add(SITES, contract.site_list())
            .add(FACTS, contract.host_facts())
        )

    def parse_current(
        self, desired: ServerCertificateDesired, reads: Reads
    ) -> ServerCertificateCurrent:
        return parse_current(desired.info.thumbprint, reads)

    def plan(
        self,
        current: ServerCertificateCurrent,
        desired: ServerCertificateDesired,
        previous: Mapping[str, Any] | None = None,
    ) -> list[Change]:
        return plan(current, desired)

    def outputs(
        self,
        desired: ServerCertificateDesired,
        before: ServerCertificateCurrent | None,
        after: ServerCertificateCurrent,
        previous: Mapping[str, Any] | None,
    ) -> dict[str, Any]:
        adopted = before.present if before is not None else bool((previous or {}).get("adopted"))
        cert = desired.info
        return {
            "thumbprint": cert.thumbprint,
            "subject": cert.subject,
            "dns_names": list(cert.dns_names),
            "not_after": cert.not_after.isoformat(),
            "adopted": adopted,
        }

    def exists(self, current: ServerCertificateCurrent) -> bool:
        return current.present

    def live_inputs(
        self,
        desired: ServerCertificateDesired,
        current: ServerCertificateCurrent,
        stored: Mapping[str, Any],
    ) -> dict[str, Any]:
        # The host never shows the PFX or its password; found by thumbprint, it is this one.
        return self.normalised_inputs(desired)

    def delete_changes(
        self,
        desired: ServerCertificateDesired,
        current: ServerCertificateCurrent,
        stored: Mapping[str, Any],
    ) -> list[Change]:
        changes = delete_changes(current, desired, bool(stored.get("adopted")))
        for change in changes:
            if not change.ops:
                warn(KIND, change.summary)
        return changes

    def advise(self, desired: ServerCertificateDesired) -> list[str]:
        return assess(desired, dt.datetime.now(dt.UTC))

    def diff(self, _id: str, olds: dict[str, Any], news: dict[str, Any]) -> DiffResult:
        result = super().diff(_id, olds, news)

        def new_key() -> tuple[Any, ...]:
            return (STORE, self.validate(news).info.thumbprint)

        return same_object_diff(result, news, (STORE, olds.get("thumbprint")), new_key)


def read_pfx(value: Any) -> Any:
    """The PFX as base64 text: a path is read here, at program time (the provider may run
    where the file is not); bytes are encoded; base64 text passes through."""
    if isinstance(value, bytes | bytearray):
        return base64.b64encode(bytes(value)).decode("ascii")
    if isinstance(value, str) and looks_like_path(value.strip()):
        path = os.path.expanduser(value.strip())
        if os.path.isfile(path):
            with open(path, "rb") as handle:
                return base64.b64encode(handle.read()).decode("ascii")
    return value


class ServerCertificate(IisResource, module=TYPE_MODULE, name="ServerCertificate"):
    __doc__ = INPUTS.docstring("A server certificate with its private key in LocalMachine\\My.")

    pfx: pulumi.Output[str]
    password: pulumi.Output[str]
    thumbprint: pulumi.Output[str]
    subject: pulumi.Output[str]
    dns_names: pulumi.Output[list[str]]
    not_after: pulumi.Output[str]
    adopted: pulumi.Output[bool]

    def __init__(
        self,
        resource_name: str,
        *,
        connection: Any,
        pfx: pulumi.Input[str] | bytes,
        password: pulumi.Input[str] | None = None,
        opts: pulumi.ResourceOptions | None = None,
    ) -> None:
        props = INPUTS.props(
            connection,
            ServerCertificateProvider.computed,
            pfx=pulumi.Output.from_input(pfx).apply(read_pfx),
            password=password,
        )
        super().__init__(ServerCertificateProvider(), resource_name, props, opts)
