"""Test PKI for bare WS-Management servers on loopback (tests/simulator)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import winrm
from winrm.protocol import Protocol

from iis_clientcert_simulator import pki
from iis_clientcert_simulator.powershell_errors import (
    decode_encoded_command,
    not_recognized_cmd,
    not_recognized_powershell,
)
from iis_clientcert_simulator.wsman import CommandOutcome, ShellCommand, WSManServer


@dataclass(frozen=True)
class WSManPki:
    """A CA, a server certificate for 127.0.0.1/localhost and a client certificate, on disk."""

    ca: pki.Issued
    server: pki.Issued
    client: pki.Issued
    ca_file: Path
    client_cert_file: Path
    client_key_file: Path


def make_wsman_pki(base: Path) -> WSManPki:
    ca = pki.make_ca("Simulator Test CA")
    server = pki.make_server(ca, "localhost", ip_addresses=("127.0.0.1",))
    client = pki.make_leaf(ca, "winrm-cert-user", client_auth=True)
    ca_file = base / "ca.pem"
    ca_file.write_bytes(ca.cert_pem())
    cert_file = base / "client.pem"
    cert_file.write_bytes(client.cert_pem())
    key_file = base / "client.key"
    key_file.write_bytes(client.key_pem())
    key_file.chmod(0o600)
    return WSManPki(ca, server, client, ca_file, cert_file, key_file)


# make_wsman(handler, credentials, **kwargs): a started server (stopped at teardown).
WSManFactory = Callable[..., WSManServer]


USER = "winrm-admin"
PASSWORD = "Pa:ss w0rd!é"  # a colon and non-ASCII: both must survive Basic and NTLM


class EchoHandler:
    """A tiny executor: PowerShell and cmd errors for anything it does not know."""

    def __init__(self) -> None:
        self.calls: list[ShellCommand] = []
        self.lock = threading.Lock()

    def __call__(self, cmd: ShellCommand) -> CommandOutcome:
        with self.lock:
            self.calls.append(cmd)
        words = cmd.executable.split()
        verb = words[0].lower() if words else ""
        if verb in ("powershell", "powershell.exe"):
            lowered = [w.lower() for w in words]
            if "-encodedcommand" in lowered:
                script = decode_encoded_command(words[lowered.index("-encodedcommand") + 1])
                return not_recognized_powershell(script.split()[0], script_line=script)
        if verb == "echo-stdin":
            return CommandOutcome(stdout=cmd.stdin, stderr=b"", exit_code=0)
        if verb == "whoami":
            return CommandOutcome(f"{cmd.user} {cmd.auth}".encode(), b"", 0)
        if verb == "big":
            size = int(words[1])
            pattern = bytes(range(256))
            data = (pattern * (size // 256 + 1))[:size]
            return CommandOutcome(stdout=data, stderr=b"err-tail", exit_code=3)
        if verb == "sleep":
            time.sleep(float(words[1]))
            return CommandOutcome(b"slept", b"", 0)
        if verb == "boom":
            raise RuntimeError(f"handler failure that quotes {cmd.stdin!r}")
        return not_recognized_cmd(words[0] if words else "")


def basic_session(
    server: WSManServer,
    pki: WSManPki,
    *,
    user: str = USER,
    password: str = PASSWORD,
    transport: str = "basic",
) -> winrm.Session:
    return winrm.Session(
        server.https_url,
        auth=(user, password),
        transport=transport,
        server_cert_validation="validate",
        ca_trust_path=str(pki.ca_file),
    )


def cert_session(server: WSManServer, pki: WSManPki) -> winrm.Session:
    return winrm.Session(
        server.https_url,
        auth=("", ""),
        transport="certificate",
        cert_pem=str(pki.client_cert_file),
        cert_key_pem=str(pki.client_key_file),
        server_cert_validation="validate",
        ca_trust_path=str(pki.ca_file),
    )


def winrm_protocol(
    url: str,
    password: str = PASSWORD,
    *,
    transport: Literal["basic", "ntlm"] = "ntlm",
    user: str = USER,
    cls: type[Protocol] = Protocol,
    **options: Any,
) -> Protocol:
    """A pywinrm Protocol for USER (NTLM unless told otherwise)."""
    return cls(url, transport=transport, username=user, password=password, **options)
