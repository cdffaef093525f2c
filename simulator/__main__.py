"""``python -m iis_clientcert_simulator serve|reset --state-dir DIR``: run or delete a
simulated IIS host."""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
import shutil
import signal
import sys
import threading
from pathlib import Path
from types import FrameType

from iis_clientcert_simulator import host_costs
from iis_clientcert_simulator.endpoint import endpoint_file
from iis_clientcert_simulator.files import read_json
from iis_clientcert_simulator.https_front import HttpsFront, start_published
from iis_clientcert_simulator.serve import Simulator


def _serve(args: argparse.Namespace) -> int:
    stop = threading.Event()

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    simulator = Simulator(
        Path(args.state_dir),
        port=args.port,
        latency_ms=args.latency_ms,
        winrm_setup=not args.winrm_as_shipped,
        host_costs=args.costs,
        floor=args.floor,
    )
    endpoint = simulator.start()
    front: HttpsFront | None = None
    try:
        # --- HTTPS front (simulator/https_front.py): each site's https (and http) bindings
        # on loopback, listed under "sites" ("http_sites") in endpoint.json and kept current
        # as bindings change.
        front = start_published(endpoint.state_dir, iis_headers=not args.real_iis_responses)
        endpoint = dataclasses.replace(endpoint, sites=front.urls(), http_sites=front.urls("http"))
        # --- end of HTTPS front
        # One line a script can wait for; the password stays in endpoint.json (0600).
        print(json.dumps(endpoint.public()), flush=True)
        while not stop.wait(0.5):
            pass
    finally:
        if front is not None:
            front.stop()
        simulator.stop()
    return 0


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _reset(args: argparse.Namespace) -> int:
    directory = Path(args.state_dir)
    if not directory.exists():
        return 0
    if any(directory.iterdir()) and not (directory / "applicationHost.config").exists():
        print(
            f"{directory} does not look like a simulator state folder; not deleting it",
            file=sys.stderr,
        )
        return 2
    pid = (read_json(endpoint_file(directory), {}) or {}).get("pid")
    if isinstance(pid, int) and pid != os.getpid() and _pid_alive(pid) and not args.force:
        print(
            f"a simulator (pid {pid}) may still serve {directory}; stop it or use --force",
            file=sys.stderr,
        )
        return 2
    shutil.rmtree(directory)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m iis_clientcert_simulator", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve", help="run the simulated host's WinRM endpoint")
    serve.add_argument("--state-dir", required=True)
    serve.add_argument(
        "--port", type=int, default=0, help="HTTPS port (HTTP is port+1); 0 picks free ports"
    )
    serve.add_argument("--latency-ms", type=int, default=0, help="delay added to every request")
    serve.add_argument(
        "--host-costs",
        choices=sorted(host_costs.PRESETS),
        default="none",
        help="what the host spends besides the network: starting PowerShell, loading the "
        "agent, compiling, each op's work (realistic: published figures; none: free)",
    )
    serve.add_argument(
        "--host-cost",
        action="append",
        default=[],
        metavar="NAME=MS",
        help="one host cost, e.g. powershell_start_ms=900 (repeatable)",
    )
    serve.add_argument(
        "--floor",
        action="store_true",
        help="charge --latency-ms once per agent request instead of per HTTP request: with "
        "--host-costs none (the default) the floor a call cannot go below, with realistic "
        "costs the floor on Windows",
    )
    serve.add_argument("--log-level", default="WARNING")
    serve.add_argument(
        "--real-iis-responses",
        action="store_true",
        help="the HTTPS front answers as a real IIS: no X-IIS-Substatus header or JSON body, "
        "IIS's error page; the substatus is then only in the site's W3C log (site.log_tail)",
    )
    serve.add_argument(
        "--winrm-as-shipped",
        action="store_true",
        help="skip the demo's WinRM setup step on a new host: Basic and certificate auth "
        "stay off and LocalAccountTokenFilterPolicy unset, as on a fresh Windows",
    )
    reset = sub.add_parser("reset", help="delete the state folder")
    reset.add_argument("--state-dir", required=True)
    reset.add_argument("--force", action="store_true")
    args = parser.parse_args(argv)
    if args.command == "serve":
        try:
            args.costs = host_costs.parse(args.host_costs, args.host_cost)
        except ValueError as exc:
            parser.error(str(exc))
        logging.basicConfig(level=args.log_level.upper(), stream=sys.stderr)
        return _serve(args)
    return _reset(args)


if __name__ == "__main__":
    sys.exit(main())
