"""Certificate input handling: every form a user pastes, normalised to what IIS stores.

IIS's one-to-one mapping ``certificate`` attribute is the single-line base64 of the
certificate's DER bytes. Users have PEM files (with CRLF, with openssl's "Bag Attributes"
preamble, whole chains), DER files, base64 with line breaks, PFX files and PKCS#7 bundles.
This module turns all of them into :class:`CertInfo` and explains bad input the way IIS
would report it (0x80093102 truncated, 0x8009310B bad tag) *before* a host sees it.

All certificate parsing is done by ``cryptography``. The only thing read by hand is the
PEM armour (text lines) and the first byte of decoded data (is it a SEQUENCE tag?).

How malformed input is classified (heuristics, in order):

* nothing but whitespace -> ``empty``;
* text with ``-----BEGIN`` -> PEM; a BEGIN without END, or an END without BEGIN ->
  ``truncated``; only key blocks -> ``private_key_not_certificate``; only other blocks
  (CSR, public key, CRL) -> ``not_a_certificate``;
* other text is base64: characters outside the alphabet -> ``bad_encoding`` if the text
  starts like a base64 DER blob (``MI``), else ``not_a_certificate``; ``=`` padding in the
  middle (two blobs glued together) -> ``bad_encoding``; missing padding is tolerated;
* decoded (or raw binary) data whose first byte is not 0x30 (SEQUENCE) -> ``bad_encoding``
  (IIS: 0x8009310B CRYPT_E_ASN1_BADTAG);
* data starting with 0x30 that ``cryptography`` rejects as "short data" -> ``truncated``
  (IIS: 0x80093102 CRYPT_E_ASN1_EOD). Random bytes that happen to start with 0x30 and
  declare a long length land here too; they cannot be told apart from a cut-off blob;
* otherwise the data is tried as PFX, then PKCS#7, then as a DER key/CSR/public key so the
  error can name what it is; anything left -> ``bad_encoding``.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import functools
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import dsa, ec, ed448, ed25519, rsa
from cryptography.hazmat.primitives.serialization import pkcs7, pkcs12
from cryptography.x509 import verification
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from iis_clientcert.errors import CertificateError, UsageError

__all__ = [
    "IIS_SUB_FIELDS",
    "CertInfo",
    "ChainResult",
    "ChainStatus",
    "PfxBundle",
    "load_certificate",
    "load_certificates",
    "load_pfx",
    "rdn_value",
    "to_blob",
    "verify_chain",
]

CertInput = str | bytes | bytearray | memoryview
Password = str | bytes | None
ChainStatus = Literal["trusted", "untrusted", "expired", "not_yet_valid", "bad_signature"]

_EOD = "IIS reports this as 0x80093102 CRYPT_E_ASN1_EOD"
_BADTAG = "IIS reports this as 0x8009310B CRYPT_E_ASN1_BADTAG"

# IIS many-to-one rule sub-fields (certificateSubField) and the name attributes they read.
IIS_SUB_FIELDS: dict[str, x509.ObjectIdentifier] = {
    "CN": NameOID.COMMON_NAME,
    "O": NameOID.ORGANIZATION_NAME,
    "OU": NameOID.ORGANIZATIONAL_UNIT_NAME,
    "C": NameOID.COUNTRY_NAME,
    "L": NameOID.LOCALITY_NAME,
    "S": NameOID.STATE_OR_PROVINCE_NAME,
    "E": NameOID.EMAIL_ADDRESS,
}
_SUB_FIELD_ALIASES = {"ST": "S", "EMAILADDRESS": "E", "EMAIL": "E"}
# Windows shows emailAddress as "E"; RFC 4514 has no short name for it (would print the OID).
_RFC4514_OVERRIDES = {NameOID.EMAIL_ADDRESS: "E"}


# ---------------------------------------------------------------------------- CertInfo


@functools.lru_cache(maxsize=512)
def _parse_der(der: bytes) -> x509.Certificate:
    return x509.load_der_x509_certificate(der)


def _name_fields(name: x509.Name) -> dict[str, list[str]]:
    return {
        sub: [str(a.value) for a in name.get_attributes_for_oid(oid)]
        for sub, oid in IIS_SUB_FIELDS.items()
    }


def _key_description(cert: x509.Certificate) -> str:
    try:
        key = cert.public_key()
    except (ValueError, UnsupportedAlgorithm):
        return "unknown"
    if isinstance(key, rsa.RSAPublicKey):
        return f"RSA {key.key_size}"
    if isinstance(key, ec.EllipticCurvePublicKey):
        return f"EC {key.curve.name}"
    if isinstance(key, ed25519.Ed25519PublicKey):
        return "Ed25519"
    if isinstance(key, ed448.Ed448PublicKey):
        return "Ed448"
    if isinstance(key, dsa.DSAPublicKey):
        return f"DSA {key.key_size}"
    return type(key).__name__


def _signed_by(cert: x509.Certificate, issuer: x509.Certificate) -> bool | None:
    """True/False when the signature checks or fails; None when it cannot be checked."""
    try:
        cert.verify_directly_issued_by(issuer)
    except InvalidSignature:
        return False
    except (ValueError, TypeError, UnsupportedAlgorithm):
        # ValueError: names differ or odd parameters; TypeError: unsupported key type.
        return None
    return True


@dataclass(frozen=True)
class CertInfo:
    """Everything the providers need from one certificate; picklable (bytes and strings).

    Equality and hashing use the DER bytes only.
    """

    der: bytes = field(repr=False)
    blob: str = field(compare=False, repr=False)
    thumbprint: str = field(compare=False)
    subject: str = field(compare=False)
    issuer: str = field(compare=False)
    subject_fields: dict[str, list[str]] = field(compare=False, repr=False)
    issuer_fields: dict[str, list[str]] = field(compare=False, repr=False)
    not_before: dt.datetime = field(compare=False)
    not_after: dt.datetime = field(compare=False)
    self_signed: bool = field(compare=False)
    is_ca: bool = field(compare=False)
    eku_present: bool = field(compare=False)
    client_auth_eku: bool = field(compare=False)
    server_auth_eku: bool = field(compare=False)
    dns_names: tuple[str, ...] = field(compare=False)
    serial: str = field(compare=False)
    key_type: str = field(compare=False, default="")

    @classmethod
    def from_certificate(cls, cert: x509.Certificate) -> CertInfo:
        der = cert.public_bytes(serialization.Encoding.DER)
        try:
            bc = cert.extensions.get_extension_for_class(x509.BasicConstraints).value
            is_ca = bc.ca
        except x509.ExtensionNotFound:
            is_ca = False
        try:
            eku = list(cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value)
            eku_present = True
        except x509.ExtensionNotFound:
            eku, eku_present = [], False
        try:
            san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
            dns_names = tuple(san.get_values_for_type(x509.DNSName))
        except x509.ExtensionNotFound:
            dns_names = ()
        self_signed = cert.subject == cert.issuer and _signed_by(cert, cert) is True
        serial_hex = format(abs(cert.serial_number), "X")
        if len(serial_hex) % 2:
            serial_hex = "0" + serial_hex  # Windows shows whole bytes
        return cls(
            der=der,
            blob=base64.b64encode(der).decode("ascii"),
            thumbprint=cert.fingerprint(hashes.SHA1()).hex().upper(),  # noqa: S303 - Windows thumbprint is SHA-1
            subject=cert.subject.rfc4514_string(_RFC4514_OVERRIDES),
            issuer=cert.issuer.rfc4514_string(_RFC4514_OVERRIDES),
            subject_fields=_name_fields(cert.subject),
            issuer_fields=_name_fields(cert.issuer),
            not_before=cert.not_valid_before_utc,
            not_after=cert.not_valid_after_utc,
            self_signed=self_signed,
            is_ca=is_ca,
            eku_present=eku_present,
            client_auth_eku=ExtendedKeyUsageOID.CLIENT_AUTH in eku,
            server_auth_eku=ExtendedKeyUsageOID.SERVER_AUTH in eku,
            dns_names=dns_names,
            serial=serial_hex,
            key_type=_key_description(cert),
        )

    @property
    def certificate(self) -> x509.Certificate:
        return _parse_der(self.der)

    @property
    def usable_for_client_auth(self) -> bool:
        """Windows' view: no EKU means every purpose; else clientAuth or anyExtendedKeyUsage."""
        if not self.eku_present:
            return True
        if self.client_auth_eku:
            return True
        eku = self.certificate.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
        return ExtendedKeyUsageOID.ANY_EXTENDED_KEY_USAGE in list(eku)

    @property
    def common_name(self) -> str:
        names = self.subject_fields.get("CN", [])
        return names[0] if names else ""

    def valid_at(self, when: dt.datetime) -> bool:
        when = _aware(when)
        return self.not_before <= when <= self.not_after

    def expires_within(self, days: float, now: dt.datetime | None = None) -> bool:
        now = _aware(now) if now is not None else _utcnow()
        return self.not_after <= now + dt.timedelta(days=days)

    def pem(self) -> str:
        return self.certificate.public_bytes(serialization.Encoding.PEM).decode("ascii")

    def describe(self) -> str:
        """Short human description for messages: subject and thumbprint."""
        return f"{self.subject or '(empty subject)'} [{self.thumbprint}]"


