"""The error an op raises inside the simulator; the executor turns it into a contract error."""

from __future__ import annotations

from typing import Any

from iis_clientcert.host.contract import ERROR_CODES


class OpError(Exception):
    """An op failed the way the host would fail it: a contract code and a Windows HRESULT."""

    def __init__(self, code: str, message: str, hresult: int | None = None) -> None:
        if code not in ERROR_CODES:
            raise ValueError(f"unknown contract error code {code!r}")
        self.code = code
        self.message = message
        self.hresult = hresult
        super().__init__(message)


class CommitConflictError(OpError):
    """A configuration commit over a file that changed since it was read."""


# HRESULTs the model reports.
HR_NOT_FOUND = 0x80070490
HR_FILE_NOT_FOUND = 0x80070002
HR_LOCK_VIOLATION = 0x80070021
HR_ALREADY_EXISTS = 0x800700B7
HR_INVALID_DATA = 0x8007000D
HR_LOGON_FAILURE = 0x8007052E
HR_ACCOUNT_DISABLED = 0x80070533
HR_INVALID_ACCOUNT_NAME = 0x80070523
HR_PASSWORD_POLICY = 0x800708C5
HR_INVALID_PASSWORD = 0x80070056
HR_ASN1_EOD = 0x80093102
HR_ASN1_BADTAG = 0x8009310B
HR_FAIL = 0x80004005
# NTE_BAD_DATA: an encrypted configuration value this host's key cannot decrypt.
HR_BAD_DATA = 0x80090005


def injected_error(spec: dict[str, Any]) -> OpError:
    """The OpError a faults.json entry (``fail_op``, ``fail_step``) describes: ``code``
    (default Fault), ``hresult`` (default 0x80004005) and ``message``."""
    code = str(spec.get("code", "Fault"))
    message = str(spec.get("message", "injected fault"))
    hresult_raw = spec.get("hresult", "0x80004005")
    try:
        hresult = int(hresult_raw, 16) if isinstance(hresult_raw, str) else int(hresult_raw)
    except (TypeError, ValueError):
        hresult = HR_FAIL
    try:
        return OpError(code, message, hresult)
    except ValueError:
        return OpError("Fault", message, hresult)


# Microsoft.Web.Administration's FileLoadException when the file changed since it was read
# ("Cannot commit configuration changes because the file has changed on disk"). Its HRESULT
# is not documented: ERROR_FILE_INVALID ("the file ... has been externally altered") is the
# likely one and is unconfirmed (docs/real-host.md); the agent goes by the exception type.
HR_FILE_CHANGED = 0x800703EE
