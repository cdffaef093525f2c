"""A throwaway Pulumi project on simulated hosts whose resources a JSON spec describes
(the program is tests/support/programs/spec.py; it reads spec.json beside it)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from iis_clientcert.host.connection import SECRET_FIELDS
from iis_clientcert_simulator.endpoint import Endpoint
from tests.support.engine import SPEC_PROGRAM, PulumiProject, write_project

# The config key of the main host's WinRM password.
WINRM_PASSWORD = "winrm_password"


def spec_connection(endpoint: Endpoint, secret: str, transport: str = "basic") -> dict[str, Any]:
    """The simulator's connection for the spec, its secret (the password, or the client key
    of the certificate transport) read from the secret config value ``secret``."""
    value = endpoint.connection_input(transport)
    return {k: {"$secret": secret} if k in SECRET_FIELDS else v for k, v in value.items()}


class SpecProject:
    """A project whose resources ``spec.json`` describes; with ``endpoint``, the connection
    ``main`` is that simulator's (its password set as the secret ``winrm_password``)."""

    def __init__(self, directory: Path, env: dict[str, str], endpoint: Endpoint | None = None):
        write_project(directory, "iis-engine-test", SPEC_PROGRAM)
        self.dir = directory
        self.endpoint = endpoint
        self.project = PulumiProject(directory, env)
        self.project.init_stack("test")
        self.connections: dict[str, Any] | None = None
        if endpoint is not None:
            self.project.config_set(WINRM_PASSWORD, endpoint.password, secret=True)

    def use_connections(self, connections: dict[str, Any]) -> None:
        """The connections by name (values as ``spec_connection`` gives them), for the
        next ``set_resources``; without, ``main`` is the endpoint's."""
        self.connections = connections

    def set_resources(self, resources: dict[str, Any], **secrets: str) -> None:
        """Write spec.json and set ``secrets`` as secret config values."""
        for key, value in secrets.items():
            self.project.config_set(key, value, secret=True)
        connections = self.connections
        if connections is None:
            assert self.endpoint is not None, "call use_connections, or give an endpoint"
            connections = {"main": spec_connection(self.endpoint, WINRM_PASSWORD)}
        spec = {"connections": connections, "resources": resources}
        (self.dir / "spec.json").write_text(json.dumps(spec, indent=2))
