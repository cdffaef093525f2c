"""What each PowerShell edition lacks, read from a script's text.

The simulator cannot run PowerShell. It plays Windows PowerShell 5.1 ("Desktop", on .NET
Framework 4.x: powershell.exe) or PowerShell 7 ("Core", on .NET: pwsh.exe), and refuses a
script that would call, on the edition it plays, an API that edition does not have: the
script would stop there on Windows. A call inside a block that runs only on the other
edition is fine; the agent marks such blocks with ``if ($script:IsDesktop) { ... } else
{ ... }`` (``$script:IsDesktop`` set from ``$PSVersionTable.PSEdition``), and nothing else
counts as a guard.

This is a static reading, stricter than Windows in one way: a call is refused when the
script holds it anywhere unguarded, whether or not the ops of a request reach it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache
from typing import Final, Literal

Edition = Literal["Desktop", "Core"]

EDITIONS: Final[tuple[Edition, ...]] = ("Desktop", "Core")
# The executable of each edition (FACTS.md, "Real-host pitfalls": PowerShell 7).
EXECUTABLES: Final[dict[str, Edition]] = {
    "powershell.exe": "Desktop",
    "powershell": "Desktop",
    "pwsh.exe": "Core",
    "pwsh": "Core",
}


@dataclass(frozen=True)
class MissingApi:
    pattern: re.Pattern[str]
    what: str
    # The error PowerShell prints where the script reaches the call (first line).
    error: str
    source: str


# Absent from PowerShell 7 (.NET): present in Windows PowerShell 5.1 only.
DESKTOP_ONLY: Final[tuple[MissingApi, ...]] = (
    MissingApi(
        re.compile(r"System\.Web\.Extensions"),
        "the System.Web.Extensions assembly",
        "Add-Type: Cannot find path 'C:\\Program Files\\PowerShell\\7\\System.Web.Extensions.dll'"
        " because it does not exist.",
        "FACTS.md Real-host pitfalls: PowerShell 7 has no System.Web.Extensions",
    ),
    MissingApi(
        re.compile(r"JavaScriptSerializer"),
        "System.Web.Script.Serialization.JavaScriptSerializer",
        "New-Object: Cannot find type [System.Web.Script.Serialization.JavaScriptSerializer]:"
        " verify that the assembly containing this type is loaded.",
        "FACTS.md Real-host pitfalls: PowerShell 7 has no JavaScriptSerializer",
    ),
    MissingApi(
        re.compile(r"\.(?:Get|Set)AccessControl\("),
        "FileInfo/DirectoryInfo.GetAccessControl/SetAccessControl (extension methods on .NET)",
        "InvalidOperation: Method invocation failed because [System.IO.DirectoryInfo] does not"
        " contain a method named 'GetAccessControl'.",
        "dotnet/corefx#9872, PowerShell/PowerShell#10088: moved to FileSystemAclExtensions",
    ),
    MissingApi(
        re.compile(r"(?i)(?:\[AppDomain\]::CurrentDomain|\$\w+)\.DefineDynamicAssembly\s*\("),
        "AppDomain.DefineDynamicAssembly",
        "InvalidOperation: Method invocation failed because [System.AppDomain] does not contain"
        " a method named 'DefineDynamicAssembly'.",
        "Microsoft docs: AppDomain.DefineDynamicAssembly applies to .NET Framework only; .NET"
        " has the static AssemblyBuilder.DefineDynamicAssembly (.NET Framework 4.5+ too)",
    ),
    MissingApi(
        re.compile(r"(?i)\bGet-WmiObject\b"),
        "Get-WmiObject",
        "Get-WmiObject: The term 'Get-WmiObject' is not recognized as a name of a cmdlet,"
        " function, script file, or executable program.",
        "Microsoft docs: Differences between Windows PowerShell 5.1 and PowerShell 7.x",
    ),
)

# Absent from Windows PowerShell 5.1 (.NET Framework 4.x): present in PowerShell 7 only.
CORE_ONLY: Final[tuple[MissingApi, ...]] = (
    MissingApi(
        re.compile(r"(?i)-AsHashtable\b"),
        "ConvertFrom-Json -AsHashtable",
        "ConvertFrom-Json : A parameter cannot be found that matches parameter name 'AsHashtable'.",
        "FACTS.md Real-host pitfalls: 5.1 has no ConvertFrom-Json -AsHashtable",
    ),
    MissingApi(
        re.compile(r"System\.Text\.Json"),
        "System.Text.Json",
        "Unable to find type [System.Text.Json.JsonDocument].",
        "System.Text.Json ships with .NET Core 3.0+, not with .NET Framework 4.x",
    ),
    MissingApi(
        re.compile(r"FileSystemAclExtensions"),
        "System.IO.FileSystemAclExtensions",
        "Unable to find type [System.IO.FileSystemAclExtensions].",
        "a .NET (Core) type; .NET Framework has the instance methods instead",
    ),
    MissingApi(
        re.compile(r"(?i)\$Is(?:CoreCLR|Windows|Linux|MacOS)\b"),
        "the automatic variables $IsCoreCLR/$IsWindows/$IsLinux/$IsMacOS",
        "The variable '$IsCoreCLR' cannot be retrieved because it has not been set.",
        "PowerShell 6+ automatic variables; unset (an error under Set-StrictMode) in 5.1",
    ),
    MissingApi(
        re.compile(r"(?i)\b(?:Join-String|Get-Error|Test-Json|ConvertTo-CliXml)\b"),
        "a cmdlet PowerShell 6+ added",
        "The term is not recognized as the name of a cmdlet, function, script file, or operable"
        " program.",
        "Microsoft docs: Differences between Windows PowerShell 5.1 and PowerShell 7.x",
    ),
    MissingApi(
        re.compile(r"(?i)ForEach-Object\s+-Parallel\b"),
        "ForEach-Object -Parallel",
        "ForEach-Object : Parameter set cannot be resolved using the specified named parameters.",
        "PowerShell 7.0 added -Parallel",
    ),
)

_GUARD_IF: Final = re.compile(r"\bif\s*\(\s*(-not\s+|!\s*)?\$script:IsDesktop\s*\)\s*$", re.I)
_ELSE: Final = re.compile(r"\belse\s*$", re.I)


@dataclass(frozen=True)
class Violation:
    api: MissingApi
    line: int  # 1-based

    def message(self, edition: Edition) -> str:
        program = "pwsh.exe (PowerShell 7)" if edition == "Core" else "powershell.exe (5.1)"
        return f"line {self.line}: {self.api.what} does not exist in {program}"


def scan(script: str) -> tuple[str, str]:
    """Two copies of the script, same length: (code, text).

    ``code`` has comments and the insides of strings blanked, so braces and keywords in
    them do not count as blocks; ``text`` has only comments blanked (a type name in a string,
    ``New-Object 'System.Text.Json...'``, is still a use).
    """
    code, text = list(script), list(script)
    i, n = 0, len(script)

    def blank(start: int, end: int, *, comment: bool) -> None:
        for k in range(start, min(end, n)):
            if script[k] not in "\r\n":
                code[k] = " "
                if comment:
                    text[k] = " "

    while i < n:
        ch = script[i]
        if script.startswith("<#", i):
            end = script.find("#>", i + 2)
            end = n if end < 0 else end + 2
            blank(i, end, comment=True)
        elif ch == "#":
            end = script.find("\n", i)
            end = n if end < 0 else end
            blank(i, end, comment=True)
        elif script.startswith(("@'", '@"'), i) and script[i + 2 : i + 3] in ("\n", "\r"):
            closer = "\n" + script[i + 1] + "@"
            found = script.find(closer, i + 2)
            end = n if found < 0 else found + len(closer)
            blank(i + 2, end - 2, comment=False)
        elif ch in ("'", '"'):
            k = i + 1
            while k < n:
                if ch == '"' and script[k] == "`":
                    k += 2
                    continue
                if script[k] == ch:
                    if script[k + 1 : k + 2] == ch:  # '' or "" inside the string
                        k += 2
                        continue
                    break
                k += 1
            blank(i + 1, k, comment=False)
            end = k + 1
        else:
            end = i + 1
        i = end
    return "".join(code), "".join(text)


def _guards(code: str) -> list[Edition | None]:
    """For each character of ``code``, the edition it runs on (None: both)."""
    result: list[Edition | None] = [None] * len(code)
    # One frame per open block: (edition it runs on, the edition this block's own
    # `if ($script:IsDesktop)` chose, or None when the block is no edition if).
    stack: list[tuple[Edition | None, Edition | None]] = []
    last_closed: dict[int, Edition | None] = {}  # depth -> edition if closed last there
    for i, ch in enumerate(code):
        if ch == "{":
            outer = stack[-1][0] if stack else None
            before = code[max(0, i - 200) : i]
            chose: Edition | None = None
            runs_on = outer
            m = _GUARD_IF.search(before)
            if m:
                chose = "Core" if m.group(1) else "Desktop"
                runs_on = chose
            elif _ELSE.search(before) and last_closed.get(len(stack)) is not None:
                runs_on = "Core" if last_closed[len(stack)] == "Desktop" else "Desktop"
            stack.append((runs_on, chose))
        elif ch == "}" and stack:
            result[i] = stack[-1][0]
            _, chose = stack.pop()
            last_closed[len(stack)] = chose
            continue
        result[i] = stack[-1][0] if stack else None
    return result


def violations(script: str, edition: Edition) -> list[Violation]:
    """Calls ``script`` makes, outside a block for the other edition, that ``edition`` lacks."""
    return list(_violations(script, edition))


@lru_cache(maxsize=16)  # read once per script and edition, not at every process start
def _violations(script: str, edition: Edition) -> tuple[Violation, ...]:
    missing = DESKTOP_ONLY if edition == "Core" else CORE_ONLY
    code, text = scan(script)
    guards = _guards(code)
    found: list[Violation] = []
    for api in missing:
        for match in api.pattern.finditer(text):
            runs_on = guards[match.start()]
            if runs_on is not None and runs_on != edition:
                continue
            found.append(Violation(api, script.count("\n", 0, match.start()) + 1))
    found.sort(key=lambda v: v.line)
    return tuple(found)
