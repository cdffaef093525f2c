"""AnonymousAuthentication: ``anonymousAuthentication@enabled`` for a site.

The seed's "disable anonymous" step: with anonymous access on, a request without a
certificate is still served. The section is locked, so the value goes to
applicationHost.config at the site's location; delete puts back what was there.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pulumi

from iis_clientcert.framework.base import validate_app_path, validate_site
from iis_clientcert.framework.inputs import Input, Inputs
from iis_clientcert.framework.location_attribute import (
    PATH,
    SITE,
    AttributeDesired,
    LocationAttributeProvider,
)
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

    def validate(self, inputs: Mapping[str, Any]) -> AttributeDesired:
        site = validate_site(KIND, INPUTS.get_str(inputs, "site"))
        path = validate_app_path(KIND, INPUTS.get_str(inputs, "path"))
        enabled = INPUTS.get_bool(inputs, "enabled")
        return AttributeDesired(
            site,
            path,
            "true" if enabled else "false",
            {"site": site, "path": path, "enabled": enabled},
        )

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
