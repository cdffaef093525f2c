"""End-to-end proof of the toolchain: real CLI, real engine, a dynamic provider of this repo."""

from __future__ import annotations

import base64
import json
import subprocess
from pathlib import Path

import pytest

from tests.support.engine import (
    DYNAMIC_TYPE,
    PINNED_VERSION,
    TOY_PROGRAM,
    PulumiCli,
    PulumiProject,
    decode_secret,
    provider_pickle_size,
    write_project,
)

pytestmark = pytest.mark.engine


def _require_mode(cli: PulumiCli, mode: str) -> None:
    if mode == "cli" and not cli.has_python_language_host:
        pytest.fail(
            f"no pulumi-language-python beside {cli.pulumi}: scripts/ensure-pulumi.sh could "
            "not build the Python language host (see its output)",
            pytrace=False,
        )


# "cli": the CLI starts the program through pulumi-language-python, like `pulumi up` by hand.
# "inline": the Automation API's inline program path (the SDK's own language server).
@pytest.mark.parametrize("mode", ["cli", "inline"])
def test_preview_up_up_destroy_with_a_dynamic_provider(
    pulumi_cli: PulumiCli, pulumi_env: dict[str, str], tmp_path: Path, mode: str
) -> None:
    _require_mode(pulumi_cli, mode)
    project_dir = write_project(tmp_path / "proj", "toolchain", TOY_PROGRAM)
    project = PulumiProject(project_dir, pulumi_env, mode=mode)
    project.init_stack("test")

    assert project.preview() == {"create": 1}

    assert project.up() == {"create": 1}
    assert project.outputs() == {"toy_value": "hello"}

    (toy,) = project.resources(DYNAMIC_TYPE)
    assert toy["outputs"]["value"] == "hello"
    # The provider is pickled by reference (importable module), not by value.
    assert provider_pickle_size(toy) < 2048
    pickled = base64.b64decode(str(decode_secret(toy["outputs"]["__provider"])))
    assert b"tests.engine.toy_provider" in pickled

    assert project.up() == {"same": 1}
    assert project.preview() == {"same": 1}

    assert project.destroy() == {"delete": 1}
    assert project.resources(DYNAMIC_TYPE) == []


def test_provider_is_secret_in_state_without_show_secrets(
    pulumi_env: dict[str, str], tmp_path: Path
) -> None:
    project = PulumiProject(write_project(tmp_path / "proj", "toolchain", TOY_PROGRAM), pulumi_env)
    project.init_stack("test")
    project.up()
    raw = project.export(show_secrets=False)
    (toy,) = [r for r in raw["deployment"]["resources"] if r["type"] == DYNAMIC_TYPE]
    provider = toy["outputs"]["__provider"]
    assert isinstance(provider, dict)
    assert "ciphertext" in provider
    assert "tests.engine.toy_provider" not in json.dumps(raw)
    project.destroy()


def test_cli_reports_the_pinned_version(pulumi_cli: PulumiCli) -> None:
    if not pulumi_cli.pinned_build:
        pytest.skip(f"using the user's own pulumi {pulumi_cli.version} (>= {PINNED_VERSION})")
    assert pulumi_cli.version == PINNED_VERSION


def test_pulumi_about_lists_the_python_language_plugin(
    pulumi_cli: PulumiCli, pulumi_env: dict[str, str], tmp_path: Path
) -> None:
    _require_mode(pulumi_cli, "cli")
    project_dir = write_project(tmp_path / "proj", "about", None)
    proc = subprocess.run(
        [str(pulumi_cli.pulumi), "about", "--json"],
        cwd=project_dir,
        env=pulumi_env,
        capture_output=True,
        text=True,
        check=False,
        timeout=300,
    )
    assert proc.stdout, proc.stderr
    about = json.loads(proc.stdout)
    plugins = about.get("plugins") or []
    assert any(p.get("name") == "python" and p.get("kind") == "language" for p in plugins), about
