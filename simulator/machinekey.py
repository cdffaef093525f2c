"""The host's configuration encryption key: IIS's ``AesProvider`` stand-in.

Encrypted attributes are stored as ``[enc:AesProvider:<base64(nonce + AES-GCM ciphertext)>:enc]``
with a random per-host key kept in ``machine.key`` (mode 0600), so no password is ever
readable in applicationHost.config.
"""

from __future__ import annotations

import base64
import os
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from iis_clientcert.host.contract import is_encrypted_value
from iis_clientcert_simulator.files import atomic_write

PROVIDER = "AesProvider"
_PREFIX = f"[enc:{PROVIDER}:"
_SUFFIX = ":enc]"
_AAD = PROVIDER.encode("ascii")


class MachineKey:
    def __init__(self, key: bytes) -> None:
        self._aead = AESGCM(key)

    @classmethod
    def load_or_create(cls, path: Path) -> MachineKey:
        if not path.exists():
            atomic_write(path, base64.b64encode(AESGCM.generate_key(bit_length=256)) + b"\n", 0o600)
        return cls(base64.b64decode(path.read_bytes().strip()))

    def encrypt(self, plain: str) -> str:
        nonce = os.urandom(12)
        sealed = self._aead.encrypt(nonce, plain.encode("utf-8"), _AAD)
        return _PREFIX + base64.b64encode(nonce + sealed).decode("ascii") + _SUFFIX

    def decrypt(self, value: str) -> str | None:
        """The plain text of an ``[enc:AesProvider:...:enc]`` value of this host, else None."""
        if not (value.startswith(_PREFIX) and value.endswith(_SUFFIX)):
            return None
        body = value[len(_PREFIX) : -len(_SUFFIX)]
        if body == "":
            return ""
        try:
            raw = base64.b64decode(body, validate=True)
            return self._aead.decrypt(raw[:12], raw[12:], _AAD).decode("utf-8")
        except (ValueError, InvalidTag):
            return None

    def seal(self, value: str, previous: str | None = None) -> str:
        """What to store for ``value``: the previous ciphertext when it holds the same plain
        text (so an identical write changes nothing, as the agent compares plain text);
        else a value already encrypted as it is, plain text encrypted."""
        plain = self.decrypt(value) if is_encrypted_value(value) else value
        if previous is not None and plain is not None and self.decrypt(previous) == plain:
            return previous
        if is_encrypted_value(value):
            return value
        return self.encrypt(value)
