"""Doctor: check an IIS host for the client-certificate failures users actually hit.

    python -m iis_clientcert.tools.doctor --simulator .work/sim
    IIS_PASSWORD=... python -m iis_clientcert.tools.doctor --endpoint https://web01:5986/wsman \\
        --transport ntlm --username 'WEB01\\admin' --ca-bundle ca.pem [--site shop] [--json]

The host is read with read-only contract ops in one batch (a second one for per-site
details when the sites have to be found first), each read under a name (ReadKey) and its
result typed by the contract. Every check is a pure function from those
results to findings, so each is unit-testable with fake results. A finding says what is
wrong, what the user sees (the IIS status) and the fix. Nothing secret is ever printed:
the ops return no passwords, and mapping blobs are shown by subject and thumbprint.

Exit code: 0 clean (warnings allowed), 1 at least one error, 2 the host could not be read.
"""

from __future__ import annotations

import argparse
import base64
import binascii
import datetime as dt
import json
import os
import re
import sys
import tempfile
import textwrap
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Final, Literal, Protocol, TypeAlias, TypeVar

import requests
from cryptography import x509

from iis_clientcert.certs import CertInfo, load_certificate, verify_chain
from iis_clientcert.errors import (
    AgentError,
    AuthenticationError,
    CertificateError,
    IisClientCertError,
    TransportError,
    UsageError,
    WSManFaultError,
)
from iis_clientcert.host import contract
from iis_clientcert.host.client import HostClient, ReadKey, ReadPlan
from iis_clientcert.host.connection import Connection, simulator_connection_input
from iis_clientcert.host.contract import (
    CertListResult,
    CertRevocationResult,
    ConfigGetResult,
    HostFactsResult,
    Op,
    SiteInfo,
    SiteListResult,
    SiteLogTailResult,
    VerifyLogonsResult,
)

Level = Literal["error", "warning", "ok"]

LEVELS: Final[tuple[Level, ...]] = ("error", "warning", "ok")
PASSWORD_ENV: Final = "IIS_PASSWORD"  # noqa: S105 - the variable's name, not a password
DEFAULT_SIMULATOR_DIR: Final = ".work/sim"

# Check names, in the order the report lists them.
CHECK_ROOT_STORE: Final = "root-store"
CHECK_FEATURE: Final = "web-cert-auth"
CHECK_TRUST_MODE: Final = "schannel-trust"
CHECK_SITES: Final = "sites"
CHECK_READ: Final = "read"
CHECK_LOCKED: Final = "locked-section"
CHECK_SSL_FLAGS: Final = "ssl-flags"
CHECK_NEGOTIATE: Final = "negotiate-cert"
CHECK_MAPPING_ENABLED: Final = "mapping-enabled"
CHECK_ANONYMOUS: Final = "anonymous"
CHECK_AD_MAPPING: Final = "ad-mapping"
CHECK_BLOB: Final = "mapping-blob"
CHECK_TRUST: Final = "mapping-trust"
CHECK_EXPIRY: Final = "mapping-expiry"
CHECK_LOGON: Final = "mapping-logon"
CHECK_TLS13: Final = "tls13"
CHECK_REVOCATION: Final = "revocation"
CHECK_REQUESTS: Final = "recent-requests"

HR_LOCKED: Final = "0x80070021"
# The sslFlags the fixes recommend, as IIS writes them.
REQUIRED_FLAGS: Final = ", ".join(contract.DEFAULT_SSL_FLAGS)
# Sections declared overrideModeDefault="Deny": in a web.config they make every request 500.19.
LOCKED_SECTIONS: Final = (
    contract.SECTION_SSL,
    contract.SECTION_ANONYMOUS,
    contract.SECTION_MAPPING,
    contract.SECTION_AD_MAPPING,
)


# --- what the checks read and what they say --------------------------------------------


@dataclass(frozen=True)
class Finding:
    level: Level
    check: str
    site: str | None
    problem: str  # what is wrong (for "ok": what was found right)
    fix: str = ""


def _or_ok(out: list[Finding], check: str, site: str | None, found: str) -> list[Finding]:
    """The check's findings, or one "ok" finding saying what was found right."""
    return out or [Finding("ok", check, site, found)]


@dataclass(frozen=True)
class OpFailure:
    """An op the agent refused; kept in place of its result so the other checks still run."""

    op: str
    code: str
    hresult: str | None
    message: str


R = TypeVar("R")

# A contract result, the failure that replaced it, or None (not read).
Read: TypeAlias = R | OpFailure | None


@dataclass(frozen=True)
class SiteReads:
    name: str
    site: SiteInfo | None  # the site.list entry; None when the site does not exist
    ssl: Read[ConfigGetResult] = None
    anonymous: Read[ConfigGetResult] = None
    mapping: Read[ConfigGetResult] = None
    ad_mapping: Read[ConfigGetResult] = None
    logons: Read[VerifyLogonsResult] = None
    # config.get of the locked sections in the site's web.config, (section, result), when
    # the contract's config.get can read there (its optional ``target`` argument).
    webconfig: tuple[tuple[str, Read[ConfigGetResult]], ...] = ()
    # The last entries of the site's W3C log: what IIS answered, substatus included.
    log: Read[SiteLogTailResult] = None


@dataclass(frozen=True)
class HostReads:
    facts: Read[HostFactsResult]
    root: Read[CertListResult]
    ca: Read[CertListResult]
    sites: tuple[SiteReads, ...]
    # Site names chosen by default (https binding) rather than by --site.
    sites_defaulted: bool = True
    now: dt.datetime = field(default_factory=lambda: dt.datetime.now(dt.UTC))
    # cert.revocation of the CA-store certificates and mapped certificates that name a CRL
    # distribution point (None: none does, or the contract cannot ask).
    revocation: Read[CertRevocationResult] = None


# --- small readers of contract results -----------------------------------------------


def _ok(value: Read[R]) -> R | None:
    return None if value is None or isinstance(value, OpFailure) else value


def _attr(el: Mapping[str, Any] | None, name: str, default: str = "") -> str:
    if el is None:
        return default
    return str(el.get("attributes", {}).get(name, default))


def _bool_attr(el: Mapping[str, Any] | None, name: str, default: bool) -> bool:
    raw = _attr(el, name, "")
    return default if raw == "" else raw.strip().lower() == "true"


def _effective(value: Read[ConfigGetResult]) -> Mapping[str, Any] | None:
    got = _ok(value)
    if got is None:
        return None
    eff = got.get("effective")
    return eff if isinstance(eff, dict) else None


def _items(el: Mapping[str, Any] | None, child: str) -> list[dict[str, Any]]:
    if el is None:
        return []
    sub = el.get("children", {}).get(child)
    if not isinstance(sub, dict):
        return []
    return [item for item in sub.get("items", []) if isinstance(item, dict)]