def _utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _aware(when: dt.datetime) -> dt.datetime:
    # Naive datetimes are taken as UTC, like cryptography's own validity fields.
    return when.replace(tzinfo=dt.UTC) if when.tzinfo is None else when.astimezone(dt.UTC)


def rdn_value(info: CertInfo, field_name: str, sub_field: str) -> list[str]:
    """Values an IIS many-to-one rule compares: ``field_name`` Subject/Issuer, sub-field CN, O...

    Names are matched case-insensitively; ``ST`` is accepted for ``S``. A certificate may
    hold several values (e.g. two OUs): IIS's rule matches if any of them matches.
    """
    which = field_name.strip().lower()
    if which == "subject":
        fields = info.subject_fields
    elif which == "issuer":
        fields = info.issuer_fields
    else:
        raise UsageError(f"certificateField must be Subject or Issuer, not {field_name!r}")
    sub = sub_field.strip().upper()
    sub = _SUB_FIELD_ALIASES.get(sub, sub)
    if sub not in IIS_SUB_FIELDS:
        raise UsageError(
            f"certificateSubField {sub_field!r} is not one of {', '.join(IIS_SUB_FIELDS)}"
        )
    return list(fields.get(sub, []))


# ------------------------------------------------------------------------ input decoding


@dataclass
class _Loaded:
    certs: list[x509.Certificate]
    form: str
    has_key: bool = False
    pfx_der: bytes | None = None


