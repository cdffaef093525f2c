"""The simulator's HTTPS front: each site binding served on loopback with IIS's
client-certificate semantics, so "does this certificate get in, and as whom?" is testable.

For every ``<binding protocol="https">`` of applicationHost.config that has an HTTP.sys
SSL binding in httpsys.json, a listener on ``127.0.0.1:<ephemeral port>`` presents the
bound certificate (and key) from the My store; every ``<binding protocol="http">`` gets a
plain listener. The state folder is re-read for every request, and the set of listeners
follows changes to applicationHost.config and httpsys.json, so a ``pulumi up`` takes
effect without a restart.

Per request, at the URL's configuration path (``<location path="site/app/folder">`` levels
of applicationHost.config, then the site's web.config files written with
target="webconfig", merged as IIS merges them; see ``read_site``):

0. Plain http: ``access@sslFlags`` with Ssl128 answers 403.5, with Ssl 403.4 (IIS's
   "SSL required" substatuses); client certificates play no part (there is no TLS).
1. The client certificate is asked for in the TLS handshake when the HTTP.sys binding
   negotiates it (``clientcertnegotiation=enable``; the binding's sslFlags 128 only on
   Server 2025, build 26100: earlier builds ignore it). Otherwise IIS asks after reading
   the request, when the URL's ``access@sslFlags`` has SslNegotiateCert. On TLS 1.2 that is
   a real renegotiation here (``renegotiate_for_certificate``: SSL_renegotiate through
   ctypes, which Python's ssl does not expose): the body is read first, and one larger
   than ``serverRuntime@uploadReadAheadSize`` (49152 by default) is answered 413 without
   asking; a client that refuses the renegotiation (HTTP/2 clients must; or renegotiation
   turned off) gets its connection reset. TLS 1.3 forbids renegotiation, so the connection
   is reset (Windows Server 2022) or answered 500 with 0x80070032 (Server 2025, os_build
   >= 26100). TLS versions follow the OS build: no TLS 1.3 before Server 2022 (20348).
   Emulated, not real: the reset after a refused renegotiation (HTTP.sys's exact reaction
   is not documented) and the front speaks HTTP/1.1 only (no ALPN h2).
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
   wrong name or password, 0x80070775 locked out, 0x80070569 logon right missing or
   denied, 0x80070533 disabled, 0x80070701 expired account, 0x8007052F blank password
   over the network, 0x80070773 must change the password, 0x80070532 expired password;
   accounts.py says in which order). Not modelled: IIS's logon token cache. IIS keeps a
   successful logon's token for UserTokenTTL (15 minutes by default, HKLM\\SYSTEM\\
   CurrentControlSet\\Services\\InetInfo\\Parameters), so on a real host a mapping keeps
   working for up to 15 minutes after its account's password changed, and a fixed stored
   password may still meet a cached failure; here every request logs on afresh
   (tests/simulator/test_front_accounts.py states it where a password changes).
6. No mapping matched: anonymous access (``anonymousAuthentication@enabled``) gives 200
   as its user (IUSR; an empty userName is the site's application pool identity, see
   pool_identity); otherwise 401.2 (server configuration denies logon).
7. Per path: the mapping section is read at the site only (mappings stored at an
   application or folder path are ignored); a section in a web.config along the path that
   applicationHost.config locks answers 500.19 0x80070021 to every request below it; a
   request that runs as a local account (mapped, or a local anonymous user) needs read
   access to the URL's physical folder by acl.json (nearest modelled folder; Allow/Deny
   ACEs of the account, its groups, Everyone, Authenticated Users), else 401.3. Built-in
   identities (IUSR, application pool identities) are not checked.

Not modelled: ClientAuthTrustMode 1/2, keep-alive (every answer closes the connection),
chunked request bodies.

The client certificate must reach the trust decision even when OpenSSL would reject it
(unknown CA, expired). Python 3.11's ``ssl`` has no verify callback, so an accept-all
callback is installed on the context's ``SSL_CTX`` through ctypes (``_ssl`` keeps an
existing callback when ``verify_mode`` changes); the intermediates the client sent are read
with ``SSL_get_peer_cert_chain``. If that is not possible (not CPython, no libssl found),
the front falls back to OpenSSL's own checks against Root + CA with time checks off;
untrusted certificates then fail in the handshake and a warning is logged once, and a
binding without handshake negotiation cannot renegotiate: its requests go on without a
certificate (403.7 where one is required).
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
import time
import urllib.parse
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from pathlib import Path, PureWindowsPath
from typing import Any, Literal, cast

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.x509.oid import NameOID

from iis_clientcert.host.contract import (
    LOGON_TYPES,
    SECTION_ANONYMOUS,
    SECTION_MAPPING,
    SECTION_SSL,
)
from iis_clientcert_simulator import iis_log, schema, trust
from iis_clientcert_simulator.accounts import WELL_KNOWN, bare_name, norm_folder
from iis_clientcert_simulator.apphost import Apphost, attrs, child, elements, merge
from iis_clientcert_simulator.endpoint import endpoint_file
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
# Windows Server 2022 (build 20348) is the first whose Schannel speaks TLS 1.3 (Microsoft:
# "TLS protocol version support"); 2016 (14393) and 2019 (17763) stop at TLS 1.2.
WINDOWS_2022_BUILD = 20348
# system.webServer/serverRuntime@uploadReadAheadSize's default (IIS_schema.xml).
UPLOAD_READ_AHEAD_DEFAULT = 49152
HR_ACCESS_DENIED = "0x80070005"
HR_LOCK_VIOLATION = "0x80070021"

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
            # A server-initiated TLS 1.2 renegotiation (what Python's ssl does not expose).
            for fn in (
                "SSL_renegotiate",
                "SSL_do_handshake",
                "SSL_renegotiate_pending",
                "SSL_in_init",
            ):
                getattr(lib, fn).argtypes = [ctypes.c_void_p]
                getattr(lib, fn).restype = ctypes.c_int
            lib.SSL_get_error.argtypes = [ctypes.c_void_p, ctypes.c_int]
            lib.SSL_get_error.restype = ctypes.c_int
            lib.SSL_peek.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int]
            lib.SSL_peek.restype = ctypes.c_int
            lib.ERR_clear_error.argtypes = []
            lib.ERR_clear_error.restype = None
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


_SSL_ERROR_WANT_READ = 2
_SSL_OP_NO_SESSION_RESUMPTION_ON_RENEGOTIATION = 0x00010000
_SSL_ERROR_WANT_WRITE = 3


def renegotiate_for_certificate(tls: ssl.SSLSocket, timeout: float) -> bool | None:
    """Ask a TLS 1.2 client for its certificate by a server-initiated renegotiation, as
    HTTP.sys does for IIS after reading the request (the client answers with a new
    handshake that carries the certificate). True when the new handshake completed, False
    when the client refused or broke it (an HTTP/2 client, one with renegotiation off),
    None when renegotiation cannot be done here (no libssl hook).

    Python's ssl has no SSL_renegotiate; it is called through ctypes on the connection's
    SSL*. The socket is non-blocking underneath (it has a timeout), so the handshake is
    driven with SSL_peek until OpenSSL reports it no longer pending."""
    lib = _LIBSSL
    ssl_ptr = _ssl_pointer(tls, tls.context)
    if lib is None or ssl_ptr is None:
        return None
    import select  # noqa: PLC0415 - only this path waits on the raw descriptor

    lib.SSL_set_verify(ssl_ptr, _SSL_VERIFY_PEER, _ACCEPT_ANY)
    fd = tls.fileno()
    deadline = time.monotonic() + timeout
    probe = ctypes.create_string_buffer(1)

    def wait(err: int) -> bool:
        left = deadline - time.monotonic()
        if left <= 0 or err not in (_SSL_ERROR_WANT_READ, _SSL_ERROR_WANT_WRITE):
            return False
        if err == _SSL_ERROR_WANT_READ:
            return bool(select.select([fd], [], [], left)[0])
        return bool(select.select([], [fd], [], left)[1])

    try:
        if lib.SSL_renegotiate(ssl_ptr) != 1:
            return False
        while True:  # sends the HelloRequest
            rc = lib.SSL_do_handshake(ssl_ptr)
            if rc == 1:
                break
            if not wait(lib.SSL_get_error(ssl_ptr, rc)):
                return False
        # The client's new handshake: pending until its ClientHello, in init until done.
        while lib.SSL_renegotiate_pending(ssl_ptr) or lib.SSL_in_init(ssl_ptr):
            rc = lib.SSL_peek(ssl_ptr, probe, 1)
            if rc > 0:
                # Application data instead of a handshake: the client ignored the request.
                return False
            err = lib.SSL_get_error(ssl_ptr, rc)
            if not (lib.SSL_renegotiate_pending(ssl_ptr) or lib.SSL_in_init(ssl_ptr)):
                break
            if not wait(err):
                return False
        return True
    finally:
        lib.ERR_clear_error()  # leave nothing for _ssl's next call to misreport


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
    # The identity of the site's application pool (an empty anonymous userName means it).
    pool_identity: str = ""
    # The URL's physical folder (for the read-access check: 401.3) and a locked section
    # found in a web.config along the path (500.19 on every request).
    physical_folder: str = ""
    locked_section: str | None = None
    upload_read_ahead_size: int = UPLOAD_READ_AHEAD_DEFAULT

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


def _https_binding(site: str, b: Any, httpsys: Any, build: int) -> Binding | None:
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
        # The binding's sslFlags 128 (negotiate the client certificate in the handshake)
        # exists on Server 2025 only; earlier IIS ignores it and only the HTTP.sys
        # record's clientcertnegotiation counts (FACTS, "IIS request semantics").
        client_cert_negotiation=bool(entry.get("client_cert_negotiation"))
        or (bool(flags & BINDING_NEGOTIATE_CLIENT_CERT) and build >= WINDOWS_2025_BUILD),
        verify_client_cert_revocation=_bool(entry.get("verifyclientcertrevocation"), True),
        disable_tls13=_bool(entry.get("disabletls13"), False),
    )


def read_bindings(session: Session) -> list[Binding]:
    """The site bindings the front serves: https ones with their HTTP.sys SSL binding (those
    without one cannot serve), and http ones."""
    out: list[Binding] = []
    httpsys = session.httpsys
    build = int(session.facts.get("os_build", WINDOWS_2022_BUILD))
    for site in session.apphost.site_elements():
        name = str(site.get("name", ""))
        for b in session.apphost.bindings(site):
            protocol = str(b.get("protocol", "")).lower()
            if protocol == "https":
                found = _https_binding(name, b, httpsys, build)
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


# processModel@identityType -> the account a worker process runs as (IIS docs,
# "Application Pool Identities"; IIS_schema.xml's enum, ApplicationPoolIdentity by default).
_POOL_ACCOUNTS = {
    "localsystem": "NT AUTHORITY\\SYSTEM",
    "localservice": "NT AUTHORITY\\LOCAL SERVICE",
    "networkservice": "NT AUTHORITY\\NETWORK SERVICE",
}


def pool_identity(apphost: Apphost, site: str) -> str:
    """Whom the site's root application pool runs as: IIS APPPOOL\\<pool> for
    ApplicationPoolIdentity, the built-in account, or the SpecificUser's userName. The pool
    is the root application's ``applicationPool``, else ``applicationDefaults``; the
    identity the pool's ``processModel``, else ``applicationPoolDefaults``."""
    pool = ""
    sites = apphost.sites_element()
    defaults = child(sites, "applicationDefaults")
    if defaults is not None:
        pool = attrs(defaults).get("applicationPool", "")
    found = apphost.find_site(site)
    for app in elements(found) if found is not None else ():
        if app.tag == "application" and attrs(app).get("path", "/") == "/":
            pool = attrs(app).get("applicationPool", pool)
    model: dict[str, str] = {}
    host = child(apphost.root, "system.applicationHost")
    pools = child(host, "applicationPools") if host is not None else None
    if pools is not None:
        pool_defaults = child(pools, "applicationPoolDefaults")
        if pool_defaults is not None and (pm := child(pool_defaults, "processModel")) is not None:
            model.update(attrs(pm))
        for add in elements(pools):
            named = add.tag == "add" and attrs(add).get("name", "").lower() == pool.lower()
            if named and (pm := child(add, "processModel")) is not None:
                model.update(attrs(pm))
    kind = model.get("identityType", "ApplicationPoolIdentity").lower()
    if kind == "specificuser":
        return model.get("userName", "")
    return _POOL_ACCOUNTS.get(kind, f"IIS APPPOOL\\{pool or site}")