def ssl_flag_names(value: str) -> set[str]:
    """sslFlags as the set of its names ("Ssl, SslNegotiateCert" -> {...}); numbers too."""
    text = value.strip()
    if text.isdigit():
        bits = {8: "Ssl", 32: "SslNegotiateCert", 64: "SslRequireCert", 256: "Ssl128"}
        return {name for bit, name in bits.items() if int(text) & bit}
    return {part.strip() for part in text.split(",") if part.strip() and part.strip() != "None"}


def _https_bindings(site: Mapping[str, Any] | None) -> list[dict[str, Any]]:
    if site is None:
        return []
    return [
        b
        for b in site.get("bindings", [])
        if isinstance(b, dict) and str(b.get("protocol", "")).lower() == "https"
    ]


def _certs(value: Read[CertListResult]) -> list[Mapping[str, Any]]:
    got: Mapping[str, Any] = _ok(value) or {}
    return [c for c in got.get("certificates", []) if isinstance(c, dict)]


def _load_store(value: Read[CertListResult]) -> list[CertInfo]:
    loaded = []
    for entry in _certs(value):
        try:
            loaded.append(load_certificate(str(entry.get("der_b64", ""))))
        except CertificateError:
            continue  # the host could not give it to us intact; nothing to check it with
    return loaded


def _short_blob(blob: str) -> str:
    # A blob is public data, but 1-2 KB of base64 helps nobody: show its start.
    flat = re.sub(r"\s+", "", blob)
    return flat[:16] + "..." if len(flat) > 16 else flat


@dataclass(frozen=True)
class MappedCert:
    """One enabled one-to-one mapping, with its certificate when the blob parses."""

    user_name: str
    blob: str
    cert: CertInfo | None
    blob_problem: str | None  # None when the blob is what IIS expects
    hresult: str | None

    @property
    def label(self) -> str:
        if self.cert is not None:
            return f"the mapping of {self.cert.describe()} to {self.user_name!r}"
        return f"the mapping of blob {_short_blob(self.blob)!r} to {self.user_name!r}"


def inspect_blob(blob: str) -> tuple[CertInfo | None, str | None, str | None]:
    """(certificate, problem, hresult) of a one-to-one mapping's ``certificate`` value.

    IIS compares the attribute with the single-line base64 DER of what the client presents,
    so anything else never matches (or fails to decode: 0x80093102 / 0x8009310B).
    """
    problem: str | None = None
    hresult: str | None = None
    if "-----BEGIN" in blob or "-----END" in blob:
        problem, hresult = "it carries PEM header/footer lines", "0x8009310B"
    elif re.search(r"\s", blob):
        problem, hresult = "it contains whitespace or line breaks", "0x80093102"
    if problem is not None:
        try:
            return load_certificate(blob), problem, hresult  # which certificate it meant
        except CertificateError:
            return None, problem, hresult
    try:
        der = base64.b64decode(blob, validate=True)
    except (binascii.Error, ValueError):
        return None, "it is not valid base64", "0x8009310B"
    if der[:1] != b"\x30":
        # Not an ASN.1 SEQUENCE at all: CryptoAPI stops at the first tag.
        return None, "it is not the base64 of a DER certificate", "0x8009310B"
    try:
        return CertInfo.from_certificate(x509.load_der_x509_certificate(der)), None, None
    except ValueError:
        pass
    try:
        load_certificate(blob)
        truncated = False  # some other DER structure (PFX, PKCS#7) the tolerant loader knows
    except CertificateError as exc:
        truncated = exc.kind == "truncated"
    if truncated:
        return None, "it is not the base64 of a DER certificate (truncated)", "0x80093102"
    return None, "it is not the base64 of a DER certificate", "0x8009310B"


def mapped_certs(site: SiteReads) -> list[MappedCert]:
    out = []
    for item in _items(_effective(site.mapping), "oneToOneMappings"):
        if not _bool_attr(item, "enabled", True):
            continue
        blob = _attr(item, "certificate")
        cert, problem, hresult = inspect_blob(blob)
        out.append(MappedCert(_attr(item, "userName"), blob, cert, problem, hresult))
    return out


def _mapping_counts(site: SiteReads) -> tuple[int, int]:
    mapping = _effective(site.mapping)
    one = [i for i in _items(mapping, "oneToOneMappings") if _bool_attr(i, "enabled", True)]
    many = [i for i in _items(mapping, "manyToOneMappings") if _bool_attr(i, "enabled", True)]
    return len(one), len(many)


def _explain(hresult: str | None) -> str:
    known = contract.explain_hresult(hresult)
    return f"{hresult} {known.name}: {known.meaning}" if known else (hresult or "")


# --- host checks -------------------------------------------------------------------------

CheckFn = Callable[[HostReads], list[Finding]]


def check_root_store(reads: HostReads) -> list[Finding]:
    """KB 2802568: one non-self-signed certificate in Root breaks every client certificate."""
    if _ok(reads.root) is None:
        return []
    bad: list[str] = []
    for entry in _certs(reads.root):
        try:
            self_signed = load_certificate(str(entry.get("der_b64", ""))).self_signed
        except CertificateError:
            # The seed's own test: Issuer -ne Subject.
            self_signed = entry.get("issuer") == entry.get("subject")
        if not self_signed:
            bad.append(f"{entry.get('subject', '?')} [{entry.get('thumbprint', '?')}]")
    if not bad:
        return [
            Finding("ok", CHECK_ROOT_STORE, None, "LocalMachine\\Root holds only self-signed roots")
        ]
    facts: Mapping[str, Any] = _ok(reads.facts) or {}
    status = "403.7" if int(facts.get("send_trusted_issuer_list", 0) or 0) == 1 else "403.16"
    return [
        Finding(
            "error",
            CHECK_ROOT_STORE,
            None,
            f"{len(bad)} non-self-signed certificate(s) in LocalMachine\\Root: {'; '.join(bad)}. "
            f"IIS then rejects every client certificate with {status} "
            "(0x800B0109, KB 2802568)",
            "move them to Intermediate Certification Authorities (LocalMachine\\CA); keep only "
            "self-signed roots in Root (TrustedRoot with store=CA for intermediates)",
        )
    ]


def check_feature(reads: HostReads) -> list[Finding]:
    facts = _ok(reads.facts)
    if facts is None:
        return []
    if facts.get("web_cert_auth_installed") is False:
        return [
            Finding(
                "error",
                CHECK_FEATURE,
                None,
                "the Windows feature Web-Cert-Auth (IIS Client Certificate Mapping "
                "Authentication) is not installed: one-to-one and many-to-one mappings do nothing",
                "Install-WindowsFeature Web-Cert-Auth",
            )
        ]
    return [Finding("ok", CHECK_FEATURE, None, "Web-Cert-Auth is installed")]


