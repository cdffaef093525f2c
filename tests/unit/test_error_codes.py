"""Windows error codes on this road: each mapped to a contract error kind and explained.

contract.HRESULT_KINDS is the one table; agent.ps1 holds a copy (kept equal here), and the
client explains a code with contract.WINDOWS_CODES, or by its kind when the HRESULT is not
one Windows documents (a commit conflict's).
"""

from __future__ import annotations

import re
from importlib import resources

import pytest

from iis_clientcert.errors import AgentError
from iis_clientcert.host import contract


@pytest.fixture(scope="module")
def agent() -> str:
    return resources.files("iis_clientcert.host").joinpath("agent.ps1").read_text("utf-8")


def test_the_agent_maps_hresults_to_the_contracts_kinds(agent: str) -> None:
    table = re.search(r"\$script:HResultKinds = @\{(.*?)\n\}", agent, re.S)
    assert table, "agent.ps1 keeps its HRESULT -> kind table in $script:HResultKinds"
    pairs = re.findall(r"'(0x[0-9A-F]{8})' = '(\w+)'", table.group(1))
    assert {int(h, 16): kind for h, kind in pairs} == contract.HRESULT_KINDS
    assert len(pairs) == len(contract.HRESULT_KINDS)  # no key twice
    assert set(contract.HRESULT_KINDS.values()) <= set(contract.ERROR_CODES)


@pytest.mark.parametrize(
    ("hresult", "kind", "words"),
    [
        # netsh http add sslcert: "SSL Certificate add failed, Error: 1312" when the
        # certificate's private key is missing or unreadable.
        (0x80070520, "BadCertificate", "private key"),
        # Microsoft.Web.Administration: "Cannot commit configuration changes because the
        # file has changed on disk" (HRESULT unconfirmed, docs/real-host.md).
        (0x800703EE, "Conflict", "changed on disk"),
        (0x80070020, "Conflict", "another process"),
        (0x80070057, "InvalidValue", "parameter is incorrect"),
    ],
    ids=["no-logon-session", "file-changed", "sharing-violation", "invalid-parameter"],
)
def test_real_host_codes_have_a_kind_and_an_explanation(
    hresult: int, kind: str, words: str
) -> None:
    assert contract.HRESULT_KINDS[hresult] == kind
    explained = contract.explain_hresult(f"0x{hresult:08X}")
    assert explained is not None and words in explained.meaning
    error = AgentError("web01", "binding.set", kind, "netsh failed", f"0x{hresult:08X}")
    assert explained.name in str(error) and "fix:" in str(error)


def test_a_conflict_is_explained_whatever_its_hresult() -> None:
    error = AgentError("web01", "config.set", "Conflict", "the file has changed", "0x80131621")
    text = str(error)
    assert "0x80131621" in text and "fix:" in text and "again" in text


def _netsh_number_pattern(agent: str) -> re.Pattern[str]:
    body = agent[agent.index("function Invoke-Netsh") :]
    body = body[: body.index("\n}\n")]
    found = re.search(r"\[regex\]::Match\(\$output, '([^']+)'\)", body)
    assert found, "Invoke-Netsh reads netsh's error number with a regex"
    return re.compile(found.group(1))


@pytest.mark.parametrize(
    ("output", "number"),
    [
        (
            "\r\nSSL Certificate add failed, Error: 1312\r\nA specified logon session does not "
            "exist. It may already have been terminated.\r\n\r\n",
            1312,
        ),
        (
            "\r\nFehler beim Hinzufügen des SSL-Zertifikats. Fehler: 1312\r\nEine angegebene "
            "Anmeldesitzung ist nicht vorhanden.\r\n",
            1312,
        ),
        ("\r\nÉchec de l'ajout du certificat SSL, erreur : 183\r\nImpossible de créer.\r\n", 183),
        (
            "\r\nSSL Certificate deletion failed, Error: 2\r\nThe system cannot find the file.\r\n",
            2,
        ),
        ("The parameter is incorrect.\r\n", None),
    ],
    ids=["english", "german", "french", "not-found", "no-number"],
)
def test_netsh_error_numbers_are_read_in_any_language(
    agent: str, output: str, number: int | None
) -> None:
    match = _netsh_number_pattern(agent).search(output)
    assert (int(match.group(1)) if match else None) == number
    if number is not None:
        # What the agent then reports: HRESULT_FROM_WIN32 and its kind.
        hresult = 0x80070000 | number
        assert contract.HRESULT_KINDS.get(hresult, "Fault") in contract.ERROR_CODES
