"""The iis-clientcert component package: ClientCertSite for Pulumi programs in any language
(YAML, TypeScript, Go, C#, ...), served by a provider process that runs the Python component.

    python -m iis_clientcert.package <engine address>  (plugin/pulumi-resource-iis-clientcert)
    python -m iis_clientcert.package --schema          the schema (schema/iis-clientcert.json)

The schema is inferred by Pulumi's component analyzer (``pulumi.provider.experimental``)
from ``iis_clientcert.components.remote``, then polished: descriptions as paragraphs,
secrets marked ``secret``. Type token: ``iis-clientcert:index:ClientCertSite``.

The provider builds ``iis_clientcert.components.ClientCertSite`` from the inputs (named in
Python by the analyzer's mapping) and reports the component's argument errors as one line
in the schema's spelling (``oneToOne[0].user``), whether they are found when the component
is built or when an Output resolves, instead of a Python traceback. The site's resources
are the Python program's dynamic resources: Pulumi runs their provider with the consuming
project's Python (``runtime.options.virtualenv``, or ``PULUMI_PYTHON_CMD``), which must
import this package (checked here first, with the fix in the message).

``component_provider_host`` would construct the analyzed class itself and wrap every error
of the component in a traceback; hence its parts here (ComponentProvider, the SDK's
provider server) with those two things changed.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import importlib.metadata
import inspect
import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Mapping
from functools import cache
from typing import Any

import grpc  # type: ignore[import-untyped]
import pulumi
from pulumi.errors import InputPropertiesError, InputPropertyErrorDetails
from pulumi.provider.experimental.analyzer import TypeDefinition
from pulumi.provider.experimental.component import ComponentProvider
from pulumi.provider.experimental.util import camel_case
from pulumi.provider.provider import ConstructResult
from pulumi.provider.server import ProviderServicer
from pulumi.runtime._grpc_settings import _GRPC_CHANNEL_OPTIONS
from pulumi.runtime.proto import provider_pb2_grpc

from iis_clientcert.components import remote
from iis_clientcert.components.checks import ArgsError
from iis_clientcert.components.client_cert_site import ClientCertSite
from iis_clientcert.errors import UsageError

NAME = "iis-clientcert"
TOKEN = f"{NAME}:index:ClientCertSite"
# Lists whose entries each become a resource, and the https object: the component needs
# them written in the program (their entries may be Outputs), not computed as a whole.
PLAIN_INPUTS = ("https", "trusted_roots", "users", "one_to_one", "many_to_one")


def version() -> str:
    return importlib.metadata.version(NAME)


# ============================================================================ the schema


def _paragraphs(text: str) -> str:
    """A docstring as the schema's Markdown: indentation gone, lines of a paragraph joined."""
    blocks = inspect.cleandoc(text).split("\n\n")
    return "\n\n".join(" ".join(block.split()) for block in blocks)


def _polish_property(prop: dict[str, Any], secret: bool) -> None:
    if "description" in prop:
        prop["description"] = _paragraphs(prop["description"])
    if secret:
        prop["secret"] = True
    for inner in ("items", "additionalProperties"):
        if inner in prop:
            # The analyzer repeats the property's description on its items.
            prop[inner].pop("description", None)
            _polish_property(prop[inner], False)


def polish(schema: dict[str, Any]) -> dict[str, Any]:
    """The analyzer's schema as users read it (``pulumi package get-schema``, SDK docs)."""
    schema["displayName"] = "IIS client certificates"
    schema["description"] = (
        "Declarative IIS client-certificate authentication over WinRM: a site's sslFlags, "
        "trusted CAs, local accounts, one-to-one and many-to-one certificate mappings and "
        "https binding, as one ClientCertSite."
    )
    schema["keywords"] = [
        "iis",
        "windows",
        "client-certificates",
        "mtls",
        "winrm",
        "category/utility",
    ]
    schema["license"] = "Apache-2.0"
    # As `pulumi package get-schema` prints it (the published file is that output).
    if not schema.get("dependencies"):
        schema.pop("dependencies", None)
    schema.setdefault("config", {})
    secrets = {t.__name__: set(map(camel_case, keys)) for t, keys in remote.SECRETS.items()}
    for resource in schema.get("resources", {}).values():
        resource["description"] = _paragraphs(resource.get("description", ""))
        for section in ("inputProperties", "properties"):
            for prop in resource.get(section, {}).values():
                _polish_property(prop, False)
    for token, typ in schema.get("types", {}).items():
        name = token.rsplit(":", 1)[-1]
        typ["description"] = _paragraphs(typ.get("description", ""))
        for key, prop in typ.get("properties", {}).items():
            _polish_property(prop, key in secrets.get(name, set()))
    return schema


