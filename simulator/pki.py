"""A small PKI toolkit for the simulator, the demo and the tests.

Everything is generated at run time with ``cryptography``; nothing here is meant for
production certificates. EC P-256 keys are the default because they are fast to make;
pass ``key_type="rsa"`` where a real Windows host or an old client insists on RSA
(Schannel client-certificate mapping is most often exercised with RSA keys).
"""

from __future__ import annotations

import base64
import datetime as dt
import ipaddress
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.serialization import pkcs12
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

__all__ = [
    "Issued",
    "KeyType",
    "PrivateKey",
    "make_ca",
    "make_crl",
    "make_intermediate",
    "make_leaf",
    "make_server",
    "new_key",
]

PrivateKey = ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey
KeyType = Literal["ec", "rsa"]
SubjectExtra = Mapping[str, str | Sequence[str]]

# Keys of ``subject_extra``; "S" and "E" are IIS's names for the same attributes.
_NAME_OIDS: dict[str, x509.ObjectIdentifier] = {
    "C": NameOID.COUNTRY_NAME,
    "ST": NameOID.STATE_OR_PROVINCE_NAME,
    "S": NameOID.STATE_OR_PROVINCE_NAME,
    "L": NameOID.LOCALITY_NAME,
    "O": NameOID.ORGANIZATION_NAME,
    "OU": NameOID.ORGANIZATIONAL_UNIT_NAME,
    "emailAddress": NameOID.EMAIL_ADDRESS,
    "E": NameOID.EMAIL_ADDRESS,
}
# Order attributes the way Windows' certreq and openssl usually emit them.
_NAME_ORDER = ("C", "ST", "S", "L", "O", "OU")
_EMAIL_KEYS = ("emailAddress", "E")


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC).replace(microsecond=0)


def new_key(key_type: KeyType = "ec", *, rsa_bits: int = 2048) -> PrivateKey:
    """A fresh private key: EC P-256 (fast) or RSA."""
    if key_type == "rsa":
        return rsa.generate_private_key(public_exponent=65537, key_size=rsa_bits)
    if key_type == "ec":
        return ec.generate_private_key(ec.SECP256R1())
    raise ValueError(f"unknown key_type {key_type!r} (use 'ec' or 'rsa')")


@dataclass(frozen=True)
class Issued:
    """A certificate with its private key (and the issuer that signed it, if any)."""

    certificate: x509.Certificate
    key: PrivateKey = field(compare=False, repr=False)
    # The issuing Issued (None for self-signed); lets tests build chains and PFX bundles.
    issuer: Issued | None = field(default=None, compare=False, repr=False)

    @property
    def common_name(self) -> str:
        attrs = self.certificate.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
        return str(attrs[0].value) if attrs else ""

    @property
    def thumbprint(self) -> str:
        """SHA-1 of the DER, upper-case hex, as Windows shows it."""
        return self.certificate.fingerprint(hashes.SHA1()).hex().upper()  # noqa: S303

    @property
    def blob(self) -> str:
        """Single-line base64 of the DER: IIS's ``certificate`` attribute."""
        return base64.b64encode(self.cert_der()).decode("ascii")

    def chain_up(self) -> list[Issued]:
        """The issuers above this certificate, nearest first, ending at the root."""
        out: list[Issued] = []
        cur = self.issuer
        while cur is not None:
            out.append(cur)
            cur = cur.issuer
        return out

    def cert_pem(self) -> bytes:
        return self.certificate.public_bytes(serialization.Encoding.PEM)

    def cert_der(self) -> bytes:
        return self.certificate.public_bytes(serialization.Encoding.DER)

    def key_pem(self, password: bytes | None = None) -> bytes:
        encryption: serialization.KeySerializationEncryption = (
            serialization.BestAvailableEncryption(password)
            if password
            else serialization.NoEncryption()
        )
        return self.key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, encryption
        )

    def pfx(
        self,
        password: bytes | None,
        *,
        legacy: bool = False,
        chain: Sequence[Issued] = (),
        include_key: bool = True,
        friendly_name: bytes | None = None,
    ) -> bytes:
        """PKCS#12 with this certificate (and key), plus ``chain`` as extra certificates.

        ``legacy=True`` uses PBES1 SHA1/3DES with a SHA-1 MAC (what Windows Server 2016
        and older import); otherwise AES-256/PBES2 with SHA-256. No password means an
        unencrypted PFX. ``cryptography`` cannot write RC2 PFX files; make those with
        ``openssl pkcs12 -export -legacy`` when a test needs one.
        """
        encryption: serialization.KeySerializationEncryption
        if not password:
            encryption = serialization.NoEncryption()
        elif legacy:
            encryption = (
                serialization.PrivateFormat.PKCS12.encryption_builder()
                .kdf_rounds(2048)
                .key_cert_algorithm(pkcs12.PBES.PBESv1SHA1And3KeyTripleDESCBC)
                .hmac_hash(hashes.SHA1())  # noqa: S303 - legacy PFX MAC is SHA-1 by definition
                .build(password)
            )
        else:
            encryption = (
                serialization.PrivateFormat.PKCS12.encryption_builder()
                .kdf_rounds(50000)
                .key_cert_algorithm(pkcs12.PBES.PBESv2SHA256AndAES256CBC)
                .hmac_hash(hashes.SHA256())
                .build(password)
            )
        name = friendly_name if friendly_name is not None else self.common_name.encode()
        return pkcs12.serialize_key_and_certificates(
            name or None,
            self.key if include_key else None,
            self.certificate,
            [c.certificate for c in chain] or None,
            encryption,
        )


