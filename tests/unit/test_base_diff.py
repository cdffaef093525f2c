"""The pure diff every resource shares: what is an update, what a replacement."""

from __future__ import annotations

from typing import Any

import pytest
from pulumi.output import Unknown

from iis_clientcert.framework.base import UNKNOWN
from iis_clientcert.providers.ssl_settings import SslSettingsProvider

CONN = {
    "endpoint": "https://web01:5986/wsman",
    "transport": "ntlm",
    "username": "u",
    "password": "p",
}
OLDS = {
    "connection": CONN,
    "site": "shop",
    "path": "",
    "flags": ["Ssl"],
    "location": "shop",
    "prior_present": False,
    "prior_value": None,
}


@pytest.mark.parametrize(
    ("news", "changes", "replaces"),
    [
        ({}, False, []),
        ({"flags": ["Ssl", "Ssl128"]}, True, []),
        ({"connection": {**CONN, "password": "new"}}, True, []),  # credentials: an update
        ({"connection": {**CONN, "endpoint": "https://WEB01:5986/wsman"}}, True, []),
        ({"connection": {**CONN, "endpoint": "https://web02:5986/wsman"}}, True, ["connection"]),
        ({"site": "intranet"}, True, ["site"]),
        ({"flags": UNKNOWN}, True, []),
        ({"flags": Unknown()}, True, []),  # type: ignore[no-untyped-call]
        ({"connection": Unknown()}, True, []),  # type: ignore[no-untyped-call]
    ],
    ids=[
        "same",
        "flags",
        "password",
        "endpoint-case",
        "other-host",
        "site",
        "unknown-sentinel",
        "unknown-object",
        "unknown-connection",
    ],
)
def test_diff(news: dict[str, Any], changes: bool, replaces: list[str]) -> None:
    inputs = {k: v for k, v in OLDS.items() if k not in SslSettingsProvider.computed}
    inputs.update(news)
    result = SslSettingsProvider().diff("web01/shop", dict(OLDS), inputs)
    assert result.changes is changes
    assert result.replaces == replaces
    assert result.delete_before_replace is bool(replaces)
