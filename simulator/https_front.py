"""The simulator's HTTPS front: each site binding served on loopback with IIS's
client-certificate semantics, so "does this certificate get in, and as whom?" is testable.

For every ``<binding protocol="https">`` of applicationHost.config that has an HTTP.sys
SSL binding in httpsys.json, a listener on ``127.0.0.1:<ephemeral port>`` presents the
bound certificate (and key) from the My store; every ``<binding protocol="http">`` gets a
plain listener. The state folder is re-read for every request, and the set of listeners
follows changes to applicationHost.config and httpsys.json, so a ``pulumi up`` takes
effect without a restart.

Per request, for the binding's site (location path = site name):

0. Plain http: ``access@sslFlags`` with Ssl128 answers 403.5, with Ssl 403.4 (IIS's
   "SSL required" substatuses); client certificates play no part (there is no TLS).
1. The client certificate is asked for in the TLS handshake when the HTTP.sys binding
   negotiates it (``clientcertnegotiation=enable``, or binding sslFlags 128). Otherwise
   IIS asks after the handshake when ``access@sslFlags`` has SslNegotiateCert: on TLS 1.2
   that is a renegotiation (emulated here by asking in the handshake, which yields the same
   certificate); TLS 1.3 forbids it, so the connection is reset (Windows Server 2022) or
   answered 500 with 0x80070032 (Server 2025, os_build >= 26100).
2. IIS uses a client certificate only when sslFlags has SslNegotiateCert (it is what makes
   IIS ask HTTP.sys for the certificate); SslRequireCert without it is 403.7 even when the
   handshake carried one. No certificate and SslRequireCert: 403.7.
3. Trust, decided by the simulator's own code (trust.py: cryptography's verifier with a
   Schannel policy, never the product's certificate code) from the chain the client sent
   plus LocalMachine\\Root, CA and Disallowed: a non-self-signed certificate in Root fails
   every client certificate (KB 2802568; 403.16 0x800B0109, or 403.7 when
   SendTrustedIssuerList=1 because the client then gets a broken issuer list and sends
   nothing); otherwise 403.16 with the chain error (0x800B010A, 0x800B0109, 0x800B0110,
   0x800B0111...) or 403.17 (0x800B0101) for a certificate outside its validity.
4. Revocation, on by default in HTTP.sys (``verifyclientcertrevocation``; the HTTP.sys
   record's ``verifyclientcertrevocation`` false turns it off): each certificate of the
   chain below the root that names a CRL distribution point needs a current CRL fetched
   from one (published in DIR/crl, reachable per the host fact ``cdp_reachable``): revoked
   is 403.13 0x80092010, no CRL 403.13 0x80092013.
5. ``iisClientCertificateMappingAuthentication`` (only when the Web-Cert-Auth module is in
   globalModules): an enabled one-to-one mapping whose ``certificate`` is the exact base64
   DER blob, then the enabled many-to-one mappings in order (every rule must match; ``*``
   wildcards; compareCaseSensitive). The first many-to-one match decides: Deny is 403.12
   (mapper denied access); Allow logs the user on. A logon uses the stored (decrypted)
   password with the section's logonMethod and defaultLogonDomain against users.json, and
   counts there like every logon on the host (a wrong password is a bad attempt towards
   the lockout threshold); a failure is 401.1 with the model's HRESULT (0x8007052E for a
   wrong name or password, 0x80070775 locked out, 0x80070569 logon type not granted).
6. No mapping matched: anonymous access (``anonymousAuthentication@enabled``) gives 200
   as its user (IUSR); otherwise 401.2 (server configuration denies logon).

Not modelled: ClientAuthTrustMode 1/2, application-level locations (everything is
evaluated at the site).

The client certificate must reach the trust decision even when OpenSSL would reject it
(unknown CA, expired). Python 3.11's ``ssl`` has no verify callback, so an accept-all
callback is installed on the context's ``SSL_CTX`` through ctypes (``_ssl`` keeps an
existing callback when ``verify_mode`` changes); the intermediates the client sent are read
with ``SSL_get_peer_cert_chain``. If that is not possible (not CPython, no libssl found),
the front falls back to OpenSSL's own checks against Root + CA with time checks off;
untrusted certificates then fail in the handshake and a warning is logged once.
"""

from __future__ import annotations

import base64
import contextlib
import ctypes
import ctypes.util
import datetime as dt
import fnmatch
import json
import logging
import os
import re
import socket
import socketserver
import ssl
import struct
import sys
import tempfile
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any, Literal

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.x509.oid import NameOID

from iis_clientcert.host.contract import (
    LOGON_TYPES,
    SECTION_ANONYMOUS,
    SECTION_MAPPING,
    SECTION_SSL,
)
from iis_clientcert_simulator import schema, trust
from iis_clientcert_simulator.accounts import WELL_KNOWN, bare_name
from iis_clientcert_simulator.errors import HR_ASN1_BADTAG, HR_ASN1_EOD, OpError
from iis_clientcert_simulator.files import read_json, write_json
from iis_clientcert_simulator.state import HostState, Session
from iis_clientcert_simulator.stores import (
    SSL_FLAG_CENTRAL_STORE,
    parse_binding_information,
    sslcert_key,
)

log = logging.getLogger(__name__)

LOOPBACK = "127.0.0.1"
SSL_FLAG_SSL = 8
SSL_FLAG_NEGOTIATE = 32
SSL_FLAG_REQUIRE = 64
SSL_FLAG_128 = 256
BINDING_SNI = 1
BINDING_NEGOTIATE_CLIENT_CERT = 128
WINDOWS_2025_BUILD = 26100

HR_CERT_UNTRUSTED_ROOT = trust.HR_UNTRUSTED_ROOT
HR_CERT_SIGNATURE = trust.HR_CERT_SIGNATURE
HR_NOT_SUPPORTED = "0x80070032"

Auth = Literal["one-to-one", "many-to-one", "anonymous"]
CertMode = Literal["handshake", "after", "none"]

# --- an accept-all verify callback on Python's SSL_CTX (see the module docstring) -------

