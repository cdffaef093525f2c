"""LocalMachine certificate stores (certstore/LocalMachine/<Store>/<THUMBPRINT>.cer) and
HTTP.sys SSL bindings (httpsys.json)."""

from __future__ import annotations

import base64
import binascii
import builtins
import os
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.serialization import pkcs12
from cryptography.x509.oid import NameOID

from iis_clientcert.host.contract import PFX_AES_MIN_BUILD, SSLCERT_DEFAULTS, STORES
from iis_clientcert_simulator.errors import (
    HR_ALREADY_EXISTS,
    HR_ASN1_BADTAG,
    HR_ASN1_EOD,
    HR_FILE_NOT_FOUND,
    HR_INVALID_PASSWORD,
    HR_NOT_FOUND,
    OpError,
)
from iis_clientcert_simulator.files import atomic_write

# Windows spells these RDNs its own way (certutil / .NET X500DistinguishedName).
_WINDOWS_NAMES = {NameOID.STATE_OR_PROVINCE_NAME: "S", NameOID.EMAIL_ADDRESS: "E"}
# The stores the host has: the contract's, plus LocalMachine\Disallowed (explicitly
# distrusted certificates), which Schannel honours when it checks a client certificate's
# chain. The product never writes it, so no op names it; tests put certificates there.
HOST_STORES = (*STORES, "Disallowed")
IIS_APP_ID = "{4dc3e181-e14b-4a21-b022-59fc669b0914}"


def windows_name(name: x509.Name) -> str:
    """A distinguished name as Windows shows it: most specific first, ", " between RDNs."""
    return ", ".join(rdn.rfc4514_string(_WINDOWS_NAMES) for rdn in reversed(name.rdns))


def thumbprint(cert: x509.Certificate) -> str:
    return cert.fingerprint(hashes.SHA1()).hex().upper()  # noqa: S303 - Windows thumbprints are SHA-1


def load_der(data: bytes) -> x509.Certificate:
    """A DER certificate, or BadCertificate with the CryptoAPI code Windows would give."""
    try:
        return x509.load_der_x509_certificate(data)
    except ValueError:
        # A blob that starts like a SEQUENCE but is cut short is ASN1_EOD, else BADTAG.
        code = HR_ASN1_EOD if data[:1] == b"\x30" else HR_ASN1_BADTAG
        raise OpError(
            "BadCertificate",
            "Cannot find the requested object: the data is not a DER certificate",
            code,
        ) from None


def b64(value: str, what: str) -> bytes:
    try:
        return base64.b64decode("".join(value.split()), validate=True)
    except (binascii.Error, ValueError):
        raise OpError("BadCertificate", f"{what} is not base64", HR_ASN1_BADTAG) from None


@dataclass(frozen=True)
class OpenedPfx:
    thumbprint: str
    certificate: x509.Certificate
    key_pem: bytes | None = field(repr=False)


# The PBES2 algorithm identifier (1.2.840.113549.1.5.13) as DER: in a PFX it names the
# encryption of the key and certificate bags, in the clear.
_PBES2_OID = bytes.fromhex("06092a864886f70d01050d")