def url_path(target: str) -> str:
    """The decoded path of a request target ("/app/page?x" -> "/app/page")."""
    return urllib.parse.unquote(urllib.parse.urlsplit(target).path or "/") or "/"


def config_path(site: str, path: str) -> str:
    """IIS's configuration path for a URL of ``site``: "shop" + "/app/x" -> "shop/app/x"."""
    parts = [p for p in path.replace("\\", "/").split("/") if p and p != "."]
    return "/".join([site, *parts])


def _web_config_levels(
    session: Session, section_schema: schema.SectionSchema, location: str
) -> list[Any]:
    """The section in the site's web.config files along ``location`` (written with
    target="webconfig"; they merge below applicationHost.config, as IIS's do)."""
    parts = location.split("/")
    out: list[Any] = []
    for depth in range(1, len(parts) + 1):
        config = session.webconfig("/".join(parts[:depth]), create=False)
        if config is not None:
            out.append(config.section_in(config.root, section_schema))
    return out


def _locked_in_web_config(session: Session, location: str) -> str | None:
    """A section set in a web.config along ``location`` that applicationHost.config locks
    (overrideMode Deny): IIS fails every request below it with 500.19 0x80070021
    (Microsoft: "HTTP Error 500.19 ... 0x80070021", the configuration section is locked
    at a parent level). Returns a description, or None."""
    parts = location.split("/")
    apphost = session.apphost
    for depth in range(1, len(parts) + 1):
        at = "/".join(parts[:depth])
        config = session.webconfig(at, create=False)
        if config is None:
            continue
        pending: list[tuple[str, Any]] = [(str(c.tag), c) for c in config.root if _is_el(c)]
        while pending:
            name, el = pending.pop()
            try:
                declared = apphost.override_mode_default(name)
            except OpError:
                pending += [(f"{name}/{c.tag}", c) for c in el if _is_el(c)]
                continue
            try:
                mode = apphost.override_mode(schema.section(name), at)
            except OpError:
                mode = declared  # a section the simulator's schema does not model
            if mode == "Deny":
                return f"{name} in the web.config of '{at}'"
    return None