_PEM_BLOCK = re.compile(r"-----BEGIN ([^\r\n-]+)-----(.*?)-----END ([^\r\n-]+)-----", re.DOTALL)
_B64_ALPHABET = re.compile(r"[A-Za-z0-9+/=]*")
_WHITESPACE = re.compile(r"\s+")
_PARSE_KIND = re.compile(r"kind: (\w+)")


def _password_bytes(password: Password) -> bytes | None:
    if password is None:
        return None
    return password.encode("utf-8") if isinstance(password, str) else bytes(password)


def _as_text_or_binary(data: CertInput) -> str | bytes:
    """Text (PEM/base64) as str, anything else as bytes; BOMs removed."""
    if isinstance(data, str):
        return data.lstrip("\ufeff")
    raw = bytes(data)
    # Windows PowerShell 5.1's Out-File writes UTF-16 with a BOM; accept what it produces.
    if raw.startswith((b"\xff\xfe", b"\xfe\xff")):
        try:
            return raw.decode("utf-16")
        except UnicodeDecodeError:
            return raw
    if raw.startswith(b"\xef\xbb\xbf"):
        raw = raw[3:]
    if all(32 <= b < 127 or b in b"\t\r\n" for b in raw):
        return raw.decode("ascii")
    return raw


def _b64decode(text: str, origin: str) -> bytes:
    """Decode base64 text (line breaks, spaces, missing padding allowed) or explain why not."""
    compact = _WHITESPACE.sub("", text)
    if not compact:
        raise CertificateError("empty", f"{origin} is empty")
    bad = _B64_ALPHABET.fullmatch(compact) is None
    if bad:
        pos, ch = next((i, c) for i, c in enumerate(compact) if not _B64_ALPHABET.fullmatch(c))
        if compact.startswith("MI"):
            raise CertificateError(
                "bad_encoding",
                f"{origin} is not valid base64: character {ch!r} at position {pos} "
                f"({_BADTAG} for a damaged blob)",
            )
        raise CertificateError(
            "not_a_certificate",
            "the text is neither PEM ('-----BEGIN CERTIFICATE-----') nor base64 of a "
            "DER certificate or PFX",
        )
    stripped = compact.rstrip("=")
    if "=" in stripped:
        raise CertificateError(
            "bad_encoding",
            f"{origin} has base64 padding '=' in the middle: two pieces were joined together "
            f"({_BADTAG} or 0x80093102 when such a blob is mapped)",
        )
    # Missing padding is tolerated; a dangling 6-bit group means the text was cut off.
    usable = stripped[: len(stripped) - (len(stripped) % 4 == 1)]
    usable += "=" * (-len(usable) % 4)
    try:
        return base64.b64decode(usable, validate=True)
    except binascii.Error as exc:  # pragma: no cover - alphabet was checked above
        raise CertificateError("bad_encoding", f"{origin} is not valid base64") from exc