_VERIFY_CB_TYPE = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_int, ctypes.c_void_p)
_SSL_VERIFY_PEER = 1
# PyObject_HEAD: the SSL_CTX* (PySSLContext) and the owner weakref + SSL* (PySSLSocket)
# follow it in CPython 3.11 and 3.12.
_HEAD = 2 * ctypes.sizeof(ctypes.c_void_p)


def _accept_any(_preverify_ok: int, _store: int | None) -> int:
    # Trust is decided by trust.decide_trust after the handshake, as IIS decides per request.
    return 1


_ACCEPT_ANY = _VERIFY_CB_TYPE(_accept_any)  # module-level: must outlive every context


def _find_libssl() -> ctypes.CDLL | None:
    """The libssl that ``_ssl`` itself uses (a different copy would not know its SSL_CTX)."""
    if sys.implementation.name != "cpython" or hasattr(sys, "gettotalrefcount"):
        return None  # other object layouts (PyPy, debug builds)
    candidates: list[str] = []
    with contextlib.suppress(OSError):
        for line in Path("/proc/self/maps").read_text().splitlines():
            path = line.split()[-1] if "/" in line else ""
            if re.search(r"/libssl[.-][^/]*$", path) and path not in candidates:
                candidates.append(path)
    found = ctypes.util.find_library("ssl")
    if found:
        candidates.append(found)
    for name in candidates:
        try:
            lib = ctypes.CDLL(name)
            lib.SSL_CTX_get_verify_mode.argtypes = [ctypes.c_void_p]
            lib.SSL_CTX_get_verify_mode.restype = ctypes.c_int
            lib.SSL_CTX_set_verify.argtypes = [ctypes.c_void_p, ctypes.c_int, _VERIFY_CB_TYPE]
            lib.SSL_CTX_set_verify.restype = None
            lib.SSL_set_verify.argtypes = [ctypes.c_void_p, ctypes.c_int, _VERIFY_CB_TYPE]
            lib.SSL_set_verify.restype = None
            lib.SSL_version.argtypes = [ctypes.c_void_p]
            lib.SSL_version.restype = ctypes.c_int
            lib.SSL_get_SSL_CTX.argtypes = [ctypes.c_void_p]
            lib.SSL_get_SSL_CTX.restype = ctypes.c_void_p
            # The client's intermediates: libssl's handle also resolves libcrypto's symbols.
            lib.SSL_get_peer_cert_chain.argtypes = [ctypes.c_void_p]
            lib.SSL_get_peer_cert_chain.restype = ctypes.c_void_p
            lib.OPENSSL_sk_num.argtypes = [ctypes.c_void_p]
            lib.OPENSSL_sk_num.restype = ctypes.c_int
            lib.OPENSSL_sk_value.argtypes = [ctypes.c_void_p, ctypes.c_int]
            lib.OPENSSL_sk_value.restype = ctypes.c_void_p
            lib.i2d_X509.argtypes = [ctypes.c_void_p, ctypes.POINTER(ctypes.c_void_p)]
            lib.i2d_X509.restype = ctypes.c_int
        except (OSError, AttributeError):
            continue
        return lib
    return None


_LIBSSL = _find_libssl()
_HOOK_WARNED = threading.Event()
# id(SSLContext) -> its SSL_CTX*, for contexts this module built (read by the SNI hook).
_CTX_POINTERS: dict[int, int] = {}


def _ctx_pointer(ctx: ssl.SSLContext) -> int | None:
    """The SSL_CTX* of ``ctx``, confirmed by reading back two verify modes."""
    if _LIBSSL is None:
        return None
    pointer = ctypes.c_void_p.from_address(id(ctx) + _HEAD).value
    if not pointer:
        return None
    saved = ctx.verify_mode
    try:
        for mode, expected in ((ssl.CERT_NONE, 0), (ssl.CERT_OPTIONAL, _SSL_VERIFY_PEER)):
            ctx.verify_mode = mode
            if _LIBSSL.SSL_CTX_get_verify_mode(pointer) & 0x3 != expected:
                return None
    finally:
        ctx.verify_mode = saved
    return int(pointer)


def _accept_all_client_certs(ctx: ssl.SSLContext) -> bool:
    """Ask for a client certificate in the handshake and accept whatever comes."""
    pointer = _ctx_pointer(ctx)
    if _LIBSSL is None or pointer is None:
        return False
    _LIBSSL.SSL_CTX_set_verify(pointer, _SSL_VERIFY_PEER, _ACCEPT_ANY)
    ctx.verify_mode = ssl.CERT_OPTIONAL  # _ssl keeps the callback set above
    _CTX_POINTERS[id(ctx)] = pointer
    return True


def _ssl_pointer(ssl_object: Any, ctx: ssl.SSLContext) -> int | None:
    """The SSL* of a connection made with one of our contexts (None if it cannot be found)."""
    inner = getattr(ssl_object, "_sslobj", ssl_object)
    ctx_ptr = _CTX_POINTERS.get(id(ctx))
    if _LIBSSL is None or inner is None or ctx_ptr is None:
        return None
    # PySSLSocket: PyObject_HEAD, the owner weakref, then SSL*; confirmed via its SSL_CTX.
    pointer = ctypes.c_void_p.from_address(id(inner) + _HEAD + ctypes.sizeof(ctypes.c_void_p))
    ssl_ptr = pointer.value
    if not ssl_ptr or _LIBSSL.SSL_get_SSL_CTX(ssl_ptr) != ctx_ptr:
        return None
    return int(ssl_ptr)


def _ask_on_tls12(ssl_object: Any, _server_name: str | None, ctx: ssl.SSLContext) -> None:
    """SNI callback (runs after version selection): on TLS 1.2 ask for the certificate in
    the handshake, standing in for IIS's renegotiation; TLS 1.3 gets no request."""
    ssl_ptr = _ssl_pointer(ssl_object, ctx)
    if _LIBSSL is not None and ssl_ptr is not None and _LIBSSL.SSL_version(ssl_ptr) == 0x0303:
        _LIBSSL.SSL_set_verify(ssl_ptr, _SSL_VERIFY_PEER, _ACCEPT_ANY)