def _is_el(node: Any) -> bool:
    return isinstance(node.tag, str)


def read_site(session: Session, site: str, path: str = "/") -> SiteView:
    """The configuration one request to ``path`` of ``site`` sees: sslFlags and anonymous
    access at the URL's configuration path (location paths of applications and folders,
    then the site's web.config files), the mappings at the site only."""
    apphost = session.apphost
    location = config_path(site, path)

    def effective(section_path: str) -> dict[str, Any]:
        found = schema.section(section_path)
        levels = apphost.levels(found, location) + _web_config_levels(session, found, location)
        return merge(found, levels)

    ssl_attrs = effective(SECTION_SSL)["attributes"]
    anon = effective(SECTION_ANONYMOUS)["attributes"]
    # IIS reads the certificate mapping section at the site only: mappings stored at an
    # application or folder path are ignored (FACTS, "IIS request semantics"; the mapping
    # module is configured per site: Microsoft, iisClientCertificateMappingAuthentication).
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
        pool_identity=pool_identity(apphost, site),
        physical_folder=_physical_folder(apphost, site, path),
        locked_section=_locked_in_web_config(session, location),
        upload_read_ahead_size=_upload_read_ahead(apphost, location),
    )


def _physical_folder(apphost: Any, site: str, path: str) -> str:
    """The folder a URL path maps to: the longest matching application + virtual directory
    of the site, then the rest of the path below its physicalPath."""
    element = apphost.find_site(site)
    if element is None:
        return ""
    wanted = [p for p in path.split("/") if p]
    best: tuple[int, str] = (-1, "")
    for app in element:
        if not _is_el(app) or app.tag != "application":
            continue
        for vdir in app:
            if not _is_el(vdir) or vdir.tag != "virtualDirectory":
                continue
            virtual = f"{app.get('path', '/').rstrip('/')}/{vdir.get('path', '/').strip('/')}"
            parts = [p for p in virtual.split("/") if p]
            same = [p.lower() for p in wanted[: len(parts)]] == [p.lower() for p in parts]
            if same and len(parts) > best[0]:
                best = (len(parts), str(vdir.get("physicalPath", "")))
    if best[0] < 0 or not best[1]:
        return ""
    return "\\".join([best[1].rstrip("\\"), *wanted[best[0] :]])