def _parse_error_kind(exc: Exception) -> str:
    # cryptography's DER parser reports e.g. "ParseError { kind: ShortData { needed: 10 } }".
    found = _PARSE_KIND.search(str(exc))
    return found.group(1) if found else ""


def _truncated(origin: str) -> CertificateError:
    return CertificateError(
        "truncated",
        f"{origin} is cut short: its DER encoding declares more bytes than are present "
        f"({_EOD}). Copy the whole certificate again, including the end of the base64.",
    )


def _bad_tag(origin: str) -> CertificateError:
    return CertificateError(
        "bad_encoding",
        f"{origin} does not start with an ASN.1 SEQUENCE tag (0x30), so it is not DER ({_BADTAG})",
    )


def _load_pkcs12(
    raw: bytes, password: Password, origin: str
) -> pkcs12.PKCS12KeyAndCertificates | None:
    """The parsed PFX, None if ``raw`` is not a PFX at all; raises for password problems."""
    given = _password_bytes(password)
    # Windows and openssl treat "no password" and "empty password" differently; try both.
    # A password given for an unprotected PFX is harmless, so fall back to none as well.
    attempts: list[bytes | None] = [given] if given else []
    attempts += [None, b""]
    structural = False
    for attempt in attempts:
        try:
            return pkcs12.load_pkcs12(raw, attempt)
        except ValueError as exc:
            # "Invalid password or PKCS12 data": it parsed as PKCS#12, the MAC/decrypt failed.
            if "password" in str(exc).lower():
                structural = True
        except (TypeError, UnsupportedAlgorithm):
            structural = True
    if not structural:
        return None
    if given:
        raise CertificateError(
            "wrong_password",
            f"{origin} is a PFX (PKCS#12) file and the password given does not open it "
            f"(wrong password, or the file is damaged)",
        )
    raise CertificateError(
        "pfx_needs_password",
        f"{origin} is a password-protected PFX (PKCS#12) file; supply its password",
    )


def _leaf_first(certs: list[x509.Certificate]) -> list[x509.Certificate]:
    """Reorder an unordered bundle so the certificate that issued none of the others leads."""
    if len(certs) < 2:
        return certs
    for cert in certs:
        issues_other = any(
            other is not cert and other.issuer == cert.subject and other.subject != cert.subject
            for other in certs
        )
        if not issues_other:
            return [cert, *[c for c in certs if c is not cert]]
    return certs


def _from_pkcs12(p12: pkcs12.PKCS12KeyAndCertificates, raw: bytes, origin: str) -> _Loaded:
    extra = [c.certificate for c in p12.additional_certs]
    main = p12.cert.certificate if p12.cert is not None else None
    if main is None and p12.key is not None:
        # The key's certificate may lack the localKeyId that pairs them: match by public key.
        wanted = p12.key.public_key()
        for cert in extra:
            if cert.public_key() == wanted:
                main = cert
                extra = [c for c in extra if c is not cert]
                break
        else:
            raise CertificateError(
                "pfx_without_key",
                f"{origin}: the PFX's private key belongs to none of its certificates",
            )
    certs = [main, *extra] if main is not None else _leaf_first(extra)
    if not certs:
        raise CertificateError("not_a_certificate", f"{origin} is a PFX with no certificate")
    return _Loaded(certs=certs, form="pfx", has_key=p12.key is not None, pfx_der=raw)


def _from_binary(raw: bytes, password: Password, origin: str, *, pem_cert: bool = False) -> _Loaded:
    """DER certificate, PFX or PKCS#7 bytes; ``pem_cert`` limits it to a certificate."""
    if not raw:
        raise CertificateError("empty", f"{origin} is empty")
    if raw[0] != 0x30:
        raise _bad_tag(origin)
    try:
        return _Loaded(certs=[x509.load_der_x509_certificate(raw)], form="der")
    except ValueError as exc:
        kind = _parse_error_kind(exc)
    if kind == "ShortData":
        raise _truncated(origin)
    if not pem_cert:
        p12 = _load_pkcs12(raw, password, origin)
        if p12 is not None:
            return _from_pkcs12(p12, raw, origin)
        try:
            p7 = pkcs7.load_der_pkcs7_certificates(raw)
        except ValueError:
            pass
        else:
            if not p7:
                raise CertificateError(
                    "not_a_certificate", f"{origin} is a PKCS#7 bundle with no certificates"
                )
            return _Loaded(certs=_leaf_first(list(p7)), form="pkcs7")
    _reject_other_der(raw, origin)
    if kind == "ExtraData":
        raise CertificateError(
            "bad_encoding",
            f"{origin} has extra bytes after the certificate (two certificates joined, or "
            f"trailing garbage); give exactly one certificate",
        )
    detail = f" ({kind})" if kind else ""
    raise CertificateError(
        "bad_encoding",
        f"{origin} is not a valid DER certificate{detail}; it may be damaged ({_BADTAG} "
        f"for a damaged blob)",
    )


