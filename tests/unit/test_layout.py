"""The layout is part of the contract: provider classes are pickled into Pulumi state by
module path, resource types are part of every URN, the host boundary runs without pulumi,
and the layers only call downward."""

from __future__ import annotations

import ast
import base64
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import dill
import pulumi
import pulumi.runtime
import pytest
from pulumi.dynamic.dynamic import serialize_provider

from iis_clientcert import providers
from iis_clientcert.components import ClientCertSiteArgs
from iis_clientcert.framework.inputs import ConnectionArgsDict
from iis_clientcert.framework.resource import LEGACY_TYPE, type_token, with_legacy_alias
from iis_clientcert.host import contract
from iis_clientcert.providers.ssl_settings import SslSettingsProvider
from iis_clientcert.tools import doctor

REPO = Path(__file__).resolve().parents[2]

# Resource -> (its type token, the provider class pickled into its state). Changing either
# orphans every stack made before: add an alias (type) or a shim module (provider) first.
PINNED: dict[str, tuple[str, str]] = {
    "AnonymousAuthentication": (
        "pulumi-python:dynamic/iis-clientcert:AnonymousAuthentication",
        "iis_clientcert.providers.anonymous_authentication.AnonymousAuthenticationProvider",
    ),
    "CertificateMapping": (
        "pulumi-python:dynamic/iis-clientcert:CertificateMapping",
        "iis_clientcert.providers.certificate_mapping.CertificateMappingProvider",
    ),
    "HttpsBinding": (
        "pulumi-python:dynamic/iis-clientcert:HttpsBinding",
        "iis_clientcert.providers.https_binding.HttpsBindingProvider",
    ),
    "LocalUser": (
        "pulumi-python:dynamic/iis-clientcert:LocalUser",
        "iis_clientcert.providers.local_user.LocalUserProvider",
    ),
    "ServerCertificate": (
        "pulumi-python:dynamic/iis-clientcert:ServerCertificate",
        "iis_clientcert.providers.server_certificate.ServerCertificateProvider",
    ),
    "SslSettings": (
        "pulumi-python:dynamic/iis-clientcert:SslSettings",
        "iis_clientcert.providers.ssl_settings.SslSettingsProvider",
    ),
    "TrustedRoot": (
        "pulumi-python:dynamic/iis-clientcert:TrustedRoot",
        "iis_clientcert.providers.trusted_root.TrustedRootProvider",
    ),
}

CONNECTION: ConnectionArgsDict = {
    "endpoint": "https://web01:5986/wsman",
    "username": "u",
    "password": "p",
}
# Just enough inputs to construct each resource (the provider is not called under mocks).
INPUTS: dict[str, dict[str, Any]] = {
    "AnonymousAuthentication": {"site": "shop"},
    "CertificateMapping": {"site": "shop"},
    "HttpsBinding": {"site": "shop", "certificate_thumbprint": "AB" * 20},
    "LocalUser": {"name": "alice", "password": "pw"},
    "ServerCertificate": {"pfx": "MIIB", "password": "pw"},
    "SslSettings": {"site": "shop"},
    "TrustedRoot": {"certificate": "MIIB"},
}

# Pulumi's wire envelope of a secret value (pulumi.runtime.rpc).
_SECRET_SIG = "4dabf18193072939515e22adb298388d"


class _Mocks(pulumi.runtime.Mocks):
    def __init__(self) -> None:
        self.registered: dict[str, pulumi.runtime.MockResourceArgs] = {}

    def new_resource(self, args: pulumi.runtime.MockResourceArgs) -> tuple[str, dict[str, Any]]:
        self.registered[args.name] = args
        return f"{args.name}_id", args.inputs

    def call(
        self, args: pulumi.runtime.MockCallArgs
    ) -> tuple[dict[Any, Any], list[tuple[str, str]] | None]:
        return {}, None


@pytest.fixture(scope="module")
def registered() -> dict[str, pulumi.runtime.MockResourceArgs]:
    """Each resource class constructed once, as a program does, and what it registered."""
    mocks = _Mocks()
    pulumi.runtime.set_mocks(mocks, preview=False)

    @pulumi.runtime.test  # type: ignore[untyped-decorator]
    def program() -> Any:
        made = [
            getattr(providers, kind)(kind, connection=CONNECTION, **inputs)
            for kind, inputs in INPUTS.items()
        ]
        return pulumi.Output.all(*[r.urn for r in made])

    program()
    return mocks.registered


