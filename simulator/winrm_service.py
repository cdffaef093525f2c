"""The WinRM service configuration of the simulated host, as Windows ships it.

Each value and default comes from a published source:

- ``winrm/config/service/auth``: Basic and Certificate are ``false`` on a fresh Windows
  (Microsoft, "Installation and configuration for Windows Remote Management", the
  Auth defaults table); Negotiate and Kerberos are on. A user turns one on with
  ``winrm set winrm/config/service/auth @{Basic="true"}``.
- ``LocalAccountTokenFilterPolicy`` (HKLM\\SOFTWARE\\Microsoft\\Windows\\CurrentVersion\\
  Policies\\System): absent (0) by default, so a network logon of a local administrator
  other than the built-in Administrator gets a filtered token and WinRM denies access
  (KB 951016, "Description of User Account Control and remote restrictions").
- ``MaxEnvelopeSizekb`` 500 (MS-WSMV 2.2.4.10: it also limits the size of requests),
  ``MaxTimeoutms`` 60000 (MS-WSMV 2.2.4.10; an OperationTimeout above it is lowered to
  it, MS-WSMV, "wsman:OperationTimeout" (MaxTimeoutms)), ``winrs/MaxShellsPerUser`` 30 and
  ``service/MaxConcurrentOperationsPerUser`` 1500 (the same Microsoft page).

The facts live in host.json under ``"winrm"`` (:data:`SHIPPED`); the endpoint reads them
on every request, so a test or a person can change them while the simulator runs.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Final

# winrm/config/service/auth and the quotas of a Windows Server as installed.
SHIPPED: Final[dict[str, Any]] = {
    "auth_basic": False,
    "auth_certificate": False,
    "local_account_token_filter_policy": 0,
    "max_envelope_size_kb": 500,
    "max_timeout_ms": 60000,
    "max_shells_per_user": 30,
    "max_concurrent_operations_per_user": 1500,
}

# What the demo's WinRM setup step turns on (see :func:`demo_setup_commands`).
DEMO_SETUP: Final[dict[str, Any]] = {
    "auth_basic": True,
    "auth_certificate": True,
    "local_account_token_filter_policy": 1,
}


@dataclass(frozen=True)
class WinRMService:
    """The settings the endpoint enforces (defaults: Windows as shipped)."""

    auth_basic: bool = False
    auth_certificate: bool = False
    local_account_token_filter_policy: int = 0
    max_envelope_size_kb: int = 500
    max_timeout_ms: int = 60000
    max_shells_per_user: int = 30
    max_concurrent_operations_per_user: int = 1500

    @classmethod
    def from_facts(cls, facts: dict[str, Any]) -> WinRMService:
        """The settings in host facts (``facts["winrm"]``); missing keys as shipped."""
        raw = facts.get("winrm")
        values = {**SHIPPED, **(raw if isinstance(raw, dict) else {})}
        return cls(
            auth_basic=bool(values["auth_basic"]),
            auth_certificate=bool(values["auth_certificate"]),
            local_account_token_filter_policy=int(values["local_account_token_filter_policy"]),
            # MS-WSMV 2.2.4.10: MaxEnvelopeSizekb >= 32, MaxTimeoutms >= 500.
            max_envelope_size_kb=max(32, int(values["max_envelope_size_kb"])),
            max_timeout_ms=max(500, int(values["max_timeout_ms"])),
            max_shells_per_user=max(1, int(values["max_shells_per_user"])),
            max_concurrent_operations_per_user=max(
                1, int(values["max_concurrent_operations_per_user"])
            ),
        )


def demo_setup_commands() -> list[str]:
    """What a person runs on a real host for the demo's transports (README, "A real host")."""
    return [
        'winrm set winrm/config/service/auth @{Basic="true";Certificate="true"}',
        "reg add HKLM\\SOFTWARE\\Microsoft\\Windows\\CurrentVersion\\Policies\\System "
        "/v LocalAccountTokenFilterPolicy /t REG_DWORD /d 1 /f",
    ]


# The enabled service, for tests that build a WSManServer directly (as after the setup).
DEMO_SERVICE: Final = WinRMService(
    auth_basic=True, auth_certificate=True, local_account_token_filter_policy=1
)

__all__ = ["DEMO_SERVICE", "DEMO_SETUP", "SHIPPED", "WinRMService", "demo_setup_commands"]