def check_trust_mode(reads: HostReads) -> list[Finding]:
    facts = _ok(reads.facts)
    if facts is None:
        return []
    mode = int(facts.get("client_auth_trust_mode", 0) or 0)
    key = "HKLM\\SYSTEM\\CurrentControlSet\\Control\\SecurityProviders\\SCHANNEL"
    if mode == 2:
        return [
            Finding(
                "warning",
                CHECK_TRUST_MODE,
                None,
                "Schannel ClientAuthTrustMode=2 (exclusive CA trust): a client certificate is "
                "accepted only if its issuer is in the binding's Client Authentication Issuers "
                "store (CtlStoreName), not merely chained to Root; the Root checks here do not "
                "cover that",
                f"put the issuing CAs in the Client Authentication Issuers store, or set "
                f"{key}\\ClientAuthTrustMode to 0 (machine trust)",
            )
        ]
    if mode == 1:
        return [
            Finding(
                "warning",
                CHECK_TRUST_MODE,
                None,
                "Schannel ClientAuthTrustMode=1 (exclusive root trust): only roots in the "
                "binding's Client Authentication Issuers store (CtlStoreName) are trusted",
                f"put the roots in that store, or set {key}\\ClientAuthTrustMode to 0",
            )
        ]
    return [
        Finding("ok", CHECK_TRUST_MODE, None, "Schannel uses machine trust (ClientAuthTrustMode 0)")
    ]


def check_sites(reads: HostReads) -> list[Finding]:
    out = []
    if not reads.sites and reads.sites_defaulted:
        out.append(
            Finding(
                "warning",
                CHECK_SITES,
                None,
                "no site has an https binding, so no site can ask for client certificates",
                "add an https binding (HttpsBinding), or name the site with --site",
            )
        )
    for site in reads.sites:
        if site.site is None:
            out.append(
                Finding(
                    "error",
                    CHECK_SITES,
                    site.name,
                    f"there is no site named {site.name!r}",
                    "check the name (site names are listed by Get-Website / site.list)",
                )
            )
        elif not _https_bindings(site.site):
            out.append(
                Finding(
                    "error",
                    CHECK_SITES,
                    site.name,
                    "the site has no https binding: client certificates need TLS",
                    "add an https binding with a server certificate (HttpsBinding)",
                )
            )
    return out


def _locked_finding(site_name: str | None, what: str, detail: str) -> Finding:
    where = site_name or "SITE"
    return Finding(
        "error",
        CHECK_LOCKED,
        site_name,
        f"{what}: the section is locked (overrideModeDefault=Deny) but set below "
        f"applicationHost.config, in the site's web.config ({detail}). Every request fails "
        f"with HTTP 500.19 ({HR_LOCKED} ERROR_LOCK_VIOLATION)",
        "remove the section from the site's web.config and write it to "
        f'applicationHost.config inside <location path="{where}"> '
        f"(-PSPath MACHINE/WEBROOT/APPHOST -Location '{where}', appcmd /commit:apphost, "
        "or the providers of this project)",
    )


def check_reads(reads: HostReads) -> list[Finding]:
    """Ops the host refused. A lock violation is the 500.19 case and has its own check."""
    facts: Mapping[str, Any] = _ok(reads.facts) or {}
    feature_missing = facts.get("web_cert_auth_installed") is False
    out = []
    host_reads: list[tuple[str | None, str, Read[Any]]] = [
        (None, "host facts", reads.facts),
        (None, "LocalMachine\\Root", reads.root),
        (None, "LocalMachine\\CA", reads.ca),
    ]
    for site in reads.sites:
        host_reads += [
            (site.name, contract.SECTION_SSL, site.ssl),
            (site.name, contract.SECTION_ANONYMOUS, site.anonymous),
            (site.name, contract.SECTION_MAPPING, site.mapping),
            (site.name, contract.SECTION_AD_MAPPING, site.ad_mapping),
            (site.name, "mapping logons", site.logons),
        ]
        host_reads += [(site.name, f"{name} (web.config)", got) for name, got in site.webconfig]
    for site_name, what, value in host_reads:
        if what.endswith("(web.config)") and (_ok(value) or {}).get("present"):
            out.append(_locked_finding(site_name, what, "it is set there"))
            continue
        if not isinstance(value, OpFailure):
            continue
        if value.code == "Locked" or (value.hresult or "").upper() == HR_LOCKED.upper():
            out.append(_locked_finding(site_name, what, f"host says: {value.message}"))
        elif value.code == "FeatureMissing" and feature_missing:
            continue  # said once by the web-cert-auth check
        else:
            explained = f" [{_explain(value.hresult)}]" if value.hresult else ""
            out.append(
                Finding(
                    "error",
                    CHECK_READ,
                    site_name,
                    f"could not read {what} ({value.op}): {value.code}: {value.message}{explained}",
                    "fix the cause above and run the doctor again; checks that need this "
                    "data were skipped",
                )
            )
    return out


# --- site checks -----------------------------------------------------------------------

SiteCheckFn = Callable[[HostReads, SiteReads], list[Finding]]


def _site_flags(site: SiteReads) -> set[str] | None:
    eff = _effective(site.ssl)
    return None if eff is None else ssl_flag_names(_attr(eff, "sslFlags", "None"))


def _mapping_enabled(site: SiteReads) -> bool | None:
    eff = _effective(site.mapping)
    return None if eff is None else _bool_attr(eff, "enabled", False)


def check_ssl_flags(_reads: HostReads, site: SiteReads) -> list[Finding]:
    flags = _site_flags(site)
    if flags is None:
        return []
    shown = ", ".join(sorted(flags)) or "None"
    fix = f'set sslFlags to "{REQUIRED_FLAGS}" (SslSettings)'
    if "SslRequireCert" in flags:
        return [
            Finding(
                "ok", CHECK_SSL_FLAGS, site.name, f"sslFlags require client certificates ({shown})"
            )
        ]
    if "SslNegotiateCert" in flags:
        return [
            Finding(
                "error",
                CHECK_SSL_FLAGS,
                site.name,
                f"sslFlags={shown} has no SslRequireCert: client certificates are optional, "
                "a request without one is not refused with 403.7",
                fix,
            )
        ]
    return [
        Finding(
            "error",
            CHECK_SSL_FLAGS,
            site.name,
            f"sslFlags={shown}: the site never asks for a client certificate",
            fix,
        )
    ]


def check_negotiate(_reads: HostReads, site: SiteReads) -> list[Finding]:
    flags = _site_flags(site)
    enabled = _mapping_enabled(site)
    if flags is None or not enabled:
        return []
    if "SslNegotiateCert" not in flags:
        return [
            Finding(
                "error",
                CHECK_NEGOTIATE,
                site.name,
                "certificate mapping is enabled but sslFlags lacks SslNegotiateCert: IIS never "
                "asks for the client certificate, so no mapping can apply",
                f'add SslNegotiateCert (with SslRequireCert): "{REQUIRED_FLAGS}" (SslSettings)',
            )
        ]
    return []


