"""ClientCertSite from Pulumi YAML and TypeScript, through the real engine: the component
package (plugin/pulumi-resource-iis-clientcert serving iis_clientcert.package) used by
examples/yaml and examples/typescript as they stand, with their Pulumi.yaml pointing at this
checkout by absolute paths, as the README tells a consumer.

Each program: preview, up (the probe table as configured: 200 as the mapped account, 403.16
for a certificate of an unknown CA, 403.7 without one), refresh without changes, no
password in plain text in the state, destroy (the host exactly as it was). Then the same
program with a mapping to an undeclared account: one line naming ``oneToOne[0].user``, no
Python traceback (YAML: a value known when the component is built; TypeScript: an Output).

The language hosts come from scripts/ensure-language-hosts.sh (built once, cached beside
the CLI); when they cannot be had these tests FAIL with its message.
"""

from __future__ import annotations

import base64
import json
import os
import re
import shlex
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from iis_clientcert.tools.probe import probe
from iis_clientcert_simulator.endpoint import Endpoint
from iis_clientcert_simulator.pki import make_ca, make_leaf, make_server
from iis_clientcert_simulator.testing import running_simulator
from tests.support.engine import PulumiCli, PulumiProject
from tests.support.simulator import host_snapshot

pytestmark = pytest.mark.engine

REPO = Path(__file__).resolve().parents[2]
ENSURE_HOSTS = REPO / "scripts" / "ensure-language-hosts.sh"
PLUGIN = REPO / "plugin" / "pulumi-resource-iis-clientcert"
COMPONENT = "iis-clientcert:index:ClientCertSite"
PFX_PASSWORD = "pfx-Other-Languages-1"
ALICE_PASSWORD = "Al1ce-other-languages!"
# The component and its resources: TrustedRoot, LocalUser, ServerCertificate, HttpsBinding,
# SslSettings, AnonymousAuthentication, CertificateMapping.
RESOURCES = 1 + 7
EXPECTED = {"alice": "200.0 shop-alice", "mallory": "403.16 -", None: "403.7 -"}


@dataclass(frozen=True)
class LanguageHosts:
    bin_dir: Path
    node_modules: Path


@pytest.fixture(scope="session")
def language_hosts() -> LanguageHosts:
    """The YAML and Node.js language hosts and the TypeScript example's node_modules."""
    proc = subprocess.run(
        ["bash", str(ENSURE_HOSTS), "yaml", "nodejs"],
        capture_output=True,
        text=True,
        check=False,
        timeout=1800,
    )
    if proc.returncode != 0:
        pytest.fail(
            f"the language hosts cannot be had (scripts/ensure-language-hosts.sh exited "
            f"{proc.returncode}):\n{proc.stderr}",
            pytrace=False,
        )
    found = dict(line.split("=", 1) for line in proc.stdout.splitlines() if "=" in line)
    return LanguageHosts(
        bin_dir=Path(shlex.split(found["LANGUAGE_HOSTS_BIN"])[0]),
        node_modules=Path(shlex.split(found["TYPESCRIPT_NODE_MODULES"])[0]),
    )


@pytest.fixture
def simulator(tmp_path: Path) -> Iterator[Endpoint]:
    # A subprocess, as `make demo` runs it: it serves the site's https binding too.
    with running_simulator(tmp_path / "host", subprocess_mode=True) as endpoint:
        yield endpoint


@pytest.fixture
def pki(tmp_path: Path) -> Path:
    folder = tmp_path / "pki"
    folder.mkdir()
    ca = make_ca("Other Languages Root")
    (folder / "ca.pem").write_bytes(ca.cert_pem())
    server = make_server(ca, "localhost", ip_addresses=("127.0.0.1",))
    (folder / "shop.pfx").write_bytes(server.pfx(PFX_PASSWORD.encode()))
    rogue = make_ca("Unknown Root")
    for who, issuer in (("alice", ca), ("mallory", rogue)):
        leaf = make_leaf(issuer, who)
        (folder / f"{who}.pem").write_bytes(leaf.cert_pem())
        (folder / f"{who}.key").write_bytes(leaf.key_pem())
    return folder


