"""The simulator's own client-certificate trust decision: what Schannel's chain engine and
HTTP.sys would say about a client certificate (403.16 / 403.17 / 403.13, with the code).

Deliberately independent of the product's certificate code (``iis_clientcert.certs``), so a
bug there cannot hide itself in the tests: the accept decision comes from ``cryptography``'s
``x509.verification`` client verifier, with a policy adjusted where Schannel differs; a
rejection is then explained by building the chain here and naming the first thing Windows
would report. Revocation (CRL distribution points) is checked on accepted chains.

Inputs are what Schannel uses: the certificates the client sent (leaf and intermediates),
LocalMachine\\Root (trust anchors), LocalMachine\\CA (intermediates) and
LocalMachine\\Disallowed (explicitly distrusted certificates).

Codes (winerror.h), in the order reported when several apply (Wine's
CertVerifyCertificateChainPolicy checks signature, then untrusted root; partial chains are
CERT_E_CHAINING; the IIS substatus follows the HTTP.sys certificate flags):
  TRUST_E_EXPLICIT_DISTRUST 0x800B0111  a certificate of the chain is in Disallowed   403.16
  TRUST_E_CERT_SIGNATURE    0x80096004  an issuer's signature does not verify           403.16
  CERT_E_CHAINING           0x800B010A  no issuer found: the chain stops short          403.16
  CERT_E_UNTRUSTEDROOT      0x800B0109  the chain ends in a root that is not in Root    403.16
  CERT_E_EXPIRED            0x800B0101  a certificate is outside its validity period    403.17
  CERT_E_WRONG_USAGE        0x800B0110  the leaf's EKU lacks Client Authentication      403.16
  TRUST_E_BASIC_CONSTRAINTS 0x80096019  an issuer is not a CA, or path length exceeded  403.16
  CRYPT_E_REVOKED           0x80092010  revoked (CRL)                                   403.13
  CRYPT_E_REVOCATION_OFFLINE 0x80092013 the CRL could not be fetched                    403.13
"""

from __future__ import annotations

import base64
import datetime as dt
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509 import verification
from cryptography.x509.oid import ExtendedKeyUsageOID

HR_EXPLICIT_DISTRUST = "0x800B0111"
HR_CERT_SIGNATURE = "0x80096004"
HR_CHAINING = "0x800B010A"
HR_UNTRUSTED_ROOT = "0x800B0109"
HR_EXPIRED = "0x800B0101"
HR_WRONG_USAGE = "0x800B0110"
HR_BASIC_CONSTRAINTS = "0x80096019"
HR_REVOKED = "0x80092010"
HR_REVOCATION_OFFLINE = "0x80092013"

# Chains longer than this are not built (Windows' own limit is far above real chains).
_MAX_DEPTH = 8