# ================================================================ names in other languages


_IDENTIFIER = re.compile(r"\b[a-z][a-z0-9]*(?:_[a-z0-9]+)+\b")


@cache
def _python_names() -> frozenset[str]:
    names: set[str] = set()
    for mirror in remote.mirrors():
        names.update(remote.field_docs(mirror.schema))
    return frozenset(n for n in names if "_" in n)


def spelled(path: str) -> str:
    """A property path of the Python component in the schema's spelling:
    ``many_to_one[0].rules[1].sub_field`` -> ``manyToOne[0].rules[1].subField``."""
    return re.sub(r"[A-Za-z_][A-Za-z0-9_]*", lambda m: camel_case(m.group(0)), path)


def spelled_text(text: str) -> str:
    """Property names the Python component's messages mention, in the schema's spelling
    (``set allow_untrusted_client_certificates=True`` -> ``set
    allowUntrustedClientCertificates: true``)."""
    known = _python_names()
    text = _IDENTIFIER.sub(lambda m: camel_case(m[0]) if m[0] in known else m[0], text)
    return re.sub(
        r"\b([a-z][A-Za-z0-9]*)=(True|False)\b", lambda m: f"{m[1]}: {m[2].lower()}", text
    )


def _shown(value: Any) -> str:
    if value is None:
        return ""
    try:
        text = json.dumps(value)
    except (TypeError, ValueError):
        text = repr(value)
    return " = " + (text if len(text) <= 120 else text[:117] + "...")


def message(exc: ArgsError) -> str:
    """The component's error as a user of another language reads it: the property in the
    schema's spelling, the value as JSON, the problem and the fix (the engine names the
    resource before it)."""
    text = f"{spelled(exc.property)}{_shown(exc.value)}: {spelled_text(exc.problem)}"
    if exc.fix:
        text += f". {spelled_text(exc.fix)}"
    return text


def user_error(exc: ArgsError) -> InputPropertiesError:
    """What the engine shows as ``<type> resource '<name>' has a problem: <message>``."""
    errors: list[InputPropertyErrorDetails] = []  # the message names the property already
    return InputPropertiesError(message(exc), errors)


def _args_error(exc: BaseException | None) -> ArgsError | None:
    """The component's error behind ``exc`` (an Output's failure reaches the provider as the
    failure of a child's registration, with the check's error as its cause)."""
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, ArgsError):
            return exc
        exc = exc.__cause__ or exc.__context__
    return None


# =========================================================================== the provider


def _dynamic_python() -> str:
    """The interpreter Pulumi's provider of dynamic resources (pulumi-resource-pulumi-python)
    runs in the consuming project, as that launcher picks it (a relative virtualenv is the
    project folder's, the working directory of both)."""
    venv = os.environ.get("PULUMI_RUNTIME_VIRTUALENV", "").rstrip("/")
    if venv:
        return os.path.join(os.path.abspath(venv), "bin", "python")
    return os.environ.get("PULUMI_PYTHON_CMD") or "python3"


