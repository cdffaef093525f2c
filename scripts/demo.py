"""The main job on the embedded default: PKI, simulator, `pulumi up`, client-certificate probe.

Run through `make demo` (which sets up the venv, the Pulumi CLI and the local engine
environment). Steps:
1. the first time, a demo PKI in .work/demo-pki (root CA, server certificate as PFX, a
   client certificate mapped one to one, one matched by a many-to-one rule, one from an
   unknown CA, an expired one); the root's client certificates name its CRL distribution
   point (DEMO_CRL_URL);
2. the IIS simulator in the background (state in .work/sim, WinRM on fixed loopback ports),
   and a fresh CRL of the demo root published where the simulator's host fetches it: IIS
   checks client-certificate revocation, so without it every client would get 403.13;
3. `pulumi up` of the dev stack (stacks/Pulumi.dev.yaml);
4. a TLS connection to the site with each client certificate (and with none), printed as
   a table; exits non-zero when any row differs from what the configuration implies.

`python scripts/demo.py down` destroys the stack and stops the simulator.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from iis_clientcert.tools.probe import ProbeResult, probe
from iis_clientcert_simulator.endpoint import EndpointError, endpoint_file, read_endpoint
from iis_clientcert_simulator.pki import (
    Issued,
    PrivateKey,
    make_ca,
    make_crl,
    make_leaf,
    make_server,
)
from iis_clientcert_simulator.state import HostState

REPO = Path(__file__).resolve().parent.parent
WORK = REPO / ".work"
PKI = WORK / "demo-pki"
SIM = WORK / "sim"
STACK = "dev"
SIM_PORT = int(os.environ.get("IIS_CLIENTCERT_SIM_PORT", "45986"))
# Where the demo root publishes its CRL (the client certificates name it as their CDP).
DEMO_CRL_URL = "http://pki.example-corp.test/crl/demo-root-ca.crl"
# Bumped when the PKI's shape changes, so an older .work/demo-pki is made again.
PKI_VERSION = "2: client certificates with a CRL distribution point"


def say(text: str) -> None:
    print(f"[demo] {text}", flush=True)


def pulumi(*args: str, capture: bool = False) -> str:
    result = subprocess.run(
        ["pulumi", *args], cwd=REPO, check=True, text=True, capture_output=capture
    )
    return result.stdout if capture else ""


@dataclass(frozen=True)
class Client:
    label: str
    cert_file: str | None
    key_file: str | None
    expect_status: int
    expect_substatus: int
    expect_user: str | None


CLIENTS = [
    Client("alice (one-to-one)", "alice.pem", "alice.key", 200, 0, "shop-alice"),
    Client("bob @ Partner Ltd (many-to-one rule)", "bob.pem", "bob.key", 200, 0, "shop-partners"),
    Client("mallory (unknown CA)", "mallory.pem", "mallory.key", 403, 16, None),
    Client("carol (expired)", "carol-expired.pem", "carol-expired.key", 403, 17, None),
    Client("no certificate", None, None, 403, 7, None),
]


def write(path: Path, data: bytes, private: bool = False) -> None:
    path.write_bytes(data)
    if private:
        path.chmod(0o600)


def save_pair(issued: Issued, stem: str) -> None:
    write(PKI / f"{stem}.pem", issued.cert_pem())
    write(PKI / f"{stem}.key", issued.key_pem(), private=True)


def ensure_pki() -> None:
    marker = PKI / "complete"
    if marker.exists() and marker.read_text().strip() == PKI_VERSION:
        say(f"demo PKI: reusing {PKI.relative_to(REPO)}")
        return
    say(f"demo PKI: creating {PKI.relative_to(REPO)}")
    PKI.mkdir(parents=True, exist_ok=True)
    PKI.chmod(0o700)
    root = make_ca("IIS ClientCert Demo Root CA", subject_extra={"O": "Example Corp"})
    write(PKI / "demo-root-ca.pem", root.cert_pem())
    # Kept (0600) to sign a fresh CRL at every run: a CRL past its nextUpdate is offline.
    write(PKI / "demo-root-ca.key", root.key_pem(), private=True)
    cdp = [DEMO_CRL_URL]
    server = make_server(root, "localhost", ip_addresses=("127.0.0.1",))
    pfx_password = pulumi(
        "config", "get", "--path", "passwords.shop/pfx", "-s", STACK, capture=True
    ).strip()
    write(PKI / "shop-server.pfx", server.pfx(pfx_password.encode()), private=True)
    save_pair(make_leaf(root, "alice", subject_extra={"O": "Example Corp"}, crl_urls=cdp), "alice")
    save_pair(make_leaf(root, "bob", subject_extra={"O": "Partner Ltd"}, crl_urls=cdp), "bob")
    stranger = make_ca("Unknown Demo CA")
    save_pair(make_leaf(stranger, "mallory", subject_extra={"O": "Partner Ltd"}), "mallory")
    now = datetime.now(UTC)
    expired = make_leaf(
        root,
        "carol",
        subject_extra={"O": "Partner Ltd"},
        not_before=now - timedelta(days=400),
        not_after=now - timedelta(days=30),
        crl_urls=cdp,
    )
    save_pair(expired, "carol-expired")
    marker.write_text(PKI_VERSION + "\n")


def publish_crl() -> None:
    """Sign a fresh (empty) CRL with the demo root and serve it at DEMO_CRL_URL to the
    simulator's host: HTTP.sys checks client-certificate revocation by default."""
    cert = x509.load_pem_x509_certificate((PKI / "demo-root-ca.pem").read_bytes())
    key = serialization.load_pem_private_key((PKI / "demo-root-ca.key").read_bytes(), None)
    if not isinstance(key, PrivateKey):
        raise SystemExit("[demo] the demo root key is not EC or RSA")
    crl = make_crl(Issued(cert, key))
    HostState(SIM).publish_crl(DEMO_CRL_URL, crl.public_bytes(serialization.Encoding.DER))
    say(f"demo PKI: CRL of the root published at {DEMO_CRL_URL} (reachable by the host)")