def _upload_read_ahead(apphost: Any, location: str) -> int:
    """serverRuntime@uploadReadAheadSize at the URL's configuration path (the nearest level
    that sets it; the simulator's schema does not model the section, so it is read raw)."""
    value = UPLOAD_READ_AHEAD_DEFAULT
    for container in apphost._chain(location, include_self=True):
        el = container
        for part in ("system.webServer", "serverRuntime"):
            el = (
                next((c for c in el if _is_el(c) and c.tag == part), None)
                if el is not None
                else None
            )
        if el is not None and el.get("uploadReadAheadSize") is not None:
            with contextlib.suppress(ValueError):
                value = int(str(el.get("uploadReadAheadSize")))
    return value


_READ_RIGHTS = ("fullcontrol", "modify", "readandexecute", "read")


def can_read(session: Session, folder: str, who: str) -> bool:
    """Whether ``who`` (COMPUTER\\name) may read ``folder`` by the simulator's ACLs
    (acl.json): the nearest modelled folder at or above it, its Allow and Deny ACEs for the
    account, its local groups, Everyone and Authenticated Users. A folder the model does
    not know is not checked."""
    if not folder:
        return True
    folders = session.folders
    path = norm_folder(folder)
    entry: dict[str, Any] | None = None
    while True:
        found = folders.get(path)
        if found["exists"]:
            entry = found
            break
        parent = str(PureWindowsPath(path).parent)
        if parent == path:
            return True
        path = parent
    computer = session.computer.lower()
    name = who.rsplit("\\", maxsplit=1)[-1].lower()
    record = session.accounts.user(name) or {}
    groups = [str(g).lower() for g in record.get("groups", [])]
    ids = {
        name,
        f"{computer}\\{name}",
        f".\\{name}",
        "everyone",
        "nt authority\\authenticated users",
    }
    for g in groups:
        ids |= {g, f"builtin\\{g}", f"{computer}\\{g}"}
    allowed = False
    for ace in entry["aces"]:
        if str(ace.get("identity", "")).lower() not in ids:
            continue
        rights = str(ace.get("rights", "")).lower().replace(" ", "").split(",")
        if not any(r in _READ_RIGHTS for r in rights):
            continue
        if str(ace.get("type", "Allow")).lower() == "deny":
            return False
        allowed = True
    return allowed


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


