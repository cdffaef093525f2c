"""One exception hierarchy for everything that talks to a host or validates input.

Messages name the host, the resource and the step, explain Windows codes, and never carry
a secret value. The classes also subclass builtins so callers can catch what they know.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any


class IisClientCertError(Exception):
    """Base of every error this project raises on purpose."""


class ContractError(IisClientCertError, ValueError):
    """A request or result that does not follow the agent contract."""


class InputTypeError(IisClientCertError, TypeError):
    """An argument of the wrong type given to a resource or component class (program time)."""


class UsageError(IisClientCertError, ValueError):
    """Bad settings given to a command-line tool or helper (doctor, probe)."""


class ValidationError(IisClientCertError, ValueError):
    """Bad input, found before any host was touched."""

    def __init__(self, resource: str, prop: str, value: Any, problem: str, fix: str = "") -> None:
        self.resource = resource
        self.property = prop
        self.value = value
        self.problem = problem
        self.fix = fix
        shown = "" if value is None else f" = {_show(value)}"
        text = f"{resource}: {prop}{shown}: {problem}"
        if fix:
            text += f". {fix}"
        super().__init__(text)


def _show(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 120 else text[:117] + "..."


class CertificateError(IisClientCertError, ValueError):
    """A certificate, key or PFX that cannot be used; ``kind`` says which way it is bad."""

    def __init__(self, kind: str, message: str) -> None:
        self.kind = kind
        super().__init__(message)


class HostError(IisClientCertError, RuntimeError):
    """Anything that went wrong while talking to a host."""

    def __init__(self, host: str, message: str) -> None:
        self.host = host
        super().__init__(f"{host}: {message}")


class TransportError(HostError, ConnectionError):
    """The host could not be reached, or the connection broke."""

    def __init__(self, host: str, message: str, *, command_may_have_run: bool = False) -> None:
        self.command_may_have_run = command_may_have_run
        super().__init__(host, message)


class HostUnreachableError(TransportError):
    pass


class HostTimeoutError(TransportError, TimeoutError):
    pass


class AuthenticationError(HostError, PermissionError):
    """The host rejected the credentials."""


class TlsVerificationError(TransportError):
    """The host's HTTPS certificate could not be verified."""


class WSManFaultError(HostError):
    def __init__(
        self, host: str, code: int | None, reason: str, *, command_may_have_run: bool = False
    ) -> None:
        self.code = code
        self.reason = reason
        # Faults after the request was sent leave the host in an unknown state.
        self.command_may_have_run = command_may_have_run
        shown = f" (WS-Management fault 0x{code:08X})" if code is not None else ""
        super().__init__(host, f"{reason}{shown}")


class AgentError(HostError):
    """The agent ran and reported a structured error for one op."""

    def __init__(
        self,
        host: str,
        op: str | None,
        code: str,
        message: str,
        hresult: str | None = None,
        index: int | None = None,
        results: list[Any] | None = None,
    ) -> None:
        self.op = op
        self.code = code
        self.hresult = hresult
        self.index = index
        self.results = results or []
        self.agent_message = message
        text = f"{op or 'agent'} failed: {code}: {message}"
        # Imported here: the contract imports this module (for ContractError).
        from iis_clientcert.host.contract import KIND_FIXES, explain_hresult  # noqa: PLC0415

        explained = explain_hresult(hresult)
        if explained is not None:
            text += f" [{hresult} {explained.name}: {explained.meaning}; fix: {explained.action}]"
        elif code in KIND_FIXES:
            text += f" [{hresult + ' ' if hresult else ''}fix: {KIND_FIXES[code]}]"
        elif hresult:
            text += f" [{hresult}]"
        super().__init__(host, text)


class AgentProtocolError(HostError):
    """The command ran but its output was not a contract result."""


class NotConvergedError(HostError):
    """The writes went through, but the read that verifies them still shows differences."""

    def __init__(self, host: str, kind: str, leftover: Sequence[str]) -> None:
        self.kind = kind
        self.leftover = tuple(leftover)
        super().__init__(
            host,
            f"{kind}: the host does not show the desired state after writing "
            f"({'; '.join(self.leftover)})",
        )
