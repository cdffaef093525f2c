"""A throwaway project on one or more simulated hosts: hostkit's spec program, with a
``connections`` map so resources can use different hosts and transports."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from iis_clientcert_simulator.serve import Endpoint
from tests.engine.conftest import PulumiProject, write_project
from tests.engine.hostkit import PROGRAM as ONE_HOST_PROGRAM

PROGRAM = ONE_HOST_PROGRAM.replace(
    'connection = resolve(spec["connection"])\n',
    'connections = {k: resolve(v) for k, v in spec["connections"].items()}\n',
).replace(
    "name, connection=connection,",
    'name, connection=connections[entry.get("connection", "main")],',
)
assert PROGRAM != ONE_HOST_PROGRAM


def basic_connection(endpoint: Endpoint, secret_key: str) -> dict[str, Any]:
    return {
        "endpoint": endpoint.winrm_https_url,
        "transport": "basic",
        "username": endpoint.username,
        "password": {"$secret": secret_key},
        "ca_bundle": Path(endpoint.ca_bundle).read_text(),
    }


class MultiProject:
    def __init__(self, directory: Path, env: dict[str, str]) -> None:
        write_project(directory, "iis-reliability", PROGRAM)
        self.dir = directory
        self.project = PulumiProject(directory, env)
        self.project.init_stack("test")

    def set(
        self,
        connections: dict[str, Any],
        resources: dict[str, Any],
        **secrets: str,
    ) -> None:
        for key, value in secrets.items():
            self.project.config_set(key, value, secret=True)
        spec = {"connections": connections, "resources": resources}
        (self.dir / "spec.json").write_text(json.dumps(spec, indent=2))