@cache
def _dynamic_python_problem() -> str | None:
    """Why the site's resources could not run, or None (asked once per provider process)."""
    command = _dynamic_python()
    found = shutil.which(command)
    if found is not None and os.path.realpath(found) == os.path.realpath(sys.executable):
        return None
    try:
        proc = subprocess.run(
            [command, "-c", "import iis_clientcert.providers"],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        if proc.returncode == 0:
            return None
    except OSError:
        pass
    return (
        f"the site's resources run in the project's Python ({command}), which cannot import "
        "iis_clientcert. Name the Python that has iis-clientcert installed in the project's "
        f"Pulumi.yaml: runtime.options.virtualenv: {sys.prefix} (or set PULUMI_PYTHON_CMD)"
    )


class ClientCertSiteProvider(ComponentProvider):
    """Serves ``iis-clientcert:index:ClientCertSite`` with the Python component."""

    def __init__(self) -> None:
        super().__init__(
            [remote.ClientCertSite],  # its shape (see remote.py); construct builds the real one
            NAME,
            version=version(),
        )
        self.schema = json.dumps(polish(json.loads(self.schema or "{}")), indent=2)
        # The stack's resource per (project, stack), shared by every construct (_share_register).
        self._roots: dict[tuple[str, str], pulumi.Resource] = {}

    def construct(
        self,
        name: str,
        resource_type: str,
        inputs: pulumi.Inputs,
        options: pulumi.ResourceOptions | None = None,
    ) -> ConstructResult:
        self.validate_resource_type(NAME, resource_type)
        if resource_type != TOKEN:
            raise UsageError(f"{NAME} has no component {resource_type}")
        definition = self._component_defs["ClientCertSite"]
        problem = _dynamic_python_problem()
        if problem is not None:
            raise InputPropertiesError(problem, [])
        self._share_register(options)
        try:
            args = self._python_args(name, inputs)
            site = ClientCertSite(name, args, options)  # type: ignore[arg-type]
        except ArgsError as exc:
            raise user_error(exc) from None
        return ConstructResult(site.urn, self.get_state(site, definition))

    def _share_register(self, options: pulumi.ResourceOptions | None) -> None:
        """One register for every site of the program, as in a Python program.

        The components' register (one owner per CA, account, IIS site and https port of a
        host endpoint) lives per root resource of a program run. Each construct starts with
        none; these constructs all run in this process for one stack, so they share the
        stack's resource (the parent the engine gives them) as their root."""
        parent = options.parent if options is not None else None
        if not isinstance(parent, pulumi.Resource):
            return
        key = (pulumi.get_project(), pulumi.get_stack())
        root = self._roots.setdefault(key, parent)
        pulumi.runtime.settings.set_root_resource(root)

    def _python_args(self, name: str, inputs: Mapping[str, Any]) -> dict[str, Any]:
        """The inputs with Python names (the analyzer's mapping), as the Python component's
        ``ClientCertSiteArgsDict``. An object given as an Output (a connection computed by
        another resource) is mapped when it resolves; where the component needs values
        written in the program, an Output is refused naming the property."""
        definition = self._component_defs["ClientCertSite"]
        properties, mapping = definition.inputs, definition.inputs_mapping
        later: dict[str, Any] = {}
        for key, value in inputs.items():
            prop = properties.get(key)
            if prop is None or not isinstance(value, pulumi.Output):
                continue
            py = mapping[key]
            if py in PLAIN_INPUTS:
                raise ArgsError(
                    f"ClientCertSite {name!r}",
                    py,
                    None,
                    "must be written in the program, not computed as a whole by another "
                    "resource (each entry becomes a resource); its entries and their fields "
                    "may be",
                )
            typ = self.get_type_definition(prop) if prop.ref is not None else None
            if typ is not None:
                later[py] = value.apply(functools.partial(self._object, typ, key))
        now = {k: p for k, p in properties.items() if mapping[k] not in later}
        mapped = dict(self.map_input_properties(dict(inputs), now, mapping, "ClientCertSite", ""))
        mapped.update(later)
        return mapped

    def _object(self, typ: TypeDefinition, path: str, value: Any) -> Any:
        """An object's fields with Python names, once the Output holding it resolves."""
        return self.map_input_properties(
            value if isinstance(value, dict) else {},
            typ.properties,
            typ.properties_mapping,
            "ClientCertSite",
            path,
        )


class _Servicer(ProviderServicer):
    """The SDK's provider server, with the component's argument errors (raised when the
    component is built, or when a child's registration fails on a check that waited for an
    Output) reported as one line instead of a traceback."""

    async def _construct(self, request: Any, context: Any) -> Any:
        try:
            return await super()._construct(request, context)
        except InputPropertiesError:
            raise
        except Exception as exc:
            found = _args_error(exc)
            if found is None:
                raise
            raise user_error(found) from None


def main(argv: list[str] | None = None) -> None:
    args = sys.argv[1:] if argv is None else argv
    if args[:1] == ["--schema"]:
        print(ClientCertSiteProvider().schema)
        return
    parser = argparse.ArgumentParser(description=f"{NAME} component provider (gRPC server)")
    parser.add_argument("engine", help="Pulumi engine address")
    parser.add_argument("--logflow", action="store_true", help="ignored")
    parser.add_argument("--logtostderr", action="store_true", help="ignored")
    known, _ = parser.parse_known_args(args)
    provider = ClientCertSiteProvider()

    async def serve() -> None:
        server = grpc.aio.server(options=_GRPC_CHANNEL_OPTIONS)
        servicer = _Servicer(provider, args, engine_address=known.engine)
        provider_pb2_grpc.add_ResourceProviderServicer_to_server(servicer, server)
        port = server.add_insecure_port(address="127.0.0.1:0")
        await server.start()
        # The engine reads the port from the first line of stdout.
        sys.stdout.buffer.write(f"{port}\n".encode())
        sys.stdout.buffer.flush()
        await server.wait_for_termination()

    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve())


if __name__ == "__main__":
    main()