def peer_chain(tls: ssl.SSLSocket) -> list[bytes]:
    """DER of the certificates the client sent after its own (its intermediates, maybe
    its root): Schannel builds the chain with them. On the server side OpenSSL's list does
    not hold the client's own certificate."""
    ssl_ptr = _ssl_pointer(tls, tls.context)
    if _LIBSSL is None or ssl_ptr is None:
        return []
    stack = _LIBSSL.SSL_get_peer_cert_chain(ssl_ptr)
    if not stack:
        return []
    out: list[bytes] = []
    for index in range(_LIBSSL.OPENSSL_sk_num(stack)):
        cert = _LIBSSL.OPENSSL_sk_value(stack, index)
        size = _LIBSSL.i2d_X509(cert, None) if cert else 0
        if size <= 0:
            continue
        buffer = ctypes.create_string_buffer(size)
        cursor = ctypes.c_void_p(ctypes.addressof(buffer))
        if _LIBSSL.i2d_X509(cert, ctypes.byref(cursor)) == size:
            out.append(buffer.raw)
    return out


# --- the state, as one request sees it ---------------------------------------------------


@dataclass(frozen=True)
class Binding:
    site: str
    protocol: str  # "https" | "http"
    binding_information: str
    ssl_flags: int
    certificate_hash: str = ""
    certificate_store: str = "My"
    client_cert_negotiation: bool = False
    # netsh http add sslcert verifyclientcertrevocation: enabled unless the HTTP.sys record
    # says otherwise (Microsoft: "add sslcert"; KB 294305).
    verify_client_cert_revocation: bool = True
    # HTTP.sys negotiates TLS, so its record decides (the binding's sslFlags bit 32 only
    # matters through the record IIS or the agent writes from it).
    disable_tls13: bool = False

    @property
    def key(self) -> tuple[str, str, str]:
        return self.site.lower(), self.protocol, self.binding_information.lower()

    @property
    def secure(self) -> bool:
        return self.protocol == "https"


@dataclass(frozen=True)
class OneToOne:
    certificate: str
    user_name: str
    password: str | None = field(repr=False)
    enabled: bool


@dataclass(frozen=True)
class Rule:
    field: str
    sub_field: str
    criteria: str
    case_sensitive: bool


@dataclass(frozen=True)
class ManyToOne:
    name: str
    enabled: bool
    deny: bool
    user_name: str
    password: str | None = field(repr=False)
    rules: tuple[Rule, ...]


@dataclass(frozen=True)
class SiteView:
    """Everything one request's decision needs, read under the state lock."""

    site: str
    computer: str
    ssl_flags: int
    anonymous_enabled: bool
    anonymous_user: str
    anonymous_password: str | None = field(repr=False)
    mapping_enabled: bool
    one_to_one_enabled: bool
    many_to_one_enabled: bool
    one_to_one: tuple[OneToOne, ...]
    many_to_one: tuple[ManyToOne, ...]
    roots: tuple[x509.Certificate, ...]
    intermediates: tuple[x509.Certificate, ...]
    disallowed: tuple[x509.Certificate, ...]
    non_self_signed_roots: tuple[str, ...]
    send_trusted_issuer_list: bool
    # Logons go to the host's accounts (users.json), where bad attempts are counted.
    state: HostState = field(repr=False)
    crls: dict[str, bytes] = field(default_factory=dict, repr=False)
    cdp_reachable: dict[str, bool] = field(default_factory=dict)
    logon_method: str = "ClearText"
    default_logon_domain: str = ""
    anonymous_logon_method: str = "ClearText"

    @property
    def negotiates_cert(self) -> bool:
        # Only SslNegotiateCert makes IIS ask for (and so use) a client certificate
        # (Microsoft: "Access <access>" sslFlags; "SslRequireCert alone gives 403.7").
        return bool(self.ssl_flags & SSL_FLAG_NEGOTIATE)

    @property
    def requires_cert(self) -> bool:
        return bool(self.ssl_flags & SSL_FLAG_REQUIRE)


def _bool(value: Any, default: bool) -> bool:
    return default if value is None else str(value).lower() == "true"


def _flags(value: str) -> int:
    names = {"ssl": 8, "sslnegotiatecert": 32, "sslrequirecert": 64, "ssl128": 256}
    total = 0
    for part in (p.strip() for p in value.split(",")):
        if part.isdigit():
            total |= int(part)
        else:
            total |= names.get(part.lower(), 0)
    return total


def _https_binding(site: str, b: Any, httpsys: Any) -> Binding | None:
    info = str(b.get("bindingInformation", ""))
    try:
        flags = int(str(b.get("sslFlags", "0")) or "0")
        key = sslcert_key(info, flags)
        ip, port, _host = parse_binding_information(info, flags)
    except (OpError, ValueError):
        return None
    entry = httpsys.get(key)
    wildcard = ("*", "0.0.0.0")  # noqa: S104 - binding text, not a socket address
    if entry is None and not flags & (BINDING_SNI | SSL_FLAG_CENTRAL_STORE) and ip not in wildcard:
        # HTTP.sys falls back to the 0.0.0.0 entry of the port.
        entry = httpsys.get(f"ipport=0.0.0.0:{port}")
    if entry is None:
        return None  # no HTTP.sys SSL binding: nothing can serve it
    return Binding(
        site=site,
        protocol="https",
        binding_information=info,
        ssl_flags=flags,
        certificate_hash=str(entry.get("certificate_hash", "")).upper(),
        certificate_store=str(entry.get("certificate_store", "My")),
        client_cert_negotiation=bool(entry.get("client_cert_negotiation"))
        or bool(flags & BINDING_NEGOTIATE_CLIENT_CERT),
        verify_client_cert_revocation=_bool(entry.get("verifyclientcertrevocation"), True),
        disable_tls13=_bool(entry.get("disabletls13"), False),
    )


