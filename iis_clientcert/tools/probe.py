"""Ask an IIS site over TLS, with or without a client certificate: who does it say we are?

Used by the demo's table, the doctor and tests. The answer is the HTTP status and IIS
substatus, plus the authenticated user when the site reports one. The substatus comes from
the ``X-IIS-Substatus`` header (or JSON body) when the server sends one, which only the
simulator does; a real IIS puts it only in the site's W3C log (sc-substatus), so
:func:`probe_with_log` reads the log's last entries over WinRM (the ``site.log_tail`` op)
and takes the substatus of the matching request from there.

The client key is written to a private temporary folder (0700, file 0600) for the
length of the call, because Python's ssl module loads keys only from files, and removed
afterwards. Nothing secret is put in the result or in error messages.
"""

from __future__ import annotations

import contextlib
import dataclasses
import http.client
import json
import os
import socket
import ssl
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import urlsplit

from iis_clientcert.errors import UsageError
from iis_clientcert.host import contract
from iis_clientcert.host.contract import Op, SiteLogEntry

__all__ = ["LogReader", "ProbeResult", "probe", "probe_with_log", "substatus_from_log"]


@dataclass(frozen=True)
class ProbeResult:
    status: int | None
    substatus: int | None
    user: str | None
    auth: str | None
    hresult: str | None
    error: str | None
    tls_version: str | None = None
    # Where the substatus came from: "header" (simulator), "log" (the site's W3C log) or
    # None (not known: a real IIS answered and its log was not read).
    substatus_source: str | None = None

    @property
    def code(self) -> str:
        """ "200.0", "403.16" ...; the error (e.g. "connection reset") when there was no answer."""
        if self.status is None:
            return self.error or "no answer"
        return f"{self.status}.{self.substatus if self.substatus is not None else 0}"


