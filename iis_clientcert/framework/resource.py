"""The Pulumi resource class every resource derives from: its type token and the alias
that keeps stacks made before the resources had their own types.

A dynamic resource's type token is ``pulumi-python:dynamic/<module>:<name>``: the Pulumi
Python SDK (``pulumi.dynamic.Resource.__init_subclass__``) fixes the package
``pulumi-python`` (the engine picks the provider plugin by it, so a dynamic resource
cannot be ``iis-clientcert:index:X``) and prefixes the module with ``dynamic/``. So::

    class SslSettings(IisResource, module=TYPE_MODULE, name="SslSettings")

shows in previews as ``pulumi-python:dynamic/iis-clientcert:SslSettings``.

Until then every resource was ``pulumi-python:dynamic:Resource``. The type is part of the
URN, so without an alias the engine would delete every existing resource and create it
again; with one it finds the old state and keeps it (tests/engine/test_resource_types.py).
"""

from __future__ import annotations

from typing import Any, Final

import pulumi
import pulumi.dynamic

# The module part of every resource's type token.
TYPE_MODULE: Final = "iis-clientcert"
# The type every resource had before it had its own: stacks made then still carry it.
LEGACY_TYPE: Final = "pulumi-python:dynamic:Resource"


def type_token(name: str) -> str:
    """The type token the SDK gives ``class X(IisResource, module=TYPE_MODULE, name=name)``."""
    return f"pulumi-python:dynamic/{TYPE_MODULE}:{name}"


def with_legacy_alias(opts: pulumi.ResourceOptions | None) -> pulumi.ResourceOptions:
    """``opts`` plus an alias to the legacy type (same name, same parent).

    Merged, so a caller's own aliases stay. An alias replaces one part of the URN at a
    time: a resource renamed in the same run as this upgrade needs a full alias of its own.
    """
    legacy = pulumi.ResourceOptions(aliases=[pulumi.Alias(type_=LEGACY_TYPE)])
    return pulumi.ResourceOptions.merge(opts, legacy)


class IisResource(pulumi.dynamic.Resource):
    """Base of the resource classes: the legacy-type alias on every instance.

    Subclasses name their type with the class keywords ``module=TYPE_MODULE, name=...``
    (the SDK's ``__init_subclass__``); tests/unit/test_layout.py pins them.
    """

    def __init__(
        self,
        provider: pulumi.dynamic.ResourceProvider,
        name: str,
        props: dict[str, Any],
        opts: pulumi.ResourceOptions | None = None,
    ) -> None:
        super().__init__(provider, name, props, with_legacy_alias(opts))
