"""`make bench`: the demo stack and a fleet, on simulated hosts with realistic host costs at
network round trips of 0, 100 and 300 ms, each measured against the floor in the same run.

The floor is the simulator's floor mode: each agent call costs exactly one round trip and
the host costs nothing (simulator/serve.py), so the floor of a run is what the same engine,
program and calls would take if the transport added nothing and Windows were free. The
ratio real / floor is what our transport and Windows add. Floor runs send each call's
request in a Send of its own at once (IIS_CLIENTCERT_CONCURRENT_SENDS=1): the floor's
simulator charges its round trip per Send, and the real transport's one Send at a time per
host (calls that come meanwhile wait and leave together) is a cost of the transport, not
of the floor. (Before, the floor inherited that waiting and looked up to ~1.5 s slower at
300 ms, which flattered the ratios.)

1. The demo stack (the program of __main__.py with the configuration of
   stacks/Pulumi.dev.yaml: one host, one site, 10 resources): ``up``, ``preview``,
   ``refresh``, ``destroy`` at each round trip, against a simulator with realistic host
   costs and against one in floor mode.
2. A fleet (examples/fleet: one site per host) at 100 ms with realistic host costs: one
   stack of 1, 4 and 16 hosts; then the same 16 hosts as host groups in separate stacks
   run in parallel through the Automation API against one shared backend (Pulumi's own way
   past one stack: its Python dynamic-provider server runs at most 4 calls at once).

Printed per run: seconds, agent calls, WS-Management HTTP requests (all, and per call after
the first call to each host), powershell.exe starts, and the ratio to the floor (for the
fleet also this machine's CPU seconds and busy cores: the simulated hosts share its cores
with the engines); then the goals of issue 13, with what this machine allows the fleet.
It prints figures and asserts nothing. Needs the engine environment (``eval "$(make -s
env)"``; ``make bench`` sets it).

    python -m benchmarks.stack [--latencies 0,100,300] [--fleet 1,4,16] [--groups 4]
                               [--runs 1] [--goal-runs 3] [--no-fleet]

The demo figures at 300 ms, where issue 13's goal is checked, are medians of ``--goal-runs``
runs (real and floor alike): the engine's own time (the same in both) varies by seconds
between runs here, and moves a single run's ratio by 0.1-0.2.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pulumi import automation as auto

from iis_clientcert_simulator import audit
from iis_clientcert_simulator.host_costs import NONE, REALISTIC, HostCosts
from iis_clientcert_simulator.pki import make_ca, make_leaf, make_server
from iis_clientcert_simulator.serve import Simulator

REPO = Path(__file__).resolve().parent.parent
# Values for throwaway simulated hosts, not secrets.
PFX_PASSWORD = "bench-pfx-pw"  # noqa: S105
ACCOUNT_PASSWORD = "Bench-Account-Pw-4242!"  # noqa: S105
DEMO_OPS = ("up", "preview", "refresh", "destroy")
# real: our transport, realistic host costs; floor: one round trip per call, a free host
# (issue 13's floor); windows: one round trip per call and realistic host costs, the floor
# on Windows (what no transport can go below: PowerShell starts once, each op does its work).
MODES = ("real", "floor", "windows")
FLEET_LATENCY_MS = 100
# Goals of issue 13.
GOAL_REQUESTS_PER_CALL = 2.0
GOAL_RATIO = 1.3
GOAL_LATENCY_MS = 300
GOAL_PARALLEL_SPEEDUP = 3.0


# --- figures --------------------------------------------------------------------------------


@dataclass
class Figures:
    """What one operation cost, over the hosts it touched."""

    seconds: float = 0.0
    calls: int = 0
    requests: int = 0
    steady_requests: int = 0  # Sends and answering Receives after each host's first call
    steady_calls: int = 0
    starts: int = 0  # powershell.exe starts
    # CPU seconds this machine spent: the engines, programs and providers, and the
    # simulated hosts (which share its cores with parallel stacks).
    cpu_seconds: float = 0.0

    @property
    def per_call(self) -> float | None:
        return self.steady_requests / self.steady_calls if self.steady_calls else None

    def add(self, other: Figures) -> None:
        self.calls += other.calls
        self.requests += other.requests
        self.steady_requests += other.steady_requests
        self.steady_calls += other.steady_calls
        self.starts += other.starts


@dataclass
class Host:
    """One simulated host and the counters it had when an operation started."""

    simulator: Simulator
    _mark: tuple[int, dict[str, Any]] = field(default=(0, {}))

    @property
    def state_dir(self) -> Path:
        return self.simulator.state.dir

    def _agent_lines(self) -> list[dict[str, Any]]:
        return [x for x in audit.read(self.simulator.state.audit) if x.get("kind") == "agent"]

    def _stats(self) -> dict[str, Any]:
        assert self.simulator.server is not None
        return self.simulator.server.stats()

    def mark(self) -> None:
        self._mark = (len(self._agent_lines()), self._stats())

    def since_mark(self) -> Figures:
        seen, before = self._mark
        lines = self._agent_lines()[seen:]
        now = self._stats()
        return Figures(
            calls=len(lines),
            requests=now["requests"] - before.get("requests", 0),
            steady_requests=now["steady_requests"] - before.get("steady_requests", 0),
            steady_calls=now["steady_answers"] - before.get("steady_answers", 0),
            starts=sum(1 for x in lines if x.get("process_started")),
        )


@contextmanager
def hosts(
    root: Path, names: list[str], latency_ms: int, floor: bool, costs: HostCosts = REALISTIC
) -> Iterator[list[Host]]:
    with ExitStack() as stack:
        made = []
        for name in names:
            simulator = Simulator(root / name, latency_ms=latency_ms, host_costs=costs, floor=floor)
            simulator.start()
            stack.callback(simulator.stop)
            made.append(Host(simulator))
        yield made


# --- projects -------------------------------------------------------------------------------


def make_pki(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    root = make_ca("Bench Demo Root CA", subject_extra={"O": "Example Corp"})
    (folder / "ca.pem").write_bytes(root.cert_pem())
    server = make_server(root, "localhost", ip_addresses=("127.0.0.1",))
    (folder / "server.pfx").write_bytes(server.pfx(PFX_PASSWORD.encode()))
    (folder / "client.pem").write_bytes(
        make_leaf(root, "alice", subject_extra={"O": "Example Corp"}).cert_pem()
    )
    return folder


def project(folder: Path, name: str, program: Path, *extra: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for path in (program, *extra):
        shutil.copy(path, folder / path.name)
    settings = {
        "name": name,
        "runtime": {"name": "python", "options": {"virtualenv": str(REPO / ".venv")}},
    }
    (folder / "Pulumi.yaml").write_text(json.dumps(settings, indent=2))  # JSON is YAML
    return folder


def engine_env(backend: Path) -> dict[str, str]:
    env = {"PULUMI_BACKEND_URL": backend.resolve().as_uri()}
    for name in ("PULUMI_PYTHON_CMD", "PULUMI_HOME", "PULUMI_CONFIG_PASSPHRASE"):
        if os.environ.get(name):
            env[name] = os.environ[name]
    env.setdefault("PULUMI_CONFIG_PASSPHRASE", "iis-clientcert-local-only")
    env["PULUMI_SKIP_UPDATE_CHECK"] = "true"
    env["PULUMI_DISABLE_AUTOMATIC_PLUGIN_ACQUISITION"] = "true"
    return env


def new_stack(
    work_dir: Path,
    stack_name: str,
    backend: Path,
    config: dict[str, Any],
    secret: dict[str, Any],
    floor: bool = False,
) -> auto.Stack:
    env = engine_env(backend)
    if floor:
        env["IIS_CLIENTCERT_CONCURRENT_SENDS"] = "1"  # see the module docstring
    stack = auto.create_stack(
        stack_name,
        work_dir=str(work_dir),
        opts=auto.LocalWorkspaceOptions(env_vars=env),
    )
    # Objects as JSON strings: pulumi.Config.get_object reads them the same way.
    stack.set_all_config(
        {
            key: auto.ConfigValue(v if isinstance(v, str) else json.dumps(v))
            for key, v in config.items()
        }
    )
    for key, value in secret.items():
        stack.set_config(key, auto.ConfigValue(json.dumps(value), secret=True))
    return stack


def demo_stack(
    work: Path, backend: Path, name: str, host: Host, pki: Path, floor: bool = False
) -> auto.Stack:
    """The dev stack's program and configuration (stacks/Pulumi.dev.yaml) on ``host``."""
    folder = project(work / name, "iis-clientcert", REPO / "__main__.py", REPO / "stack_config.py")
    (folder / "stacks").mkdir(exist_ok=True)
    config = {
        "iis-clientcert:hosts": {"sim": {"simulator": str(host.state_dir)}},
        "iis-clientcert:sites": [
            {
                "name": "shop",
                "host": "sim",
                "https": {
                    "pfx": str(pki / "server.pfx"),
                    "port": 443,
                    "client_cert_negotiation": True,
                },
                "trusted_roots": [str(pki / "ca.pem")],
                "users": [
                    {
                        "name": "shop-alice",
                        "full_name": "Alice (one-to-one)",
                        "folder_access": [
                            {"path": "C:\\inetpub\\shop", "rights": "ReadAndExecute"}
                        ],
                    },
                    {"name": "shop-partners", "full_name": "Partner Ltd staff (many-to-one)"},
                ],
                "one_to_one": [{"certificate": str(pki / "client.pem"), "user": "shop-alice"}],
                "many_to_one": [
                    {
                        "name": "partners",
                        "description": "Anyone from Partner Ltd",
                        "user": "shop-partners",
                        "rules": [{"field": "Subject", "sub_field": "O", "match": "Partner Ltd"}],
                    }
                ],
            }
        ],
    }
    secret = {
        "iis-clientcert:passwords": {
            "shop-alice": ACCOUNT_PASSWORD,
            "shop-partners": ACCOUNT_PASSWORD + "x",
            "shop/pfx": PFX_PASSWORD,
        }
    }
    return new_stack(folder, name, backend, config, secret, floor)


