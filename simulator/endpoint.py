"""DIR/endpoint.json: how to reach a running simulator, as a ready ``connection`` input.

The file holds one ``connection`` object with the keys of the product's ``connection``
input (``iis_clientcert.host.connection.Connection.from_input`` and
``iis_clientcert.framework.inputs.ConnectionArgs``): the HTTPS endpoint, the ``basic``
transport, the admin account and its password, and the CA bundle as PEM text. The other
transports the simulator serves are derived from it here, and only here, by
:func:`endpoint_connection`. The file is 0600: it holds the admin's password, which is
never printed (:meth:`Endpoint.public`).

This module reads JSON and files only; it imports neither the server nor pulumi, so a
script or a test can use it cheaply. The product itself (the doctor, the stack
configuration) reads the file's ``connection`` with
``iis_clientcert.host.connection.simulator_connection_input`` and never imports the
simulator.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Final

from iis_clientcert.host.connection import SIMULATOR_ENDPOINT_FILE

# The name the product's reader (simulator_connection_input) looks for.
ENDPOINT_FILE: Final = SIMULATOR_ENDPOINT_FILE
TRANSPORTS: Final = ("basic", "certificate", "ntlm")


class EndpointError(Exception):
    """DIR/endpoint.json is missing, unreadable or not a simulator's endpoint."""


@dataclass(frozen=True)
class Endpoint:
    """What a client needs (the content of DIR/endpoint.json)."""

    state_dir: str
    # The default connection: basic over HTTPS (ca_bundle is PEM text, not a path).
    connection: dict[str, Any]
    winrm_http_url: str  # NTLM with message encryption (plain HTTP)
    ca_file: str  # the CA's certificate file, for HTTPS clients other than WinRM
    client_cert: str  # files of the admin's client certificate (certificate transport)
    client_key: str
    pid: int | None  # None once the simulator has stopped
    sites: dict[str, Any] = field(default_factory=dict)  # https URLs per site
    http_sites: dict[str, Any] = field(default_factory=dict)  # plain http URLs per site

    @property
    def winrm_https_url(self) -> str:
        return str(self.connection["endpoint"])

    @property
    def username(self) -> str:
        return str(self.connection["username"])

    @property
    def password(self) -> str:
        return str(self.connection["password"])

    def as_json(self) -> dict[str, Any]:
        return asdict(self)

    def public(self) -> dict[str, Any]:
        """The endpoint without its password (for stdout and logs)."""
        data = self.as_json()
        data["connection"] = {k: v for k, v in self.connection.items() if k != "password"}
        data["endpoint_json"] = str(endpoint_file(self.state_dir))
        return data

    def connection_input(self, transport: str = "basic") -> dict[str, Any]:
        """The ``connection`` input for one of the transports the simulator serves."""
        base = self.connection
        if transport == "basic":
            return dict(base)
        if transport == "certificate":
            return {
                "endpoint": base["endpoint"],
                "transport": "certificate",
                "client_cert_pem": Path(self.client_cert).read_text("utf-8"),
                "client_key_pem": Path(self.client_key).read_text("utf-8"),
                "ca_bundle": base["ca_bundle"],
            }
        if transport == "ntlm":
            return {
                "endpoint": self.winrm_http_url,
                "transport": "ntlm",
                "username": base["username"],
                "password": base["password"],
            }
        raise ValueError(
            f"the simulator serves the transports {', '.join(TRANSPORTS)}, not {transport!r}"
        )


def endpoint_file(state_dir: str | os.PathLike[str]) -> Path:
    return Path(state_dir) / ENDPOINT_FILE


def read_endpoint(state_dir: str | os.PathLike[str]) -> Endpoint:
    """The endpoint of the simulator whose state is in ``state_dir``; raises EndpointError."""
    path = endpoint_file(state_dir)
    start = (
        f"start the simulator (python -m iis_clientcert_simulator serve --state-dir {state_dir})"
    )
    try:
        data = json.loads(path.read_text("utf-8"))
    except FileNotFoundError:
        raise EndpointError(f"{path} does not exist: {start}") from None
    except OSError as exc:
        raise EndpointError(f"cannot read {path}: {exc.strerror}") from None
    except json.JSONDecodeError as exc:
        raise EndpointError(f"{path} is not JSON ({exc.msg})") from None
    connection = data.get("connection") if isinstance(data, dict) else None
    if isinstance(connection, dict):
        missing = sorted({"endpoint", "username", "password", "ca_bundle"} - set(connection))
    else:
        missing = ["connection"]
    if missing:
        # Written by an older simulator, or the first start has not finished.
        raise EndpointError(
            f"{path} is not a complete simulator endpoint (no {', '.join(missing)}): {start}"
        )
    try:
        return Endpoint(**data)
    except TypeError as exc:
        raise EndpointError(f"{path} is not a simulator endpoint ({exc})") from None


def endpoint_connection(
    state_dir: str | os.PathLike[str], transport: str = "basic"
) -> dict[str, Any]:
    """The ``connection`` input for the running simulator in ``state_dir`` (its
    endpoint.json); raises EndpointError when there is none.

    A plain dict with the keys of ``ConnectionArgs``: give it to
    ``Connection.from_input`` or ``ConnectionArgs.from_dict``. It holds the password (or
    the client key): never print it.
    """
    endpoint = read_endpoint(state_dir)
    if not endpoint.pid:
        # A stopped simulator keeps its endpoint.json (the password for the next start).
        raise EndpointError(
            f"no simulator serves {state_dir} (it has stopped): start it "
            f"(python -m iis_clientcert_simulator serve --state-dir {state_dir})"
        )
    return endpoint.connection_input(transport)


__all__ = [
    "ENDPOINT_FILE",
    "Endpoint",
    "EndpointError",
    "endpoint_connection",
    "endpoint_file",
    "read_endpoint",
]
