"""A platform tool built on the Automation API: the ClientCertSite stack embedded in a
Python program (no Pulumi.yaml, no `pulumi` command typed by anyone).

    python examples/automation/deploy.py inventory.json preview|up|destroy \\
        [--stack NAME] [--state DIR]

``inventory.json``::

    {"site": "shop", "pki_dir": "pki",          # ca.pem, client.pem, server.pfx
     "hosts": {"web01": {"endpoint": "https://web01:5986/wsman", "username": "WEB01\\\\deployer",
                         "ca_bundle": "web01-winrm-ca.pem", "transport": "ntlm"}}}

Secrets come from the environment and are stored as Pulumi secrets (encrypted in the
state): ``IIS_PASSWORD_<HOST>`` (each host's WinRM password, host name upper-cased),
``IIS_ACCOUNT_PASSWORD`` (the mapped account's), ``IIS_PFX_PASSWORD``. The state lives in
a local file backend (``--state``, default ./.iis-state), encrypted with
``PULUMI_CONFIG_PASSPHRASE``. The `pulumi` CLI must be on PATH.

What it prints: the engine's progress, and JSON lines: the planned changes (preview, and
before an up), the site of every host after an up (``iis_clientcert.SiteExports``).
Exit status 0 on success, 1 on error.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

import pulumi
from pulumi import automation as auto

from iis_clientcert import (
    ClientCertHost,
    ClientCertHostArgs,
    ClientCertSite,
    ClientCertSiteArgs,
    ConnectionArgs,
    HttpsEndpoint,
    OneToOne,
    ServerPfx,
    SiteUser,
    TrustedCa,
)

PROJECT = "iis-clientcert-automation"


def program_for(inventory: dict[str, Any], base: Path) -> Any:
    """The inline program: a ClientCertHost and the site on every host of the inventory.
    Plain values come from the inventory (closed over); secrets from the stack's config."""
    pki = base / inventory["pki_dir"]

    def program() -> None:
        config = pulumi.Config()
        sites = {}
        for name, spec in sorted(inventory["hosts"].items()):
            host = ClientCertHost(
                name,
                ClientCertHostArgs(
                    connection=ConnectionArgs(
                        endpoint=spec["endpoint"],
                        transport=spec.get("transport", "ntlm"),
                        username=spec["username"],
                        password=config.require_secret(f"password_{name}"),
                        ca_bundle=(base / spec["ca_bundle"]).read_text(),
                    ),
                    trusted_roots=[
                        TrustedCa(name="clients", certificate=(pki / "ca.pem").read_text())
                    ],
                    users=[SiteUser(name="app-client", password=config.require_secret("account"))],
                    server_certificates=[
                        ServerPfx(
                            name="web",
                            pfx=str(pki / "server.pfx"),
                            password=config.require_secret("pfx"),
                        )
                    ],
                ),
            )
            sites[name] = ClientCertSite(
                f"{name}-{inventory['site']}",
                ClientCertSiteArgs(
                    host=host,
                    site=inventory["site"],
                    https=HttpsEndpoint(certificate="web"),
                    one_to_one=[
                        OneToOne(certificate=(pki / "client.pem").read_text(), user="app-client")
                    ],
                ),
            )
        pulumi.export("sites", {name: site.exports() for name, site in sites.items()})

    return program


def stack_for(inventory: dict[str, Any], base: Path, name: str, state: Path) -> auto.Stack:
    state.mkdir(parents=True, exist_ok=True)
    settings = auto.ProjectSettings(
        name=PROJECT, runtime="python", backend=auto.ProjectBackend(state.resolve().as_uri())
    )
    # The dynamic providers run in a Python process the engine starts: this interpreter's
    # environment, where iis_clientcert is installed.
    env = {"PULUMI_RUNTIME_VIRTUALENV": os.environ.get("PULUMI_RUNTIME_VIRTUALENV", sys.prefix)}
    stack = auto.create_or_select_stack(
        stack_name=name,
        project_name=PROJECT,
        program=program_for(inventory, base),
        opts=auto.LocalWorkspaceOptions(
            project_settings=settings, secrets_provider="passphrase", env_vars=env
        ),
    )
    secrets = {f"password_{h}": f"IIS_PASSWORD_{h.upper()}" for h in inventory["hosts"]}
    secrets |= {"account": "IIS_ACCOUNT_PASSWORD", "pfx": "IIS_PFX_PASSWORD"}
    missing = [var for var in secrets.values() if not os.environ.get(var)]
    if missing:
        raise SystemExit(f"error: set {', '.join(missing)} in the environment")
    stack.set_all_config(
        {key: auto.ConfigValue(os.environ[var], secret=True) for key, var in secrets.items()}
    )
    return stack


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("inventory", type=Path)
    parser.add_argument("action", choices=("preview", "up", "destroy"))
    parser.add_argument("--stack", default="dev")
    parser.add_argument("--state", type=Path, default=Path(".iis-state"))
    args = parser.parse_args(argv)
    inventory = json.loads(args.inventory.read_text())
    stack = stack_for(inventory, args.inventory.resolve().parent, args.stack, args.state)
    try:
        if args.action == "preview":
            preview = stack.preview(on_output=print, color="never")
            changes = {str(getattr(k, "value", k)): n for k, n in preview.change_summary.items()}
            print(json.dumps({"changes": changes}))
        elif args.action == "up":
            # What a tool does: show what will change, then change it. The program runs
            # twice in this process (each run starts with a clean slate).
            preview = stack.preview(color="never")
            changes = {str(getattr(k, "value", k)): n for k, n in preview.change_summary.items()}
            print(json.dumps({"changes": changes}))
            # The result carries the outputs (no second `stack output`); show_secrets=False
            # keeps the summary's secret configuration masked, unused here.
            result = stack.up(on_output=print, color="never", show_secrets=False)
            sites = {k: v.value for k, v in result.outputs.items()}.get("sites", {})
            print(json.dumps({"sites": sites}, indent=2))
        else:
            stack.destroy(on_output=print, color="never")
    except auto.errors.CommandError as exc:
        # The engine printed its messages above; one line to end with.
        print(
            f"error: {args.action} failed ({type(exc).__name__}); the engine's messages are above"
        )
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