def fleet_stack(
    work: Path, backend: Path, name: str, fleet: dict[str, Host], pki: Path, floor: bool = False
) -> auto.Stack:
    """examples/fleet on the hosts of ``fleet``."""
    folder = project(work / name, "iis-clientcert-fleet", REPO / "examples/fleet/__main__.py")
    inventory: dict[str, Any] = {}
    passwords: dict[str, str] = {"account": ACCOUNT_PASSWORD, "pfx": PFX_PASSWORD}
    for host_name, host in fleet.items():
        endpoint = host.simulator.endpoint
        assert endpoint is not None
        inventory[host_name] = {
            "endpoint": endpoint.winrm_https_url,
            "username": endpoint.username,
            "ca_bundle": endpoint.ca_file,
            "transport": "basic",
        }
        passwords[host_name] = endpoint.password
    config = {
        "iis-clientcert-fleet:hosts": inventory,
        "iis-clientcert-fleet:pki_dir": str(pki),
    }
    passwords_config = {"iis-clientcert-fleet:passwords": passwords}
    return new_stack(folder, name, backend, config, passwords_config, floor)


# --- running --------------------------------------------------------------------------------


def _cpu_seconds() -> float:
    """This process's CPU (the simulated hosts run in it) and that of its ended children
    (each CLI waits for its language host, program and providers, and is waited for)."""
    own, children = (
        resource.getrusage(who) for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN)
    )
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def timed(run: Callable[[], Any], touched: list[Host]) -> Figures:
    for host in touched:
        host.mark()
    cpu = _cpu_seconds()
    started = time.perf_counter()
    run()
    figures = Figures(seconds=time.perf_counter() - started, cpu_seconds=_cpu_seconds() - cpu)
    for host in touched:
        figures.add(host.since_mark())
    return figures