def _reject_other_der(raw: bytes, origin: str) -> None:
    """Name the thing when DER data is a key, CSR or public key instead of a certificate."""
    try:
        serialization.load_der_private_key(raw, password=None)
    except TypeError:
        pass  # encrypted private key: still a key
    except (ValueError, UnsupportedAlgorithm):
        try:
            x509.load_der_x509_csr(raw)
        except ValueError:
            pass
        else:
            raise CertificateError(
                "not_a_certificate",
                f"{origin} is a certificate signing request (CSR), not a certificate",
            ) from None
        try:
            serialization.load_der_public_key(raw)
        except (ValueError, UnsupportedAlgorithm):
            return
        raise CertificateError(
            "not_a_certificate", f"{origin} is a bare public key, not a certificate"
        ) from None
    raise CertificateError(
        "private_key_not_certificate",
        f"{origin} is a private key, not a certificate; give the certificate instead "
        f"(the key was not read further and is not shown)",
    )


_KEY_LABEL = re.compile(r"PRIVATE KEY$")
_CERT_LABELS = {"CERTIFICATE", "X509 CERTIFICATE"}


def _from_pem(text: str) -> _Loaded:
    certs: list[x509.Certificate] = []
    other_labels: list[str] = []
    key_seen = False
    end = 0
    for index, match in enumerate(_PEM_BLOCK.finditer(text), start=1):
        begin_label, body, end_label = match.group(1).strip(), match.group(2), match.group(3)
        origin = f"PEM block {index} ({begin_label})"
        if "-----BEGIN " in body:
            # An END went missing: the earlier block was cut off and another one glued on.
            raise CertificateError(
                "truncated", f"PEM block {index} has no END line before the next BEGIN ({_EOD})"
            )
        if begin_label != end_label.strip():
            raise CertificateError(
                "bad_encoding",
                f"{origin} ends with 'END {end_label.strip()}': BEGIN and END labels differ",
            )
        end = match.end()
        if _KEY_LABEL.search(begin_label):
            key_seen = True  # never decode or echo key material
            continue
        if begin_label in _CERT_LABELS:
            # RFC 1421 headers ("Proc-Type: ...") hold colons; base64 never does.
            lines = [ln for ln in body.splitlines() if ":" not in ln]
            raw = _b64decode("".join(lines), origin)
            certs.extend(_from_binary(raw, None, origin, pem_cert=True).certs)
        elif begin_label == "PKCS7":
            raw = _b64decode(body, origin)
            try:
                certs.extend(_leaf_first(list(pkcs7.load_der_pkcs7_certificates(raw))))
            except ValueError as exc:
                raise CertificateError(
                    "bad_encoding", f"{origin} is not a valid PKCS#7 bundle"
                ) from exc
        elif begin_label == "TRUSTED CERTIFICATE":
            raise CertificateError(
                "not_a_certificate",
                f"{origin} is OpenSSL's trusted-certificate format; convert it with "
                f"'openssl x509 -in file -out plain.pem' first",
            )
        else:
            other_labels.append(begin_label)
    tail = text[end:]
    if "-----BEGIN " in tail:
        raise CertificateError(
            "truncated",
            f"the last PEM block has no '-----END' line: the text was cut short ({_EOD})",
        )
    if certs:
        return _Loaded(certs=certs, form="pem")
    if key_seen:
        raise CertificateError(
            "private_key_not_certificate",
            "the PEM text holds a private key but no certificate; give the certificate "
            "('-----BEGIN CERTIFICATE-----' block). The key was not read and is not shown",
        )
    if other_labels:
        raise CertificateError(
            "not_a_certificate",
            f"the PEM text holds {', '.join(repr(x) for x in other_labels)} but no certificate",
        )
    raise CertificateError("not_a_certificate", "the PEM text holds no complete block")


