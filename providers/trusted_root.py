"""TrustedRoot: one CA certificate in LocalMachine\\Root (self-signed) or LocalMachine\\CA.

IIS trusts a client certificate when its chain ends in a root of LocalMachine\\Root and its
intermediates are found (LocalMachine\\CA). A certificate that is *not* self-signed in Root
breaks every client certificate (KB 2802568: 403.16 with 0x800B0109, or 403.7 with
SendTrustedIssuerList=1), so such a certificate is refused for Root, and ``auto`` sends it
to CA. A certificate already in the store at create is adopted and left there on delete.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import pulumi
from pulumi.dynamic import DiffResult

from iis_clientcert.certs import CertInfo, load_certificate
from iis_clientcert.errors import CertificateError, ValidationError
from iis_clientcert.framework.base import EXPIRY_WARNING_DAYS, Change, IisProvider
from iis_clientcert.framework.diffing import same_object_diff
from iis_clientcert.framework.inputs import Input, Inputs
from iis_clientcert.framework.resource import TYPE_MODULE, IisResource
from iis_clientcert.host import contract
from iis_clientcert.host.client import ReadKey, ReadPlan, Reads
from iis_clientcert.host.connection import Connection

KIND = "TrustedRoot"

STORE_CHOICES = ("auto", "Root", "CA")
_STORE_CANONICAL = {s.lower(): s for s in STORE_CHOICES}

INPUTS = Inputs(
    KIND,
    Input(
        "certificate",
        "str",
        "The CA certificate: PEM, DER or base64 (stored as single-line base64 DER)",
        required=True,
        replace=True,
    ),
    Input(
        "store",
        "str",
        "auto (Root when self-signed, else CA), Root or CA",
        default="auto",
        replace=True,
    ),
)

STORE = ReadKey[contract.CertListResult]("store")

KB_2802568 = (
    "a certificate that is not self-signed in LocalMachine\\Root makes IIS answer 403.16 "
    "(0x800B0109) for every client certificate (KB 2802568)"
)

# What a CertificateError kind means the user should do.
CERT_FIXES: dict[str, str] = {
    "empty": "Give the CA certificate as PEM, DER or base64.",
    "truncated": "Copy the whole certificate again (PEM with its END line, or the full base64).",
    "bad_encoding": "Give the certificate as PEM, DER or base64 of the DER bytes.",
    "not_a_certificate": "Give the CA certificate itself (PEM '-----BEGIN CERTIFICATE-----').",
    "private_key_not_certificate": "That is a private key; give the certificate, never a key.",
    "pfx_needs_password": "Export the CA certificate without its key (.cer) and give that.",
    "wrong_password": "Export the CA certificate without its key (.cer) and give that.",
}


@dataclass(frozen=True)
class TrustedRootDesired:
    cert: CertInfo
    store: str  # as given: auto | Root | CA
    resolved_store: str  # Root | CA


@dataclass(frozen=True)
class TrustedRootCurrent:
    present: bool  # the certificate (by thumbprint) is in the resolved store


def certificate_input(kind: str, value: Any, key: str = "certificate") -> CertInfo:
    """Parse a certificate input; the message names the problem, never the blob itself."""
    if not isinstance(value, str | bytes):
        raise ValidationError(kind, key, None, "must be PEM, DER or base64 text")
    try:
        return load_certificate(value)
    except CertificateError as exc:
        raise ValidationError(
            kind, key, None, f"{exc.kind}: {exc}", CERT_FIXES.get(exc.kind, "")
        ) from None


def resolve_store(cert: CertInfo, store: str) -> str:
    """Where the certificate goes; refuses Root for a certificate that is not self-signed."""
    if store == "auto":
        return "Root" if cert.self_signed else "CA"
    if store == "Root" and not cert.self_signed:
        raise ValidationError(
            KIND,
            "store",
            store,
            f"{cert.describe()} is not self-signed (issued by {cert.issuer}); {KB_2802568}",
            "Use store 'CA' (or 'auto') for intermediate certificates",
        )
    return store


def validate_inputs(inputs: Mapping[str, Any]) -> TrustedRootDesired:
    cert = certificate_input(KIND, inputs.get("certificate"))
    raw_store = INPUTS.get_str(inputs, "store") or INPUTS.default("store")
    store = _STORE_CANONICAL.get(raw_store.strip().lower())
    if store is None:
        fix = "Valid stores: " + ", ".join(STORE_CHOICES)
        if raw_store.strip().lower() == "my":
            fix = "Server certificates with a key belong to ServerCertificate. " + fix
        raise ValidationError(KIND, "store", raw_store, "is not a store TrustedRoot manages", fix)
    return TrustedRootDesired(cert, store, resolve_store(cert, store))


def assess(desired: TrustedRootDesired, now: dt.datetime) -> list[str]:
    """Time- and usage-dependent findings at check time: raises for errors, returns warnings.

    Kept out of ``validate`` so that a certificate which expires after it was deployed can
    still be refreshed and deleted.
    """
    cert = desired.cert
    if cert.not_after < now:
        raise ValidationError(
            KIND,
            "certificate",
            None,
            f"{cert.describe()} expired on {cert.not_after.isoformat()}",
            "Trusting an expired CA does not help: IIS answers 403.16/403.17. "
            "Get the renewed CA certificate",
        )
    warnings: list[str] = []
    if not cert.is_ca:
        warnings.append(
            f"{cert.describe()} is not a CA certificate (basicConstraints CA is not set): "
            "Windows will not accept it as the issuer of client certificates"
        )
    if cert.not_before > now:
        warnings.append(f"{cert.describe()} is not valid before {cert.not_before.isoformat()}")
    if cert.expires_within(EXPIRY_WARNING_DAYS, now):
        warnings.append(
            f"{cert.describe()} expires on {cert.not_after.isoformat()} "
            f"(within {EXPIRY_WARNING_DAYS} days): renew it"
        )
    if desired.resolved_store == "CA" and cert.self_signed:
        warnings.append(
            f"{cert.describe()} is self-signed but goes to LocalMachine\\CA: it is not a "
            "trust anchor there, so chains ending in it stay untrusted (use store 'auto' "
            "or 'Root')"
        )
    return warnings


def plan(current: TrustedRootCurrent, desired: TrustedRootDesired) -> list[Change]:
    if current.present:
        return []
    return [
        Change(
            f"import {desired.cert.describe()} into LocalMachine\\{desired.resolved_store}",
            [contract.cert_import(desired.resolved_store, der_b64=desired.cert.blob)],
        )
    ]


def delete_changes(
    current: TrustedRootCurrent, desired: TrustedRootDesired, adopted: bool
) -> list[Change]:
    if not current.present:
        return []  # already gone
    if adopted:
        return []  # it was there before this resource: leave it
    return [
        Change(
            f"remove {desired.cert.describe()} from LocalMachine\\{desired.resolved_store}",
            [contract.cert_remove(desired.resolved_store, desired.cert.thumbprint)],
        )
    ]


class TrustedRootProvider(IisProvider[TrustedRootDesired, TrustedRootCurrent]):
    kind = KIND
    inputs = INPUTS
    computed = ("thumbprint", "subject", "issuer", "not_after", "resolved_store", "adopted")

    def validate(self, inputs: Mapping[str, Any]) -> TrustedRootDesired:
        return validate_inputs(inputs)

    def normalised_inputs(self, desired: TrustedRootDesired) -> dict[str, Any]:
        return {"certificate": desired.cert.blob, "store": desired.store}

    def resource_id(self, connection: Connection, desired: TrustedRootDesired) -> str:
        return f"{connection.authority}/{desired.resolved_store}/{desired.cert.thumbprint}"

    def read_plan(self, desired: TrustedRootDesired) -> ReadPlan:
        return ReadPlan().add(STORE, contract.cert_list(desired.resolved_store))

    def parse_current(self, desired: TrustedRootDesired, reads: Reads) -> TrustedRootCurrent:
        wanted = desired.cert.thumbprint.upper()
        found = any(entry["thumbprint"].upper() == wanted for entry in reads[STORE]["certificates"])
        return TrustedRootCurrent(present=found)

    def plan(
        self,
        current: TrustedRootCurrent,
        desired: TrustedRootDesired,
        previous: Mapping[str, Any] | None = None,
    ) -> list[Change]:
        return plan(current, desired)

    def outputs(
        self,
        desired: TrustedRootDesired,
        before: TrustedRootCurrent | None,
        after: TrustedRootCurrent,
        previous: Mapping[str, Any] | None,
    ) -> dict[str, Any]:
        adopted = before.present if before is not None else bool((previous or {}).get("adopted"))
        cert = desired.cert
        return {
            "thumbprint": cert.thumbprint,
            "subject": cert.subject,
            "issuer": cert.issuer,
            "not_after": cert.not_after.isoformat(),
            "resolved_store": desired.resolved_store,
            "adopted": adopted,
        }

    def exists(self, current: TrustedRootCurrent) -> bool:
        return current.present

    def live_inputs(
        self, desired: TrustedRootDesired, current: TrustedRootCurrent, stored: Mapping[str, Any]
    ) -> dict[str, Any]:
        # The store is searched by thumbprint, so what is there is exactly this certificate.
        return self.normalised_inputs(desired)

    def delete_changes(
        self, desired: TrustedRootDesired, current: TrustedRootCurrent, stored: Mapping[str, Any]
    ) -> list[Change]:
        return delete_changes(current, desired, bool(stored.get("adopted")))

    def advise(self, desired: TrustedRootDesired) -> list[str]:
        return assess(desired, dt.datetime.now(dt.UTC))

    def diff(self, _id: str, olds: dict[str, Any], news: dict[str, Any]) -> DiffResult:
        result = super().diff(_id, olds, news)

        def new_key() -> tuple[Any, ...]:
            desired = self.validate(news)
            return (desired.resolved_store, desired.cert.thumbprint)

        old_key = (olds.get("resolved_store"), olds.get("thumbprint"))
        return same_object_diff(result, news, old_key, new_key)


class TrustedRoot(IisResource, module=TYPE_MODULE, name="TrustedRoot"):
    __doc__ = INPUTS.docstring(
        "A CA certificate trusted by the host (LocalMachine\\Root or LocalMachine\\CA)."
    )

    certificate: pulumi.Output[str]
    store: pulumi.Output[str]
    thumbprint: pulumi.Output[str]
    subject: pulumi.Output[str]
    issuer: pulumi.Output[str]
    not_after: pulumi.Output[str]
    resolved_store: pulumi.Output[str]
    adopted: pulumi.Output[bool]

    def __init__(
        self,
        resource_name: str,
        *,
        connection: Any,
        certificate: pulumi.Input[str],
        store: pulumi.Input[str] | None = None,
        opts: pulumi.ResourceOptions | None = None,
    ) -> None:
        props = INPUTS.props(
            connection, TrustedRootProvider.computed, certificate=certificate, store=store
        )
        super().__init__(TrustedRootProvider(), resource_name, props, opts)
