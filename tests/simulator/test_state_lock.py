"""The state lock is per simulated host: hosts are separate machines.

A fleet simulated in one process (``make bench``, tests/engine/test_fleet.py) must not
make one host's requests wait for another's; requests to one host still serialise.
"""

from __future__ import annotations

import threading
from pathlib import Path

from iis_clientcert_simulator.state import HostState


def _try_lock(state: HostState, got: threading.Event) -> threading.Thread:
    def run() -> None:
        with state.locked():
            got.set()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


def test_a_host_holding_its_lock_does_not_stop_another_host(tmp_path: Path) -> None:
    web01, web02 = HostState(tmp_path / "web01"), HostState(tmp_path / "web02")
    other_host, same_host = threading.Event(), threading.Event()
    with web01.locked():
        _try_lock(web02, other_host)
        waiter = _try_lock(HostState(tmp_path / "web01"), same_host)
        assert other_host.wait(10), "web02 waited for web01's lock"
        assert not same_host.wait(0.3), "a second request to web01 did not wait for the first"
    assert same_host.wait(10)
    waiter.join(10)


def test_the_lock_is_reentrant_per_host_for_one_thread(tmp_path: Path) -> None:
    web01, web02 = HostState(tmp_path / "web01"), HostState(tmp_path / "web02")
    with web01.locked(), web02.locked(), web01.locked():
        pass
    # Released whole: another thread takes it at once.
    got = threading.Event()
    _try_lock(web01, got).join(10)
    assert got.is_set()
