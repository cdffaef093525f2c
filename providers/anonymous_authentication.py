"""AnonymousAuthentication: ``anonymousAuthentication@enabled`` for a site.

The seed's "disable anonymous" step: with anonymous access on, a request without a
certificate is still served. The section is locked, so the value goes to
applicationHost.config at the site's location; delete puts back what was there.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pulumi

from iis_clientcert.framework.inputs import Input, Inputs
from iis_clientcert.framework.location_attribute import PATH, SITE, LocationAttributeProvider
from iis_clientcert.framework.resource import TYPE_MODULE, IisResource
from iis_clientcert.host import contract

KIND = "AnonymousAuthentication"

INPUTS = Inputs(
    KIND,
    SITE,
    PATH,
    Input(
        "enabled",
        "bool",
        "Whether requests without credentials are served (IIS's own default is true)",
        default=False,
    ),
)


class AnonymousAuthenticationProvider(LocationAttributeProvider):
    kind = KIND
    inputs = INPUTS
    section = contract.SECTION_ANONYMOUS
    attribute = "enabled"

    def desired_value(self, inputs: Mapping[str, Any]) -> tuple[str, dict[str, Any], list[str]]:
        enabled = INPUTS.get_bool(inputs, "enabled")
        return ("true" if enabled else "false"), {"enabled": enabled}, []

    def same_value(self, a: str | None, b: str | None) -> bool:
        return (a or "").lower() == (b or "").lower()

    def inputs_from_value(self, value: str | None) -> dict[str, Any]:
        # The schema default is true: no value anywhere means anonymous access is on.
        return {"enabled": (value or "true").lower() == "true"}


class AnonymousAuthentication(IisResource, module=TYPE_MODULE, name="AnonymousAuthentication"):
    __doc__ = INPUTS.docstring("Whether anonymous requests are served for a site (default: off).")

    location: pulumi.Output[str]
    enabled: pulumi.Output[bool]

    def __init__(
        self,
        resource_name: str,
        *,
        connection: Any,
        site: pulumi.Input[str],
        enabled: pulumi.Input[bool] | None = None,
        path: pulumi.Input[str] | None = None,
        opts: pulumi.ResourceOptions | None = None,
    ) -> None:
        props = INPUTS.props(
            connection,
            AnonymousAuthenticationProvider.computed,
            site=site,
            path=path,
            enabled=enabled,
        )
        super().__init__(AnonymousAuthenticationProvider(), resource_name, props, opts)