# The sub-fields a many-to-one rule can name: the ones IIS documents (iis-docs,
# iisClientCertificateMappingAuthentication/manyToOneMappings/add/rules/add:
# certificateSubField "CN", "OU", "O", "L", "S", "C"), spelled as documented. A rule with
# any other sub-field (E, ST, cn) never matches here: what IIS does with one is
# undocumented (docs/real-host.md, "Many-to-one rules"), and the product refuses them.
_SUB_FIELDS: dict[str, x509.ObjectIdentifier] = {
    "CN": NameOID.COMMON_NAME,
    "OU": NameOID.ORGANIZATIONAL_UNIT_NAME,
    "O": NameOID.ORGANIZATION_NAME,
    "L": NameOID.LOCALITY_NAME,
    "S": NameOID.STATE_OR_PROVINCE_NAME,
    "C": NameOID.COUNTRY_NAME,
}


def _rdn_values(cert: x509.Certificate, field_name: str, sub_field: str) -> list[str]:
    which = field_name.strip().lower()
    if which not in ("subject", "issuer"):
        return []
    name = cert.subject if which == "subject" else cert.issuer
    oid = _SUB_FIELDS.get(sub_field)
    if oid is None:
        return []
    # Every value of a repeated RDN (two OUs) is compared: one match is enough (unconfirmed
    # on a real host, docs/real-host.md).
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
        # An empty userName: requests run as the application pool's identity (IIS docs,
        # anonymousAuthentication: "set the userName to an empty string" for the pool).
        return Decision(200, 0, view.pool_identity or f"IIS APPPOOL\\{view.site}", "anonymous")
    who, hresult = _logon(view, user, view.anonymous_password, anonymous=True)
    if who is None:
        return Decision(401, 1, None, None, hresult, "the anonymous user cannot log on")
    return Decision(200, 0, who, "anonymous")