def read_bindings(session: Session) -> list[Binding]:
    """The site bindings the front serves: https ones with their HTTP.sys SSL binding (those
    without one cannot serve), and http ones."""
    out: list[Binding] = []
    httpsys = session.httpsys
    for site in session.apphost.site_elements():
        name = str(site.get("name", ""))
        for b in session.apphost.bindings(site):
            protocol = str(b.get("protocol", "")).lower()
            if protocol == "https":
                found = _https_binding(name, b, httpsys)
                if found is not None:
                    out.append(found)
            elif protocol == "http":
                info = str(b.get("bindingInformation", ""))
                with contextlib.suppress(OpError, ValueError):
                    parse_binding_information(info, 0)
                    out.append(Binding(name, "http", info, 0))
    return out


def _decrypt(session: Session, value: str | None) -> str | None:
    """The plain text of an encrypted attribute (None when it is not this host's)."""
    if value is None:
        return None
    plain = session.key.decrypt(value)
    return plain if plain is not None or value.startswith("[enc:") else value


def read_site(session: Session, site: str) -> SiteView:
    apphost = session.apphost
    ssl_attrs = apphost.effective(schema.section(SECTION_SSL), site)["attributes"]
    anon = apphost.effective(schema.section(SECTION_ANONYMOUS), site)["attributes"]
    mapping = apphost.effective(schema.section(SECTION_MAPPING), site)
    attrs = mapping["attributes"]
    one_to_one = tuple(
        OneToOne(
            certificate=str(item["attributes"].get("certificate", "")),
            user_name=str(item["attributes"].get("userName", "")),
            password=_decrypt(session, item["attributes"].get("password")),
            enabled=_bool(item["attributes"].get("enabled"), True),
        )
        for item in mapping["children"].get("oneToOneMappings", {}).get("items", [])
    )
    many_to_one = tuple(
        ManyToOne(
            name=str(item["attributes"].get("name", "")),
            enabled=_bool(item["attributes"].get("enabled"), True),
            deny=str(item["attributes"].get("permissionMode", "Allow")).lower() == "deny",
            user_name=str(item["attributes"].get("userName", "")),
            password=_decrypt(session, item["attributes"].get("password")),
            rules=tuple(
                Rule(
                    field=str(rule["attributes"].get("certificateField", "")),
                    sub_field=str(rule["attributes"].get("certificateSubField", "")),
                    criteria=str(rule["attributes"].get("matchCriteria", "")),
                    case_sensitive=_bool(rule["attributes"].get("compareCaseSensitive"), True),
                )
                for rule in item["children"].get("rules", {}).get("items", [])
            ),
        )
        for item in mapping["children"].get("manyToOneMappings", {}).get("items", [])
    )
    roots = session.stores.certificates("Root")
    return SiteView(
        site=site,
        computer=session.computer,
        ssl_flags=_flags(str(ssl_attrs.get("sslFlags", "None"))),
        anonymous_enabled=_bool(anon.get("enabled"), True),
        anonymous_user=str(anon.get("userName", "IUSR")),
        anonymous_password=_decrypt(session, anon.get("password")),
        mapping_enabled=_bool(attrs.get("enabled"), False) and session.feature("Web-Cert-Auth"),
        one_to_one_enabled=_bool(attrs.get("oneToOneCertificateMappingsEnabled"), True),
        many_to_one_enabled=_bool(attrs.get("manyToOneCertificateMappingsEnabled"), True),
        one_to_one=one_to_one,
        many_to_one=many_to_one,
        roots=tuple(roots),
        intermediates=tuple(session.stores.certificates("CA")),
        disallowed=tuple(session.stores.certificates("Disallowed")),
        # The seed's check (Issuer -ne Subject): KB 2802568.
        non_self_signed_roots=tuple(trust.thumbprint(r) for r in roots if r.issuer != r.subject),
        send_trusted_issuer_list=int(session.facts.get("send_trusted_issuer_list", 0)) == 1,
        crls=session.state.published_crls(),
        cdp_reachable=session.state.cdp_reachable(),
        state=session.state,
        logon_method=str(attrs.get("logonMethod", "ClearText")),
        default_logon_domain=str(attrs.get("defaultLogonDomain", "")),
        anonymous_logon_method=str(anon.get("logonMethod", "ClearText")),
    )


# --- IIS's decision ------------------------------------------------------------------------


@dataclass(frozen=True)
class Decision:
    status: int
    substatus: int = 0
    user: str | None = None
    auth: Auth | None = None
    hresult: str | None = None
    detail: str = ""

    def body(self, site: str, certificate: str | None, tls: str | None) -> dict[str, Any]:
        return {
            "status": self.status,
            "substatus": self.substatus,
            "user": self.user,
            "auth": self.auth,
            "hresult": self.hresult,
            "site": site,
            "certificate": certificate,
            "tls": tls,
            "detail": self.detail,
        }


# IIS's names for the RDNs a many-to-one rule can name (and the spellings IIS Manager
# accepts for them), read from the certificate by the simulator itself.
_SUB_FIELDS: dict[str, x509.ObjectIdentifier] = {
    "CN": NameOID.COMMON_NAME,
    "O": NameOID.ORGANIZATION_NAME,
    "OU": NameOID.ORGANIZATIONAL_UNIT_NAME,
    "C": NameOID.COUNTRY_NAME,
    "L": NameOID.LOCALITY_NAME,
    "S": NameOID.STATE_OR_PROVINCE_NAME,
    "E": NameOID.EMAIL_ADDRESS,
}
_SUB_FIELD_ALIASES = {"ST": "S", "EMAILADDRESS": "E", "EMAIL": "E"}


def _rdn_values(cert: x509.Certificate, field_name: str, sub_field: str) -> list[str]:
    which = field_name.strip().lower()
    if which not in ("subject", "issuer"):
        return []
    name = cert.subject if which == "subject" else cert.issuer
    sub = sub_field.strip().upper()
    oid = _SUB_FIELDS.get(_SUB_FIELD_ALIASES.get(sub, sub))
    if oid is None:
        return []
    return [str(a.value) for a in name.get_attributes_for_oid(oid)]


def _rule_matches(rule: Rule, cert: x509.Certificate) -> bool:
    pattern = rule.criteria
    for value in _rdn_values(cert, rule.field, rule.sub_field):
        if rule.case_sensitive:
            if fnmatch.fnmatchcase(value, pattern):
                return True
        elif fnmatch.fnmatchcase(value.lower(), pattern.lower()):
            return True
    return False