def _private_files(
    directory: str, cert_pem: bytes, key_pem: bytes | None
) -> tuple[str, str | None]:
    cert_path = Path(directory) / "client.pem"
    cert_path.write_bytes(cert_pem)
    if key_pem is None:
        return str(cert_path), None
    key_path = Path(directory) / "client.key"
    fd = os.open(key_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(key_pem)
    return str(cert_path), str(key_path)


def _context(
    ca_bundle: str | None,
    verify: bool,
    client_cert_pem: bytes | None,
    client_key_pem: bytes | None,
    tls_max: ssl.TLSVersion | None,
) -> ssl.SSLContext:
    ctx = (
        ssl.create_default_context(cafile=ca_bundle)
        if verify
        else ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    )
    if not verify:
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    if tls_max is not None:
        ctx.maximum_version = tls_max
    if client_cert_pem is not None:
        with tempfile.TemporaryDirectory(prefix="iis-probe-") as directory:
            os.chmod(directory, 0o700)
            cert_file, key_file = _private_files(directory, client_cert_pem, client_key_pem)
            ctx.load_cert_chain(cert_file, key_file)
    return ctx


def _int(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str) and value.strip().isdigit():
        return int(value.strip())
    return None


def _str(value: Any) -> str | None:
    return value if isinstance(value, str) else None


def probe(
    url: str,
    *,
    client_cert_pem: bytes | None = None,
    client_key_pem: bytes | None = None,
    ca_bundle: str | None = None,
    server_name: str | None = None,
    timeout: float = 10.0,
    verify: bool = True,
    tls_max: ssl.TLSVersion | None = None,
) -> ProbeResult:
    """GET ``url`` (https) and report IIS's answer.

    ``server_name`` is the name sent as SNI, checked against the server certificate and
    sent as the Host header (defaults to the URL's host); ``ca_bundle`` is the PEM file
    that verifies the server (system trust when None; ``verify=False`` skips the check).
    ``tls_max`` caps the TLS version (e.g. to show the TLS 1.3 renegotiation failure).
    A connection that fails (handshake refused, reset) comes back with ``error`` set.
    """
    parts = urlsplit(url)
    if parts.scheme != "https" or not parts.hostname:
        raise UsageError(f"probe needs an https:// URL, not {url!r}")
    if (client_cert_pem is None) != (client_key_pem is None):
        raise UsageError("give both client_cert_pem and client_key_pem, or neither")
    host = parts.hostname
    port = parts.port or 443
    name = server_name or host
    path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    try:
        ctx = _context(ca_bundle, verify, client_cert_pem, client_key_pem, tls_max)
    except (ssl.SSLError, OSError) as exc:
        return ProbeResult(None, None, None, None, None, f"client certificate: {exc}")

    conn = http.client.HTTPSConnection(host, port, timeout=timeout, context=ctx)
    tls_version: str | None = None
    try:
        raw = socket.create_connection((host, port), timeout=timeout)
        try:
            tls = ctx.wrap_socket(raw, server_hostname=name)
        except BaseException:
            raw.close()
            raise
        tls_version = tls.version()
        conn.sock = tls  # our socket: SNI and hostname check use server_name
        conn.request("GET", path, headers={"Host": name, "Connection": "close"})
        response = conn.getresponse()
        body = response.read()
        header_sub = response.getheader("X-IIS-Substatus")
    except ssl.SSLCertVerificationError as exc:
        return ProbeResult(
            None, None, None, None, None, f"server certificate: {exc.verify_message}"
        )
    except ssl.SSLError as exc:
        return ProbeResult(None, None, None, None, None, f"TLS: {exc.reason or exc}", tls_version)
    except (ConnectionResetError, http.client.RemoteDisconnected, BrokenPipeError):
        return ProbeResult(None, None, None, None, None, "connection reset", tls_version)
    except TimeoutError:
        return ProbeResult(None, None, None, None, None, "timed out", tls_version)
    except OSError as exc:
        return ProbeResult(None, None, None, None, None, f"connection failed: {exc}", tls_version)
    finally:
        with contextlib.suppress(OSError):
            conn.close()

    data: dict[str, Any] = {}
    with contextlib.suppress(ValueError, UnicodeDecodeError):
        parsed = json.loads(body.decode("utf-8"))
        if isinstance(parsed, dict):
            data = parsed
    substatus = _int(header_sub)
    if substatus is None:
        substatus = _int(data.get("substatus"))
    return ProbeResult(
        status=response.status,
        substatus=substatus,
        substatus_source="header" if substatus is not None else None,
        user=_str(data.get("user")),
        auth=_str(data.get("auth")),
        hresult=_str(data.get("hresult")) or response.getheader("X-IIS-HResult"),
        error=None,
        tls_version=tls_version,
    )


class LogReader(Protocol):
    """What reads the host (a HostClient): runs ops, returns their results."""

    def call(self, ops: Sequence[Op[Any]]) -> list[Any]: ...


def substatus_from_log(
    result: ProbeResult, entries: Sequence[SiteLogEntry], *, path: str, port: int
) -> ProbeResult:
    """``result`` with the substatus (and Windows error) of the newest log entry for the
    same path, port and status; unchanged when there is none."""
    stem = path.split("?", 1)[0] or "/"
    for entry in reversed(entries):
        if (entry["status"], entry["uri_stem"], entry["port"]) != (result.status, stem, port):
            continue
        win32 = entry["win32_status"]
        hresult = result.hresult
        if hresult is None and win32:
            hresult = f"0x{win32:08X}" if win32 > 0xFFFF else f"0x{0x80070000 | win32:08X}"
        return dataclasses.replace(
            result, substatus=entry["substatus"], hresult=hresult, substatus_source="log"
        )
    return result


def probe_with_log(url: str, host: LogReader, site: str, **options: Any) -> ProbeResult:
    """:func:`probe`, then the substatus from the site's IIS log when the answer carried
    none (a real IIS). ``host`` reads the log over WinRM; ``options`` go to :func:`probe`."""
    result = probe(url, **options)
    if result.status is None or result.substatus is not None:
        return result
    # IIS writes its log through HTTP.sys's buffer: the agent flushes it before reading.
    (tail,) = host.call([contract.site_log_tail(site, 50)])
    parts = urlsplit(url)
    return substatus_from_log(
        result, tail["entries"], path=parts.path or "/", port=parts.port or 443
    )
