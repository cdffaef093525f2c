"""Driving the real Pulumi engine (CLI + engine + dynamic providers) from tests.

The fixtures ``pulumi_cli`` and ``pulumi_env`` (tests/conftest.py) use this module::

    def test_something(pulumi_env: dict[str, str], tmp_path: Path) -> None:
        write_project(tmp_path, "name", TOY_PROGRAM)
        project = PulumiProject(tmp_path, pulumi_env)
        project.init_stack("test")
        assert project.up() == {"create": 1}

* ``ensure_cli()``: runs ``scripts/ensure-pulumi.sh``; FAILS (never skips) when no CLI can
  be had, with the script's message.
* ``engine_env()``: an isolated engine environment: a fresh ``PULUMI_HOME`` and ``file://``
  backend, a fixed test passphrase, update checks and plugin downloads off, the CLI and
  the project's venv first on ``PATH``, the repo root on ``PYTHONPATH`` (so provider
  modules of this repo unpickle in the provider process).
* ``PulumiProject``: the operations on one project folder through the Automation API, which
  runs the real ``pulumi`` CLI. Counts exclude the root ``pulumi:pulumi:Stack`` resource and
  provider resources, so ``{"create": 1}`` means one of *your* resources is created.
* ``write_project()``: a project folder whose ``__main__.py`` is a fixed program file of
  tests/support/programs/ (programs read their parameters from data, never from text
  spliced into their source).

How the program runs: when the Python language host (``pulumi-language-python``) is on the
CLI's PATH (the normal case), the CLI starts ``__main__.py`` through it, as ``pulumi up``
does by hand ("cli" mode). When it is missing, the program runs as an Automation API inline
program: the Pulumi Python SDK's own language server executes ``__main__.py`` (with
``runpy``, as ``__main__``) in the test process and the CLI connects to it ("inline"
mode). The engine, state, diffing and the dynamic provider processes are the real ones in
both modes. Force a mode with ``IIS_CLIENTCERT_ENGINE_MODE=cli|inline``.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import runpy
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from pulumi import automation as auto

REPO_ROOT = Path(__file__).resolve().parents[2]
PROGRAMS = Path(__file__).resolve().parent / "programs"
# A program of one toy dynamic resource (tests/engine/toy_provider.py).
TOY_PROGRAM = PROGRAMS / "toy.py"
# The program of the resource tests: the resources spec.json beside it describes.
SPEC_PROGRAM = PROGRAMS / "spec.py"
VENV = REPO_ROOT / ".venv"
ENSURE_PULUMI = REPO_ROOT / "scripts" / "ensure-pulumi.sh"
PINNED_VERSION = "v3.274.1"
# Fixed passphrase for throwaway stacks in tmp_path only; protects nothing real.
TEST_PASSPHRASE = "iis-clientcert-test-only"
STACK_TYPE = "pulumi:pulumi:Stack"
DYNAMIC_TYPE = "pulumi-python:dynamic:Resource"
# Variables of the caller's environment that would point the CLI at their own account,
# backend or secrets; never inherited by engine tests.
_SCRUBBED = (
    "PULUMI_ACCESS_TOKEN",
    "PULUMI_BACKEND_URL",
    "PULUMI_CONFIG_PASSPHRASE",
    "PULUMI_CONFIG_PASSPHRASE_FILE",
    "PULUMI_HOME",
    "PULUMI_RUNTIME_VIRTUALENV",
)


@dataclass(frozen=True)
class PulumiCli:
    """The CLI the engine tests use."""

    bin_dir: Path
    version: str
    pinned_build: bool  # True when it is our cached build, not a user's pulumi on PATH

    @property
    def pulumi(self) -> Path:
        return self.bin_dir / "pulumi"

    @property
    def has_python_language_host(self) -> bool:
        return (self.bin_dir / "pulumi-language-python").exists() or (
            not self.pinned_build and shutil.which("pulumi-language-python") is not None
        )


def ensure_cli() -> PulumiCli:
    """The Pulumi CLI (found or built); fails the calling test when there is none."""
    proc = subprocess.run(
        ["bash", str(ENSURE_PULUMI)],
        capture_output=True,
        text=True,
        check=False,
        timeout=3600,
    )
    lines = proc.stdout.strip().splitlines()
    if proc.returncode != 0 or not lines:
        pytest.fail(
            "the Pulumi CLI cannot be had (scripts/ensure-pulumi.sh exited "
            f"{proc.returncode}):\n{proc.stderr}",
            pytrace=False,
        )
    bin_dir = Path(lines[-1])
    pulumi = bin_dir / "pulumi"
    if not pulumi.exists():
        pytest.fail(f"scripts/ensure-pulumi.sh named {bin_dir}, which has no pulumi", pytrace=False)
    version = subprocess.run(
        [str(pulumi), "version"],
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, "PULUMI_SKIP_UPDATE_CHECK": "true"},
    ).stdout.strip()
    pinned_build = bin_dir.parent.name == f"pulumi-{PINNED_VERSION}" and bin_dir.name == "bin"
    return PulumiCli(bin_dir=bin_dir, version=version, pinned_build=pinned_build)


def engine_env(cli: PulumiCli, base: Path) -> dict[str, str]:
    """An isolated engine environment rooted at ``base`` (created here)."""
    home = base / "pulumi-home"
    state = base / "state"
    home.mkdir(parents=True, exist_ok=True)
    state.mkdir(parents=True, exist_ok=True)
    env = {k: v for k, v in os.environ.items() if k not in _SCRUBBED}
    path_parts = [str(cli.bin_dir), str(VENV / "bin"), env.get("PATH", "")]
    env["PATH"] = os.pathsep.join(p for p in path_parts if p)
    py_path = [str(REPO_ROOT), env.get("PYTHONPATH", "")]
    env["PYTHONPATH"] = os.pathsep.join(p for p in py_path if p)
    env.update(
        {
            "PULUMI_HOME": str(home),
            "PULUMI_BACKEND_URL": state.as_uri(),
            "PULUMI_CONFIG_PASSPHRASE": TEST_PASSPHRASE,
            "PULUMI_SKIP_UPDATE_CHECK": "true",
            "PULUMI_DISABLE_AUTOMATIC_PLUGIN_ACQUISITION": "true",
            "PULUMI_AUTOMATION_API_SKIP_VERSION_CHECK": "true",
            # The dynamic provider launcher runs this venv's python (same as the language
            # host does for `runtime.options.virtualenv`).
            "PULUMI_RUNTIME_VIRTUALENV": str(VENV),
            # The fallback language host (sdk v3.68.0, see scripts/ensure-pulumi.sh) does not
            # read `runtime.options.virtualenv`; it runs this interpreter.
            "PULUMI_PYTHON_CMD": str(VENV / "bin" / "python"),
        }
    )
    return env


def write_project(
    project_dir: Path, name: str, program: Path | None, *, stack_config_dir: str | None = None
) -> Path:
    """Write ``Pulumi.yaml`` (runtime python on this repo's venv; ``stackConfigDir`` when
    given) and ``__main__.py``, a copy of the program file ``program`` (None: an empty
    program)."""
    project_dir.mkdir(parents=True, exist_ok=True)
    settings = f"name: {name}\nruntime:\n  name: python\n  options:\n    virtualenv: {VENV}\n"
    if stack_config_dir is not None:
        settings += f"stackConfigDir: {stack_config_dir}\n"
    (project_dir / "Pulumi.yaml").write_text(settings)
    (project_dir / "__main__.py").write_text(program.read_text() if program else "")
    return project_dir


@contextlib.contextmanager
def _program_context(project_dir: Path) -> Iterator[None]:
    """cwd and sys.path as the language host would set them for an inline run."""
    old_cwd = Path.cwd()
    sys.path.insert(0, str(project_dir))
    os.chdir(project_dir)
    try:
        yield
    finally:
        os.chdir(old_cwd)
        with contextlib.suppress(ValueError):
            sys.path.remove(str(project_dir))


class PulumiProject:
    """Run the real engine on the project in ``project_dir`` with the environment ``env``."""

    def __init__(self, project_dir: Path, env: dict[str, str], mode: str | None = None) -> None:
        self.dir = Path(project_dir).resolve()
        self.env = dict(env)
        pulumi = shutil.which("pulumi", path=self.env["PATH"])
        if pulumi is None:
            raise RuntimeError("no pulumi on the PATH of this environment")
        self.pulumi = Path(pulumi)
        has_host = shutil.which("pulumi-language-python", path=self.env["PATH"]) is not None
        self.mode = (
            mode
            or os.environ.get("IIS_CLIENTCERT_ENGINE_MODE")
            or ("cli" if has_host else "inline")
        )
        if self.mode not in ("cli", "inline"):
            raise ValueError(f"mode must be 'cli' or 'inline', not {self.mode!r}")
        program = _inline_program(self.dir / "__main__.py") if self.mode == "inline" else None
        self.workspace = auto.LocalWorkspace(
            work_dir=str(self.dir),
            pulumi_home=self.env["PULUMI_HOME"],
            env_vars=self.env,
            program=program,
            pulumi_command=auto.PulumiCommand(
                root=str(self._command_root()), skip_version_check=True
            ),
        )
        self._stack: auto.Stack | None = None
        self.last_events: list[auto.EngineEvent] = []
        self.last_summary: dict[str, int] = {}

    def _command_root(self) -> Path:
        """A folder with ``bin/pulumi`` (what ``auto.PulumiCommand`` expects)."""
        if self.pulumi.parent.name == "bin":
            return self.pulumi.parent.parent
        root = Path(tempfile.mkdtemp(prefix="pulumi-root-"))
        (root / "bin").mkdir()
        (root / "bin" / "pulumi").symlink_to(self.pulumi)
        return root

    @property
    def stack(self) -> auto.Stack:
        if self._stack is None:
            raise RuntimeError("call init_stack() or select_stack() first")
        return self._stack

    # --- stacks and config ----------------------------------------------------------------

    def init_stack(self, name: str) -> None:
        self._stack = auto.Stack.create(name, self.workspace)

    def select_stack(self, name: str) -> None:
        self._stack = auto.Stack.select(name, self.workspace)

    def config_set(self, key: str, value: str, secret: bool = False) -> None:
        self.stack.set_config(key, auto.ConfigValue(value=value, secret=secret))

    # --- operations -----------------------------------------------------------------------

    def preview(self) -> dict[str, int]:
        """Planned changes of this project's resources, e.g. ``{"create": 1}``."""
        self.last_events = []
        with self._context():
            result = self.stack.preview(on_event=self.last_events.append, color="never")
        return self._counts(_plain(result.change_summary))

    def up(self) -> dict[str, int]:
        """``pulumi up --yes``; returns what changed, e.g. ``{"create": 1}`` or ``{"same": 1}``."""
        self.last_events = []
        with self._context():
            result = self.stack.up(on_event=self.last_events.append, color="never")
        return self._counts(_plain(result.summary.resource_changes or {}))

    def refresh(self) -> dict[str, int]:
        self.last_events = []
        with self._context():
            result = self.stack.refresh(on_event=self.last_events.append, color="never")
        return self._counts(_plain(result.summary.resource_changes or {}))

    def destroy(self) -> dict[str, int]:
        self.last_events = []
        with self._context():
            result = self.stack.destroy(on_event=self.last_events.append, color="never")
        return self._counts(_plain(result.summary.resource_changes or {}))

    def export(self, show_secrets: bool = True) -> dict[str, Any]:
        """The stack's deployment (``pulumi stack export [--show-secrets]``) as a dict."""
        args = ["stack", "export", "--stack", self.stack.name]
        if show_secrets:
            args.append("--show-secrets")
        exported: dict[str, Any] = json.loads(self.run(*args).stdout)
        return exported

    def outputs(self) -> dict[str, Any]:
        return {k: v.value for k, v in self.stack.outputs().items()}

    def run(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        """Run the CLI itself in the project folder with this environment."""
        proc = subprocess.run(
            [str(self.pulumi), *args, "--non-interactive"],
            cwd=self.dir,
            env=self.env,
            capture_output=True,
            text=True,
            check=False,
            timeout=900,
        )
        if check and proc.returncode != 0:
            raise AssertionError(
                f"pulumi {' '.join(args)} exited {proc.returncode}\n"
                f"stdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"
            )
        return proc

    # --- state helpers ----------------------------------------------------------------------

    def resources(self, type_: str | None = None) -> list[dict[str, Any]]:
        """Resources in the exported state (secrets shown), optionally of one type."""
        deployment = self.export()["deployment"]
        found: list[dict[str, Any]] = deployment.get("resources") or []
        return [r for r in found if type_ is None or r.get("type") == type_]

    # --- internals ------------------------------------------------------------------------

    def _context(self) -> contextlib.AbstractContextManager[None]:
        if self.mode == "inline":
            return _program_context(self.dir)
        return contextlib.nullcontext()

    def _counts(self, summary: dict[str, int]) -> dict[str, int]:
        """The engine's summary less the root stack's own step (and any zero counts)."""
        self.last_summary = dict(summary)
        counts = dict(summary)
        stack_op = self._stack_op()
        if stack_op is not None and counts.get(stack_op, 0) > 0:
            counts[stack_op] -= 1
        return {op: n for op, n in counts.items() if n > 0}

    def _stack_op(self) -> str | None:
        op: str | None = None
        for event in self.last_events:
            meta = None
            if event.resource_pre_event is not None:
                meta = event.resource_pre_event.metadata
            elif event.res_outputs_event is not None:
                meta = event.res_outputs_event.metadata
            if meta is not None and meta.type == STACK_TYPE:
                op = _plain_key(meta.op)
        # A refresh reads the stack ("refresh" step) and counts it as "same".
        return "same" if op == "refresh" else op


def _inline_program(main: Path) -> Callable[[], None]:
    def program() -> None:
        runpy.run_path(str(main), run_name="__main__")

    return program


def _plain_key(key: object) -> str:
    value = getattr(key, "value", key)
    return str(value)


def _plain(summary: Mapping[Any, int]) -> dict[str, int]:
    return {_plain_key(k): int(v) for k, v in summary.items()}


def decode_secret(value: object) -> object:
    """The plaintext of a value from ``stack export --show-secrets`` (secrets are wrapped)."""
    if isinstance(value, dict) and "plaintext" in value:
        return json.loads(value["plaintext"])
    return value


def provider_pickle_size(resource: dict[str, Any]) -> int:
    """Size in bytes of the dill pickle stored as a dynamic resource's ``__provider``."""
    raw = decode_secret(resource["outputs"]["__provider"])
    assert isinstance(raw, str), f"__provider is not a string: {type(raw).__name__}"
    return len(base64.b64decode(raw))