def _consumer_copy(example: str, target: Path) -> Path:
    """The example as a consumer has it: its own folder, Pulumi.yaml naming this checkout's
    plugin folder and Python by absolute paths."""
    shutil.copytree(
        REPO / "examples" / example, target, ignore=shutil.ignore_patterns("node_modules")
    )
    manifest = target / "Pulumi.yaml"
    text = manifest.read_text()
    assert "../../plugin" in text and "../../.venv" in text
    manifest.write_text(text.replace("../../", f"{REPO}/"))
    return target


def _project(
    directory: Path, env: dict[str, str], hosts: LanguageHosts, simulator: Endpoint, pki: Path
) -> PulumiProject:
    env = {**env, "PATH": os.pathsep.join([str(hosts.bin_dir), env["PATH"]])}
    # Our own interpreter choice must come from the consumer's Pulumi.yaml, not the tests.
    env.pop("PULUMI_RUNTIME_VIRTUALENV", None)
    env.pop("PULUMI_PYTHON_CMD", None)
    project = PulumiProject(directory, env, mode="cli")
    project.init_stack("test")
    for key, value in {
        "hostEndpoint": simulator.winrm_https_url,
        "hostUsername": simulator.username,
        "hostCaBundle": Path(simulator.ca_file).read_text(),
        "pkiDir": str(pki),
    }.items():
        project.config_set(key, value)
    for key, value in {
        "hostPassword": simulator.password,
        "pfxPassword": PFX_PASSWORD,
        "alicePassword": ALICE_PASSWORD,
    }.items():
        project.config_set(key, value, secret=True)
    return project


def _answers(endpoint: Endpoint, pki: Path) -> dict[str | None, str]:
    info = json.loads((Path(endpoint.state_dir) / "endpoint.json").read_text())
    url = info["sites"]["shop"][0]
    out: dict[str | None, str] = {}
    for who in EXPECTED:
        cert = (pki / f"{who}.pem").read_bytes() if who else None
        key = (pki / f"{who}.key").read_bytes() if who else None
        result = probe(url, client_cert_pem=cert, client_key_pem=key, ca_bundle=str(pki / "ca.pem"))
        out[who] = f"{result.code} {(result.user or '-').rsplit(chr(92), 1)[-1]}"
    return out


def _lifecycle(project: PulumiProject, simulator: Endpoint, pki: Path) -> None:
    before = host_snapshot(simulator)

    assert project.preview() == {"create": RESOURCES}
    assert project.up() == {"create": RESOURCES}
    assert _answers(simulator, pki) == EXPECTED

    # The program reads the component's outputs by their schema names.
    outputs = project.outputs()
    assert outputs["url"] == "https://127.0.0.1:443/"  # the binding's port on the host
    assert re.fullmatch("[0-9A-F]{40}", outputs["serverThumbprint"])
    assert set(outputs["mappedUsers"].values()) == {"shop-alice"}
    assert len(project.resources(COMPONENT)) == 1

    assert project.refresh() == {"same": RESOURCES}, "refresh finds the host as up left it"
    assert project.preview() == {"same": RESOURCES}

    # Secrets: not in plain text in the state (exported as stored, without --show-secrets):
    # the passwords, and the PFX with the server's private key.
    state = json.dumps(project.export(show_secrets=False))
    pfx = base64.b64encode((pki / "shop.pfx").read_bytes()).decode()
    for secret in (simulator.password, PFX_PASSWORD, ALICE_PASSWORD, pfx):
        assert secret not in state
    # ...and there, encrypted: the same export with --show-secrets has them.
    shown = json.dumps(project.export(show_secrets=True))
    assert ALICE_PASSWORD in shown and simulator.password in shown and pfx in shown

    assert project.destroy() == {"delete": RESOURCES}
    assert host_snapshot(simulator) == before, "destroy must leave the host as it was"