def _pickle_of(args: pulumi.runtime.MockResourceArgs) -> bytes:
    value = args.inputs["__provider"]
    assert isinstance(value, dict) and value.get(_SECRET_SIG), "__provider must be secret"
    return base64.b64decode(value["value"])


# ============================================================ state format: types, pickles


def test_every_resource_is_pinned() -> None:
    assert sorted(providers.__all__) == sorted(PINNED)


@pytest.mark.parametrize("kind", sorted(PINNED))
def test_resource_registers_its_own_type(
    kind: str, registered: dict[str, pulumi.runtime.MockResourceArgs]
) -> None:
    token, _ = PINNED[kind]
    assert registered[kind].typ == token == type_token(kind)
    assert token != LEGACY_TYPE


@pytest.mark.parametrize("kind", sorted(PINNED))
def test_provider_is_pickled_by_its_pinned_module_path(
    kind: str, registered: dict[str, pulumi.runtime.MockResourceArgs]
) -> None:
    _, path = PINNED[kind]
    module, _, qualname = path.rpartition(".")
    pickled = _pickle_of(registered[kind])
    # By reference: the module path and class name, not the class's code.
    assert module.encode() in pickled and qualname.encode() in pickled
    assert len(pickled) < 2048, f"__provider of {kind} is {len(pickled)} bytes"
    # What Pulumi's provider process does; the bytes are the ones pickled just above.
    provider = dill.loads(pickled)  # noqa: S301
    assert f"{type(provider).__module__}.{type(provider).__qualname__}" == path


def test_the_sdk_serializer_pickles_a_provider_by_reference() -> None:
    # The same through pulumi.dynamic's own serializer (dill, recurse=True), directly.
    pickled = base64.b64decode(serialize_provider(SslSettingsProvider()))
    assert b"iis_clientcert.providers.ssl_settings" in pickled
    assert b"SslSettingsProvider" in pickled
    assert b"normalise_flags" not in pickled  # no code travels with it
    assert len(pickled) < 2048


def test_the_legacy_alias_keeps_the_callers_options() -> None:
    parent = pulumi.Alias(name="old-name")
    merged = with_legacy_alias(pulumi.ResourceOptions(aliases=[parent], protect=True))
    assert merged.protect is True
    types = [getattr(a, "type_", None) for a in merged.aliases or []]
    names = [getattr(a, "name", None) for a in merged.aliases or []]
    assert LEGACY_TYPE in types and "old-name" in names
    assert [getattr(a, "type_", None) for a in with_legacy_alias(None).aliases or []] == [
        LEGACY_TYPE
    ]


# ================================================================= imports, statically


def _module_files(folder: Path, package: str) -> Iterator[tuple[str, Path]]:
    for path in sorted(folder.glob("*.py")):
        name = package if path.stem == "__init__" else f"{package}.{path.stem}"
        yield name, path


# The physical folders and the import names they have (providers/ and components/ are
# linked into iis_clientcert; the glob does not follow the links, so each file once).
HOST = [
    *_module_files(REPO / "iis_clientcert" / "host", "iis_clientcert.host"),
    *_module_files(REPO / "iis_clientcert" / "tools", "iis_clientcert.tools"),
    ("iis_clientcert.errors", REPO / "iis_clientcert" / "errors.py"),
    ("iis_clientcert.certs", REPO / "iis_clientcert" / "certs.py"),
]
FRAMEWORK = list(_module_files(REPO / "iis_clientcert" / "framework", "iis_clientcert.framework"))
PROVIDERS = list(_module_files(REPO / "providers", "iis_clientcert.providers"))
COMPONENTS = list(_module_files(REPO / "components", "iis_clientcert.components"))
PRODUCT = [
    ("iis_clientcert", REPO / "iis_clientcert" / "__init__.py"),
    *HOST,
    *FRAMEWORK,
    *PROVIDERS,
    *COMPONENTS,
    ("__main__", REPO / "__main__.py"),
    ("stack_config", REPO / "stack_config.py"),
]