def _wildcard_only(pattern: str) -> str:
    # IIS rules know only '*'; fnmatch would also treat '?' and '[...]' as wildcards.
    return re.sub(r"([?\[\]])", r"[\1]", pattern)


_BASE64_RUN = re.compile(r"[A-Za-z0-9+/]*")


def _der_total(data: bytes) -> int | None:
    """Length of the outer DER element from its header; None if the header is cut short."""
    if len(data) < 2:
        return None
    first = data[1]
    if first < 0x80:
        return 2 + first
    count = first & 0x7F
    if count == 0 or count > 4 or len(data) < 2 + count:
        return None if len(data) < 2 + count else -1
    return 2 + count + int.from_bytes(data[2 : 2 + count], "big")


def blob_problem(blob: str) -> str | None:
    """The CryptoAPI code IIS reports for a stored one-to-one blob it cannot decode, or None.

    The blob is decoded as stored, nothing cleaned up (FACTS, "IIS configuration": a
    truncated or badly joined blob is 401.1 with 0x80093102, the "bad tag" variant
    0x8009310B): decoding stops at the first character that is not base64 (a line break or
    a space left by a copy-paste), so what decodes is the start of the DER. A DER element
    longer than the data is CRYPT_E_ASN1_EOD (cut short); data that does not start with a
    SEQUENCE tag (PEM armour, garbage) or is not a certificate is CRYPT_E_ASN1_BADTAG.
    """
    run = _BASE64_RUN.match(blob)
    text = run.group(0) if run else ""
    whole = text[: len(text) // 4 * 4]
    rest = text[len(whole) :]
    data = base64.b64decode(whole)
    if len(rest) >= 2:
        data += base64.b64decode(rest + "=" * (4 - len(rest)))
    bad_tag, eod = f"0x{HR_ASN1_BADTAG & 0xFFFFFFFF:08X}", f"0x{HR_ASN1_EOD & 0xFFFFFFFF:08X}"
    if data[:1] != b"\x30":
        return bad_tag
    total = _der_total(data)
    if total is None or total > len(data):
        return eod
    if total < 0:
        return bad_tag
    try:
        x509.load_der_x509_certificate(data[:total])
    except ValueError:
        return bad_tag
    return None


def _logon(
    view: SiteView, user_name: str, password: str | None, anonymous: bool = False
) -> tuple[str | None, str | None]:
    """IIS's LogonUser with the section's logonMethod and defaultLogonDomain, through the
    host's accounts (the attempt counts there): (DOMAIN\\user, None) or (None, HRESULT)."""
    method = view.anonymous_logon_method if anonymous else view.logon_method
    domain = "" if anonymous else view.default_logon_domain
    code, name = view.state.logon(user_name, password or "", LOGON_TYPES.get(method, 8), domain)
    if code:
        return None, f"0x{0x80070000 | code:08X}"
    return f"{view.computer}\\{name or bare_name(user_name, view.computer)}", None


def _anonymous(view: SiteView) -> Decision:
    if not view.anonymous_enabled:
        return Decision(401, 2, detail="no mapping matched and anonymous access is disabled")
    user = view.anonymous_user
    well_known = WELL_KNOWN.get(user.lower())
    if well_known is not None:
        return Decision(200, 0, well_known, "anonymous")
    if user == "":
        return Decision(200, 0, f"IIS APPPOOL\\{view.site}", "anonymous")
    who, hresult = _logon(view, user, view.anonymous_password, anonymous=True)
    if who is None:
        return Decision(401, 1, None, None, hresult, "the anonymous user cannot log on")
    return Decision(200, 0, who, "anonymous")


def _load_chain(ders: Sequence[bytes]) -> list[x509.Certificate]:
    out: list[x509.Certificate] = []
    for data in ders:
        with contextlib.suppress(ValueError):
            out.append(x509.load_der_x509_certificate(data))
    return out


def decide(
    view: SiteView,
    cert_der: bytes | None,
    sent: Sequence[bytes] = (),
    *,
    secure: bool = True,
    check_revocation: bool = True,
    at: dt.datetime | None = None,
) -> Decision:
    """IIS's answer for a request to ``view.site`` with this client certificate (and the
    intermediates the client sent), over https (``secure``) or plain http."""
    if not secure:
        # IIS's SSL check on a plain request: Ssl128 is 403.5, Ssl 403.4 (Microsoft: "The
        # HTTP status code in IIS"); with no TLS there is no client certificate at all.
        if view.ssl_flags & SSL_FLAG_128:
            return Decision(403, 5, detail="the site requires SSL with a 128-bit key (Ssl128)")
        if view.ssl_flags & SSL_FLAG_SSL:
            return Decision(403, 4, detail="the site requires SSL (sslFlags Ssl)")
        return _anonymous(view)
    if not view.negotiates_cert:
        cert_der = None  # IIS never asks HTTP.sys for it: whatever the handshake carried
    cert: x509.Certificate | None = None
    if cert_der is not None:
        if view.non_self_signed_roots and view.send_trusted_issuer_list:
            cert_der = None  # the broken issuer list makes clients send nothing
        else:
            try:
                cert = x509.load_der_x509_certificate(cert_der)
            except ValueError as exc:
                return Decision(403, 16, hresult=HR_CERT_SIGNATURE, detail=str(exc))
    if cert is None:
        if view.requires_cert:
            return Decision(403, 7, detail="a client certificate is required")
        return _anonymous(view)

    if view.non_self_signed_roots:
        return Decision(
            403,
            16,
            hresult=HR_CERT_UNTRUSTED_ROOT,
            detail="LocalMachine\\Root holds non-self-signed certificates "
            f"({', '.join(view.non_self_signed_roots)}); see KB 2802568",
        )
    verdict = trust.decide_trust(
        cert, _load_chain(sent), view.roots, view.intermediates, view.disallowed, at=at
    )
    if not verdict.ok:
        return Decision(403, verdict.substatus, hresult=verdict.hresult, detail=verdict.detail)
    if check_revocation:
        fetch = trust.crl_fetcher(view.crls, view.cdp_reachable)
        revoked = trust.check_revocation(verdict.path, fetch, at)
        if not revoked.ok:
            return Decision(403, 13, hresult=revoked.hresult, detail=revoked.detail)

    if view.mapping_enabled:
        broken: str | None = None
        presented = trust.blob(cert)
        if view.one_to_one_enabled:
            for one in view.one_to_one:
                if not one.enabled:
                    continue
                if one.certificate == presented:
                    who, hresult = _logon(view, one.user_name, one.password)
                    if who is None:
                        return Decision(
                            401, 1, None, None, hresult, "the mapped user cannot log on"
                        )
                    return Decision(200, 0, who, "one-to-one")
                broken = broken or blob_problem(one.certificate)
        if view.many_to_one_enabled:
            for many in view.many_to_one:
                if not many.enabled:
                    continue
                rules = [
                    Rule(r.field, r.sub_field, _wildcard_only(r.criteria), r.case_sensitive)
                    for r in many.rules
                ]
                if not all(_rule_matches(r, cert) for r in rules):
                    continue
                if many.deny:
                    return Decision(403, 12, detail=f"many-to-one mapping '{many.name}' denies")
                who, hresult = _logon(view, many.user_name, many.password)
                if who is None:
                    return Decision(401, 1, None, None, hresult, "the mapped user cannot log on")
                return Decision(200, 0, who, "many-to-one")
        if broken is not None:
            # IIS decodes the stored blobs; a damaged one (meant for this certificate, as
            # nothing else matched) surfaces as 401.1 with the CryptoAPI code. Unconfirmed
            # whether IIS reports it even when another mapping matches: here it does not.
            return Decision(401, 1, None, None, broken, "a one-to-one mapping holds a bad blob")
    return _anonymous(view)


# --- TLS contexts ----------------------------------------------------------------------------


@dataclass(frozen=True)
class _CtxKey:
    store: str
    thumbprint: str
    stamp: tuple[int, ...]
    mode: CertMode
    tls13: bool
    roots_stamp: tuple[int, ...]


class _Contexts:
    """Server SSLContexts, rebuilt only when the certificate, mode or TLS range changes."""

    def __init__(self, state: HostState, workdir: Path) -> None:
        self.state = state
        self.workdir = workdir
        self._lock = threading.Lock()
        self._cache: dict[_CtxKey, ssl.SSLContext] = {}

    def _stamp(self, *paths: Path) -> tuple[int, ...]:
        out: list[int] = []
        for p in paths:
            try:
                st = p.stat()
                out += [st.st_mtime_ns, st.st_size]
            except FileNotFoundError:
                out += [0, 0]
        return tuple(out)

    def get(self, binding: Binding, mode: CertMode, tls13: bool) -> ssl.SSLContext | None:
        store_dir = self.state.certstore / binding.certificate_store
        cer = store_dir / f"{binding.certificate_hash}.cer"
        keyfile = cer.with_suffix(".key")
        if not cer.exists() or not keyfile.exists():
            return None
        roots_stamp: tuple[int, ...] = ()
        if _LIBSSL is None and mode != "none":
            roots_stamp = self._dir_stamp("Root") + self._dir_stamp("CA")
        key = _CtxKey(
            binding.certificate_store,
            binding.certificate_hash,
            self._stamp(cer, keyfile),
            mode,
            tls13,
            roots_stamp,
        )
        with self._lock:
            ctx = self._cache.get(key)
            if ctx is None:
                ctx = self._build(cer, keyfile, mode, tls13)
                # Drop contexts of replaced files; a few live variants per binding remain.
                self._cache = {
                    k: v
                    for k, v in self._cache.items()
                    if k.thumbprint != key.thumbprint or k.stamp == key.stamp
                }
                self._cache[key] = ctx
            return ctx

    def _dir_stamp(self, store: str) -> tuple[int, ...]:
        return self._stamp(*sorted((self.state.certstore / store).glob("*.cer")))

    def _build(self, cer: Path, keyfile: Path, mode: CertMode, tls13: bool) -> ssl.SSLContext:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        if not tls13:
            ctx.maximum_version = ssl.TLSVersion.TLSv1_2
        cert = x509.load_der_x509_certificate(cer.read_bytes())
        pem = self.workdir / f"{cer.stem}.pem"
        pem.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        # The key stays where the store keeps it (0600); only the public PEM is copied.
        ctx.load_cert_chain(str(pem), str(keyfile))
        if mode == "none":
            return ctx
        if _accept_all_client_certs(ctx):
            if mode == "after":
                ctx.verify_mode = ssl.CERT_NONE
                ctx.sni_callback = _ask_on_tls12
            return ctx
        if not _HOOK_WARNED.is_set():
            _HOOK_WARNED.set()
            log.warning(
                "cannot install a TLS verify callback: untrusted client certificates will "
                "fail in the handshake instead of answering 403.16"
            )
        if mode == "handshake":
            bundle = self.workdir / "client-trust.pem"
            chunks = [
                x509.load_der_x509_certificate(p.read_bytes()).public_bytes(
                    serialization.Encoding.PEM
                )
                for store in ("Root", "CA")
                for p in sorted((self.state.certstore / store).glob("*.cer"))
            ]
            bundle.write_bytes(b"".join(chunks))
            if chunks:
                ctx.load_verify_locations(str(bundle))
            ctx.verify_flags |= 0x200000 | ssl.VERIFY_X509_PARTIAL_CHAIN  # NO_CHECK_TIME
            ctx.verify_mode = ssl.CERT_OPTIONAL
        return ctx


# --- HTTP ------------------------------------------------------------------------------------


class _Server(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True
    front: HttpsFront
    binding_key: tuple[str, str, str]

    def handle_error(self, request: Any, client_address: Any) -> None:
        # Failed handshakes and resets are answers here, not server errors.
        exc = sys.exc_info()[1]
        if isinstance(exc, (ConnectionError, TimeoutError, ssl.SSLError, OSError, ValueError)):
            log.debug("connection from %s ended: %s", client_address, exc)
            return
        log.exception("HTTPS front: request from %s failed", client_address)


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    protocol_version = "HTTP/1.1"
    timeout = 15
    server_version = "Microsoft-IIS/10.0"

    tls: ssl.SSLSocket | None = None
    reset_after_request = False
    tls13_failure = False
    client_der: bytes | None = None
    client_chain: tuple[bytes, ...] = ()

    def setup(self) -> None:
        front = self.server.front
        self.request.settimeout(self.timeout)
        if self.server.binding_key[1] == "http":
            super().setup()  # plain http: no TLS, no client certificate
            return
        plan = front.plan_connection(self.server.binding_key)
        if plan is None:
            self._reset(self.request)
            raise ConnectionAbortedError("binding no longer served")
        ctx, mode = plan
        try:
            self.tls = ctx.wrap_socket(self.request, server_side=True)
        except (ssl.SSLError, OSError) as exc:
            log.info("TLS handshake with %s failed: %s", self.client_address[0], exc)
            raise ConnectionAbortedError("handshake failed") from None
        self.request = self.connection = self.tls
        version = self.tls.version()
        self.client_der = self.tls.getpeercert(binary_form=True)
        if self.client_der is not None:
            self.client_chain = tuple(c for c in peer_chain(self.tls) if c != self.client_der)
        if mode == "after" and version == "TLSv1.3" and self.client_der is None:
            # IIS would renegotiate for the certificate; TLS 1.3 forbids that.
            self.tls13_failure = True
        super().setup()

    def handle(self) -> None:
        with contextlib.suppress(ConnectionError, TimeoutError, ssl.SSLError, OSError, ValueError):
            super().handle()

    def finish(self) -> None:
        with contextlib.suppress(OSError, ValueError):
            super().finish()
        if self.tls is not None:
            with contextlib.suppress(OSError, ValueError):
                self.tls.close()

    def _reset(self, sock: socket.socket) -> None:
        # SO_LINGER 0: close with RST, which clients see as "connection reset".
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        with contextlib.suppress(OSError):
            sock.close()

    def do_GET(self) -> None:
        self._answer(send_body=True)

    def do_HEAD(self) -> None:
        self._answer(send_body=False)

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        if length:
            self.rfile.read(min(length, 1 << 20))
        self._answer(send_body=True)

    def _answer(self, send_body: bool) -> None:
        front = self.server.front
        tls = self.tls.version() if self.tls is not None else None
        result = front.answer(
            self.server.binding_key, self.client_der, self.tls13_failure, self.client_chain
        )
        if result is None:  # Windows Server 2022: the connection is reset
            self.close_connection = True
            if self.tls is not None:
                self._reset(self.tls)
            return
        site, decision, thumb = result
        body = json.dumps(decision.body(site, thumb, tls)).encode("utf-8")
        self.send_response(decision.status)
        self.send_header("Content-Type", "application/json; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.send_header("X-IIS-Substatus", str(decision.substatus))
        if decision.hresult:
            self.send_header("X-IIS-HResult", decision.hresult)
        self.send_header("Connection", "close")
        self.end_headers()
        self.close_connection = True
        if send_body:
            self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("%s %s", self.client_address[0], format % args)


@dataclass
class _Listener:
    binding: Binding
    server: _Server
    thread: threading.Thread

    @property
    def url(self) -> str:
        return f"{self.binding.protocol}://{LOOPBACK}:{self.server.server_address[1]}/"


class HttpsFront:
    """Serves every https and http binding of the state folder on loopback (see the module
    docstring).

    ``on_change`` is called with :meth:`urls` (the https ones) whenever the set of listeners
    changes (the serve command uses it to keep endpoint.json's ``sites`` current).
    """

    def __init__(
        self,
        state_dir: str | os.PathLike[str],
        *,
        poll_interval: float = 0.25,
        on_change: Callable[[dict[str, list[str]]], None] | None = None,
    ) -> None:
        self.state = HostState(Path(state_dir))
        self.poll_interval = poll_interval
        self.on_change = on_change
        self._lock = threading.RLock()
        self._listeners: dict[tuple[str, str, str], _Listener] = {}
        self._stop = threading.Event()
        self._watcher: threading.Thread | None = None
        self._workdir: tempfile.TemporaryDirectory[str] | None = None
        self._contexts: _Contexts | None = None
        self._stamp: tuple[int, ...] = ()

    # --- lifecycle ------------------------------------------------------------------

    def start(self) -> None:
        with self._lock:
            if self._watcher is not None:
                return
            self._workdir = tempfile.TemporaryDirectory(prefix="iis-front-")
            self._contexts = _Contexts(self.state, Path(self._workdir.name))
            self._stop.clear()
            self.sync()
            self._watcher = threading.Thread(
                target=self._watch, name="https-front-watch", daemon=True
            )
            self._watcher.start()

    def stop(self) -> None:
        with self._lock:
            self._stop.set()
            watcher, self._watcher = self._watcher, None
        if watcher is not None:
            watcher.join(timeout=5)
        with self._lock:
            for listener in self._listeners.values():
                self._close(listener)
            self._listeners.clear()
            if self._workdir is not None:
                self._workdir.cleanup()
                self._workdir = None

    def __enter__(self) -> HttpsFront:
        self.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self.stop()

    def urls(self, protocol: str = "https") -> dict[str, list[str]]:
        """{site name: ["https://127.0.0.1:<port>/", ...]}, one URL per served binding of
        ``protocol`` ("https", or "http" for the plain bindings)."""
        with self._lock:
            out: dict[str, list[str]] = {}
            for listener in self._listeners.values():
                if listener.binding.protocol == protocol:
                    out.setdefault(listener.binding.site, []).append(listener.url)
            return {site: sorted(urls) for site, urls in sorted(out.items())}

    def bindings(self) -> dict[str, Binding]:
        """{url: binding} of the listeners, for callers that need the binding details."""
        with self._lock:
            return {listener.url: listener.binding for listener in self._listeners.values()}

    # --- following the state ----------------------------------------------------------

    def _files_stamp(self) -> tuple[int, ...]:
        out: list[int] = []
        for path in (self.state.apphost, self.state.httpsys):
            try:
                st = path.stat()
                out += [st.st_mtime_ns, st.st_size, st.st_ino]
            except FileNotFoundError:
                out += [0, 0, 0]
        return tuple(out)

    def _watch(self) -> None:
        while not self._stop.wait(self.poll_interval):
            if self._files_stamp() != self._stamp:
                try:
                    self.sync()
                except Exception:
                    log.exception("the HTTPS front could not follow a state change")

    def sync(self) -> bool:
        """Open listeners for new bindings, close those of removed ones; True if changed."""
        with self._lock:
            self._stamp = self._files_stamp()
            if not self.state.apphost.exists():
                wanted: dict[tuple[str, str, str], Binding] = {}
            else:
                with self.state.locked():
                    wanted = {b.key: b for b in read_bindings(Session(self.state))}
            changed = False
            for key in list(self._listeners):
                if key not in wanted:
                    self._close(self._listeners.pop(key))
                    changed = True
            for key, binding in wanted.items():
                current = self._listeners.get(key)
                if current is None:
                    self._listeners[key] = self._open(binding)
                    changed = True
                elif current.binding != binding:
                    current.binding = binding  # same port; the next connection uses it
            urls = self.urls()
        if changed and self.on_change is not None:
            self.on_change(urls)
        return changed

    def _open(self, binding: Binding) -> _Listener:
        server = _Server((LOOPBACK, 0), _Handler, bind_and_activate=True)
        server.front = self
        server.binding_key = binding.key
        thread = threading.Thread(
            target=server.serve_forever,
            kwargs={"poll_interval": 0.2},
            name=f"front {binding.protocol} {binding.site} {binding.binding_information}",
            daemon=True,
        )
        thread.start()
        log.info(
            "serving %s (%s %s) on %s",
            binding.site,
            binding.protocol,
            binding.binding_information,
            server.server_address,
        )
        return _Listener(binding, server, thread)

    @staticmethod
    def _close(listener: _Listener) -> None:
        listener.server.shutdown()
        listener.server.server_close()
        listener.thread.join(timeout=5)

    # --- per connection / request -------------------------------------------------------

    def _binding(self, key: tuple[str, str, str]) -> Binding | None:
        with self._lock:
            listener = self._listeners.get(key)
            return listener.binding if listener is not None else None

    def plan_connection(self, key: tuple[str, str, str]) -> tuple[ssl.SSLContext, CertMode] | None:
        """The TLS context for a new connection, from the state as it is now."""
        binding = self._binding(key)
        contexts = self._contexts
        if binding is None or contexts is None:
            return None
        with self.state.locked():
            session = Session(self.state)
            fresh = {b.key: b for b in read_bindings(session)}.get(key)
            if fresh is None:
                return None
            view_flags = read_site(session, fresh.site).ssl_flags
            facts = session.facts
        tls13 = bool(facts.get("tls13_enabled", True)) and not fresh.disable_tls13
        # IIS asks for a certificate after the handshake only for SslNegotiateCert.
        wants = bool(view_flags & SSL_FLAG_NEGOTIATE)
        mode: CertMode = (
            "handshake" if fresh.client_cert_negotiation else ("after" if wants else "none")
        )
        ctx = contexts.get(fresh, mode, tls13)
        return None if ctx is None else (ctx, mode)

    def answer(
        self,
        key: tuple[str, str, str],
        cert_der: bytes | None,
        tls13_failure: bool,
        chain: Sequence[bytes] = (),
    ) -> tuple[str, Decision, str | None] | None:
        """IIS's answer to one request (site, decision, client certificate thumbprint);
        None means "reset the connection"."""
        binding = self._binding(key)
        if binding is None:
            return None
        with self.state.locked():
            session = Session(self.state)
            # The HTTP.sys record as it is now (its revocation setting may have changed).
            binding = {b.key: b for b in read_bindings(session)}.get(key, binding)
            view = read_site(session, binding.site)
            build = int(session.facts.get("os_build", 20348))
        if tls13_failure and view.negotiates_cert:
            if build >= WINDOWS_2025_BUILD:
                return (
                    binding.site,
                    Decision(
                        500,
                        0,
                        hresult=HR_NOT_SUPPORTED,
                        detail="client certificate renegotiation is not possible on TLS 1.3",
                    ),
                    None,
                )
            log.info("%s: TLS 1.3 without handshake negotiation: connection reset", binding.site)
            return None
        decision = decide(
            view,
            cert_der,
            chain,
            secure=binding.secure,
            check_revocation=binding.verify_client_cert_revocation,
        )
        thumb: str | None = None
        if cert_der is not None and binding.secure:
            with contextlib.suppress(ValueError):
                thumb = trust.thumbprint(x509.load_der_x509_certificate(cert_der))
        log.info(
            "%s: %s.%s user=%s cert=%s %s",
            binding.site,
            decision.status,
            decision.substatus,
            decision.user,
            thumb,
            decision.hresult or "",
        )
        return binding.site, decision, thumb


def publish_sites(
    state_dir: str | os.PathLike[str],
    sites: dict[str, list[str]],
    http_sites: dict[str, list[str]] | None = None,
) -> None:
    """Write ``sites`` (https URLs) and ``http_sites`` into DIR/endpoint.json (kept 0600: it
    also holds the admin password)."""
    path = Path(state_dir) / "endpoint.json"
    data = read_json(path, {}) or {}
    data["sites"] = sites
    if http_sites is not None:
        data["http_sites"] = http_sites
    write_json(path, data, 0o600)


def start_published(state_dir: str | os.PathLike[str]) -> HttpsFront:
    """A started front that keeps endpoint.json's ``sites`` and ``http_sites`` current (the
    serve command's)."""
    front = HttpsFront(state_dir)
    front.on_change = lambda sites: publish_sites(state_dir, sites, front.urls("http"))
    front.start()
    publish_sites(state_dir, front.urls(), front.urls("http"))
    return front


__all__ = [
    "Binding",
    "Decision",
    "HttpsFront",
    "SiteView",
    "decide",
    "publish_sites",
    "read_bindings",
    "read_site",
    "start_published",
]