def check_mapping_enabled(reads: HostReads, site: SiteReads) -> list[Finding]:
    enabled = _mapping_enabled(site)
    if enabled is None:
        return []
    eff = _effective(site.mapping)
    one, many = _mapping_counts(site)
    if not enabled:
        return [
            Finding(
                "error",
                CHECK_MAPPING_ENABLED,
                site.name,
                "iisClientCertificateMappingAuthentication is not enabled for the site: "
                "client certificates are not mapped to users",
                f'enable the section at <location path="{site.name}"> in '
                "applicationHost.config (CertificateMapping)",
            )
        ]
    out = []
    if one and not _bool_attr(eff, "oneToOneCertificateMappingsEnabled", True):
        out.append(
            Finding(
                "error",
                CHECK_MAPPING_ENABLED,
                site.name,
                f"{one} one-to-one mapping(s) but oneToOneCertificateMappingsEnabled=false: "
                "they are ignored",
                "set oneToOneCertificateMappingsEnabled=true",
            )
        )
    if many and not _bool_attr(eff, "manyToOneCertificateMappingsEnabled", True):
        out.append(
            Finding(
                "error",
                CHECK_MAPPING_ENABLED,
                site.name,
                f"{many} many-to-one mapping(s) but manyToOneCertificateMappingsEnabled=false: "
                "they are ignored",
                "set manyToOneCertificateMappingsEnabled=true",
            )
        )
    if not one and not many:
        out.append(
            Finding(
                "warning",
                CHECK_MAPPING_ENABLED,
                site.name,
                "mapping is enabled but the site has no enabled mappings: every client "
                "certificate gets 401.2 (or anonymous access, if that is on)",
                "add one-to-one or many-to-one mappings (CertificateMapping)",
            )
        )
    return _or_ok(
        out,
        CHECK_MAPPING_ENABLED,
        site.name,
        f"certificate mapping enabled ({one} one-to-one, {many} many-to-one)",
    )


def check_anonymous(_reads: HostReads, site: SiteReads) -> list[Finding]:
    eff = _effective(site.anonymous)
    if eff is None:
        return []
    flags = _site_flags(site) or set()
    wants_certs = bool(_mapping_enabled(site)) or bool(
        flags & {"SslNegotiateCert", "SslRequireCert"}
    )
    if not wants_certs:
        return []
    if _bool_attr(eff, "enabled", True):
        user = _attr(eff, "userName", "IUSR") or "the application pool identity"
        return [
            Finding(
                "error",
                CHECK_ANONYMOUS,
                site.name,
                f"anonymous authentication is still enabled: requests without a (mapped) client "
                f"certificate are served as {user}",
                "disable anonymousAuthentication for the site (AnonymousAuthentication)",
            )
        ]
    return [Finding("ok", CHECK_ANONYMOUS, site.name, "anonymous authentication is off")]


def check_ad_mapping(_reads: HostReads, site: SiteReads) -> list[Finding]:
    eff = _effective(site.ad_mapping)
    if eff is None or not _bool_attr(eff, "enabled", False):
        return []
    one, _ = _mapping_counts(site)
    if one and _mapping_enabled(site):
        return [
            Finding(
                "error",
                CHECK_AD_MAPPING,
                site.name,
                "Active Directory clientCertificateMappingAuthentication is enabled together "
                "with IIS one-to-one mappings: the two must not be combined",
                "disable clientCertificateMappingAuthentication for the site (keep the IIS "
                "mappings), or drop the IIS mappings and use AD mapping alone",
            )
        ]
    return []


def check_blobs(_reads: HostReads, site: SiteReads) -> list[Finding]:
    out = []
    for mapped in mapped_certs(site):
        if mapped.blob_problem is None:
            continue
        out.append(
            Finding(
                "error",
                CHECK_BLOB,
                site.name,
                f"{mapped.label}: the certificate value is not single-line base64 DER: "
                f"{mapped.blob_problem}. No client certificate matches it; IIS reports 401.1 "
                f"with {_explain(mapped.hresult)}",
                "give the certificate as PEM, DER or PFX to CertificateMapping, which writes the "
                "single-line base64 of its DER (by hand: strip the BEGIN/END lines and join "
                "the lines)",
            )
        )
    return out


def check_chains(reads: HostReads, site: SiteReads) -> list[Finding]:
    """Would IIS accept each mapped certificate: a path to Root (403.16), valid now (403.17)."""
    mapped = [m for m in mapped_certs(site) if m.cert is not None]
    if not mapped or _ok(reads.root) is None:
        return []
    roots = _load_store(reads.root)
    intermediates = _load_store(reads.ca)
    out = []
    for m in mapped:
        assert m.cert is not None
        result = verify_chain(m.cert, roots, intermediates, at=reads.now)
        if result.ok:
            continue
        if result.status in ("expired", "not_yet_valid"):
            out.append(
                Finding(
                    "error",
                    CHECK_EXPIRY,
                    site.name,
                    f"{m.label}: {result.message}. Clients get 403.17",
                    "issue a new client certificate and map it (CertificateMapping), or renew "
                    "the expired CA certificate",
                )
            )
        else:
            out.append(
                Finding(
                    "error",
                    CHECK_TRUST,
                    site.name,
                    f"{m.label}: {result.message}. Clients get 403.16 (0x800B0109)",
                    "add the issuing root to LocalMachine\\Root and its intermediates to "
                    "LocalMachine\\CA (TrustedRoot)",
                )
            )
    return _or_ok(
        out,
        CHECK_TRUST,
        site.name,
        f"{len(mapped)} mapped certificate(s) chain to Root and are valid",
    )