def _name(common_name: str, extra: SubjectExtra | None) -> x509.Name:
    attrs: list[x509.NameAttribute[str]] = []
    extra = dict(extra or {})
    unknown = set(extra) - set(_NAME_OIDS)
    if unknown:
        raise ValueError(f"unknown subject_extra keys {sorted(unknown)}; use {sorted(_NAME_OIDS)}")

    def add(key: str) -> None:
        values = extra.get(key)
        if values is None:
            return
        for value in [values] if isinstance(values, str) else values:
            attrs.append(x509.NameAttribute(_NAME_OIDS[key], value))

    for key in _NAME_ORDER:
        add(key)
    if common_name:
        attrs.append(x509.NameAttribute(NameOID.COMMON_NAME, common_name))
    for key in _EMAIL_KEYS:
        add(key)
    return x509.Name(attrs)


def _validity(
    not_before: dt.datetime | None, not_after: dt.datetime | None, days: int
) -> tuple[dt.datetime, dt.datetime]:
    # Back-date a little so clock skew between a test host and here does not matter.
    start = not_before if not_before is not None else _now() - dt.timedelta(days=1)
    end = not_after if not_after is not None else max(start, _now()) + dt.timedelta(days=days)
    return start, end


def _build(
    *,
    subject: x509.Name,
    key: PrivateKey,
    issuer: Issued | None,
    not_before: dt.datetime,
    not_after: dt.datetime,
    extensions: Iterable[tuple[x509.ExtensionType, bool]],
    serial: int | None,
) -> Issued:
    signer_key = issuer.key if issuer is not None else key
    issuer_name = issuer.certificate.subject if issuer is not None else subject
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer_name)
        .public_key(key.public_key())
        .serial_number(serial if serial is not None else x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), False)
    )
    aki_source = issuer.key.public_key() if issuer is not None else key.public_key()
    builder = builder.add_extension(
        x509.AuthorityKeyIdentifier.from_issuer_public_key(aki_source), False
    )
    for ext, critical in extensions:
        builder = builder.add_extension(ext, critical)
    cert = builder.sign(signer_key, hashes.SHA256())
    return Issued(certificate=cert, key=key, issuer=issuer)


def _cdp(crl_urls: Sequence[str]) -> list[tuple[x509.ExtensionType, bool]]:
    """A CRL distribution points extension naming ``crl_urls`` (none when empty)."""
    if not crl_urls:
        return []
    point = x509.DistributionPoint(
        full_name=[x509.UniformResourceIdentifier(url) for url in crl_urls],
        relative_name=None,
        reasons=None,
        crl_issuer=None,
    )
    return [(x509.CRLDistributionPoints([point]), False)]


def _key_usage(*, cert_sign: bool, key_encipherment: bool) -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=True,
        content_commitment=False,
        key_encipherment=key_encipherment,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=cert_sign,
        crl_sign=cert_sign,
        encipher_only=False,
        decipher_only=False,
    )


def _ca_extensions(path_length: int | None) -> list[tuple[x509.ExtensionType, bool]]:
    return [
        (x509.BasicConstraints(ca=True, path_length=path_length), True),
        (_key_usage(cert_sign=True, key_encipherment=False), True),
    ]


def make_ca(
    common_name: str,
    *,
    issuer: Issued | None = None,
    key: PrivateKey | None = None,
    key_type: KeyType = "ec",
    not_before: dt.datetime | None = None,
    not_after: dt.datetime | None = None,
    path_length: int | None = None,
    subject_extra: SubjectExtra | None = None,
    serial: int | None = None,
    crl_urls: Sequence[str] = (),
) -> Issued:
    """A CA certificate: a self-signed root (valid ten years) unless ``issuer`` signs it
    (five years), or as long as ``not_before``/``not_after`` say."""
    key = key if key is not None else new_key(key_type)
    start, end = _validity(not_before, not_after, 3650 if issuer is None else 1825)
    return _build(
        subject=_name(common_name, subject_extra),
        key=key,
        issuer=issuer,
        not_before=start,
        not_after=end,
        extensions=_ca_extensions(path_length) + _cdp(crl_urls),
        serial=serial,
    )