def operation(stack: auto.Stack, op: str) -> Callable[[], Any]:
    # show_secrets=False: the result's summary leaves the stack's secret configuration
    # masked, which spares a decryption of the secrets (a CLI run) after each operation.
    calls: dict[str, Callable[[], Any]] = {
        "up": lambda: stack.up(color="never", show_secrets=False),
        "preview": lambda: stack.preview(color="never"),
        "refresh": lambda: stack.refresh(color="never", show_secrets=False),
        "destroy": lambda: stack.destroy(color="never"),
    }
    return calls[op]


def demo_runs(
    work: Path, backend: Path, pki: Path, latency_ms: int, mode: str, runs: int
) -> dict[str, Figures]:
    """The demo stack's operations on fresh hosts in ``mode`` (MODES), ``runs`` times; the
    median of each."""
    per_op: dict[str, list[Figures]] = {op: [] for op in DEMO_OPS}
    floor = mode != "real"
    costs = NONE if mode == "floor" else REALISTIC
    for run in range(runs):
        name = f"demo-{mode}-{latency_ms}-{run}"
        with hosts(work / name, ["sim"], latency_ms, floor, costs) as (host,):
            stack = demo_stack(work, backend, name, host, pki, floor)
            for op in DEMO_OPS:
                per_op[op].append(timed(operation(stack, op), [host]))
            stack.workspace.remove_stack(name)
    return {op: _median(figures) for op, figures in per_op.items()}


