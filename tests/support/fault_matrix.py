"""The fault matrix of the reliability suite: a simulated host whose state is saved and put
back between cases, one resource operation as a repeatable run, and the loop that injects
each fault and checks that the next run converges (tests/reliability/test_faults.py,
test_session_faults.py)."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from iis_clientcert.framework.base import IisProvider
from iis_clientcert.framework.host_facts import FACTS
from iis_clientcert.framework.logons import LEDGER
from iis_clientcert_simulator.endpoint import ENDPOINT_FILE, Endpoint
from iis_clientcert_simulator.state import HostState
from tests.reliability.resources import Subject
from tests.support.reliability import Figures, Pki
from tests.support.simulator import (
    audit_lines,
    connection,
    normalise_sid,
    normalised_snapshot,
    set_faults,
)

# The one-shot faults of faults.json the matrices set (simulator/executor.py).
FAULT_KEYS = ("drop", "fail_op", "kill_agent", "restart_winrm")
# Files of the state folder that are not host state (kept across restores).
_NOT_STATE = {"audit.log", ".lock", "faults.json", ENDPOINT_FILE}


class Host:
    """One simulator whose state can be saved and put back between cases."""

    def __init__(self, endpoint: Endpoint) -> None:
        self.endpoint = endpoint
        self.dir = Path(endpoint.state_dir)
        self.state = HostState(self.dir)

    def _files(self, root: Path) -> set[Path]:
        return {
            p.relative_to(root)
            for p in root.rglob("*")
            if p.is_file() and p.name not in _NOT_STATE and not p.name.startswith(".faults-")
        }

    def save(self, to: Path) -> None:
        with self.state.locked():
            for rel in self._files(self.dir):
                (to / rel).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(self.dir / rel, to / rel)

    def restore(self, saved: Path) -> None:
        with self.state.locked():
            keep = self._files(saved)
            for rel in self._files(self.dir) - keep:
                (self.dir / rel).unlink()
            for rel in keep:
                shutil.copy2(saved / rel, self.dir / rel)
        self.set_faults({})

    def set_faults(self, faults: dict[str, Any]) -> None:
        set_faults(self.dir, faults)

    def fault_pending(self) -> bool:
        import json

        try:
            data = json.loads(self.state.faults.read_text() or "{}")
        except FileNotFoundError:
            return False
        return any(data.get(key) for key in FAULT_KEYS)

    def commands(self) -> list[dict[str, Any]]:
        return audit_lines(self.endpoint)


@dataclass
class Run:
    """One operation of a resource, able to run on a host restored to its starting point."""

    subject: Subject
    op: str  # create | update | delete
    start: Path  # saved host state to start from
    props_a: dict[str, Any]
    props_b: dict[str, Any]
    rid: str
    outs_a: dict[str, Any]

    def provider(self) -> IisProvider[Any, Any]:
        return self.subject.provider()

    def __call__(self) -> dict[str, Any] | None:
        # Each run stands for a `pulumi up` / `destroy` of its own: a new provider process,
        # which has learnt nothing from logons or host facts yet (iis_clientcert.framework).
        LEDGER.clear()
        FACTS.clear()
        provider = self.provider()
        if self.op == "create":
            return dict(provider.create(dict(self.props_a)).outs or {})
        if self.op == "update":
            return dict(provider.update(self.rid, dict(self.outs_a), dict(self.props_b)).outs or {})
        provider.delete(self.rid, dict(self.outs_a))
        return None


def _checked(provider: IisProvider[Any, Any], inputs: dict[str, Any], conn: Any) -> Any:
    result = provider.check({}, {**inputs, "connection": conn})
    assert not result.failures, [f.reason for f in result.failures]
    return dict(result.inputs)


def _refresh_is_clean(run: Run, outs: dict[str, Any]) -> bool:
    """refresh + preview: read the live state, and diff it with the program's inputs."""
    provider = run.provider()
    read = provider.read(run.rid, dict(outs))
    if read.id is None:
        return False
    props = run.props_a if run.op == "create" else run.props_b
    diff = provider.diff(run.rid, dict(read.outs or {}), dict(props))
    return not diff.changes


def run_matrix(
    subject: Subject,
    host: Host,
    pki: Pki,
    figures: Figures,
    tmp_path: Path,
    fault_specs: Callable[[int, int], list[dict[str, Any]]],
    part: str = "provider",
) -> None:
    """Every fault of ``fault_specs(commands, ops)`` at create, update and delete of
    ``subject``: each run must converge to the host of a run without faults."""
    conn = connection(host.endpoint).to_input()
    provider = subject.provider()
    props_a = _checked(provider, subject.a(pki), conn)
    props_b = _checked(provider, subject.b(pki), conn)

    pristine = tmp_path / "pristine"
    host.save(pristine)
    baseline = normalised_snapshot(host.endpoint)
    created = provider.create(dict(props_a))
    rid, outs_a = created.id, dict(created.outs or {})
    after_create = tmp_path / "created"
    host.save(after_create)

    problems: list[str] = []
    for op in ("create", "update", "delete"):
        start = pristine if op == "create" else after_create
        run = Run(subject, op, start, props_a, props_b, rid, outs_a)
        # The run that never fails: what the host must look like, and what it costs.
        host.restore(start)
        seen = len(host.commands())
        golden_outs = run()
        lines = host.commands()[seen:]
        golden = normalised_snapshot(host.endpoint)
        n_ops = sum(len(line.get("ops", [])) for line in lines)
        for spec in fault_specs(len(lines), n_ops):
            label = f"{subject.kind}.{op} {spec}"
            host.restore(start)
            host.set_faults(spec)
            failed = False
            try:
                outs = run()
            except Exception:
                failed = True
            if host.fault_pending():
                problems.append(f"{label}: the fault never fired")
                continue
            figures.add("faults_injected", f"{part}:{op}")
            host.set_faults({})
            if failed:  # a fault the client absorbed (a retried read) needs no rerun
                try:
                    outs = run()  # the next `pulumi up` / `pulumi destroy`
                except Exception as exc:
                    problems.append(f"{label}: the rerun failed: {exc}")
                    figures.add("runs_not_converged", part)
                    continue
            ok = True
            if normalised_snapshot(host.endpoint) != golden:
                problems.append(f"{label}: the host differs from a run without faults")
                figures.add("lost_writes", part)
                ok = False
            if outs is not None and not _refresh_is_clean(run, outs):
                problems.append(f"{label}: refresh after the rerun finds drift")
                ok = False
            if op == "create" and outs is not None:
                # What the recovered create remembers must let destroy restore the host
                # (an account's SID may differ: a rolled-back attempt used one up).
                got = {k: normalise_sid(v) for k, v in outs.items()}
                clean = {k: normalise_sid(v) for k, v in (golden_outs or {}).items()}
                if got != clean:
                    problems.append(
                        f"{label}: outputs differ from a clean create: "
                        + ", ".join(
                            f"{k}={got.get(k)!r} (clean: {clean.get(k)!r})"
                            for k in sorted(set(got) | set(clean))
                            if got.get(k) != clean.get(k)
                        )
                    )
                    ok = False
                run.provider().delete(rid, outs)
                if normalised_snapshot(host.endpoint) != baseline:
                    problems.append(f"{label}: destroy after the recovered create leaves changes")
                    ok = False
            figures.add("runs_converged" if ok else "runs_not_converged", part)
    assert not problems, "\n".join(problems)
