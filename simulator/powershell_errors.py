"""What powershell.exe and cmd.exe print when asked to run something they do not know.

The simulator runs agent requests only; any other command fails the way Windows would,
so a client sees the same bytes (and pywinrm's ``run_ps`` the same cleaned text) as
against a real host.
"""

from __future__ import annotations

import base64
import binascii
import re
from xml.sax.saxutils import escape

from iis_clientcert_simulator.wsman import CommandOutcome

__all__ = [
    "clixml_error",
    "decode_encoded_command",
    "encode_command",
    "not_recognized_cmd",
    "not_recognized_powershell",
]

CLIXML_NS = "http://schemas.microsoft.com/powershell/2004/04"
CLIXML_HEADER = "#< CLIXML\r\n"

# cmd.exe sets ERRORLEVEL 9009 for an unknown command (what `cmd /c nosuch` exits with).
CMD_NOT_RECOGNIZED_EXIT = 9009

# Characters PowerShell's serializer escapes as _xHHHH_ inside <S>: controls (CR, LF, TAB
# included), surrogates and the two non-characters XML cannot carry.
_NEEDS_ESCAPE = re.compile("[\x00-\x1f\ud800-\udfff\ufffe\uffff]|_(?=x[0-9A-Fa-f]{4}_)")


def _clixml_text(text: str) -> str:
    """Encode a string the way CLIXML <S> elements carry it."""
    encoded = _NEEDS_ESCAPE.sub(lambda m: f"_x{ord(m.group(0)):04X}_", text)
    return escape(encoded)


def clixml_error(lines: list[str]) -> bytes:
    """PowerShell's stderr for an error record: one <S S="Error"> per line, CRLF-terminated."""
    body = "".join(f'<S S="Error">{_clixml_text(line + chr(13) + chr(10))}</S>' for line in lines)
    return (f'{CLIXML_HEADER}<Objs Version="1.1.0.1" xmlns="{CLIXML_NS}">{body}</Objs>').encode()


def not_recognized_powershell(term: str, *, script_line: str | None = None) -> CommandOutcome:
    """powershell.exe's answer to a script whose first command ``term`` does not exist.

    Windows PowerShell 5.1 formats the CommandNotFoundException record like this and exits
    with 1 because the last command failed.
    """
    line = script_line if script_line is not None else term
    column = max(line.find(term), 0)
    lines = [
        f"{term} : The term '{term}' is not recognized as the name of a cmdlet, function, "
        "script file, or operable program. Check the spelling of the name, or if a path was "
        "included, verify that the path is correct and try again.",
        f"At line:1 char:{column + 1}",
        f"+ {line}",
        "+ " + " " * column + "~" * max(len(term), 1),
        f"    + CategoryInfo          : ObjectNotFound: ({term}:String) [], "
        "CommandNotFoundException",
        "    + FullyQualifiedErrorId : CommandNotFoundException",
        " ",
    ]
    return CommandOutcome(stdout=b"", stderr=clixml_error(lines), exit_code=1)


def not_recognized_cmd(term: str) -> CommandOutcome:
    """cmd.exe's answer to an unknown command (stderr in the OEM code page, plain text)."""
    message = (
        f"'{term}' is not recognized as an internal or external command,\r\n"
        "operable program or batch file.\r\n"
    )
    return CommandOutcome(
        stdout=b"",
        stderr=message.encode("cp437", "replace"),
        exit_code=CMD_NOT_RECOGNIZED_EXIT,
    )


def decode_encoded_command(arg: str) -> str:
    """The script behind ``powershell -EncodedCommand <arg>`` (base64 of UTF-16LE).

    Raises ValueError when ``arg`` is not such a value, as powershell.exe refuses it too.
    """
    try:
        raw = base64.b64decode(arg.strip(), validate=True)
    except (binascii.Error, ValueError) as exc:
        raise ValueError("the -EncodedCommand value is not base64") from exc
    if len(raw) % 2:
        raise ValueError("the -EncodedCommand value is not UTF-16LE text")
    try:
        return raw.decode("utf-16-le")
    except UnicodeDecodeError as exc:
        raise ValueError("the -EncodedCommand value is not UTF-16LE text") from exc


def encode_command(script: str) -> str:
    """The inverse of decode_encoded_command (what pywinrm's ``run_ps`` sends)."""
    return base64.b64encode(script.encode("utf-16-le")).decode("ascii")
