r"""What the simulator reads from agent.ps1's text, since it cannot run PowerShell.

The executor runs the contract's ops with its own model; what the agent script does on a
real host (which PowerShell APIs it calls, which files it needs, which locks it takes) is
read from the script itself, so the simulator fails the agent where Windows would:

- the functions each op reaches, from the ``$Handlers`` table through the calls in each
  function body (a static call graph: a call that is there counts, taken or not);
- the account's TEMP folder: an agent that reads it fails on a host whose WinRM account has
  none (FACTS.md, "Real-host pitfalls": an account that never logged on, with WinRS's
  noprofile, may have no TEMP; docs/real-host.md). Windows PowerShell 5.1's Add-Type
  compiles C# with csc.exe through files in TMP, so on 5.1 a function that compiles with
  Add-Type must point ``$env:TMP`` elsewhere first, in the same function;
- the host-wide named mutex ``Global\iis-clientcert-agent`` (created, waited on, released)
  that serialises write batches, and whether a commit conflict (Microsoft.Web.Administration's
  FileLoadException, "the file has changed on disk") is caught to run the op again (FACTS.md,
  "Real-host pitfalls": Microsoft.Web.Administration commits optimistically);
- whether the script answers request after request from the stdin reader the bootstrap
  hands it (a loop around ``ReadLine()`` at the top level: a persistent agent) or one
  request and ends;
- what an op costs on a host (simulator/host_costs.py): the ops that can reach an
  ``Add-Type`` compile or a type emitted with System.Reflection.Emit, and those that start a
  program (``& "...\\netsh.exe"``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from functools import cache
from typing import Final

from iis_clientcert_simulator.powershell_editions import Edition, scan

TOP_LEVEL: Final = "<script>"
MUTEX_NAME: Final = "Global\\iis-clientcert-agent"

_FUNCTION: Final = re.compile(r"\bfunction\s+([A-Za-z][\w-]*)\s*(?:\([^)]*\))?\s*$", re.I)
_HANDLER: Final = re.compile(r"'([a-z]+\.[a-z_]+)'\s*=\s*\{([^}]*)\}")

# Reads of the account's temp folder (Path.GetTempPath reads TMP, then TEMP, then the
# profile: all the account's).
_TEMP_READS: Final = (
    re.compile(r"(?i)GetTempPath\s*\("),
    re.compile(r"(?i)GetTempFileName\s*\("),
    re.compile(r"(?i)\bNew-TemporaryFile\b"),
    re.compile(r"(?i)\$env:TE?MP\b(?!\s*=[^=])"),
)
_COMPILES: Final = re.compile(r"(?i)\bAdd-Type\b[^\n]*-(?:TypeDefinition|MemberDefinition)\b")
# A type emitted in memory (System.Reflection.Emit): no compiler, no files.
_EMITS: Final = re.compile(r"(?i)\bDefineDynamicAssembly\s*\(")
_SETS_TMP: Final = re.compile(r"(?i)\$env:TMP\s*=[^=]")
# A program started by the call operator: & "$env:windir\system32\netsh.exe" @args.
_STARTS_PROGRAM: Final = re.compile(r"(?i)&\s*[\"'][^\"'\n]*\.exe[\"']")
_READS_LINES: Final = re.compile(r"(?i)\.ReadLine\(\s*\)")
_LOOP: Final = re.compile(r"(?i)\b(?:while|for|foreach|do)\b")


@dataclass(frozen=True)
class AgentText:
    """One agent script, read once (see the module docstring)."""

    script: str
    code: str  # comments and string insides blanked
    text: str  # comments blanked
    functions: dict[str, tuple[int, int]] = field(default_factory=dict)  # lower name -> body
    handlers: dict[str, str] = field(default_factory=dict)  # op -> handler text

    @staticmethod
    def read(script: str) -> AgentText:
        return _read(script)

    def body(self, name: str) -> str:
        start, end = self.functions[name]
        return self.text[start:end]

    def top_level(self) -> str:
        """The script outside every function body (what runs before any op)."""
        keep = list(self.text)
        for start, end in self.functions.values():
            for k in range(start, end):
                keep[k] = " "
        return "".join(keep)

    def calls(self, text: str) -> set[str]:
        words = {w.lower() for w in re.findall(r"[A-Za-z][\w-]*", text)}
        return words & set(self.functions)

    def reach(self, op: str) -> set[str]:
        """Functions the op's handler can reach, and TOP_LEVEL (run before every op)."""
        todo = list(self.calls(self.handlers.get(op, "")))
        seen: set[str] = {TOP_LEVEL}
        while todo:
            name = todo.pop()
            if name in seen:
                continue
            seen.add(name)
            todo.extend(self.calls(self.body(name)) - seen)
        return seen

    def temp_uses(self, edition: Edition) -> dict[str, str]:
        """Function (or TOP_LEVEL) -> why it needs the account's TEMP folder."""
        found: dict[str, str] = {}
        parts = {TOP_LEVEL: self.top_level()} | {n: self.body(n) for n in self.functions}
        for name, text in parts.items():
            for pattern in _TEMP_READS:
                match = pattern.search(text)
                if match:
                    found[name] = f"reads the account's temp folder ({match.group(0).strip()})"
                    break
            if name in found or edition != "Desktop":
                continue
            compiles = _COMPILES.search(text)
            if compiles and not _SETS_TMP.search(text, 0, compiles.start()):
                found[name] = (
                    "compiles with Add-Type, which Windows PowerShell 5.1 does through csc.exe "
                    "and files in TMP (the account's temp folder)"
                )
        return found

    def takes_host_mutex(self) -> bool:
        """Whether the script creates, waits on and releases the host's agent mutex."""
        created = re.search(
            r"New-Object\s+System\.Threading\.Mutex\s*\([^)]*'" + re.escape(MUTEX_NAME) + "'",
            self.text,
        )
        return bool(created) and ".WaitOne(" in self.code and ".ReleaseMutex()" in self.code

    def retries_commit_conflict(self) -> bool:
        """Whether the script catches a commit conflict (FileLoadException) to retry."""
        return "[System.IO.FileLoadException]" in self.code

    def serves_many_requests(self) -> bool:
        """Whether the script reads request after request: a loop at its top level around
        ``ReadLine()`` (otherwise it answers at most one request and ends)."""
        top = self.top_level()
        loop = _LOOP.search(top)
        return loop is not None and _READS_LINES.search(top, loop.start()) is not None

    def _ops_reaching(self, pattern: re.Pattern[str]) -> frozenset[str]:
        bodies = {TOP_LEVEL: ""} | {n: self.body(n) for n in self.functions}
        hits = {name for name, text in bodies.items() if pattern.search(text)}
        return frozenset(op for op in self.handlers if self.reach(op) & hits)

    def ops_compiling(self) -> frozenset[str]:
        """Ops that can reach an Add-Type compile (static: a call that is there counts)."""
        return self._ops_reaching(_COMPILES)

    def ops_emitting(self) -> frozenset[str]:
        """Ops that can reach a type emitted with System.Reflection.Emit."""
        return self._ops_reaching(_EMITS)

    def ops_starting_programs(self) -> frozenset[str]:
        """Ops that can reach the start of a program (netsh.exe, secedit.exe)."""
        return self._ops_reaching(_STARTS_PROGRAM)

    def ops_needing_temp(self, edition: Edition) -> dict[str, str]:
        uses = self.temp_uses(edition)
        out: dict[str, str] = {}
        for op in self.handlers:
            for name in sorted(self.reach(op) & set(uses)):
                out[op] = f"{name}: {uses[name]}"
                break
        return out


@cache
def _read(script: str) -> AgentText:
    code, text = scan(script)
    functions: dict[str, tuple[int, int]] = {}
    stack: list[tuple[int, str | None]] = []
    for i, ch in enumerate(code):
        if ch == "{":
            match = _FUNCTION.search(code, max(0, i - 300), i)
            stack.append((i, match.group(1).lower() if match else None))
        elif ch == "}" and stack:
            start, name = stack.pop()
            if name is not None and not stack:
                functions[name] = (start, i + 1)
    handlers = {m.group(1): m.group(2) for m in _HANDLER.finditer(text)}
    return AgentText(script, code, text, functions, handlers)
