"""Resources that own one attribute of a locked section at a site's apphost location.

SslSettings (``access@sslFlags``) and AnonymousAuthentication
(``anonymousAuthentication@enabled``) differ only in the section, the attribute and how
its text is read; this module holds the rest: read, plan, put-back-on-delete, refresh.
Other attributes written at the same location (say an anonymous ``userName``) are kept.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

from iis_clientcert.framework.base import (
    Change,
    IisProvider,
    require_site,
    site_exists,
    validate_app_path,
    validate_site,
)
from iis_clientcert.framework.inputs import Input
from iis_clientcert.host import contract
from iis_clientcert.host.client import ReadKey, ReadPlan, Reads
from iis_clientcert.host.connection import Connection
from iis_clientcert.host.contract import Op, SiteInfo

# The inputs both resources have: where the attribute is written.
SITE = Input("site", "str", "The IIS site's name.", required=True, replace=True)
PATH = Input(
    "path",
    "str",
    "An application or folder below the site ('/app', '/app/sub'); '' for the site itself.",
    default="",
    replace=True,
)

SITES = ReadKey[contract.SiteListResult]("sites")
SECTION = ReadKey[contract.ConfigGetResult]("section")


@dataclass(frozen=True)
class AttributeDesired:
    site: str
    path: str
    value: str  # the attribute text as IIS writes it
    fields: dict[str, Any]  # the normalised inputs (site, path and the resource's own)
    notes: tuple[str, ...] = ()  # what normalising did, told to the user at check

    @property
    def location(self) -> str:
        return self.site + self.path


@dataclass(frozen=True)
class AttributeCurrent:
    sites: list[SiteInfo]
    site_found: bool
    local: dict[str, str]  # attributes written at the location (empty if none)
    local_present: bool  # the section element exists at the location
    effective: str | None  # the value in force (location, server level or default)
    local_value: str | None  # the attribute as written at the location, if it is


class LocationAttributeProvider(IisProvider[AttributeDesired, AttributeCurrent]):
    section: ClassVar[str] = ""
    attribute: ClassVar[str] = ""
    computed = ("location", "prior_present", "prior_value")

    def desired_value(self, inputs: Mapping[str, Any]) -> tuple[str, dict[str, Any], list[str]]:
        """The attribute text the inputs ask for, the resource's own normalised inputs, and
        notes on what normalising did."""
        raise NotImplementedError

    def same_value(self, a: str | None, b: str | None) -> bool:
        """Whether two attribute texts mean the same (flag order, case)."""
        return a == b

    def inputs_from_value(self, value: str | None) -> dict[str, Any]:
        """The resource's own inputs that would produce an attribute text (refresh)."""
        raise NotImplementedError

    # --- hooks of IisProvider --------------------------------------------------------

    def validate(self, inputs: Mapping[str, Any]) -> AttributeDesired:
        site = validate_site(self.kind, self.inputs.get_str(inputs, "site"))
        path = validate_app_path(self.kind, self.inputs.get_str(inputs, "path"))
        value, own, notes = self.desired_value(inputs)
        return AttributeDesired(
            site, path, value, {"site": site, "path": path, **own}, tuple(notes)
        )

    def advise(self, desired: AttributeDesired) -> list[str]:
        return [f"{desired.location}: {note}" for note in desired.notes]

    def normalised_inputs(self, desired: AttributeDesired) -> dict[str, Any]:
        return dict(desired.fields)

    def resource_id(self, connection: Connection, desired: AttributeDesired) -> str:
        return f"{connection.authority}/{desired.location}"

    def read_plan(self, desired: AttributeDesired) -> ReadPlan:
        return (
            ReadPlan()
            .add(SITES, contract.site_list())
            .add(SECTION, contract.config_get(self.section, desired.location))
        )

    def parse_current(self, desired: AttributeDesired, reads: Reads) -> AttributeCurrent:
        sites = reads[SITES]["sites"]
        got = reads[SECTION]
        written = got["element"]
        present = got["present"] and written is not None
        local = dict(written["attributes"]) if present and written is not None else {}
        effective = got["effective"]["attributes"].get(self.attribute)
        return AttributeCurrent(
            sites=sites,
            site_found=site_exists(sites, desired.site) is not None,
            local=local,
            local_present=present,
            effective=effective,
            local_value=local.get(self.attribute),
        )

    def preflight(self, current: AttributeCurrent, desired: AttributeDesired) -> None:
        require_site(self.kind, "the host", current.sites, desired.site)

    def plan(
        self,
        current: AttributeCurrent,
        desired: AttributeDesired,
        previous: Mapping[str, Any] | None = None,
    ) -> list[Change]:
        found = current.local_value
        if found is not None and self.same_value(found, desired.value):
            return []
        before = found if found is not None else f"(inherited: {current.effective})"
        return [
            Change(
                f"{self.attribute} at {desired.location!r}: {before} -> {desired.value}",
                [self._set(desired, {**current.local, self.attribute: desired.value})],
            )
        ]

    def outputs(
        self,
        desired: AttributeDesired,
        before: AttributeCurrent | None,
        after: AttributeCurrent,
        previous: Mapping[str, Any] | None,
    ) -> dict[str, Any]:
        if before is not None:
            prior_present = before.local_value is not None
            prior_value = before.local_value
        else:
            prior_present = bool((previous or {}).get("prior_present"))
            prior_value = (previous or {}).get("prior_value")
        return {
            "location": desired.location,
            "prior_present": prior_present,
            "prior_value": prior_value,
        }

    def exists(self, current: AttributeCurrent) -> bool:
        return current.site_found

    def live_inputs(
        self, desired: AttributeDesired, current: AttributeCurrent, stored: Mapping[str, Any]
    ) -> dict[str, Any]:
        value = current.local_value if current.local_value is not None else current.effective
        fields = {"site": desired.site, "path": desired.path}
        fields.update(self.inputs_from_value(value))
        return fields

    def delete_changes(
        self, desired: AttributeDesired, current: AttributeCurrent, stored: Mapping[str, Any]
    ) -> list[Change]:
        if not current.site_found:
            return []  # the site is gone, and with it everything at its location
        prior = stored.get("prior_value") if stored.get("prior_present") else None
        if prior is not None:
            if current.local_value == prior:
                return []
            return [
                Change(
                    f"put back {self.attribute}={prior!r} at {desired.location!r}",
                    [self._set(desired, {**current.local, self.attribute: str(prior)})],
                )
            ]
        if current.local_value is None:
            return []
        rest = {k: v for k, v in current.local.items() if k != self.attribute}
        op = (
            self._set(desired, rest)
            if rest
            else contract.config_clear(self.section, desired.location)
        )
        return [Change(f"remove {self.attribute} from {desired.location!r} (inherit again)", [op])]

    def _set(
        self, desired: AttributeDesired, attributes: Mapping[str, str]
    ) -> Op[contract.ChangedResult]:
        """The op writing these attributes (all the location keeps) of the section."""
        return contract.config_set(
            self.section, desired.location, contract.element(dict(attributes))
        )