def simulator_pid() -> int | None:
    """The pid of the simulator serving .work/sim, or None."""
    try:
        pid = read_endpoint(SIM).pid
        if not pid:
            return None  # stopped cleanly: the simulator clears its pid
        os.kill(pid, 0)
    except (EndpointError, OSError):
        return None
    return pid


def ensure_simulator() -> None:
    if simulator_pid() is not None:
        say("simulator: already running")
        return
    SIM.mkdir(parents=True, exist_ok=True)
    log = (WORK / "simulator.log").open("ab")
    say(f"simulator: starting (state in {SIM.relative_to(REPO)}, log .work/simulator.log)")
    endpoint_file(SIM).unlink(missing_ok=True)
    subprocess.Popen(
        [
            sys.executable,
            "-m",
            "iis_clientcert_simulator",
            "serve",
            "--state-dir",
            str(SIM),
            "--port",
            str(SIM_PORT),
        ],
        cwd=REPO,
        stdout=log,
        stderr=log,
        stdin=subprocess.DEVNULL,
        start_new_session=True,  # keeps running after `make demo` returns
    )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if simulator_pid() is not None:
            return
        time.sleep(0.2)
    raise SystemExit("[demo] the simulator did not start: see .work/simulator.log")


def stop_simulator() -> None:
    pid = simulator_pid()
    if pid is None:
        say("simulator: not running")
        return
    os.kill(pid, signal.SIGTERM)
    say(f"simulator: stopped (pid {pid})")


def site_url(site: str) -> str:
    urls = read_endpoint(SIM).sites.get(site) or []
    if not urls:
        raise SystemExit(f"[demo] the simulator serves no https binding for site {site!r}")
    return str(urls[0])


def run_probe(url: str, ca_bundle: str) -> list[tuple[Client, ProbeResult, bool]]:
    rows = []
    for client in CLIENTS:
        cert = (PKI / client.cert_file).read_bytes() if client.cert_file else None
        key = (PKI / client.key_file).read_bytes() if client.key_file else None
        result = probe(
            url, client_cert_pem=cert, client_key_pem=key, ca_bundle=ca_bundle, timeout=15
        )
        user_ok = client.expect_user is None or (
            result.user is not None and result.user.rsplit("\\", 1)[-1] == client.expect_user
        )
        ok = (
            result.status == client.expect_status
            and result.substatus == client.expect_substatus
            and user_ok
        )
        rows.append((client, result, ok))
    return rows


def print_table(rows: list[tuple[Client, ProbeResult, bool]]) -> None:
    header = f"{'certificate':<38} {'status':<8} {'user':<26} {'expected':<10} ok"
    print(header)
    print("-" * len(header))
    for client, result, ok in rows:
        got = f"{result.status}.{result.substatus}" if result.status else (result.error or "?")
        want = f"{client.expect_status}.{client.expect_substatus}"
        verdict = "yes" if ok else "NO"
        print(f"{client.label:<38} {got:<8} {result.user or '-':<26} {want:<10} {verdict}")


def up() -> int:
    ensure_simulator()
    try:
        pulumi("stack", "select", STACK, capture=True)
    except subprocess.CalledProcessError:
        pulumi("stack", "init", STACK)
    ensure_pki()
    publish_crl()
    say("pulumi up -s dev")
    pulumi("up", "--yes", "--skip-preview", "-s", STACK)
    url = site_url("shop")
    say(f"probing {url} with each client certificate")
    rows = run_probe(url, str(PKI / "demo-root-ca.pem"))
    print_table(rows)
    if all(ok for _, _, ok in rows):
        say("every row is what the configuration implies")
        return 0
    say("some rows differ from what the configuration implies")
    return 1


def down() -> int:
    if simulator_pid() is not None:
        try:
            pulumi("stack", "select", STACK, capture=True)
            pulumi("destroy", "--yes", "--skip-preview", "-s", STACK)
        except subprocess.CalledProcessError:
            say("no dev stack to destroy")
    stop_simulator()
    return 0


if __name__ == "__main__":
    sys.exit(down() if sys.argv[1:] == ["down"] else up())