def check_logons(_reads: HostReads, site: SiteReads) -> list[Finding]:
    got = _ok(site.logons)
    if got is None:
        return []
    blobs = {m.blob: m for m in mapped_certs(site)}
    results = [r for r in got.get("results", []) if isinstance(r, dict)]
    out = []
    for entry in results:
        hresult = entry.get("hresult")
        # The contract's classification (contract.logon_verdict): valid means the password
        # is right, hresult still says why IIS's logon fails; unchecked says nothing.
        if entry.get("valid") and not hresult:
            continue
        kind = str(entry.get("kind", ""))
        key = str(entry.get("key", ""))
        user = str(entry.get("user_name", ""))
        if kind == "one_to_one":
            known = blobs.get(key)
            what = known.label if known else f"the one-to-one mapping to {user!r}"
        else:
            what = f"the many-to-one mapping {key!r} to {user!r}"
        explained = _explain(str(hresult)) if hresult else ""
        if entry.get("checked") is False and not hresult:
            out.append(
                Finding(
                    "warning",
                    CHECK_LOGON,
                    site.name,
                    f"{what}: the logon of {user!r} was not tried (the account is near the "
                    "host's lockout threshold, or not an account of this host)",
                    "check the account's bad-logon count; correct the password wherever a "
                    "wrong one is used",
                )
            )
        elif entry.get("valid") or entry.get("checked") is False:
            # The password is right (or unknown: locked out), yet IIS's logon fails too.
            code = contract.explain_hresult(str(hresult))
            out.append(
                Finding(
                    "error",
                    CHECK_LOGON,
                    site.name,
                    f"{what}: Windows refuses to log {user!r} on ({explained}). Clients get 401.1",
                    code.action
                    if code is not None
                    else "give the account the right to log on with the section's logonMethod",
                )
            )
        else:
            out.append(
                Finding(
                    "error",
                    CHECK_LOGON,
                    site.name,
                    f"{what}: the stored password does not log {user!r} on "
                    f"({explained or 'logon refused'}). Clients get 401.1",
                    "set the mapping's password to the account's current password "
                    "(CertificateMapping takes it from LocalUser, so a `pulumi up` fixes both)",
                )
            )
    if not out and results:
        out.append(
            Finding("ok", CHECK_LOGON, site.name, f"{len(results)} mapping logon(s) succeed")
        )
    return out


# What a refusal in the IIS log means (the checks above find the cause in the config).
REFUSALS: Final[dict[tuple[int, int], str]] = {
    (401, 1): "the mapped account's logon failed",
    (401, 2): "no mapping matched the certificate and anonymous access is off",
    (401, 3): "the mapped user may not read the site's folder",
    (403, 7): "the client sent no certificate",
    (403, 12): "a mapping denies the certificate",
    (403, 13): "the certificate is revoked or its CRL could not be fetched",
    (403, 16): "the certificate does not chain to a trusted root",
    (403, 17): "the certificate has expired or is not yet valid",
    (500, 19): "the configuration cannot be read (a locked section in a web.config)",
}
LOG_TAIL: Final = 50


def check_recent_requests(_reads: HostReads, site: SiteReads) -> list[Finding]:
    """Client-certificate refusals in the site's IIS log: what a real IIS discloses only
    there (sc-status, sc-substatus, sc-win32-status), never in its response."""
    got = _ok(site.log)
    if got is None:
        return []
    seen: dict[tuple[int, int], list[contract.SiteLogEntry]] = {}
    for entry in got["entries"]:
        key = (entry["status"], entry["substatus"])
        if key in REFUSALS:
            seen.setdefault(key, []).append(entry)
    out = []
    for (status, substatus), entries in sorted(seen.items()):
        last = entries[-1]
        win32 = last["win32_status"]
        code = f"; Windows error {win32:#010x}" if win32 > 0xFFFF else ""
        code = code or (f"; Windows error {win32}" if win32 else "")
        out.append(
            Finding(
                "warning",
                CHECK_REQUESTS,
                site.name,
                f"the IIS log ({got['log_directory']}) shows {len(entries)} of the last "
                f"{len(got['entries'])} request(s) answered {status}.{substatus}: "
                f"{REFUSALS[(status, substatus)]} (last at {last['date']} {last['time']} UTC "
                f"from {last['client_ip'] or '?'}{code})",
                "see the errors above for the setting that causes it; if none, the "
                "client's certificate is the cause",
            )
        )
    return out


def _os_name(facts: Mapping[str, Any]) -> str:
    build = int(facts.get("os_build", 0) or 0)
    if build >= 26100:
        return "Windows Server 2025"
    if build >= 20348:
        return "Windows Server 2022"
    return str(facts.get("os_caption", "this Windows"))


def check_tls13(reads: HostReads, site: SiteReads) -> list[Finding]:
    facts = _ok(reads.facts)
    flags = _site_flags(site)
    if facts is None or flags is None or site.site is None:
        return []
    if not facts.get("tls13_enabled") or "SslNegotiateCert" not in flags:
        return []
    out = []
    for binding in _https_bindings(site.site):
        # Binding sslFlags bit 32 turns TLS 1.3 off for this binding (Server 2022+).
        tls13_off = int(binding.get("ssl_flags", 0) or 0) & 32
        if binding.get("client_cert_negotiation") or tls13_off:
            continue
        os_name = _os_name(facts)
        symptom = (
            "the request fails with HTTP 500 and 0x80070032"
            if os_name == "Windows Server 2025"
            else "the connection is reset (on Server 2025: HTTP 500 with 0x80070032)"
        )
        out.append(
            Finding(
                "error",
                CHECK_TLS13,
                site.name,
                f"binding {binding.get('binding_information', '?')}: TLS 1.3 is on and the "
                f"binding does not negotiate client certificates in the handshake, so IIS asks "
                f"after it (SslNegotiateCert), which TLS 1.3 forbids; on {os_name} {symptom}",
                "negotiate in the handshake: HttpsBinding client_cert_negotiation=true "
                "(netsh http update sslcert ... clientcertnegotiation=enable)",
            )
        )
    return out


def _has_cdp(der_b64: str) -> bool:
    try:
        cert = x509.load_der_x509_certificate(base64.b64decode(der_b64))
        cert.extensions.get_extension_for_class(x509.CRLDistributionPoints)
    except (ValueError, binascii.Error, x509.ExtensionNotFound):
        return False
    return True


def revocation_candidates(
    ca: Read[CertListResult], sites: Sequence[SiteReads]
) -> dict[str, tuple[str, str]]:
    """{der_b64: (label, who gets 403.13)} of the certificates whose CRL HTTP.sys fetches
    when it checks a client certificate: the intermediates of LocalMachine\\CA and the mapped
    one-to-one certificates, those that name a CRL distribution point. Roots are left out:
    nobody signs a CRL for a root, and a chain's revocation check stops below it."""
    out: dict[str, tuple[str, str]] = {}
    for entry in _certs(ca):
        blob = str(entry.get("der_b64", ""))
        if _has_cdp(blob):
            label = f"the intermediate CA {entry.get('subject', '?')} [{entry.get('thumbprint')}]"
            out[blob] = (label, "every client certificate it issued")
    for site in sites:
        for mapped in mapped_certs(site):
            if mapped.cert is not None and mapped.blob_problem is None and _has_cdp(mapped.blob):
                out.setdefault(mapped.blob, (f"{mapped.label} (site {site.name})", "this client"))
    return out


