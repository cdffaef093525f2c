"""AnonymousAuthentication: ``anonymousAuthentication@enabled`` for a site.

The seed's "disable anonymous" step: with anonymous access on, a request without a
certificate is still served. The section is locked, so the value goes to
applicationHost.config at the site's location; delete puts back what was there.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pulumi

from iis_clientcert.framework.base import get_bool, get_str, validate_app_path, validate_site
from iis_clientcert.framework.inputs import connection_input
from iis_clientcert.framework.location_attribute import AttributeDesired, LocationAttributeProvider
from iis_clientcert.framework.resource import TYPE_MODULE, IisResource
from iis_clientcert.host import contract

KIND = "AnonymousAuthentication"


class AnonymousAuthenticationProvider(LocationAttributeProvider):
    kind = KIND
    section = contract.SECTION_ANONYMOUS
    attribute = "enabled"

    def validate(self, inputs: Mapping[str, Any]) -> AttributeDesired:
        site = validate_site(KIND, get_str(KIND, inputs, "site"))
        path = validate_app_path(KIND, get_str(KIND, inputs, "path", default="", required=False))
        enabled = get_bool(KIND, inputs, "enabled", False)
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
        props = {
            "connection": connection_input(connection),
            "site": site,
            "path": path,
            "enabled": enabled,
            "location": None,
            "prior_present": None,
            "prior_value": None,
        }
        super().__init__(AnonymousAuthenticationProvider(), resource_name, props, opts)
