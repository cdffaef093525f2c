"""What a Windows host spends on an agent call that is not network: the simulator's host costs.

The simulator answers in microseconds what a Windows Server answers in hundreds of
milliseconds: starting powershell.exe, loading the agent, compiling its Add-Type code, and
the work of each op. Without these costs a benchmark against the simulator flatters any
design that starts PowerShell often. With ``realistic`` costs, each agent process pays
its start and the agent's load once, its LogonUser type once (at its first logon: an Add-Type
compile, or a type emitted in memory),
and each op its work
(slept, outside the state lock, so concurrent processes overlap as on a multi-core host).

The defaults come from published measurements (sources beside each figure); where no
measurement of exactly our step exists, the figure is derived from the nearest one and
the comment says how. ``none`` (every cost 0) is what the tests use, so the suite stays
fast; ``python -m iis_clientcert_simulator serve --host-costs realistic`` and
``--host-cost NAME=MS`` choose per run.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Final

from iis_clientcert_simulator.powershell_editions import Edition


@dataclass(frozen=True)
class HostCosts:
    """Milliseconds a Windows host spends per step (0: free)."""

    # Starting Windows PowerShell 5.1 (powershell.exe -NoProfile), per process.
    powershell_start_ms: float = 0.0
    # Starting PowerShell 7 (pwsh.exe -NoProfile), per process.
    pwsh_start_ms: float = 0.0
    # The agent read into a script block: parsing ~2,500 lines, its PowerShell class
    # (AgentJson) and Microsoft.Web.Administration loaded; per process.
    agent_load_ms: float = 0.0
    # The first Add-Type -TypeDefinition of a process (agents before issue 13 compiled their
    # LogonUser type so, at the first logon an op makes), per process.
    add_type_ms: float = 0.0
    # The first type a process emits in memory with System.Reflection.Emit (the LogonUser
    # type, at the first logon an op makes), per process.
    emit_type_ms: float = 0.0
    # Work of an op that only reads (config, stores, accounts, HTTP.sys).
    read_op_ms: float = 0.0
    # Work of an op that changes the host (a commit of applicationHost.config, an account).
    write_op_ms: float = 0.0
    # An op that starts a program (netsh.exe, secedit.exe), per op.
    child_process_ms: float = 0.0

    def start_ms(self, edition: Edition) -> float:
        return self.powershell_start_ms if edition == "Desktop" else self.pwsh_start_ms

    @property
    def free(self) -> bool:
        return not any(dataclasses.astuple(self))

    def with_overrides(self, overrides: dict[str, float]) -> HostCosts:
        """This with some costs replaced (``{"add_type_ms": 0}``); unknown names raise."""
        names = {f.name for f in dataclasses.fields(self)}
        unknown = sorted(set(overrides) - names)
        if unknown:
            raise ValueError(
                f"unknown host cost {', '.join(unknown)} (known: {', '.join(sorted(names))})"
            )
        return dataclasses.replace(self, **overrides)


NONE: Final = HostCosts()

REALISTIC: Final = HostCosts(
    # "it took 600ms for Windows PowerShell 5.1 to startup" (Steve Lee, PowerShell team,
    # PowerShell/PowerShell#4239, Windows 10 build 16225, no profile).
    powershell_start_ms=600.0,
    # `pwsh -NoProfile -c exit` 540 ms against 233 ms for powershell.exe on the same laptop
    # (PowerShell/PowerShell#6443, "pwsh is 2 times slower than powershell to load").
    pwsh_start_ms=540.0,
    # A module defining PowerShell classes loads in 375 ms (tiPS ADR 006, "Where to define
    # classes": PowerShell classes 375 ms, C# from an assembly 270 ms); the agent is one
    # script of that kind plus Microsoft.Web.Administration.
    agent_load_ms=375.0,
    # Add-Type of C# source: 1250 ms against 270 ms for the same types from an assembly
    # (tiPS ADR 006), so ~980 ms of compiling; the first Add-Type in PowerShell 6 took ~3 s
    # before crossgen (PowerShell/PowerShell#1846).
    add_type_ms=980.0,
    # PowerShell classes are emitted with System.Reflection.Emit: tiPS ADR 006 loads the
    # same types as PowerShell classes in 375 ms and from a compiled assembly in 270 ms, so
    # emitting its two classes and their enums took ~105 ms; our one static class with three
    # methods is taken at that figure.
    emit_type_ms=105.0,
    # appcmd.exe, a process that reads or commits applicationHost.config, takes 130-280 ms
    # per call (microsoft/IIS.ServiceMonitor#9), most of it starting the process (the
    # child_process_ms below). In process, through Microsoft.Web.Administration, we take the
    # difference between the two ends: ~20 ms to read, ~60 ms to commit a change.
    read_op_ms=20.0,
    write_op_ms=60.0,
    # Starting a program and running it briefly: appcmd.exe's 130 ms low end
    # (microsoft/IIS.ServiceMonitor#9) for netsh.exe and secedit.exe alike.
    child_process_ms=130.0,
)

PRESETS: Final[dict[str, HostCosts]] = {"none": NONE, "realistic": REALISTIC}


def parse(preset: str, overrides: list[str] | None = None) -> HostCosts:
    """``--host-costs PRESET`` and ``--host-cost NAME=MS`` (repeated) as HostCosts."""
    try:
        costs = PRESETS[preset]
    except KeyError:
        raise ValueError(
            f"host costs must be one of {', '.join(PRESETS)}, not {preset!r}"
        ) from None
    values: dict[str, float] = {}
    for item in overrides or []:
        name, sep, number = item.partition("=")
        name = name.strip()
        if not sep:
            raise ValueError(f"--host-cost wants NAME=MS, not {item!r}")
        if not name.endswith("_ms"):
            name += "_ms"
        try:
            value = float(number)
        except ValueError:
            raise ValueError(f"--host-cost {name}: {number!r} is not a number") from None
        if value < 0:
            raise ValueError(f"--host-cost {name}: must be >= 0")
        values[name] = value
    return costs.with_overrides(values)