def check_revocation(reads: HostReads) -> list[Finding]:
    """HTTP.sys checks client-certificate revocation by default (verifyclientcertrevocation):
    a CRL the host cannot fetch fails the certificate with 403.13 as surely as a revocation
    (KB 294305)."""
    got = _ok(reads.revocation)
    if got is None:
        return []
    labels = {
        _thumbprint_of(blob): label
        for blob, label in revocation_candidates(reads.ca, reads.sites).items()
    }
    out = []
    checked = 0
    for entry in got["results"]:
        checked += 1
        label, who = labels.get(
            str(entry.get("thumbprint", "")).upper(),
            (f"certificate {entry.get('thumbprint', '?')}", "its clients"),
        )
        urls = ", ".join(str(u) for u in entry.get("urls", [])) or "its CRL distribution point"
        status = entry.get("status")
        if status == "offline":
            out.append(
                Finding(
                    "error",
                    CHECK_REVOCATION,
                    None,
                    f"{label}: the host cannot fetch its CRL from {urls} "
                    f"({_explain(str(entry.get('hresult') or '0x80092013'))}). HTTP.sys checks "
                    f"revocation by default, so {who} gets 403.13",
                    "let the host reach the CDP (proxy, firewall, DNS) and keep a current CRL "
                    "published there; only if revocation must not be checked, turn it off for "
                    "the binding (netsh http update sslcert ... verifyclientcertrevocation="
                    "disable)",
                )
            )
        elif status == "revoked":
            out.append(
                Finding(
                    "error",
                    CHECK_REVOCATION,
                    None,
                    f"{label} is revoked (on the CRL at {urls}; "
                    f"{_explain(str(entry.get('hresult') or '0x80092010'))}): {who} gets 403.13",
                    "issue a new certificate and map it (CertificateMapping); a revoked CA "
                    "needs a new CA certificate",
                )
            )
    if not out and checked:
        out.append(
            Finding(
                "ok",
                CHECK_REVOCATION,
                None,
                f"the host fetches the CRLs of {checked} certificate(s) and none is revoked",
            )
        )
    return out


def _thumbprint_of(der_b64: str) -> str:
    try:
        return load_certificate(der_b64).thumbprint
    except CertificateError:
        return ""


HOST_CHECKS: Final[tuple[CheckFn, ...]] = (
    check_root_store,
    check_feature,
    check_trust_mode,
    check_sites,
    check_reads,
    check_revocation,
)
SITE_CHECKS: Final[tuple[SiteCheckFn, ...]] = (
    check_ssl_flags,
    check_negotiate,
    check_mapping_enabled,
    check_anonymous,
    check_ad_mapping,
    check_blobs,
    check_chains,
    check_logons,
    check_tls13,
    check_recent_requests,
)


def run_checks(reads: HostReads) -> list[Finding]:
    """Every check over the read results: errors first, then warnings, then ok."""
    findings = [f for check in HOST_CHECKS for f in check(reads)]
    for site in reads.sites:
        if site.site is None:
            continue
        findings += [f for check in SITE_CHECKS for f in check(reads, site)]
    return sorted(findings, key=lambda f: LEVELS.index(f.level))


def problems(findings: Sequence[Finding]) -> list[Finding]:
    return [f for f in findings if f.level != "ok"]


def exit_code(findings: Sequence[Finding]) -> int:
    return 1 if any(f.level == "error" for f in findings) else 0


# --- reading the host ------------------------------------------------------------------


class Caller(Protocol):
    """What the reader needs from HostClient (a fake in tests)."""

    @property
    def host(self) -> str: ...

    def call(self, ops: Sequence[Op[Any]]) -> list[Any]: ...


class Gathered:
    """What a tolerant read found, by name: a result, the OpFailure that replaced it, or
    None when nothing was read under that name."""

    def __init__(self) -> None:
        self._found: dict[ReadKey[Any], Any] = {}

    def __getitem__(self, key: ReadKey[R]) -> Read[R]:
        found: Read[R] = self._found.get(key)
        return found

    def __contains__(self, key: object) -> bool:
        return key in self._found

    def put(self, key: ReadKey[Any], value: Any) -> None:
        self._found[key] = value


def call_tolerant(client: Caller, plan: ReadPlan, into: Gathered | None = None) -> Gathered:
    """Run read-only ops as one batch; an op the agent refuses becomes an OpFailure.

    The agent stops at the first failing op: keep what completed, record the failure,
    and send the rest again (read-only, so repeating nothing is harmful).
    """
    out = into if into is not None else Gathered()
    pending = list(zip(plan.keys, plan.ops, strict=True))
    while pending:
        try:
            results = client.call([op for _, op in pending])
        except AgentError as exc:
            index = exc.index
            if index is None or not 0 <= index < len(pending):
                raise
            for (key, _), result in zip(pending[:index], exc.results, strict=False):
                out.put(key, result)
            key, op = pending[index]
            out.put(key, OpFailure(op.name, exc.code, exc.hresult, exc.agent_message))
            pending = pending[index + 1 :]
            continue
        for (key, _), result in zip(pending, results, strict=True):
            out.put(key, result)
        break
    return out


FACTS: Final = ReadKey[HostFactsResult]("facts")
SITES: Final = ReadKey[SiteListResult]("sites")
ROOT: Final = ReadKey[CertListResult]("root")
CA: Final = ReadKey[CertListResult]("ca")
REVOCATION: Final = ReadKey[CertRevocationResult]("revocation")


def section_key(site: str, section: str, where: str = "apphost") -> ReadKey[ConfigGetResult]:
    return ReadKey(f"{site}: {section} ({where})")


def log_key(site: str) -> ReadKey[SiteLogTailResult]:
    return ReadKey(f"{site}: log")


def logons_key(site: str) -> ReadKey[VerifyLogonsResult]:
    return ReadKey(f"{site}: logons")


def _site_reads(plan: ReadPlan, name: str) -> ReadPlan:
    for section in (
        contract.SECTION_SSL,
        contract.SECTION_ANONYMOUS,
        contract.SECTION_MAPPING,
        contract.SECTION_AD_MAPPING,
    ):
        plan.add(section_key(name, section), contract.config_get(section, name))
    plan.add(logons_key(name), contract.mapping_verify_logons(name))
    plan.add(log_key(name), contract.site_log_tail(name, LOG_TAIL))
    for section in LOCKED_SECTIONS if reads_webconfig() else ():
        plan.add(
            section_key(name, section, "webconfig"),
            contract.make_op("config.get", **webconfig_args(section, name)),
        )
    return plan


def reads_webconfig() -> bool:
    """Whether the contract's config.get can read a site's web.config (``target``).

    Without it a locked section in web.config (500.19) shows only if a read fails with
    Locked; the agent reads applicationHost.config, where such a section is invisible.
    """
    return "target" in contract.OPS["config.get"].args


def webconfig_args(section: str, site: str) -> dict[str, Any]:
    return {"section": section, "location": site, "target": "webconfig"}