def make_intermediate(
    issuer: Issued,
    common_name: str,
    *,
    key: PrivateKey | None = None,
    key_type: KeyType = "ec",
    not_before: dt.datetime | None = None,
    not_after: dt.datetime | None = None,
    path_length: int | None = 0,
    subject_extra: SubjectExtra | None = None,
    serial: int | None = None,
    crl_urls: Sequence[str] = (),
) -> Issued:
    """An issuing CA signed by ``issuer`` (five years; path length 0 by default).

    ``crl_urls`` become its CRL distribution points (where ``issuer`` publishes its CRL).
    """
    return make_ca(
        common_name,
        key=key,
        key_type=key_type,
        issuer=issuer,
        not_before=not_before,
        not_after=not_after,
        path_length=path_length,
        subject_extra=subject_extra,
        serial=serial,
        crl_urls=crl_urls,
    )


def make_leaf(
    issuer: Issued | None,
    common_name: str,
    *,
    client_auth: bool = True,
    server_auth: bool = False,
    dns_names: Sequence[str] = (),
    ip_addresses: Sequence[str] = (),
    emails: Sequence[str] = (),
    subject_extra: SubjectExtra | None = None,
    not_before: dt.datetime | None = None,
    not_after: dt.datetime | None = None,
    self_signed: bool = False,
    include_eku: bool = True,
    key: PrivateKey | None = None,
    key_type: KeyType = "ec",
    serial: int | None = None,
    crl_urls: Sequence[str] = (),
) -> Issued:
    """An end-entity certificate (one year): a client certificate by default.

    ``self_signed=True`` (or ``issuer=None``) signs it with its own key. With
    ``include_eku=False`` no EKU extension is written, which Windows reads as "valid for
    every purpose". ``crl_urls`` become its CRL distribution points (without any, a
    revocation check has nothing to fetch).
    """
    if issuer is None and not self_signed:
        raise ValueError("make_leaf needs an issuer unless self_signed=True")
    key = key if key is not None else new_key(key_type)
    start, end = _validity(not_before, not_after, 365)
    exts: list[tuple[x509.ExtensionType, bool]] = [
        (x509.BasicConstraints(ca=False, path_length=None), True),
        # RSA TLS key exchange (TLS 1.2 non-ECDHE suites) needs keyEncipherment.
        (_key_usage(cert_sign=False, key_encipherment=isinstance(key, rsa.RSAPrivateKey)), True),
    ]
    usages: list[x509.ObjectIdentifier] = []
    if client_auth:
        usages.append(ExtendedKeyUsageOID.CLIENT_AUTH)
    if server_auth:
        usages.append(ExtendedKeyUsageOID.SERVER_AUTH)
    if include_eku and usages:
        exts.append((x509.ExtendedKeyUsage(usages), False))
    san: list[x509.GeneralName] = [x509.DNSName(n) for n in dns_names]
    san += [x509.IPAddress(ipaddress.ip_address(a)) for a in ip_addresses]
    san += [x509.RFC822Name(e) for e in emails]
    if san:
        exts.append((x509.SubjectAlternativeName(san), False))
    exts += _cdp(crl_urls)
    return _build(
        subject=_name(common_name, subject_extra),
        key=key,
        issuer=None if self_signed else issuer,
        not_before=start,
        not_after=end,
        extensions=exts,
        serial=serial,
    )


def make_server(
    issuer: Issued,
    host: str = "localhost",
    *,
    extra_dns: Sequence[str] = (),
    ip_addresses: Sequence[str] = ("127.0.0.1",),
    key_type: KeyType = "ec",
    not_after: dt.datetime | None = None,
) -> Issued:
    """A TLS server certificate for ``host`` (SAN includes it, plus loopback by default)."""
    return make_leaf(
        issuer,
        host,
        client_auth=False,
        server_auth=True,
        dns_names=[host, *extra_dns],
        ip_addresses=ip_addresses,
        key_type=key_type,
        not_after=not_after,
    )


def make_crl(
    issuer: Issued,
    revoked: Sequence[Issued | x509.Certificate | int] = (),
    *,
    last_update: dt.datetime | None = None,
    next_update: dt.datetime | None = None,
    days: int = 7,
) -> x509.CertificateRevocationList:
    """A CRL signed by ``issuer`` listing ``revoked`` (certificates or serial numbers).

    Valid from a day ago for ``days`` days unless ``last_update``/``next_update`` say
    otherwise (a CRL past its nextUpdate is stale: Windows no longer uses it).
    """
    start = last_update if last_update is not None else _now() - dt.timedelta(days=1)
    end = next_update if next_update is not None else _now() + dt.timedelta(days=days)
    builder = (
        x509.CertificateRevocationListBuilder()
        .issuer_name(issuer.certificate.subject)
        .last_update(start)
        .next_update(end)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer.key.public_key()), False
        )
        .add_extension(x509.CRLNumber(int(start.timestamp())), False)
    )
    for item in revoked:
        serial = (
            item
            if isinstance(item, int)
            else (item.certificate if isinstance(item, Issued) else item).serial_number
        )
        builder = builder.add_revoked_certificate(
            x509.RevokedCertificateBuilder().serial_number(serial).revocation_date(start).build()
        )
    return builder.sign(issuer.key, hashes.SHA256())