def _is_local(user: str, view: SiteView) -> bool:
    """A local account of the host (the identities with folder ACEs of their own), not a
    built-in one such as IUSR or an application pool identity."""
    domain, _, _name = user.rpartition("\\")
    return domain.lower() == view.computer.lower()


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
                # Not in the handshake: renegotiate_for_certificate asks after the request,
                # in a full handshake (a resumed session would carry no certificate).
                ctx.verify_mode = ssl.CERT_NONE
                ctx.options |= _SSL_OP_NO_SESSION_RESUMPTION_ON_RENEGOTIATION
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
    mode: CertMode = "none"
    tls_version: str | None = None
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
        self.mode = mode
        self.tls_version = version
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
        self._answer(send_body=True)

    def _read_body(self, limit: int = 1 << 24) -> int:
        """Read (and drop) the request body; its length."""
        length = int(self.headers.get("Content-Length") or 0)
        left = min(length, limit)
        while left > 0:
            chunk = self.rfile.read(min(left, 1 << 16))
            if not chunk:
                break
            left -= len(chunk)
        return length

    def _ask_after_request(self, path: str) -> Decision | bool:
        """IIS without handshake negotiation: the certificate is asked for only now, after
        the request was read, when the URL's sslFlags have SslNegotiateCert. False: the
        connection fails (reset); a Decision: answer it; True: go on."""
        front = self.server.front
        plan = front.after_request_plan(self.server.binding_key, path)
        if plan is None or not plan[0]:
            self._read_body()
            return True
        limit = plan[1]
        if self.tls_version == "TLSv1.3":
            # TLS 1.3 has no renegotiation (answered in HttpsFront.answer).
            self._read_body()
            self.tls13_failure = True
            return True
        # HTTP.sys holds the body read ahead while it renegotiates; a body larger than
        # serverRuntime@uploadReadAheadSize cannot be held: 413 (Microsoft: "serverRuntime";
        # KB "Client certificate ... 413 Request Entity Too Large").
        length = int(self.headers.get("Content-Length") or 0)
        if length > limit:
            self._read_body()
            return Decision(
                413,
                0,
                detail=f"request body of {length} bytes is over uploadReadAheadSize ({limit}) "
                "and the client certificate must be renegotiated",
            )
        self._read_body()
        assert self.tls is not None
        done = renegotiate_for_certificate(self.tls, self.timeout)
        if done is False:
            log.info("%s: the client refused TLS renegotiation", self.client_address[0])
            return False
        if done:
            self.client_der = self.tls.getpeercert(binary_form=True)
            if self.client_der is not None:
                self.client_chain = tuple(c for c in peer_chain(self.tls) if c != self.client_der)
        return True

    def _answer(self, send_body: bool) -> None:
        front = self.server.front
        path = url_path(self.path)
        early: Decision | None = None
        if self.tls is not None and self.mode == "after" and self.client_der is None:
            step = self._ask_after_request(path)
            if step is False:
                self.close_connection = True
                self._reset(self.tls)
                return
            if isinstance(step, Decision):
                early = step
        else:
            self._read_body()
        tls = self.tls.version() if self.tls is not None else None
        if early is not None:
            binding = front.bindings_by_key().get(self.server.binding_key)
            site = binding.site if binding is not None else self.server.binding_key[0]
            result: tuple[str, Decision, str | None] | None = (site, early, None)
        else:
            result = front.answer(
                self.server.binding_key,
                self.client_der,
                self.tls13_failure,
                self.client_chain,
                path=path,
            )
        if result is None:  # Windows Server 2022: the connection is reset
            self.close_connection = True
            if self.tls is not None:
                self._reset(self.tls)
            return
        site, decision, thumb = result
        front.log_request(site, decision, self)
        if front.iis_headers:
            body = json.dumps(decision.body(site, thumb, tls)).encode("utf-8")
            content_type = "application/json; charset=utf-8"
        else:
            body, content_type = _iis_page(decision.status), "text/html"
        self.send_response(decision.status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        if front.iis_headers:
            # Simulator-only: a real IIS says the substatus only in its log (iis_log.py).
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


# IIS's custom error pages for a remote client (errorMode="DetailedLocalOnly"): the status
# and its reason, never the substatus.
_IIS_REASONS: dict[int, str] = {
    401: "401 - Unauthorized: Access is denied due to invalid credentials.",
    403: "403 - Forbidden: Access is denied.",
    413: "413 - Request Entity Too Large",
    500: "500 - Internal server error.",
}


def _iis_page(status: int) -> bytes:
    if status == 200:
        return b"<!DOCTYPE html><html><head><title>IIS Windows Server</title></head></html>\r\n"
    reason = _IIS_REASONS.get(status, f"{status} - Error")
    return (
        '<!DOCTYPE html PUBLIC "-//W3C//DTD XHTML 1.0 Strict//EN">\r\n<html><head>'
        f'<title>{reason.split(":")[0]}</title></head><body><div id="header"><h1>Server '
        f'Error</h1></div><div id="content"><fieldset><h2>{reason}</h2></fieldset></div>'
        "</body></html>\r\n"
    ).encode()


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
        iis_headers: bool = True,
    ) -> None:
        self.state = HostState(Path(state_dir))
        # False: answer as a real IIS does (no X-IIS-Substatus, IIS's own error page); the
        # substatus is then only in the site's W3C log (site.log_tail).
        self.iis_headers = iis_headers
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

    def bindings_by_key(self) -> dict[tuple[str, str, str], Binding]:
        with self._lock:
            return {key: listener.binding for key, listener in self._listeners.items()}

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
            facts = session.facts
        # Schannel's TLS 1.3 arrived with Server 2022 (build 20348); 2016/2019 stop at 1.2.
        tls13 = (
            bool(facts.get("tls13_enabled", True))
            and not fresh.disable_tls13
            and int(facts.get("os_build", WINDOWS_2022_BUILD)) >= WINDOWS_2022_BUILD
        )
        # Without negotiation in the handshake IIS asks after reading the request (and
        # only for a URL whose sslFlags have SslNegotiateCert): _Handler._ask_after_request.
        mode: CertMode = "handshake" if fresh.client_cert_negotiation else "after"
        ctx = contexts.get(fresh, mode, tls13)
        return None if ctx is None else (ctx, mode)

    def after_request_plan(self, key: tuple[str, str, str], path: str) -> tuple[bool, int] | None:
        """For a connection without handshake negotiation: whether IIS asks for a client
        certificate for ``path`` (its sslFlags have SslNegotiateCert) and the
        uploadReadAheadSize that applies there."""
        binding = self._binding(key)
        if binding is None:
            return None
        with self.state.locked():
            view = read_site(Session(self.state), binding.site, path)
        if view.locked_section is not None:
            return False, view.upload_read_ahead_size  # 500.19 comes first
        return view.negotiates_cert, view.upload_read_ahead_size

    def log_request(self, site: str, decision: Decision, request: BaseHTTPRequestHandler) -> None:
        """One W3C log line for the request, in the site's W3SVC<id> folder (as IIS)."""
        with self.state.locked():
            found = Session(self.state).apphost.find_site(site)
        if found is None:
            return
        stem, _, query = request.path.partition("?")
        iis_log.write_entry(
            self.state.dir,
            int(found.get("id", "0") or 0),
            {
                "s-ip": LOOPBACK,
                "cs-method": request.command,
                "cs-uri-stem": stem,
                "cs-uri-query": query,
                "s-port": cast("tuple[str, int]", request.server.server_address)[1],
                "cs-username": decision.user if decision.status < 400 else None,
                "c-ip": request.client_address[0],
                "cs(User-Agent)": request.headers.get("User-Agent"),
                "cs(Referer)": request.headers.get("Referer"),
                "sc-status": decision.status,
                "sc-substatus": decision.substatus,
                "sc-win32-status": iis_log.win32_status(decision.hresult),
                "time-taken": 0,
            },
        )

    def answer(
        self,
        key: tuple[str, str, str],
        cert_der: bytes | None,
        tls13_failure: bool,
        chain: Sequence[bytes] = (),
        path: str = "/",
    ) -> tuple[str, Decision, str | None] | None:
        """IIS's answer to one request for ``path`` (site, decision, client certificate
        thumbprint); None means "reset the connection"."""
        binding = self._binding(key)
        if binding is None:
            return None
        with self.state.locked():
            session = Session(self.state)
            # The HTTP.sys record as it is now (its revocation setting may have changed).
            binding = {b.key: b for b in read_bindings(session)}.get(key, binding)
            view = read_site(session, binding.site, path)
            build = int(session.facts.get("os_build", WINDOWS_2022_BUILD))
        if view.locked_section is not None:
            # IIS cannot read the configuration of the path at all (Microsoft: "HTTP Error
            # 500.19 - Internal Server Error", error code 0x80070021).
            return (
                binding.site,
                Decision(
                    500,
                    19,
                    hresult=HR_LOCK_VIOLATION,
                    detail=f"this configuration section cannot be used at this path: "
                    f"{view.locked_section} is locked at a parent level",
                ),
                None,
            )
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
        if decision.status == 200 and decision.user and _is_local(decision.user, view):
            with self.state.locked():
                readable = can_read(Session(self.state), view.physical_folder, decision.user)
            if not readable:
                # The request runs as the mapped identity, which needs read access to the
                # physical path (Microsoft: 401.3 "Unauthorized due to ACL on resource").
                decision = Decision(
                    401,
                    3,
                    None,
                    decision.auth,
                    HR_ACCESS_DENIED,
                    f"{decision.user} has no read access to {view.physical_folder}",
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
    path = endpoint_file(state_dir)
    data = read_json(path, {}) or {}
    data["sites"] = sites
    if http_sites is not None:
        data["http_sites"] = http_sites
    write_json(path, data, 0o600)


def start_published(state_dir: str | os.PathLike[str], *, iis_headers: bool = True) -> HttpsFront:
    """A started front that keeps endpoint.json's ``sites`` and ``http_sites`` current (the
    serve command's); ``iis_headers=False`` answers as a real IIS (see HttpsFront)."""
    front = HttpsFront(state_dir, iis_headers=iis_headers)
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
