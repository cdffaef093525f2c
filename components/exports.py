"""Typed outputs for other programs: what a site and a host export, and how another stack
reads them through a StackReference.

A program exports ``site.exports()`` / ``host.exports()`` under a key of its choosing; a
program of another stack reads them back, checked and typed::

    ref = pulumi.StackReference("organization/iis-clientcert/prod")
    shop = read_site(ref, "sites", "shop")      # Output[SiteExports]
    pulumi.export("shop_url", shop.apply(lambda s: s["url"]))
"""

from __future__ import annotations

from typing import Any, TypedDict, cast

import pulumi

from iis_clientcert.components.checks import ArgsError


class SiteExports(TypedDict):
    host: str  # the host's WinRM endpoint as scheme://host:port
    site: str  # the IIS site
    url: str | None  # https://host:port/ of its binding (None without https)
    server_thumbprint: str | None
    root_thumbprints: list[str]  # the CAs its clients chain to
    mapped_users: dict[str, str]  # certificate thumbprint or "rule:<name>" -> account
    accounts: list[str]  # the accounts its mappings log on as


class HostExports(TypedDict):
    endpoint: str
    root_thumbprints: dict[str, str]  # CA name -> thumbprint
    accounts: list[str]
    server_thumbprints: dict[str, str]  # server certificate name -> thumbprint


SITE_KEYS = tuple(SiteExports.__annotations__)
HOST_KEYS = tuple(HostExports.__annotations__)


def _pick(value: Any, path: tuple[str, ...], keys: tuple[str, ...], ref: str) -> Any:
    where = f"StackReference {ref!r}"
    for i, part in enumerate(path):
        if not isinstance(value, dict) or part not in value:
            known = sorted(value) if isinstance(value, dict) else []
            raise ArgsError(
                where,
                ".".join(path[: i + 1]),
                None,
                "is not among the stack's outputs",
                f"Outputs there: {', '.join(known) or 'none'}",
            )
        value = value[part]
    missing = [k for k in keys if not isinstance(value, dict) or k not in value]
    if missing:
        raise ArgsError(
            where,
            ".".join(path),
            None,
            f"lacks {', '.join(missing)}",
            "Export site.exports() / host.exports() there",
        )
    return value


def read_site(ref: pulumi.StackReference, *path: str) -> pulumi.Output[SiteExports]:
    """The SiteExports another stack exported at ``path`` (e.g. "sites", "shop")."""
    name = str(ref._name)
    return cast(
        "pulumi.Output[SiteExports]",
        ref.get_output(path[0]).apply(lambda v: _pick({path[0]: v}, path, SITE_KEYS, name)),
    )


def read_host(ref: pulumi.StackReference, *path: str) -> pulumi.Output[HostExports]:
    """The HostExports another stack exported at ``path`` (e.g. "hosts", "web01")."""
    name = str(ref._name)
    return cast(
        "pulumi.Output[HostExports]",
        ref.get_output(path[0]).apply(lambda v: _pick({path[0]: v}, path, HOST_KEYS, name)),
    )