def _load(data: CertInput, password: Password) -> _Loaded:
    if data is None:
        raise CertificateError("empty", "no certificate was given")
    if not isinstance(data, str | bytes | bytearray | memoryview):
        raise CertificateError(
            "not_a_certificate",
            f"a certificate must be text or bytes, not {type(data).__name__}",
        )
    value = _as_text_or_binary(data)
    if isinstance(value, bytes):
        return _from_binary(value, password, "the DER/PFX data")
    if not value.strip():
        raise CertificateError("empty", "the certificate text is empty")
    if "-----BEGIN " in value:
        return _from_pem(value)
    if "-----END " in value:
        raise CertificateError(
            "truncated",
            f"the PEM text has an END line but no '-----BEGIN' line: its start is missing ({_EOD})",
        )
    raw = _b64decode(value, "the base64 text")
    return _from_binary(raw, password, "the base64 text")


# ------------------------------------------------------------------------- public loaders


def load_certificates(data: CertInput, password: Password = None) -> list[CertInfo]:
    """All certificates in ``data``, the main one first (see :func:`load_certificate`)."""
    return [CertInfo.from_certificate(c) for c in _load(data, password).certs]


def load_certificate(data: CertInput, password: Password = None) -> CertInfo:
    """The one certificate ``data`` stands for.

    Accepts PEM (one or more blocks, LF or CRLF, with "Bag Attributes" preambles; private
    key blocks beside a certificate are ignored), DER, base64 (one line or wrapped), PFX
    (bytes or base64, modern or legacy encryption) and PKCS#7 (.p7b). Where there are
    several certificates it returns: for PEM the first block (leaf-first, as in
    ``fullchain.pem``); for PFX the certificate that belongs to the private key (without a
    key, the one that issued none of the others); for PKCS#7, whose order means nothing,
    the one that issued none of the others.
    """
    return CertInfo.from_certificate(_load(data, password).certs[0])


def to_blob(data: CertInput, password: Password = None) -> str:
    """IIS's ``certificate`` attribute value (single-line base64 DER) for ``data``."""
    return load_certificate(data, password).blob


@dataclass(frozen=True)
class PfxBundle:
    """A PFX's content. The private key is not kept: ``pfx_der`` carries it to the host."""

    certificate: CertInfo
    chain: list[CertInfo] = field(compare=False)
    has_key: bool
    pfx_der: bytes = field(repr=False)


def load_pfx(data: CertInput, password: Password, *, require_key: bool = True) -> PfxBundle:
    """Open a PFX/PKCS#12 file (bytes or base64 text) and check it is usable.

    ``pfx_der`` is the original PFX (decoded from base64 if need be), still encrypted.
    """
    value = _as_text_or_binary(data) if data is not None else b""
    if isinstance(value, str):
        if not value.strip():
            raise CertificateError("empty", "the PFX text is empty")
        if "-----BEGIN " in value:
            raise CertificateError(
                "not_a_certificate",
                "expected a PFX (PKCS#12) file but got PEM text; build one with "
                "'openssl pkcs12 -export -in cert.pem -inkey key.pem -out site.pfx'",
            )
        origin = "the base64 PFX text"
        raw = _b64decode(value, origin)
    else:
        origin = "the PFX data"
        raw = value
    if not raw:
        raise CertificateError("empty", f"{origin} is empty")
    if raw[0] != 0x30:
        raise _bad_tag(origin)
    p12 = _load_pkcs12(raw, password, origin)
    if p12 is None:
        # Not PKCS#12: let the generic loader say what it is (truncated, a bare cert, ...).
        loaded = _from_binary(raw, None, origin)
        raise CertificateError(
            "not_a_certificate",
            f"{origin} is a {'single certificate' if loaded.form == 'der' else loaded.form} "
            f"without a private key, not a PFX (PKCS#12) file",
        )
    loaded = _from_pkcs12(p12, raw, origin)
    if require_key and not loaded.has_key:
        raise CertificateError(
            "pfx_without_key",
            f"{origin} holds no private key; export the certificate with its private key "
            f"('Yes, export the private key' in the Windows export wizard)",
        )
    infos = [CertInfo.from_certificate(c) for c in loaded.certs]
    return PfxBundle(certificate=infos[0], chain=infos[1:], has_key=loaded.has_key, pfx_der=raw)