def imports_of(module: str, path: Path) -> set[str]:
    """Every module a file imports, anywhere in it (functions, TYPE_CHECKING blocks too).

    ``from a import b`` counts as ``a`` and as ``a.b`` (b may be a submodule)."""
    found: set[str] = set()
    is_package = path.name == "__init__.py"
    for node in ast.walk(ast.parse(path.read_text("utf-8"), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = module.split(".")
                keep = len(parts) - node.level + (1 if is_package else 0)
                base = ".".join([*parts[:keep], *([base] if base else [])])
            found.add(base)
            found.update(f"{base}.{alias.name}" for alias in node.names)
    return found


def _under(name: str, *prefixes: str) -> bool:
    return any(name == p or name.startswith(p + ".") for p in prefixes)


def test_imports_of_sees_every_form(tmp_path: Path) -> None:
    source = tmp_path / "mod.py"
    source.write_text(
        "import pulumi.dynamic\n"
        "from iis_clientcert.host import client\n"
        "def f():\n    from .sibling import x\n"
    )
    found = imports_of("iis_clientcert.tools.mod", source)
    assert {"pulumi.dynamic", "iis_clientcert.host.client", "iis_clientcert.tools.sibling"} <= (
        found
    )


@pytest.mark.parametrize(("module", "path"), HOST, ids=[m for m, _ in HOST])
def test_host_boundary_never_imports_pulumi_or_anything_above(module: str, path: Path) -> None:
    above = (
        "pulumi",
        "iis_clientcert.framework",
        "iis_clientcert.providers",
        "iis_clientcert.components",
    )
    bad = sorted(name for name in imports_of(module, path) if _under(name, *above))
    assert bad == [], f"{path.relative_to(REPO)} imports {bad}"


def test_host_boundary_runs_without_pulumi() -> None:
    modules = [module for module, path in HOST if path.name != "__init__.py"]
    check = (
        f"import sys\nimport {', '.join(modules)}\n"
        "loaded = sorted(m for m in sys.modules if m == 'pulumi' or m.startswith('pulumi.'))\n"
        "print(' '.join(loaded))\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", check], cwd=REPO, capture_output=True, text=True, check=True
    )
    assert proc.stdout.strip() == "", f"importing the host boundary loaded {proc.stdout}"
    # The same check sees pulumi when it is loaded (so the empty answer above means something).
    control = check.replace(", ".join(modules), "iis_clientcert.framework.base")
    proc = subprocess.run(
        [sys.executable, "-c", control], cwd=REPO, capture_output=True, text=True, check=True
    )
    assert "pulumi" in proc.stdout.split()


# The package's __init__ lists the resources; it is no resource module.
RESOURCE_MODULES = [(m, p) for m, p in PROVIDERS if p.name != "__init__.py"]


@pytest.mark.parametrize(("module", "path"), RESOURCE_MODULES, ids=[m for m, _ in RESOURCE_MODULES])
def test_a_resource_module_imports_no_other_resource_module(module: str, path: Path) -> None:
    bad = sorted(
        name
        for name in imports_of(module, path)
        if _under(name, "iis_clientcert.providers", "iis_clientcert.components")
        and not _under(name, module)
    )
    assert bad == [], f"{path.relative_to(REPO)} imports {bad}: share it in the framework"


@pytest.mark.parametrize(("module", "path"), FRAMEWORK, ids=[m for m, _ in FRAMEWORK])
def test_the_framework_imports_no_resource_or_component(module: str, path: Path) -> None:
    bad = sorted(
        name
        for name in imports_of(module, path)
        if _under(name, "iis_clientcert.providers", "iis_clientcert.components")
    )
    assert bad == [], f"{path.relative_to(REPO)} imports {bad}"


@pytest.mark.parametrize(("module", "path"), PRODUCT, ids=[m for m, _ in PRODUCT])
def test_the_product_never_imports_the_simulator(module: str, path: Path) -> None:
    bad = sorted(n for n in imports_of(module, path) if _under(n, "iis_clientcert_simulator"))
    assert bad == [], f"{path.relative_to(REPO)} imports the test double: {bad}"


# ============================================== the folder names are not import roots


def _tracked_files() -> list[Path]:
    out = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard"],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    paths = [REPO / name for name in out]
    return [p for p in paths if p.is_file() and not p.is_symlink()]


def _texts(*suffixes: str) -> Iterator[tuple[Path, str]]:
    for path in _tracked_files():
        if path.suffix in suffixes or path.name in suffixes:
            try:
                yield path, path.read_text("utf-8")
            except UnicodeDecodeError:
                continue


FOLDER_NAMES = ("providers", "components", "simulator")


def test_no_python_file_imports_a_folder_name() -> None:
    bad = []
    for path, _ in _texts(".py"):
        for name in imports_of(path.stem, path):
            if _under(name, *FOLDER_NAMES):
                bad.append(f"{path.relative_to(REPO)}: {name}")
    assert bad == []


# An import statement or a `python -m` of a folder name, in code, program strings (the
# engine tests' programs), the README's examples and the scripts alike.
_FOLDER_IMPORT = re.compile(
    r"^\s*(?:from|import)\s+(?:%s)\b|-m\s+(?:%s)\b" % (("|".join(FOLDER_NAMES),) * 2),
    re.MULTILINE,
)


def test_no_text_tells_to_import_a_folder_name() -> None:
    suffixes = (".py", ".md", ".sh", ".yaml", ".toml", "Makefile")
    bad = [
        f"{path.relative_to(REPO)}: {match.group(0).strip()}"
        for path, text in _texts(*suffixes)
        for match in _FOLDER_IMPORT.finditer(text)
    ]
    assert bad == []


@pytest.mark.parametrize(
    "line",
    [
        "from providers.ssl_settings import SslSettings",
        "import components",
        "from simulator import pki",
    ],
)
def test_ruff_refuses_a_folder_name(line: str) -> None:
    # pyproject.toml's banned-api (TID251), so an editor flags it before any test runs.
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "ruff",
            "check",
            "--select",
            "TID251",
            "--stdin-filename",
            "tests/unit/banned_probe.py",
            "-",
        ],
        cwd=REPO,
        input=line + "\n",
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 1 and "TID251" in proc.stdout, proc.stdout + proc.stderr