class CertStores:
    def __init__(self, root: Path) -> None:
        self.root = root  # DIR/certstore/LocalMachine

    def _dir(self, store: str) -> Path:
        if store not in HOST_STORES:
            raise OpError(
                "NotFound", f"The certificate store '{store}' is not modelled", HR_NOT_FOUND
            )
        return self.root / store

    def ensure(self) -> None:
        for store in HOST_STORES:
            self._dir(store).mkdir(parents=True, exist_ok=True)

    def _find(self, store: str, thumb: str) -> Path | None:
        wanted = thumb.replace(" ", "").upper()
        for path in self._dir(store).glob("*.cer"):
            if path.stem.upper() == wanted:
                return path
        return None

    def exists(self, store: str, thumb: str) -> bool:
        return self._find(store, thumb) is not None

    def key_pem(self, store: str, thumb: str) -> bytes | None:
        path = self._find(store, thumb)
        key = path.with_suffix(".key") if path is not None else None
        return key.read_bytes() if key is not None and key.exists() else None

    def certificate(self, store: str, thumb: str) -> x509.Certificate | None:
        path = self._find(store, thumb)
        return x509.load_der_x509_certificate(path.read_bytes()) if path is not None else None

    def certificates(self, store: str) -> list[x509.Certificate]:
        """The certificates of a store (an unreadable file is skipped, as a broken entry)."""
        out: list[x509.Certificate] = []
        for path in sorted(self._dir(store).glob("*.cer")):
            try:
                out.append(x509.load_der_x509_certificate(path.read_bytes()))
            except ValueError:
                continue
        return out

    def list(self, store: str) -> list[dict[str, Any]]:
        out = []
        for path in sorted(self._dir(store).glob("*.cer")):
            der = path.read_bytes()
            cert = x509.load_der_x509_certificate(der)
            out.append(
                {
                    "thumbprint": path.stem.upper(),
                    "subject": windows_name(cert.subject),
                    "issuer": windows_name(cert.issuer),
                    "not_before": cert.not_valid_before_utc.isoformat(),
                    "not_after": cert.not_valid_after_utc.isoformat(),
                    "has_private_key": path.with_suffix(".key").exists(),
                    "der_b64": base64.b64encode(der).decode("ascii"),
                }
            )
        return out

    # --- private keys: persisted key containers (MachineKeys) ------------------------

    @property
    def machine_keys(self) -> Path:
        """Key containers a PFX import persisted (MachineKeySet|PersistKeySet) that no store
        entry took: on Windows, %ProgramData%\\Microsoft\\Crypto\\...\\MachineKeys files
        nothing references (orphans). A store entry's own key is <THUMBPRINT>.key."""
        return self.root.parent / "MachineKeys"

    def orphan_keys(self) -> builtins.list[str]:
        return sorted(p.name for p in self.machine_keys.glob("*.key"))

    def persist_key(self, key_pem: bytes) -> Path:
        """What X509Certificate2Collection.Import with PersistKeySet does at once, before
        anything is added to a store: a new key container on disk (FACTS.md)."""
        path = self.machine_keys / f"{uuid.uuid4().hex}.key"
        atomic_write(path, key_pem, 0o600)
        return path

    def add(self, store: str, cert: x509.Certificate, key: bytes | Path | None) -> tuple[str, bool]:
        """X509Store.Add: the certificate, and its key (PEM, or a persisted container that
        the entry takes over) unless the entry already has one."""
        thumb = thumbprint(cert)
        directory = self._dir(store)
        directory.mkdir(parents=True, exist_ok=True)
        path = directory / f"{thumb}.cer"
        added = not path.exists()
        if added:
            atomic_write(path, cert.public_bytes(serialization.Encoding.DER))
        key_path = path.with_suffix(".key")
        if key is not None and not key_path.exists():
            # Private keys: readable by the owner only, like the machine key store's ACL.
            if isinstance(key, Path):
                os.replace(key, key_path)
            else:
                atomic_write(key_path, key, 0o600)
        return thumb, added

    def import_der(self, store: str, der_b64: str) -> tuple[str, bool]:
        return self.add(store, load_der(b64(der_b64, "der_b64")), None)

    def open_pfx(self, pfx_b64: str, password: str | None, os_build: int) -> OpenedPfx:
        """Open a PFX without persisting its key (EphemeralKeySet), as the agent does first."""
        data = b64(pfx_b64, "pfx_b64")
        if 0 < os_build < PFX_AES_MIN_BUILD and _PBES2_OID in data:
            # Windows Server 2016's CryptoAPI knows no PBES2: it answers as for a wrong
            # password (FACTS.md "PFX on Server 2016"); the agent says why.
            raise OpError(
                "BadCertificate",
                "The specified network password is not correct: this host (Windows build "
                f"{os_build}, older than {PFX_AES_MIN_BUILD}) cannot open a PFX encrypted "
                "with AES-256/PBES2; export it with TripleDES-SHA1 (PBES1) instead",
                HR_INVALID_PASSWORD,
            )
        try:
            key, cert, _extra = pkcs12.load_key_and_certificates(
                data, password.encode("utf-8") if password else None
            )
        except ValueError:
            # cryptography cannot tell a wrong password from a damaged file; Windows says
            # "The specified network password is not correct" for both.
            raise OpError(
                "BadCertificate",
                "The PFX could not be imported: the password is wrong or the file is damaged "
                "(The specified network password is not correct)",
                HR_INVALID_PASSWORD,
            ) from None
        if cert is None:
            raise OpError("BadCertificate", "The PFX holds no certificate", HR_ASN1_EOD)
        key_pem = (
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
            if key is not None
            else None
        )
        return OpenedPfx(thumbprint(cert), cert, key_pem)

    def remove(self, store: str, thumb: str) -> bool:
        path = self._find(store, thumb)
        if path is None:
            return False
        path.with_suffix(".key").unlink(missing_ok=True)
        path.unlink()
        return True


# --- HTTP.sys --------------------------------------------------------------------------


def parse_binding_information(info: str, ssl_flags: int) -> tuple[str, int, str]:
    """'ip:port:host' -> (ip, port, host), checked like IIS Manager checks a binding."""
    parts = info.split(":")
    if len(parts) < 3:
        raise OpError(
            "InvalidValue",
            f"The binding information '{info}' is not of the form ip:port:hostname",
            0x8007000D,
        )
    host = parts[-1]
    port_text = parts[-2]
    ip = ":".join(parts[:-2])
    if not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise OpError("InvalidValue", f"The port in '{info}' must be 1-65535", 0x8007000D)
    if ssl_flags & 1 and not host:
        raise OpError(
            "InvalidValue",
            f"The binding '{info}' requires Server Name Indication (sslFlags bit 1) "
            "but has no host name",
            0x8007000D,
        )
    return ip or "*", int(port_text), host


