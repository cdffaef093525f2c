"""Refreshes through the real engine never lock an account (issue 10, point 7).

The simulated host has Windows 11's account lockout policy (10 bad logons in 10 minutes
lock an account). A password changed behind Pulumi's back is found by the first refresh;
the later ones do not try the logon once it could bring the account near the lockout
threshold, yet still report the drift, and `up` repairs it. Each `pulumi refresh` is a new
provider process, so this also shows the host-side guard, not only the per-process one.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from iis_clientcert_simulator.endpoint import Endpoint
from iis_clientcert_simulator.pki import make_ca, make_leaf
from iis_clientcert_simulator.testing import (
    WINDOWS_11_LOCKOUT,
    account_record,
    running_simulator,
    set_lockout_policy,
)
from tests.support.simulator import host_client
from tests.support.spec import SpecProject

pytestmark = pytest.mark.engine

PASSWORD = "Engine-Logon-77#"
REFRESHES = 6


@pytest.fixture
def simulator(tmp_path: Path) -> Iterator[Endpoint]:
    with running_simulator(tmp_path / "host") as endpoint:
        set_lockout_policy(Path(endpoint.state_dir))
        yield endpoint


def _resources() -> dict[str, Any]:
    client = make_leaf(make_ca("Engine Logon CA"), "logon-client")
    return {
        "user": {
            "kind": "LocalUser",
            "inputs": {"name": "logon-user", "password": {"$secret": "user_password"}},
        },
        "mapping": {
            "kind": "CertificateMapping",
            "depends_on": ["user"],
            "inputs": {
                "site": "shop",
                "one_to_one": [
                    {"certificate": client.cert_pem().decode(), "user_name": "logon-user"}
                ],
                "passwords": {"logon-user": {"$secret": "user_password"}},
            },
        },
    }


def _outputs(spec: SpecProject, name: str) -> dict[str, Any]:
    found = [r for r in spec.project.resources() if r["urn"].endswith(f"::{name}")]
    outputs: dict[str, Any] = found[0]["outputs"]
    return outputs


def test_refreshes_with_a_drifted_password_never_lock_the_account(
    simulator: Endpoint, pulumi_env: dict[str, str], tmp_path: Path
) -> None:
    state = Path(simulator.state_dir)
    spec = SpecProject(tmp_path / "project", pulumi_env, simulator)
    spec.set_resources(_resources(), user_password=PASSWORD)
    project = spec.project
    assert project.up() == {"create": 2}

    host_client(simulator).call_one("user.set", name="logon-user", password="Changed-Behind-9!")
    first = project.refresh()
    assert first.get("update") == 2, f"the first refresh reports the drift: {first}"
    for _ in range(REFRESHES - 1):
        project.refresh()
        record = account_record(state, "logon-user")
        assert record["locked_at"] is None, "a refresh locked the account"
        assert record["bad_password_count"] <= WINDOWS_11_LOCKOUT["threshold"] // 2
        # Still reported: the stored verdicts stand while no logon is safe to try.
        assert _outputs(spec, "user")["password_valid"] is False
        assert _outputs(spec, "mapping")["stale_passwords"] == ["logon-user"]

    assert project.preview() == {"update": 2}, "the drift shows in the next preview"
    assert project.up() == {"update": 2}
    assert project.preview() == {"same": 2}
    record = account_record(state, "logon-user")
    assert record["locked_at"] is None and record["bad_password_count"] == 0