def der(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(Encoding.DER)


def thumbprint(cert: x509.Certificate) -> str:
    """SHA-1 of the DER, upper-case hex (how Windows names certificates)."""
    return cert.fingerprint(hashes.SHA1()).hex().upper()  # noqa: S303 - Windows thumbprints


def describe(cert: x509.Certificate) -> str:
    return f"{cert.subject.rfc4514_string()} [{thumbprint(cert)}]"


def blob(cert: x509.Certificate) -> str:
    """Single-line base64 of the DER: what IIS compares a one-to-one mapping with."""
    return base64.b64encode(der(cert)).decode("ascii")


@dataclass(frozen=True)
class Verdict:
    """The decision on one client certificate: substatus 0 means accepted."""

    substatus: int
    hresult: str | None
    detail: str
    path: tuple[x509.Certificate, ...] = field(default=(), repr=False)

    @property
    def ok(self) -> bool:
        return self.substatus == 0


def _fail(substatus: int, hresult: str, detail: str, path: Sequence[x509.Certificate]) -> Verdict:
    return Verdict(substatus, hresult, detail, tuple(path))


def _self_signed(cert: x509.Certificate) -> bool:
    return cert.subject == cert.issuer and signed_by(cert, cert)


def signed_by(cert: x509.Certificate, issuer: x509.Certificate) -> bool:
    try:
        cert.verify_directly_issued_by(issuer)
    except (ValueError, TypeError, InvalidSignature, UnsupportedAlgorithm):
        return False
    return True


def _basic_constraints(cert: x509.Certificate) -> x509.BasicConstraints | None:
    try:
        return cert.extensions.get_extension_for_class(x509.BasicConstraints).value
    except x509.ExtensionNotFound:
        return None


def eku_problem(cert: x509.Certificate) -> str | None:
    """Schannel's usage check: no EKU means every purpose; otherwise Client Authentication
    (or anyExtendedKeyUsage) must be listed (HTTP.sys usagecheck, on by default)."""
    try:
        usages = list(cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value)
    except x509.ExtensionNotFound:
        return None
    if ExtendedKeyUsageOID.CLIENT_AUTH in usages or (
        ExtendedKeyUsageOID.ANY_EXTENDED_KEY_USAGE in usages
    ):
        return None
    return f"{describe(cert)}: its EKU does not include Client Authentication"


def _eku_validator(
    _policy: verification.Policy, cert: x509.Certificate, _ext: x509.ExtendedKeyUsage | None
) -> None:
    problem = eku_problem(cert)
    if problem is not None:
        raise ValueError(problem)


def _time_problem(cert: x509.Certificate, at: dt.datetime) -> str | None:
    if at > cert.not_valid_after_utc:
        return f"{describe(cert)} expired on {cert.not_valid_after_utc.isoformat()}"
    if at < cert.not_valid_before_utc:
        return f"{describe(cert)} is not valid before {cert.not_valid_before_utc.isoformat()}"
    return None


def _unique(certs: Sequence[x509.Certificate], exclude: set[bytes]) -> list[x509.Certificate]:
    out: list[x509.Certificate] = []
    seen = set(exclude)
    for cert in certs:
        key = der(cert)
        if key not in seen:
            seen.add(key)
            out.append(cert)
    return out


def _verify(
    leaf: x509.Certificate,
    anchors: Sequence[x509.Certificate],
    pool: Sequence[x509.Certificate],
    at: dt.datetime,
) -> tuple[tuple[x509.Certificate, ...] | None, str]:
    """cryptography's client verifier with a Schannel-shaped policy: (chain, "") or (None, why).

    Where the WebPKI defaults and Schannel differ, Schannel wins: no SAN, AKI or key usage
    requirements on client certificates; no EKU means any purpose (Windows' reading of RFC
    5280 4.2.1.12); issuers must still be CAs (basicConstraints), as CertGetCertificateChain
    requires. A trust anchor without basicConstraints (an old v1 root) is a CA to Windows
    but not to the verifier: its direct subordinates become the verifier's anchors instead,
    after the root's signature on them and its validity are checked here.
    """
    if not anchors:
        return None, "LocalMachine\\Root holds no certificate"
    store: list[x509.Certificate] = []
    for anchor in anchors:
        if _basic_constraints(anchor) is not None:
            store.append(anchor)
        elif _time_problem(anchor, at) is None:
            store += [c for c in [leaf, *pool] if c != anchor and signed_by(c, anchor)]
    if not store:
        return None, "no usable trust anchor"
    ca_policy = verification.ExtensionPolicy.permit_all().require_present(
        x509.BasicConstraints, verification.Criticality.AGNOSTIC, None
    )
    ee_policy = verification.ExtensionPolicy.permit_all().may_be_present(
        x509.ExtendedKeyUsage, verification.Criticality.AGNOSTIC, _eku_validator
    )
    verifier = (
        verification.PolicyBuilder()
        .store(verification.Store(store))
        .time(at)
        .max_chain_depth(_MAX_DEPTH)
        .extension_policies(ca_policy=ca_policy, ee_policy=ee_policy)
        .build_client_verifier()
    )
    try:
        verified = verifier.verify(leaf, list(pool))
    except verification.VerificationError as exc:
        return None, str(exc)
    chain = tuple(verified.chain)
    if len(chain) == 1 and eku_problem(leaf) is not None:
        # The leaf itself became the anchor (issued by a v1 root): check its usage here.
        return None, str(eku_problem(leaf))
    # Complete the path with the v1 root the verifier did not see.
    top = chain[-1]
    if top not in anchors:
        chain += tuple(a for a in anchors if signed_by(top, a))[:1]
    return chain, ""


# --- explaining a rejection -------------------------------------------------------------


@dataclass(frozen=True)
class _Path:
    certs: tuple[x509.Certificate, ...]
    end: str  # anchor | self_signed | partial | bad_signature


def _paths(
    cert: x509.Certificate,
    issuers: Sequence[x509.Certificate],
    roots: set[bytes],
    seen: tuple[x509.Certificate, ...],
) -> list[_Path]:
    chain = (*seen, cert)
    if der(cert) in roots:
        return [_Path(chain, "anchor")]
    if _self_signed(cert):
        return [_Path(chain, "self_signed")]
    if len(chain) > _MAX_DEPTH:
        return [_Path(chain, "partial")]
    named = [c for c in issuers if c.subject == cert.issuer and c not in chain]
    signed = [c for c in named if signed_by(cert, c)]
    if not signed:
        return [_Path(chain, "bad_signature" if named else "partial")]
    out: list[_Path] = []
    for issuer in signed:
        out += _paths(issuer, issuers, roots, chain)
    return out


def _constraint_problem(path: Sequence[x509.Certificate], roots: set[bytes]) -> str | None:
    for depth, issuer in enumerate(path[1:]):
        bc = _basic_constraints(issuer)
        if bc is None:
            if der(issuer) in roots and issuer is path[-1]:
                continue  # a v1 root is still a root to Windows
            return f"{describe(issuer)} issues certificates but has no basicConstraints"
        if not bc.ca:
            return f"{describe(issuer)} is not a CA (basicConstraints cA is false)"
        if bc.path_length is not None and depth > bc.path_length:
            return f"{describe(issuer)} allows a path length of {bc.path_length} only"
    return None


def _explain(
    leaf: x509.Certificate,
    issuers: Sequence[x509.Certificate],
    roots: set[bytes],
    disallowed: set[bytes],
    at: dt.datetime,
    verifier_said: str,
) -> Verdict:
    """Why the verifier refused: the best chain Windows would build, and its first error."""
    paths = _paths(leaf, issuers, roots, ())

    def distrusted(p: _Path) -> bool:
        return any(der(c) in disallowed for c in p.certs)

    def timely(p: _Path) -> bool:
        return all(_time_problem(c, at) is None for c in p.certs)

    # Windows prefers a trusted chain, then one without distrust, valid now, shortest.
    paths.sort(key=lambda p: (p.end != "anchor", distrusted(p), not timely(p), len(p.certs)))
    best = paths[0]
    certs = best.certs
    if distrusted(best):
        bad = next(c for c in certs if der(c) in disallowed)
        why = f"{describe(bad)} is in LocalMachine\\Disallowed"
        return _fail(16, HR_EXPLICIT_DISTRUST, why, certs)
    top = certs[-1]
    if best.end == "bad_signature":
        why = f"{describe(top)}: no certificate named {top.issuer.rfc4514_string()} signed it"
        return _fail(16, HR_CERT_SIGNATURE, why, certs)
    if best.end == "partial":
        why = (
            f"{describe(top)}: its issuer {top.issuer.rfc4514_string()} is neither sent by "
            "the client nor in LocalMachine\\CA or Root, so the chain stops short"
        )
        return _fail(16, HR_CHAINING, why, certs)
    if best.end == "self_signed":
        why = f"the chain ends in {describe(top)}, which is not in LocalMachine\\Root"
        return _fail(16, HR_UNTRUSTED_ROOT, why, certs)
    for cert in certs:
        problem = _time_problem(cert, at)
        if problem is not None:
            return _fail(17, HR_EXPIRED, f"{problem} (checked at {at.isoformat()})", certs)
    usage = eku_problem(leaf)
    if usage is not None:
        return _fail(16, HR_WRONG_USAGE, usage, certs)
    constraint = _constraint_problem(certs, roots)
    if constraint is not None:
        return _fail(16, HR_BASIC_CONSTRAINTS, constraint, certs)
    return _fail(16, HR_CHAINING, f"the chain is not valid: {verifier_said}", certs)


def decide_trust(
    leaf: x509.Certificate,
    sent: Sequence[x509.Certificate],
    roots: Sequence[x509.Certificate],
    intermediates: Sequence[x509.Certificate],
    disallowed: Sequence[x509.Certificate] = (),
    *,
    at: dt.datetime | None = None,
) -> Verdict:
    """Would Schannel accept ``leaf`` (sent with ``sent``) as a client certificate?"""
    when = at if at is not None else dt.datetime.now(dt.UTC)
    banned = {der(c) for c in disallowed}
    root_ders = {der(c) for c in roots}
    if der(leaf) in banned:
        why = f"{describe(leaf)} is in LocalMachine\\Disallowed"
        return _fail(16, HR_EXPLICIT_DISTRUST, why, [leaf])
    anchors = [r for r in roots if der(r) not in banned]
    # Schannel builds with what the client sent first, then the machine's stores.
    pool = _unique([*sent, *intermediates, *roots], banned | {der(leaf)})
    chain, why = _verify(leaf, anchors, pool, when)
    if chain is not None:
        return Verdict(0, None, f"{describe(leaf)} chains to {describe(chain[-1])}", chain)
    everything = _unique([*sent, *intermediates, *roots], {der(leaf)})
    return _explain(leaf, everything, root_ders, banned, when, why)


# --- revocation ------------------------------------------------------------------------


def cdp_urls(cert: x509.Certificate) -> list[str]:
    """The URLs of a certificate's CRL distribution points (empty when it has none)."""
    try:
        points = cert.extensions.get_extension_for_class(x509.CRLDistributionPoints).value
    except x509.ExtensionNotFound:
        return []
    out: list[str] = []
    for point in points:
        for name in point.full_name or []:
            if isinstance(name, x509.UniformResourceIdentifier):
                out.append(name.value)
    return out


CrlFetch = Callable[[str], "x509.CertificateRevocationList | None"]


def _usable_crl(
    crl: x509.CertificateRevocationList,
    cert: x509.Certificate,
    issuer: x509.Certificate | None,
    at: dt.datetime,
) -> bool:
    if crl.issuer != cert.issuer:
        return False
    if issuer is not None and not crl.is_signature_valid(issuer.public_key()):  # type: ignore[arg-type]
        return False
    # A CRL past its nextUpdate is not current: CryptoAPI fetches again, and fails.
    next_update = crl.next_update_utc
    return next_update is None or at <= next_update


@dataclass(frozen=True)
class Revocation:
    status: str  # good | revoked | offline | no_cdp
    hresult: str | None
    detail: str
    urls: tuple[str, ...] = ()


def check_certificate(
    cert: x509.Certificate,
    issuer: x509.Certificate | None,
    fetch: CrlFetch,
    at: dt.datetime,
) -> Revocation:
    """One certificate against the CRLs at its distribution points.

    No CDP means nothing to check: KB 294305 ("IIS returns HTTP 403.13 although the
    certificate is not revoked") asks that IIS can download a CRL "for each certificate in
    the chain that has a CDP listed"; certificates without one are not refused. CryptoAPI
    reports CRYPT_E_NO_REVOCATION_CHECK (0x80092012) for them, which HTTP.sys does not turn
    into 403.13 (unconfirmed on IIS 10: the KB was written for IIS 5/6).
    """
    urls = cdp_urls(cert)
    if not urls:
        return Revocation("no_cdp", None, f"{describe(cert)} has no CRL distribution point")
    for url in urls:
        crl = fetch(url)
        if crl is None or not _usable_crl(crl, cert, issuer, at):
            continue
        entry = crl.get_revoked_certificate_by_serial_number(cert.serial_number)
        if entry is not None:
            when = entry.revocation_date_utc.isoformat()
            why = f"{describe(cert)} was revoked on {when} (CRL at {url})"
            return Revocation("revoked", HR_REVOKED, why, tuple(urls))
        return Revocation("good", None, f"{describe(cert)} is not on the CRL at {url}", (url,))
    why = (
        f"the CRL of {describe(cert)} cannot be fetched from {', '.join(urls)} "
        "(unreachable from the host, or no current CRL signed by its issuer there)"
    )
    return Revocation("offline", HR_REVOCATION_OFFLINE, why, tuple(urls))


def check_revocation(
    path: Sequence[x509.Certificate], fetch: CrlFetch, at: dt.datetime | None = None
) -> Verdict:
    """Every certificate of an accepted chain except its root (whose CRL no one signs),
    leaf first: the first revoked or unfetchable one decides (403.13)."""
    when = at if at is not None else dt.datetime.now(dt.UTC)
    for index, cert in enumerate(path[:-1]):
        result = check_certificate(cert, path[index + 1], fetch, when)
        if result.status in ("revoked", "offline"):
            return _fail(13, str(result.hresult), result.detail, path)
    return Verdict(0, None, "no certificate of the chain is revoked", tuple(path))


def crl_fetcher(published: Mapping[str, bytes], reachable: Mapping[str, bool]) -> CrlFetch:
    """A fetch function over the simulator's published CRLs and the host's reachability."""

    def fetch(url: str) -> x509.CertificateRevocationList | None:
        if not reachable.get(url, True):
            return None
        data = published.get(url)
        if data is None:
            return None
        try:
            return x509.load_der_x509_crl(data)
        except ValueError:
            return None

    return fetch


__all__ = [
    "HR_BASIC_CONSTRAINTS",
    "HR_CERT_SIGNATURE",
    "HR_CHAINING",
    "HR_EXPIRED",
    "HR_EXPLICIT_DISTRUST",
    "HR_REVOCATION_OFFLINE",
    "HR_REVOKED",
    "HR_UNTRUSTED_ROOT",
    "HR_WRONG_USAGE",
    "Revocation",
    "Verdict",
    "blob",
    "cdp_urls",
    "check_certificate",
    "check_revocation",
    "crl_fetcher",
    "decide_trust",
    "describe",
    "eku_problem",
    "signed_by",
    "thumbprint",
]