# Binding sslFlags bit 2: the certificate comes from the Central Certificate Store (a file
# share), through one HTTP.sys record per port (netsh http add sslcert ccs=<port>), never
# the ip:port or host:port record of a certificate in LocalMachine\My (Microsoft docs,
# "IIS 8.0 Centralized SSL Certificate Support").
SSL_FLAG_CENTRAL_STORE = 2


def sslcert_key(info: str, ssl_flags: int) -> str:
    """The HTTP.sys key of an https binding: ccs for the Central Certificate Store,
    hostnameport for SNI, else ipport."""
    ip, port, host = parse_binding_information(info, ssl_flags)
    if ssl_flags & SSL_FLAG_CENTRAL_STORE:
        return f"ccs={port}"
    if ssl_flags & 1:
        return f"hostnameport={host.lower()}:{port}"
    address = "0.0.0.0" if ip in ("*", "") else ip  # noqa: S104 - netsh spelling of "all"
    return f"ipport={address}:{port}"


class HttpSys:
    """httpsys.json: {"sslcert": {key: record}}, the HTTP Server API's SSL certificate store.

    A record holds ``certificate_hash``, ``certificate_store``, ``app_id`` and every setting
    of contract.SSLCERT_DEFAULTS (netsh's names). ``client_cert_negotiation`` repeats
    ``clientcertnegotiation`` for readers of the file. Like netsh (and the HTTP Server API
    under it), ``add`` refuses an existing key and ``update`` replaces the whole record: a
    setting it is not given goes back to its default (FACTS.md "Real-host pitfalls").
    """

    def __init__(self, data: dict[str, Any]) -> None:
        self.data = data
        data.setdefault("sslcert", {})

    def get(self, key: str) -> dict[str, Any] | None:
        found = self.data["sslcert"].get(key)
        if found is None:
            return None
        record = dict(found)
        # Files written before settings were modelled: the defaults are what they held.
        for name, default in SSLCERT_DEFAULTS.items():
            record.setdefault(name, default)
        record["clientcertnegotiation"] = bool(
            record.get("client_cert_negotiation", record["clientcertnegotiation"])
        )
        record["client_cert_negotiation"] = record["clientcertnegotiation"]
        return record

    @staticmethod
    def settings(record: dict[str, Any]) -> dict[str, Any]:
        """The netsh settings of a record (what a rewrite must pass to keep them)."""
        return {name: record.get(name, default) for name, default in SSLCERT_DEFAULTS.items()}

    @staticmethod
    def _record(
        cert_hash: str, store: str, app_id: str, settings: dict[str, Any]
    ) -> dict[str, Any]:
        unknown = set(settings) - set(SSLCERT_DEFAULTS)
        if unknown:
            raise OpError(
                "InvalidValue",
                f"netsh http: unknown sslcert parameter(s) {', '.join(sorted(unknown))}",
                0x80070057,
            )
        record: dict[str, Any] = {
            "certificate_hash": cert_hash.upper(),
            "certificate_store": store,
            "app_id": app_id,
        }
        record.update({name: settings.get(name, d) for name, d in SSLCERT_DEFAULTS.items()})
        record["client_cert_negotiation"] = bool(record["clientcertnegotiation"])
        return record

    def add(
        self, key: str, cert_hash: str, store: str, app_id: str, settings: dict[str, Any]
    ) -> None:
        """``netsh http add sslcert``: a new record; an existing key is error 183."""
        if key in self.data["sslcert"]:
            raise OpError(
                "DuplicateKey",
                f"SSL Certificate add failed, Error: 183 Cannot create a file when that file "
                f"already exists ({key})",
                HR_ALREADY_EXISTS,
            )
        self.data["sslcert"][key] = self._record(cert_hash, store, app_id, settings)

    def update(
        self, key: str, cert_hash: str, store: str, app_id: str, settings: dict[str, Any]
    ) -> None:
        """``netsh http update sslcert``: the whole record is replaced; settings not
        given take their defaults (the rule a writer must respect, win-acme #2831)."""
        if key not in self.data["sslcert"]:
            raise OpError(
                "NotFound",
                f"SSL Certificate update failed, Error: 2 The system cannot find the file "
                f"specified ({key})",
                HR_FILE_NOT_FOUND,
            )
        self.data["sslcert"][key] = self._record(cert_hash, store, app_id, settings)

    def put(self, key: str, cert_hash: str, store: str, **settings: Any) -> None:
        """Set up a record (first start, tests): add or replace, IIS's app id."""
        self.data["sslcert"][key] = self._record(cert_hash, store, IIS_APP_ID, settings)

    def remove(self, key: str) -> bool:
        """``netsh http delete sslcert``."""
        return self.data["sslcert"].pop(key, None) is not None