def gather(client: Caller, site_names: Sequence[str] = ()) -> HostReads:
    """Read the host: one batch when the sites are named, else one more for the sites."""
    plan = (
        ReadPlan()
        .add(FACTS, contract.host_facts())
        .add(SITES, contract.site_list())
        .add(ROOT, contract.cert_list("Root"))
        .add(CA, contract.cert_list("CA"))
    )
    for name in site_names:
        _site_reads(plan, name)
    got = call_tolerant(client, plan)
    failure = got[SITES]
    listed = _ok(failure)
    if listed is None:
        raise AgentError(
            client.host,
            "site.list",
            failure.code if isinstance(failure, OpFailure) else "Fault",
            failure.message if isinstance(failure, OpFailure) else "site.list returned nothing",
            failure.hresult if isinstance(failure, OpFailure) else None,
        )
    by_name = {s["name"]: s for s in listed["sites"]}
    defaulted = not site_names
    if defaulted:
        site_names = [n for n, s in by_name.items() if _https_bindings(s)]
        if site_names:
            more = ReadPlan()
            for name in site_names:
                _site_reads(more, name)
            call_tolerant(client, more, into=got)
    sites = [_site_reads_of(got, name, by_name.get(name)) for name in site_names]
    facts, root, ca = got[FACTS], got[ROOT], got[CA]
    # One more batch, only when some certificate names a CRL distribution point.
    candidates = revocation_candidates(ca, sites)
    check = ReadPlan().add(REVOCATION, contract.cert_revocation(sorted(candidates)))
    found = call_tolerant(client, check) if candidates else Gathered()
    revocation = found[REVOCATION]
    return HostReads(
        facts, root, ca, tuple(sites), sites_defaulted=defaulted, revocation=revocation
    )


def _site_reads_of(got: Gathered, name: str, site: SiteInfo | None) -> SiteReads:
    if site is None:
        return SiteReads(name, None)
    # One name at a time (not inside the call below: mypy then infers better).
    ssl = got[section_key(name, contract.SECTION_SSL)]
    anonymous = got[section_key(name, contract.SECTION_ANONYMOUS)]
    mapping = got[section_key(name, contract.SECTION_MAPPING)]
    ad_mapping = got[section_key(name, contract.SECTION_AD_MAPPING)]
    logons = got[logons_key(name)]
    webconfig = []
    for section in LOCKED_SECTIONS:
        key = section_key(name, section, "webconfig")
        if key in got:
            found = got[key]
            webconfig.append((section, found))
    log = got[log_key(name)]
    return SiteReads(name, site, ssl, anonymous, mapping, ad_mapping, logons, tuple(webconfig), log)


# --- command line ----------------------------------------------------------------------


def _read_text(path: str, what: str, base: Path | None = None) -> str:
    file = Path(path)
    if base is not None and not file.is_absolute():
        file = base / file
    try:
        return file.read_text("utf-8")
    except OSError as exc:
        raise UsageError(f"{what}: cannot read {file}: {exc.strerror}") from None


def simulator_connection(directory: str) -> dict[str, Any]:
    """The connection input for the embedded simulator in DIR (its endpoint.json)."""
    return simulator_connection_input(directory)


def connection_input(args: argparse.Namespace, environ: Mapping[str, str]) -> dict[str, Any]:
    if args.simulator and args.endpoint:
        raise UsageError("give either --simulator DIR or --endpoint, not both")
    if args.endpoint is None:
        return simulator_connection(args.simulator or DEFAULT_SIMULATOR_DIR)
    cwd = Path.cwd()
    conn: dict[str, Any] = {
        "endpoint": args.endpoint,
        "transport": args.transport,
        "username": args.username,
        # From the environment only: a flag would show in the process list.
        "password": environ.get(PASSWORD_ENV) or None,
        "shell": args.shell,
    }
    if args.ca_bundle:
        conn["ca_bundle"] = _read_text(args.ca_bundle, "--ca-bundle", cwd)
    if args.client_cert:
        conn["client_cert_pem"] = _read_text(args.client_cert, "--client-cert", cwd)
    if args.client_key:
        conn["client_key_pem"] = _read_text(args.client_key, "--client-key", cwd)
    return conn


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m iis_clientcert.tools.doctor",
        description="Check an IIS host for the client-certificate failures users hit, each "
        "with its fix. Exit 0 clean, 1 errors found, 2 the host could not be read.",
        epilog=f"The password comes from the environment variable {PASSWORD_ENV} (never a "
        "flag: flags show in the process list). Without --endpoint the doctor talks to the "
        f"embedded simulator in --simulator DIR (default {DEFAULT_SIMULATOR_DIR}).",
    )
    where = parser.add_argument_group("host")
    where.add_argument("--simulator", metavar="DIR", help="simulator state dir (endpoint.json)")
    where.add_argument("--endpoint", help="WinRM endpoint, e.g. https://web01:5986/wsman")
    where.add_argument(
        "--transport", default="ntlm", help="ntlm, kerberos, credssp, certificate, basic"
    )
    where.add_argument("--username")
    where.add_argument(
        "--ca-bundle", metavar="PEM_FILE", help="CA certificates for the host's HTTPS"
    )
    where.add_argument("--client-cert", metavar="PEM_FILE", help="for --transport certificate")
    where.add_argument("--client-key", metavar="PEM_FILE", help="unencrypted key of --client-cert")
    where.add_argument(
        "--shell",
        choices=("powershell", "pwsh"),
        default=None,
        help="PowerShell that runs the agent: powershell (5.1, default) or pwsh (7)",
    )
    parser.add_argument(
        "--site",
        action="append",
        default=[],
        metavar="NAME",
        help="site to check (repeatable; default: every site with an https binding)",
    )
    parser.add_argument("--json", action="store_true", help="machine-readable output")
    return parser


def render_text(host: str, findings: Sequence[Finding], width: int = 100) -> str:
    level_w, check_w = 7, max([len("CHECK"), *(len(f.check) for f in findings)])
    site_w = min(24, max([len("SITE"), *(len(f.site or "-") for f in findings)]))
    indent = level_w + check_w + site_w + 3
    text_w = max(40, width - indent)
    lines = [f"iis-clientcert doctor: {host}", ""]
    lines.append(f"{'LEVEL':<{level_w}} {'CHECK':<{check_w}} {'SITE':<{site_w}} FINDING")
    for f in findings:
        body = textwrap.wrap(f.problem, text_w, break_long_words=False) or [""]
        if f.fix:
            body += textwrap.wrap(
                "fix: " + f.fix, text_w, subsequent_indent="     ", break_long_words=False
            )
        head = f"{f.level.upper() if f.level != 'ok' else 'ok':<{level_w}} {f.check:<{check_w}} "
        head += f"{(f.site or '-'):<{site_w}} "
        lines.append(head + body[0])
        lines += [" " * indent + line for line in body[1:]]
    errors = sum(f.level == "error" for f in findings)
    warnings = sum(f.level == "warning" for f in findings)
    oks = sum(f.level == "ok" for f in findings)
    lines += ["", f"{errors} error(s), {warnings} warning(s), {oks} ok"]
    return "\n".join(lines)