# ======================================================= leftovers: names, paths, defaults


def test_the_program_reads_no_private_attribute() -> None:
    # `site._name` worked until an SDK renamed it; the program uses public names only.
    tree = ast.parse((REPO / "__main__.py").read_text("utf-8"))
    private = [
        node.attr
        for node in ast.walk(tree)
        if isinstance(node, ast.Attribute)
        and node.attr.startswith("_")
        and not node.attr.startswith("__")
    ]
    assert private == []


def test_ssl_flags_default_is_one_constant() -> None:
    expected = ["Ssl", "SslNegotiateCert", "SslRequireCert"]
    assert list(contract.DEFAULT_SSL_FLAGS) == expected
    assert ClientCertSiteArgs(connection=CONNECTION, site="shop").ssl_flags == expected
    assert SslSettingsProvider().validate({"site": "shop"}).fields["flags"] == expected
    assert doctor.REQUIRED_FLAGS == "Ssl, SslNegotiateCert, SslRequireCert"
    # The README states the same default for ClientCertSite and for SslSettings.
    readme = (REPO / "README.md").read_text("utf-8")
    assert readme.count(f"`{doctor.REQUIRED_FLAGS}`") == 2
    # No other copy of the literal in the code.
    copies = [
        str(path.relative_to(REPO))
        for path, text in _texts(".py")
        if re.search(r"""["']Ssl["'],\s*["']SslNegotiateCert["'],\s*["']SslRequireCert["']""", text)
        and path.parts[len(REPO.parts)] != "tests"
    ]
    assert copies == ["iis_clientcert/host/contract.py"]


# A path to a file of this repo, as comments, docstrings and docs name them: starts with
# a top-level folder, not part of a longer path or a pattern (Pulumi.<env>.yaml).
_TOP = "|".join(
    [
        *("providers", "components", "simulator", "iis_clientcert", "iis_clientcert_simulator"),
        *("tests", "scripts", "stacks", "examples", "benchmarks"),
    ]
)
_PATH = re.compile(r"(?<![\w$./-])((?:" + _TOP + r")/[\w./-]*\w)(?![\w.<*{/-])")
# Files a user supplies (certificates in an example) are not this repo's.
_USER_FILES = (".pem", ".pfx", ".cer", ".der", ".key")
# Paths named on purpose that do not exist (none now; agent.ps1's first comment named the
# contract's old place until the persistent agent rewrote it).
KNOWN_STALE: set[tuple[str, str]] = set()


def test_every_file_path_named_in_the_repo_exists() -> None:
    suffixes = (".py", ".md", ".ps1", ".sh", ".yaml", ".toml", "Makefile")
    missing = set()
    for path, text in _texts(*suffixes):
        if path == Path(__file__).resolve():
            continue  # this file names missing paths on purpose (KNOWN_STALE, the probe)
        for match in _PATH.finditer(text):
            ref = match.group(1)
            if not ref.endswith(_USER_FILES) and not (REPO / ref).exists():
                missing.add((str(path.relative_to(REPO)), ref))
    assert missing == KNOWN_STALE