def _median(runs: list[Figures]) -> Figures:
    ordered = sorted(runs, key=lambda f: f.seconds)
    middle = ordered[len(ordered) // 2]
    middle.seconds = statistics.median(f.seconds for f in runs)
    return middle


def fleet_one_stack(work: Path, backend: Path, pki: Path, count: int, floor: bool) -> Figures:
    mode = "floor" if floor else "real"
    name = f"fleet{count}-{mode}"
    names = [f"web{i:02d}" for i in range(1, count + 1)]
    with hosts(work / name, names, FLEET_LATENCY_MS, floor, NONE if floor else REALISTIC) as made:
        stack = fleet_stack(work, backend, name, dict(zip(names, made, strict=True)), pki, floor)
        return timed(operation(stack, "up"), made)


def fleet_parallel(work: Path, backend: Path, pki: Path, count: int, groups: int) -> Figures:
    """The same hosts as ``groups`` stacks (host groups), all ``up`` at once through the
    Automation API against one backend."""
    names = [f"web{i:02d}" for i in range(1, count + 1)]
    name = f"fleet{count}-groups{groups}"
    with hosts(work / name, names, FLEET_LATENCY_MS, False) as made:
        fleet = dict(zip(names, made, strict=True))
        size = -(-count // groups)
        parts = [names[i : i + size] for i in range(0, count, size)]
        stacks = [
            fleet_stack(work, backend, f"{name}-g{n}", {h: fleet[h] for h in part}, pki)
            for n, part in enumerate(parts)
        ]

        def all_up() -> None:
            with ThreadPoolExecutor(len(stacks)) as pool:
                for future in [pool.submit(operation(s, "up")) for s in stacks]:
                    future.result()

        figures = timed(all_up, made)
        figures.steady_requests = figures.steady_requests  # (summed over the groups)
        return figures


# --- printing -------------------------------------------------------------------------------


def _fmt(value: float | None, pattern: str = "{:.2f}") -> str:
    return "-" if value is None else pattern.format(value)


def print_demo(results: dict[int, dict[str, dict[str, Figures]]], runs: dict[int, int]) -> None:
    print("\nDemo stack (1 host, 10 resources): real transport with realistic host costs vs floor")
    header = (
        f"{'RTT':>6} {'op':<8} {'real s':>7} {'floor s':>7} {'ratio':>6} {'win s':>6} "
        f"{'ratio':>6} {'calls':>5} {'HTTP req':>8} {'req/call*':>9} {'ps starts':>9}"
    )
    print(header)
    print("-" * len(header))
    for latency, modes in results.items():
        for op in DEMO_OPS:
            real, floor, windows = (modes[m][op] for m in MODES)
            print(
                f"{latency:>4}ms {op:<8} {real.seconds:>7.1f} {floor.seconds:>7.1f} "
                f"{_fmt(_ratio(real, floor)):>6} {windows.seconds:>6.1f} "
                f"{_fmt(_ratio(real, windows)):>6} {real.calls:>5} {real.requests:>8} "
                f"{_fmt(real.per_call):>9} {real.starts:>9}"
            )
    print("* HTTP requests per agent call after the first call to each host")
    print(
        "  floor: one round trip per agent call and a free host (issue 13's floor); win: one\n"
        "  round trip per call with realistic host costs (the floor on Windows: PowerShell\n"
        "  starts once per host, each op does its work); real / win is what our transport adds"
    )
    medians = [f"{latency} ms: median of {n} runs" for latency, n in runs.items() if n > 1]
    if medians:
        print("  " + "; ".join(medians))


def _ratio(real: Figures, base: Figures) -> float | None:
    return real.seconds / base.seconds if base.seconds else None


def print_fleet(one: dict[int, dict[str, Figures]], parallel: Figures | None, groups: int) -> None:
    print(f"\nFleet (examples/fleet, one site per host) at {FLEET_LATENCY_MS} ms, realistic costs")
    header = (
        f"{'hosts':>5} {'stacks':>6} {'real s':>7} {'floor s':>7} {'ratio':>6} {'calls':>5} "
        f"{'s/host':>7} {'ps starts':>9} {'CPU s':>6} {'cores':>5}"
    )
    print(header)
    print("-" * len(header))
    for count, modes in one.items():
        real, floor = modes["real"], modes["floor"]
        print(
            f"{count:>5} {1:>6} {real.seconds:>7.1f} {floor.seconds:>7.1f} "
            f"{real.seconds / floor.seconds:>6.2f} {real.calls:>5} "
            f"{real.seconds / count:>7.2f} {real.starts:>9} {real.cpu_seconds:>6.1f} "
            f"{real.cpu_seconds / real.seconds:>5.2f}"
        )
    if parallel is not None:
        count = max(one) if one else 0
        print(
            f"{count:>5} {groups:>6} {parallel.seconds:>7.1f} {'':>7} {'':>6} "
            f"{parallel.calls:>5} {parallel.seconds / max(count, 1):>7.2f} {parallel.starts:>9} "
            f"{parallel.cpu_seconds:>6.1f} {parallel.cpu_seconds / parallel.seconds:>5.2f}"
        )
    print(
        f"  CPU s: CPU seconds of this machine ({os.cpu_count()} cores) in the run, the simulated\n"
        "  hosts' included; cores: CPU s / real s, the cores kept busy on average"
    )


def print_goals(
    results: dict[int, dict[str, dict[str, Figures]]],
    one: dict[int, dict[str, Figures]],
    parallel: Figures | None,
    groups: int,
) -> None:
    print("\nGoals (issue 13)")
    rows: list[tuple[str, str, bool | None]] = []
    per_call = [
        m["real"][op].per_call
        for m in results.values()
        for op in DEMO_OPS
        if m["real"][op].per_call is not None
    ]
    worst = max((p for p in per_call if p is not None), default=None)
    rows.append(
        (
            f"HTTP requests per agent call after the first to a host <= {GOAL_REQUESTS_PER_CALL:g}",
            f"{_fmt(worst)} (worst of the demo runs)",
            None if worst is None else worst <= GOAL_REQUESTS_PER_CALL,
        )
    )
    ups = [(1, m["real"]["up"].starts) for m in results.values()]
    ups += [(count, m["real"].starts) for count, m in one.items()]
    starts_ok = all(starts == hosts_ for hosts_, starts in ups)
    rows.append(
        (
            "powershell.exe starts per `pulumi up`: one per host",
            # Each (hosts, starts) once: the demo's ups all have one host.
            ", ".join(f"{s} for {h} host{'s' if h > 1 else ''}" for h, s in sorted(set(ups))),
            starts_ok,
        )
    )
    # The goal is set at 300 ms (a WAN); at 100 ms the host's fixed costs (starting
    # PowerShell, one agent per host running one request at a time) weigh more: shown for
    # reference.
    for latency in (300, 100):
        if latency in results:
            for op in ("up", "destroy"):
                real, floor = results[latency]["real"][op], results[latency]["floor"][op]
                ratio = real.seconds / floor.seconds
                is_goal = latency == GOAL_LATENCY_MS
                rows.append(
                    (
                        f"demo {op} at {latency} ms within {GOAL_RATIO:g}x of the floor"
                        + ("" if is_goal else " (reference)"),
                        f"{ratio:.2f}x ({real.seconds:.1f} s vs {floor.seconds:.1f} s)",
                        ratio <= GOAL_RATIO if is_goal else None,
                    )
                )
                if is_goal:
                    windows = results[latency]["windows"][op]
                    rows.append(
                        (
                            "  (reference) the same vs the floor on Windows",
                            f"{real.seconds / windows.seconds:.2f}x ({real.seconds:.1f} s vs "
                            f"{windows.seconds:.1f} s)",
                            None,
                        )
                    )
    if parallel is not None and one:
        count = max(one)
        single = one[count]["real"].seconds
        speedup = single / parallel.seconds
        rows.append(
            (
                f"{count}-host fleet: {groups} parallel stacks at least "
                f"{GOAL_PARALLEL_SPEEDUP:g}x faster than one",
                f"{speedup:.2f}x ({single:.1f} s vs {parallel.seconds:.1f} s)",
                speedup >= GOAL_PARALLEL_SPEEDUP,
            )
        )
        # What this machine allows: the stacks can end no sooner than one group alone, nor
        # before its cores have done the run's CPU work (the simulated hosts' included).
        group = -(-count // groups)
        cores = os.cpu_count() or 1
        bounds = [parallel.cpu_seconds / cores]
        if group in one:
            bounds.append(one[group]["real"].seconds)
        bound = max(bounds)
        rows.append(
            (
                f"  (reference) the most this machine allows ({cores} cores)",
                f"{single / bound:.2f}x ({single:.1f} s vs {bound:.1f} s)",
                None,
            )
        )
    for goal, value, ok in rows:
        mark = "-" if ok is None else ("met" if ok else "NOT met")
        print(f"  {goal:<66} {value:<34} {mark}")


# --- main -------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--latencies", default="0,100,300", help="round trips (ms)")
    parser.add_argument("--runs", type=int, default=1, help="runs per demo figure (median)")
    parser.add_argument(
        "--goal-runs",
        type=int,
        default=3,
        help=f"runs at {GOAL_LATENCY_MS} ms, where the goal is checked (median): the engine's "
        "own time varies by seconds between runs",
    )
    parser.add_argument("--fleet", default="1,4,16", help="fleet sizes of one stack")
    parser.add_argument("--groups", type=int, default=4, help="stacks for the largest fleet")
    parser.add_argument("--no-fleet", action="store_true")
    args = parser.parse_args(argv)
    if shutil.which("pulumi") is None:
        print('no pulumi on PATH: run `make bench`, or eval "$(make -s env)" first')
        return 2
    latencies = [int(x) for x in args.latencies.split(",") if x.strip()]
    sizes = [] if args.no_fleet else [int(x) for x in args.fleet.split(",") if x.strip()]
    started = time.perf_counter()
    work = Path(tempfile.mkdtemp(prefix="iis-bench-"))
    try:
        backend = work / "state"
        backend.mkdir()
        pki = make_pki(work / "pki")
        results: dict[int, dict[str, dict[str, Figures]]] = {}
        runs_at: dict[int, int] = {}
        for latency in latencies:
            results[latency] = {}
            for mode in MODES:
                print(f"[bench] demo stack, {latency} ms, {mode} ...", flush=True)
                runs = max(args.runs, args.goal_runs) if latency == GOAL_LATENCY_MS else args.runs
                runs_at[latency] = runs
                results[latency][mode] = demo_runs(work, backend, pki, latency, mode, runs)
        one: dict[int, dict[str, Figures]] = {}
        for count in sizes:
            one[count] = {}
            for floor in (False, True):
                mode = "floor" if floor else "real"
                print(f"[bench] fleet of {count} in one stack, {mode} ...", flush=True)
                one[count][mode] = fleet_one_stack(work, backend, pki, count, floor)
        parallel = None
        if sizes and args.groups > 1:
            count = max(sizes)
            print(f"[bench] fleet of {count} as {args.groups} parallel stacks ...", flush=True)
            parallel = fleet_parallel(work, backend, pki, count, args.groups)
        print_demo(results, runs_at)
        if one:
            print_fleet(one, parallel, args.groups)
        print_goals(results, one, parallel, args.groups)
        print(f"\n(bench took {time.perf_counter() - started:.0f} s)")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