def legacy_pfx(pfx_der: bytes, password: Password) -> bytes:
    """The same key and certificates as a PFX that Windows before build 17763 (Server 2016)
    opens: PBES1 SHA1/3DES for key and certificates, a SHA-1 MAC. Those builds cannot open
    AES-256/PBES2 (OpenSSL 3's and Windows 2019's default) and answer 0x80070056, as for a
    wrong password (FACTS.md "PFX on Server 2016"). Same password; without one, unchanged.
    """
    secret = _password_bytes(password)
    if not secret:
        return pfx_der
    p12 = _load_pkcs12(pfx_der, password, "the PFX")
    if p12 is None or p12.cert is None:
        raise CertificateError("not_a_certificate", "the PFX holds no certificate")
    key = p12.key
    if key is not None and not isinstance(
        key,
        rsa.RSAPrivateKey
        | ec.EllipticCurvePrivateKey
        | dsa.DSAPrivateKey
        | ed25519.Ed25519PrivateKey
        | ed448.Ed448PrivateKey,
    ):
        raise CertificateError("not_a_certificate", "the PFX holds a key PKCS#12 cannot carry")
    encryption = (
        serialization.PrivateFormat.PKCS12.encryption_builder()
        .kdf_rounds(2048)
        .key_cert_algorithm(pkcs12.PBES.PBESv1SHA1And3KeyTripleDESCBC)
        .hmac_hash(hashes.SHA1())  # noqa: S303 - what the old PFX format and Windows 2016 use
        .build(secret)
    )
    return pkcs12.serialize_key_and_certificates(
        p12.cert.friendly_name,
        key,
        p12.cert.certificate,
        p12.additional_certs or None,
        encryption,
    )


# ------------------------------------------------------------------------ chain checking


@dataclass(frozen=True)
class ChainResult:
    ok: bool
    status: ChainStatus
    chain: list[CertInfo]
    message: str


def _client_eku_validator(
    policy: verification.Policy, cert: x509.Certificate, ext: x509.ExtendedKeyUsage | None
) -> None:
    # Schannel: no EKU means every purpose; otherwise clientAuth (or any) must be listed.
    if ext is None:
        return
    usages = list(ext)
    if ExtendedKeyUsageOID.CLIENT_AUTH not in usages and (
        ExtendedKeyUsageOID.ANY_EXTENDED_KEY_USAGE not in usages
    ):
        raise CertificateError(
            "wrong_usage", "the certificate's EKU does not include Client Authentication"
        )


def _has_basic_constraints(info: CertInfo) -> bool:
    try:
        info.certificate.extensions.get_extension_for_class(x509.BasicConstraints)
    except x509.ExtensionNotFound:
        return False
    return True


def _path_problem(path: list[CertInfo], require_client_auth: bool) -> str | None:
    """Windows' own rules for a signature-checked path: CA flags, path length, client EKU.

    These decide alone when the trust anchor has no basicConstraints (old v1 roots, which
    Windows accepts but cryptography's verifier refuses); otherwise the verifier confirms.
    """
    if require_client_auth and not path[0].usable_for_client_auth:
        return f"{path[0].describe()}: its EKU does not include Client Authentication"
    for depth, issuer in enumerate(path[1:]):
        try:
            bc = issuer.certificate.extensions.get_extension_for_class(x509.BasicConstraints)
        except x509.ExtensionNotFound:
            if issuer is path[-1]:
                continue  # a trust anchor without the extension is still a root to Windows
            return f"{issuer.describe()} issues certificates but has no basicConstraints"
        if not bc.value.ca:
            return f"{issuer.describe()} is not a CA (basicConstraints cA is false)"
        # depth = number of CA certificates between this issuer and the leaf.
        if bc.value.path_length is not None and depth > bc.value.path_length:
            return f"{issuer.describe()} allows a path length of {bc.value.path_length} only"
    return None


def _verifier_check(path: list[CertInfo], at: dt.datetime, require_client_auth: bool) -> str | None:
    """Confirm a found path with cryptography's verifier; the reason it fails, or None.

    Windows is laxer than the WebPKI about extensions, so only what Schannel also checks is
    enforced: CA basicConstraints (and path length), and the client EKU.
    """
    if len(path) < 2:
        # The leaf itself is a trusted root: nothing to build, only its purpose to check.
        if require_client_auth and not path[0].usable_for_client_auth:
            return "the certificate's EKU does not include Client Authentication"
        return None
    ca_policy = verification.ExtensionPolicy.permit_all().require_present(
        x509.BasicConstraints, verification.Criticality.AGNOSTIC, None
    )
    ee_policy = verification.ExtensionPolicy.permit_all()
    if require_client_auth:
        ee_policy = ee_policy.may_be_present(
            x509.ExtendedKeyUsage, verification.Criticality.AGNOSTIC, _client_eku_validator
        )
    verifier = (
        verification.PolicyBuilder()
        .store(verification.Store([path[-1].certificate]))
        .time(at)
        .extension_policies(ca_policy=ca_policy, ee_policy=ee_policy)
        .build_client_verifier()
    )
    try:
        verifier.verify(path[0].certificate, [c.certificate for c in path[1:-1]])
    except verification.VerificationError as exc:
        return str(exc)
    return None


