"""Error paths through the real engine: the run fails naming the resource and saying what to
do, nothing is written before the failure, and a rerun after fixing the cause converges."""

from __future__ import annotations

import base64
from pathlib import Path

import pytest
from lxml import etree
from pulumi.automation.errors import CommandError

from iis_clientcert.host import contract
from iis_clientcert_simulator.endpoint import Endpoint
from iis_clientcert_simulator.pki import make_ca, make_leaf
from tests.support.simulator import audit_lines, host_client, ops_of
from tests.support.spec import SpecProject

pytestmark = pytest.mark.engine

PASSWORD = "Err0r-Path-Pa55!"


def _fails(spec: SpecProject) -> str:
    with pytest.raises(CommandError) as err:
        spec.project.up()
    return str(err.value)


def test_missing_site_fails_clearly_then_converges(
    simulator: Endpoint, pulumi_env: dict[str, str], tmp_path: Path
) -> None:
    spec = SpecProject(tmp_path / "p", pulumi_env, simulator)
    spec.set_resources({"ssl": {"kind": "SslSettings", "inputs": {"site": "shpo"}}})
    seen = len(audit_lines(simulator))
    text = _fails(spec)
    assert "SslSettings: site = 'shpo': no such site" in text
    assert "sites there: Default Web Site, shop" in text
    assert "Create the site in IIS first or correct the name" in text
    assert not [op for op in ops_of(audit_lines(simulator)[seen:]) if op["writes"]]

    spec.set_resources({"ssl": {"kind": "SslSettings", "inputs": {"site": "shop"}}})
    assert spec.project.up() == {"create": 1}
    assert spec.project.preview() == {"same": 1}


def test_wrong_mapping_password_is_caught_before_writing(
    simulator: Endpoint, pulumi_env: dict[str, str], tmp_path: Path
) -> None:
    ca = make_ca("Errors Root")
    client = make_leaf(ca, "carol")
    user = {
        "kind": "LocalUser",
        "inputs": {"name": "carol", "password": {"$secret": "user_password"}},
    }
    mapping = {
        "kind": "CertificateMapping",
        "depends_on": ["user"],
        "inputs": {
            "site": "shop",
            "one_to_one": [{"certificate": client.cert_pem().decode(), "user_name": "carol"}],
            "passwords": {"carol": {"$secret": "mapping_password"}},
        },
    }
    spec = SpecProject(tmp_path / "p", pulumi_env, simulator)
    spec.set_resources(
        {"user": user, "mapping": mapping},
        user_password=PASSWORD,
        mapping_password="Not-The-Pa55word!",
    )
    text = _fails(spec)
    assert "CertificateMapping: passwords['carol']" in text
    assert "0x8007052E ERROR_LOGON_FAILURE" in text
    assert "Not-The-Pa55word!" not in text and PASSWORD not in text
    host = host_client(simulator)
    got = host.call_one("config.get", section=contract.SECTION_MAPPING, location="shop")
    assert not got["present"], "nothing is written when the logon would fail"

    spec.set_resources(
        {"user": user, "mapping": mapping}, user_password=PASSWORD, mapping_password=PASSWORD
    )
    assert spec.project.up() == {"create": 1, "same": 1}
    assert spec.project.preview() == {"same": 2}


def test_every_certificate_form_ends_as_one_single_line_blob(
    simulator: Endpoint, pulumi_env: dict[str, str], tmp_path: Path
) -> None:
    ca = make_ca("Blob Root")
    client = make_leaf(ca, "dave")
    der_b64 = base64.b64encode(client.cert_der()).decode()
    wrapped = "\r\n".join(der_b64[i : i + 64] for i in range(0, len(der_b64), 64))
    forms = {"pem": client.cert_pem().decode(), "wrapped": wrapped, "der": der_b64}
    spec = SpecProject(tmp_path / "p", pulumi_env, simulator)
    state = Path(simulator.state_dir) / "applicationHost.config"
    for index, (name, form) in enumerate(forms.items()):
        spec.set_resources(
            {
                "user": {
                    "kind": "LocalUser",
                    "inputs": {"name": "dave", "password": {"$secret": "user_password"}},
                },
                "mapping": {
                    "kind": "CertificateMapping",
                    "depends_on": ["user"],
                    "inputs": {
                        "site": "shop",
                        "one_to_one": [{"certificate": form, "user_name": "dave"}],
                        "passwords": {"dave": {"$secret": "user_password"}},
                    },
                },
            },
            user_password=PASSWORD,
        )
        changes = spec.project.up()
        # The same certificate in another form is the same input once normalised.
        assert changes == ({"create": 2} if index == 0 else {"same": 2}), (name, changes)
        tree = etree.parse(str(state))
        blobs = tree.xpath("//oneToOneMappings/add/@certificate")
        assert blobs == [der_b64], name
