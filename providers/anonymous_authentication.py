"""AnonymousAuthentication: ``anonymousAuthentication@enabled`` for a site.

The seed's "disable anonymous" step: with anonymous access on, a request without a
certificate is still served. The section is locked, so the value goes to
applicationHost.config at the site's location; delete puts back what was there.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pulumi
import pulumi.dynamic

from iis_clientcert.framework.base import get_bool
from iis_clientcert.framework.location_attribute import LocationAttributeProvider, location_props
from iis_clientcert.host import contract

KIND = "AnonymousAuthentication"


class AnonymousAuthenticationProvider(LocationAttributeProvider):
    kind = KIND
    section = contract.SECTION_ANONYMOUS
    attribute = "enabled"

    def desired_value(self, inputs: Mapping[str, Any]) -> tuple[str, dict[str, Any], list[str]]:
        enabled = get_bool(KIND, inputs, "enabled", False)
        return ("true" if enabled else "false"), {"enabled": enabled}, []

    def same_value(self, a: str | None, b: str | None) -> bool:
        return (a or "").lower() == (b or "").lower()

    def inputs_from_value(self, value: str | None) -> dict[str, Any]:
        # The schema default is true: no value anywhere means anonymous access is on.
        return {"enabled": (value or "true").lower() == "true"}


class AnonymousAuthentication(pulumi.dynamic.Resource):
    """Whether anonymous requests are served for a site (default here: off)."""

    location: pulumi.Output[str]
    enabled: pulumi.Output[bool]

    def __init__(
        self,
        resource_name: str,
        *,
        connection: Any,
        site: pulumi.Input[str],
        enabled: pulumi.Input[bool] = False,
        path: pulumi.Input[str] | None = None,
        opts: pulumi.ResourceOptions | None = None,
    ) -> None:
        props = location_props(connection, site, path, enabled=enabled)
        super().__init__(AnonymousAuthenticationProvider(), resource_name, props, opts)