def _errors(project: PulumiProject) -> list[str]:
    """The errors a failed ``pulumi preview`` reports (its Diagnostics), no traceback."""
    proc = project.run("preview", "--stack", "test", check=False)
    text = proc.stdout + proc.stderr
    assert proc.returncode != 0, text
    assert "Traceback" not in text and 'File "' not in text, text
    diagnostics = text.split("Diagnostics:", 1)[-1]
    return [line.strip() for line in diagnostics.splitlines() if line.strip().startswith("error:")]


# One line: the engine names the resource; the property in the program's spelling.
UNDECLARED_USER = (
    "error: iis-clientcert:index:ClientCertSite resource 'shop' has a problem: "
    'oneToOne[0].user = "bob": is not one of this site\'s users. Declare the user under '
    "users (the mapping takes its password from there)."
)


def test_the_published_schema_is_what_the_cli_reports(
    pulumi_cli: PulumiCli, pulumi_env: dict[str, str], tmp_path: Path
) -> None:
    # The plugin executable starts the provider; its schema is the one published.
    proc = subprocess.run(
        [str(pulumi_cli.pulumi), "package", "get-schema", str(PLUGIN)],
        cwd=tmp_path,
        env=pulumi_env,
        capture_output=True,
        text=True,
        check=False,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == (REPO / "schema" / "iis-clientcert.json").read_text(), (
        "schema/iis-clientcert.json is stale: run `make schema`"
    )


def test_yaml_program(
    language_hosts: LanguageHosts,
    simulator: Endpoint,
    pki: Path,
    pulumi_env: dict[str, str],
    tmp_path: Path,
) -> None:
    directory = _consumer_copy("yaml", tmp_path / "yaml")
    project = _project(directory, pulumi_env, language_hosts, simulator, pki)
    _lifecycle(project, simulator, pki)

    # A mapping to an account the site does not declare: one line, in YAML's spelling.
    manifest = directory / "Pulumi.yaml"
    correct = manifest.read_text()
    manifest.write_text(correct.replace("user: shop-alice", "user: bob"))
    assert _errors(project) == [UNDECLARED_USER]

    # Without runtime.options.virtualenv (nor PULUMI_PYTHON_CMD) the site's resources would
    # run in a python3 without the package: said before anything is made, with the fix.
    manifest.write_text(re.sub(r"  options:\n(?:    .*\n)+", "", correct))
    assert "virtualenv" not in manifest.read_text()
    venv_bin = str(REPO / ".venv" / "bin")
    project.env["PATH"] = os.pathsep.join(
        p for p in project.env["PATH"].split(os.pathsep) if p != venv_bin
    )
    assert _errors(project) == [
        "error: iis-clientcert:index:ClientCertSite resource 'shop' has a problem: the site's "
        "resources run in the project's Python (python3), which cannot import iis_clientcert. "
        "Name the Python that has iis-clientcert installed in the project's Pulumi.yaml: "
        f"runtime.options.virtualenv: {REPO / '.venv'} (or set PULUMI_PYTHON_CMD)"
    ]


def test_typescript_program(
    language_hosts: LanguageHosts,
    simulator: Endpoint,
    pki: Path,
    pulumi_env: dict[str, str],
    tmp_path: Path,
) -> None:
    directory = _consumer_copy("typescript", tmp_path / "typescript")
    (directory / "node_modules").symlink_to(language_hosts.node_modules)
    project = _project(directory, pulumi_env, language_hosts, simulator, pki)
    _lifecycle(project, simulator, pki)

    # The same mistake where the certificate is an Output (from a secret store, say): the
    # component checks it when the value resolves, and tells it the same way.
    program = directory / "index.ts"
    mapped = 'oneToOne: [{ certificate: pem("alice.pem"), user: "shop-alice" }]'
    assert mapped in program.read_text()
    program.write_text(
        program.read_text().replace(
            mapped, 'oneToOne: [{ certificate: pulumi.secret(pem("alice.pem")), user: "bob" }]'
        )
    )
    assert _errors(project) == [UNDECLARED_USER]