def _find_paths(
    cert: CertInfo,
    roots: Sequence[CertInfo],
    intermediates: Sequence[CertInfo],
    seen: frozenset[bytes],
    *,
    bad_signatures: list[str],
    depth: int = 0,
) -> list[list[CertInfo]]:
    """Every issuer path from ``cert`` up to one of ``roots`` (checked by signature)."""
    if depth > 8:
        return []
    paths: list[list[CertInfo]] = []
    x = cert.certificate
    for candidate in [*roots, *intermediates]:
        if candidate.der in seen or candidate.certificate.subject != x.issuer:
            continue
        signed = _signed_by(x, candidate.certificate)
        if signed is False:
            bad_signatures.append(f"{cert.describe()} is not signed by {candidate.describe()}")
            continue
        if signed is None:
            continue
        if candidate in roots:
            paths.append([cert, candidate])
        else:
            for rest in _find_paths(
                candidate,
                roots,
                intermediates,
                seen | {candidate.der},
                bad_signatures=bad_signatures,
                depth=depth + 1,
            ):
                paths.append([cert, *rest])
    return paths


def verify_chain(
    leaf: CertInfo,
    roots: Sequence[CertInfo],
    intermediates: Sequence[CertInfo] = (),
    *,
    at: dt.datetime | None = None,
    require_client_auth: bool = True,
) -> ChainResult:
    """Would IIS accept ``leaf`` as a client certificate, trusting ``roots``?

    Status, checked in this order: no path to a root -> "bad_signature" when a certificate
    with the right issuer name exists but its signature does not check, else "untrusted";
    a path whose certificates are outside their validity at ``at`` -> "expired" (IIS
    403.17) or "not_yet_valid" (also 403.17); a path that cryptography's verifier rejects
    (a non-CA issuer, path length, EKU without Client Authentication) -> "untrusted"
    (403.16); otherwise "trusted".
    """
    when = _aware(at) if at is not None else _utcnow()
    if leaf in roots:
        paths = [[leaf]]
        bad: list[str] = []
    else:
        bad = []
        paths = _find_paths(leaf, roots, intermediates, frozenset({leaf.der}), bad_signatures=bad)
    if not paths:
        if bad:
            return ChainResult(False, "bad_signature", [leaf], "; ".join(dict.fromkeys(bad)))
        why = (
            "it is self-signed and not among the trusted roots"
            if leaf.self_signed
            else f"its issuer {leaf.issuer!r} leads to no trusted root"
        )
        return ChainResult(False, "untrusted", [leaf], f"{leaf.describe()} is untrusted: {why}")

    # Prefer a path that is valid now; among equals the shortest (Windows' preference too).
    def time_problem(path: list[CertInfo]) -> tuple[ChainStatus, CertInfo] | None:
        for info in path:
            if when > info.not_after:
                return "expired", info
            if when < info.not_before:
                return "not_yet_valid", info
        return None

    paths.sort(key=lambda p: (time_problem(p) is not None, len(p)))
    best = paths[0]
    problem = time_problem(best)
    if problem is not None:
        status, info = problem
        which = "expired on" if status == "expired" else "is not valid before"
        date = info.not_after if status == "expired" else info.not_before
        return ChainResult(
            False,
            status,
            best,
            f"{info.describe()} {which} {date.isoformat()} (checked at {when.isoformat()})",
        )
    reason = None
    for path in [p for p in paths if time_problem(p) is None]:
        reason = _path_problem(path, require_client_auth)
        if reason is None and _has_basic_constraints(path[-1]):
            reason = _verifier_check(path, when, require_client_auth)
        if reason is None:
            return ChainResult(
                True, "trusted", path, f"{leaf.describe()} chains to {path[-1].describe()}"
            )
    return ChainResult(False, "untrusted", best, f"{leaf.describe()} is not accepted: {reason}")