def render_json(host: str, findings: Sequence[Finding]) -> str:
    return json.dumps(
        {
            "host": host,
            "clean": exit_code(findings) == 0,
            "findings": [asdict(f) for f in findings],
        },
        indent=2,
    )


# --- why the WinRM service refused the doctor itself -------------------------------------

CHECK_WINRM: Final = "winrm"
# wsmerror.h: the WinRS quotas (MS-WSMV 3.1.4.5.2.1, w:QuotaLimit).
WSMAN_QUOTA_MAX_SHELLS: Final = 0x803381A5
WSMAN_QUOTA_MAX_OPERATIONS: Final = 0x803381A6
FILTER_POLICY_FIX: Final = (
    "on a workgroup host, let local administrators in over the network (KB 951016): "
    "reg add HKLM\\SOFTWARE\\Microsoft\\Windows\\CurrentVersion\\Policies\\System /v "
    "LocalAccountTokenFilterPolicy /t REG_DWORD /d 1 /f; or use the built-in Administrator "
    "or a domain account"
)


def offered_auth_schemes(connection: Connection) -> list[str] | None:
    """The schemes in the WinRM service's 401 challenge (None: could not ask).

    Windows offers Basic only when winrm/config/service/auth/Basic is true, so an
    unauthenticated POST tells "Basic is off" apart from "wrong password" on any host.
    """
    verify: bool | str = connection.verify_tls
    with tempfile.TemporaryDirectory(prefix="doctor-") as tmp:
        if connection.verify_tls and connection.ca_bundle:
            verify = str(Path(tmp) / "ca.pem")
            Path(verify).write_text(connection.ca_bundle, "utf-8")
        try:
            reply = requests.post(
                connection.endpoint,
                data=b"",
                headers={"Content-Type": "application/soap+xml;charset=UTF-8"},
                verify=verify,
                timeout=connection.connect_timeout,
            )
        except requests.RequestException:
            return None
    if reply.status_code != 401:
        return None
    header = reply.headers.get("WWW-Authenticate", "")
    return [part.strip().split(" ", 1)[0] for part in header.split(",") if part.strip()]


def explain_refusal(
    exc: IisClientCertError, transport: str, offered: Sequence[str] | None
) -> Finding | None:
    """What the WinRM service's refusal means and its fix (WinRM as Windows ships it)."""
    schemes = {s.lower() for s in offered or ()}
    if isinstance(exc, AuthenticationError):
        if transport == "basic" and offered is not None and "basic" not in schemes:
            return Finding(
                "error",
                CHECK_WINRM,
                None,
                "the WinRM service does not offer Basic authentication "
                "(winrm/config/service/auth/Basic is false, as Windows ships it)",
                'winrm set winrm/config/service/auth @{Basic="true"} (HTTPS listener only), '
                "or use --transport ntlm",
            )
        if transport == "certificate":
            return Finding(
                "error",
                CHECK_WINRM,
                None,
                "the WinRM service refused the client certificate: certificate "
                "authentication is off as Windows ships it, or the certificate is not mapped",
                'winrm set winrm/config/service/auth @{Certificate="true"}, and map the '
                "certificate to a local administrator (New-Item WSMan:\\localhost\\"
                "ClientCertificate -Subject ... -URI * -Issuer <CA thumbprint> -Credential ...)",
            )
        return Finding(
            "error",
            CHECK_WINRM,
            None,
            f"the WinRM service refused the {transport} logon: a wrong user name or "
            "password, or a local administrator other than the built-in Administrator whose "
            "network token UAC filters (LocalAccountTokenFilterPolicy is not 1)",
            "check the user name and password; " + FILTER_POLICY_FIX,
        )
    if isinstance(exc, TransportError) and "HTTP 413" in str(exc):
        return Finding(
            "error",
            CHECK_WINRM,
            None,
            "a request was larger than the WinRM service's MaxEnvelopeSizekb (500 KB as "
            "Windows ships it; the Windows client reports 0x80338111)",
            'winrm set winrm/config @{MaxEnvelopeSizekb="8192"}',
        )
    if isinstance(exc, WSManFaultError) and exc.code is not None:
        code = exc.code & 0xFFFFFFFF
        if code == WSMAN_QUOTA_MAX_SHELLS:
            return Finding(
                "error",
                CHECK_WINRM,
                None,
                "the account already has the most remote shells WinRM allows it "
                "(winrs MaxShellsPerUser, 30 as Windows ships it)",
                "close the other sessions of this account (or wait for their idle timeout), "
                'or winrm set winrm/config/winrs @{MaxShellsPerUser="50"}',
            )
        if code == WSMAN_QUOTA_MAX_OPERATIONS:
            return Finding(
                "error",
                CHECK_WINRM,
                None,
                "the account has too many WinRM operations in flight "
                "(MaxConcurrentOperationsPerUser, 1500 as Windows ships it)",
                "let the other clients of this account finish, or "
                'winrm set winrm/config/service @{MaxConcurrentOperationsPerUser="3000"}',
            )
    return None


def main(argv: Sequence[str] | None = None, environ: Mapping[str, str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    env = os.environ if environ is None else environ
    connection: Connection | None = None
    try:
        connection = Connection.from_input(connection_input(args, env), "doctor")
        client = HostClient(connection)
        reads = gather(client, list(dict.fromkeys(args.site)))
    except (UsageError, IisClientCertError) as exc:
        # Typed errors carry no secret (see iis_clientcert.errors); say which kind it was.
        kind = "settings" if isinstance(exc, UsageError) else type(exc).__name__
        why: Finding | None = None
        if connection is not None and not isinstance(exc, UsageError):
            offered = (
                offered_auth_schemes(connection) if isinstance(exc, AuthenticationError) else None
            )
            why = explain_refusal(exc, connection.transport, offered)
        if args.json:
            error: dict[str, Any] = {"kind": kind, "message": str(exc)}
            if why is not None:
                error["finding"] = asdict(why)
            print(json.dumps({"error": error}))
        else:
            print(f"doctor: cannot check the host ({kind}): {exc}", file=sys.stderr)
            if why is not None:
                print(f"doctor: why: {why.problem}\ndoctor: fix: {why.fix}", file=sys.stderr)
        return 2
    findings = run_checks(reads)
    facts: Mapping[str, Any] = _ok(reads.facts) or {}
    host = connection.host
    if facts.get("computer_name"):
        os_caption, iis = facts.get("os_caption", "?"), facts.get("iis_version", "?")
        host += f" ({facts['computer_name']}, {os_caption}, IIS {iis})"
    print(render_json(host, findings) if args.json else render_text(host, findings))
    return exit_code(findings)


if __name__ == "__main__":
    sys.exit(main())
