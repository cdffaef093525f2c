"""The reliability suite's shared pieces: the figures it reports (also printed by
benchmarks/reliability_report.py), its PKI and the passwords its resources use."""

from __future__ import annotations

import base64
import threading
from dataclasses import dataclass, field
from typing import Any

from iis_clientcert_simulator.pki import Issued, make_ca, make_leaf, make_server
from tests.support.engine import REPO_ROOT

FIGURES_FILE = REPO_ROOT / ".work" / "reliability-figures.json"
FIGURE_NAMES = (
    "inputs_tried",
    "faults_injected",
    "runs_converged",
    "runs_not_converged",
    "secrets_found",
    "lost_writes",
)
# Figures that must be zero for the suite to pass.
MUST_BE_ZERO = ("runs_not_converged", "secrets_found", "lost_writes")

USER_PASSWORD = "Bl0ssom-Pw-4242!"
PFX_PASSWORD = "rel-pfx-pw"


@dataclass
class Figures:
    """Counters per figure, broken down by the part of the suite that counted them."""

    counts: dict[str, dict[str, int]] = field(
        default_factory=lambda: {name: {} for name in FIGURE_NAMES}
    )
    lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, figure: str, part: str, n: int = 1) -> None:
        if figure not in self.counts:
            raise KeyError(figure)
        with self.lock:
            self.counts[figure][part] = self.counts[figure].get(part, 0) + n

    def total(self, figure: str) -> int:
        return sum(self.counts[figure].values())

    def as_json(self) -> dict[str, Any]:
        return {
            name: {"total": self.total(name), "by_part": dict(sorted(parts.items()))}
            for name, parts in self.counts.items()
        }


def figures_table(data: dict[str, Any]) -> list[str]:
    """The figures as printed lines (shared with benchmarks/reliability_report.py)."""
    lines = [f"{'figure':<20} {'total':>7}  by part"]
    for name in FIGURE_NAMES:
        entry = data.get(name) or {"total": 0, "by_part": {}}
        parts = ", ".join(f"{k}={v}" for k, v in entry["by_part"].items()) or "-"
        flag = "  (must be 0)" if name in MUST_BE_ZERO else ""
        lines.append(f"{name:<20} {entry['total']:>7}  {parts}{flag}")
    return lines


# --- PKI -----------------------------------------------------------------------------


@dataclass
class Pki:
    root: Issued
    other_root: Issued
    client: Issued
    client2: Issued
    server: Issued  # for ServerCertificate
    binding_server: Issued  # pre-imported in the baseline host, for HttpsBinding

    def pfx_b64(self, issued: Issued, password: str = PFX_PASSWORD) -> str:
        return base64.b64encode(issued.pfx(password.encode())).decode()


def make_pki() -> Pki:
    root = make_ca("Reliability Root")
    return Pki(
        root=root,
        other_root=make_ca("Reliability Other Root"),
        client=make_leaf(root, "rel-client", subject_extra={"O": "Rel Corp"}),
        client2=make_leaf(root, "rel-client-2", subject_extra={"O": "Rel Corp"}),
        server=make_server(root, "rel-server.test"),
        binding_server=make_server(root, "rel-binding.test"),
    )
