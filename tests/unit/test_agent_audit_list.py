"""agent.ps1 against the rest of the real-host audit list (issue 10, point 13), read from
the script.

agent.ps1 cannot run here. The simulator models the behaviour and its tests
(tests/simulator/test_audit_list.py, tests/contract/test_real_windows_audit.py) prove it;
these tests pin the calls that give the agent the same behaviour on Windows, each with
its rule and source, and the tables and texts the agent shares with the contract.
docs/real-host.md, "Audit list (issue 10, point 13)", says what a real host must confirm.
"""

from __future__ import annotations

import re
from importlib import resources

import pytest

from iis_clientcert.host import contract
from iis_clientcert.host.winrm_transport import scrub
from iis_clientcert_simulator.state import FEATURE_MODULES
from tests.support.agent_script import function


@pytest.fixture(scope="module")
def agent() -> str:
    return resources.files("iis_clientcert.host").joinpath("agent.ps1").read_text("utf-8")


def _code(text: str) -> str:
    """``text`` without its comment lines (what the script does, not what it says)."""
    return "\n".join(line for line in text.splitlines() if not line.lstrip().startswith("#"))


def _script_string(agent: str, variable: str) -> str:
    match = re.search(rf"^\${variable} = '(.*)'$", agent, re.M)
    assert match, variable
    return match.group(1).replace("''", "'")


# --- (a) shared configuration and configSource: the file IIS reads, not a fixed path ---------


def test_raw_reads_go_to_the_file_iis_configuration_names(agent: str) -> None:
    # Shared Configuration (redirection.config) moves applicationHost.config, often to a
    # share; only IIS's redirection section says where.
    where = function(agent, "Get-ApphostPath")
    assert "$sm.GetRedirectionConfiguration().GetSection('configurationRedirection')" in where
    assert "GetAttributeValue('enabled')" in where and "GetAttributeValue('path')" in where
    loader = function(agent, "Get-ApphostXml")
    assert "if ($Path -eq '') { $Path = Get-ApphostPath }" in loader
    # The fixed path is the fallback of Get-ApphostPath and used nowhere else.
    uses = [m.start() for m in re.finditer(r"\$script:ApphostPath\b", _code(agent))]
    assert len(uses) == 2, "defined once, and returned by Get-ApphostPath only"
    assert "return $script:ApphostPath" in where
    # A share the WinRM logon cannot reach (second hop) is said as such.
    assert "AccessDenied" in loader and "Shared Configuration" in loader


def test_a_section_kept_in_a_config_source_file_is_read_there(agent: str) -> None:
    raw = function(agent, "Get-RawSection")
    assert "$current.HasAttribute('configSource')" in raw
    assert "Get-ConfigSourceXml $Doc $current" in raw
    source = function(agent, "Get-ConfigSourceXml")
    # Relative to the file that names it, read like any configuration file.
    assert "([uri]$Doc.BaseURI).LocalPath" in source and "Get-ApphostXml" in source


# --- (f) user.get: an account that is not there is no error, whatever the code -------------


def test_an_unknown_find_error_is_checked_against_the_account_list(agent: str) -> None:
    find = function(agent, "Find-LocalUser")
    known = find.index("$h -eq 0x800708AD")
    listed = find.index("if (-not (Test-LocalUserListed $Name)) { return $null }")
    assert known < listed < find.index("throw $failure")
    walk = function(agent, "Test-LocalUserListed")
    # DirectoryEntry.Children is a new collection on each read: the filtered one is walked.
    assert "$children = (Get-Computer).Children" in walk
    assert "$children.SchemaFilter.Add('user')" in walk and "foreach ($child in $children)" in walk


# --- (g) and (h): ACEs by SID ------------------------------------------------------------------


def test_user_get_reports_the_accounts_sid(agent: str) -> None:
    get = function(agent, "Invoke-UserGet")
    assert "$user.Properties['objectSid'].Value" in get
    assert "sid = [string]$sid" in get and "sid = $null" in get


def test_acl_get_reads_rules_by_sid_and_keeps_a_deleted_accounts_sid(agent: str) -> None:
    body = function(agent, "Invoke-AclGet")
    assert "GetAccessRules($true, $true, [System.Security.Principal.SecurityIdentifier])" in body
    assert "GetAccessRules($true, $true, [System.Security.Principal.NTAccount])" not in body
    # Each SID translated on its own; one that names no account stays a SID.
    assert re.search(r"\$identity = \[string\]\$sid\.Value\s+try \{ \$identity = ", body)
    assert "sid = [string]$sid.Value" in body


def test_a_sid_names_an_acl_identity_as_it_is(agent: str) -> None:
    body = function(agent, "Resolve-Identity")
    sid = body.index("if ($Identity -cmatch '^S-1-\\d+(-\\d+)+$')")
    assert sid < body.index("New-Object System.Security.Principal.NTAccount")
    assert re.fullmatch(r"S-1-\d+(?:-\d+)+", "S-1-5-21-1-2-3-1001")
    assert contract.is_sid("S-1-5-21-1-2-3-1001") and not contract.is_sid("S-1-x")
    revoke = function(agent, "Invoke-AclRevoke")
    assert "Resolve-Identity $identity" in revoke


def test_dot_backslash_names_this_computer_before_a_lookup(agent: str) -> None:
    # LogonUser and IIS read ".\name" as this computer's account; LookupAccountName (what
    # NTAccount.Translate calls) knows no "." domain, so the agent names the computer.
    body = function(agent, "Resolve-Identity")
    dot = body.index("if ($Identity.StartsWith('.\\', [System.StringComparison]::Ordinal))")
    assert '$Identity = "$env:COMPUTERNAME\\" + $Identity.Substring(2)' in body
    assert dot < body.index("New-Object System.Security.Principal.NTAccount($Identity)")
    # Group members and logons already read "." as this computer.
    assert "$parts[0] -eq '.'" in function(agent, "Get-MemberPath")
    assert "$domain -eq '.'" in function(agent, "Invoke-GuardedLogon")


# --- (j) temporary copies of applicationHost.config ------------------------------------------


def test_the_decryption_file_holds_declarations_providers_and_our_values_only(agent: str) -> None:
    body = function(agent, "Unprotect-IisValues")
    assert "$live = Get-ApphostXml" in body
    assert "$doc = New-Object System.Xml.XmlDocument" in body
    assert "foreach ($name in @('configSections', 'configProtectedData'))" in body
    assert "$doc.ImportNode($node, $true)" in body
    # Saved: the new document, never the live one; in the agent's private folder, removed.
    assert "$doc.Save($copy)" in body and "$live.Save" not in body
    assert "Join-Path (Get-AgentTempDirectory)" in body
    assert "Remove-Item -LiteralPath $dir -Recurse -Force" in body[body.rindex("finally") :]


# --- (k) OverrideModeEffective -----------------------------------------------------------------


def test_a_web_config_write_goes_by_the_effective_override_mode(agent: str) -> None:
    body = function(agent, "Get-SectionForWrite")
    check = body.index("[string]$section.OverrideModeEffective -eq 'Deny'")
    assert check < body.index("'Locked'")


# --- (l) the module of Web-Cert-Auth is authmap.dll ---------------------------------------------


def test_the_cert_mapping_module_and_image_are_microsofts(agent: str) -> None:
    # Microsoft docs, "Introduction to IIS Architectures", Security Modules:
    # IISCertificateMappingAuthenticationModule | Inetsrv\Authmap.dll (authcert.dll is the
    # Active Directory mapping module); a default applicationHost.config registers it so.
    documented = ("IISCertificateMappingAuthenticationModule", "authmap.dll")
    assert FEATURE_MODULES["Web-Cert-Auth"] == documented
    assert _script_string(agent, "script:CertMapModule") == documented[0]
    assert _script_string(agent, "script:CertMapImage") == documented[1]
    assert "iiscertmap" not in agent.lower()
    installed = function(agent, "Test-WebCertAuthInstalled")
    # Loaded by IIS means registered in <globalModules>; a DLL alone maps nobody.
    assert "system.webServer/globalModules" in installed and "Test-Path" not in installed
    assert "$script:CertMapImage" in function(agent, "Assert-SectionFeature")


# --- (m) lock attributes survive our writes ------------------------------------------------------


def test_the_agents_meta_attributes_are_the_contracts(agent: str) -> None:
    body = function(agent, "Test-MetaAttribute")
    names = re.search(r"-cmatch '\^\((.*)\)\$'", body)
    assert names and set(names.group(1).split("|")) == set(contract.META_ATTRIBUTES)
    assert contract.META_ATTRIBUTES - {"configSource"} == contract.LOCK_ATTRIBUTES


def test_config_set_puts_the_owners_locks_back_before_it_commits(agent: str) -> None:
    body = function(agent, "Invoke-ConfigSet")
    revert = body.index("$section.RevertToParent()")
    write = body.index("Set-ConfigElement $section $desired $schema $plain", revert)
    locks = body.index("Restore-LockMetadata $section $raw $schema $desired", write)
    assert locks < body.index("$sm.CommitChanges()", locks)
    restore = function(agent, "Restore-LockMetadata")
    assert "$Target.SetMetadata($name" in restore and "Test-MetaAttribute $name" in restore
    assert "$name -eq 'configSource'" in restore  # configSource is no metadata to set
    # A lock is no content: comparing leaves it out, so a locked section converges.
    signature = function(agent, "Get-ElementSignature")
    assert "if ($null -eq $s -and (Test-MetaAttribute $name)) { continue }" in signature


# --- (n) no secret of any length in a message ---------------------------------------------


def test_the_agent_withholds_what_the_contract_withholds(agent: str) -> None:
    assert _script_string(agent, "script:WithheldMessage") == contract.WITHHELD_MESSAGE
    hide = function(agent, "Hide-Secrets")
    assert "$s.Length -ge 4" in hide and "return $script:WithheldMessage" in hide
    assert "[System.StringComparison]::Ordinal" in hide


def test_the_agent_collects_secrets_of_every_length(agent: str) -> None:
    # Before, secrets under 4 characters were never collected, so never redacted.
    code = _code(agent)
    assert not re.search(r"Length -ge 4\) \{ \$(script:Secrets|List)\.Add", code)
    assert "$opArgs[$k].Length -gt 0) { $script:Secrets.Add" in code
    assert "$v.Length -gt 0) { $List.Add($v) }" in function(agent, "Add-ElementSecrets")


@pytest.mark.parametrize("where", ["Unprotect-IisValues", "Invoke-MappingVerifyLogons"])
def test_host_passwords_decrypted_in_process_are_secrets_at_once(agent: str, where: str) -> None:
    body = function(agent, where)
    decrypt = body.index(".GetAttributeValue('password')")
    assert body.index("Add-Secret", decrypt) < body.index("}", body.index("Add-Secret", decrypt))
    assert "Add-Secret $" in body[decrypt : decrypt + 300]


@pytest.mark.parametrize(
    ("text", "secrets", "expected"),
    [
        ("wrong password Sup3r-Secret!", ["Sup3r-Secret!"], "wrong password REDACTED"),
        ("bad pfx password 'pw'", ["pw"], contract.WITHHELD_MESSAGE),
        ("the value 7 is wrong", ["7"], contract.WITHHELD_MESSAGE),
        # "REDACTED" holds an "A": a short secret is looked for in what is left of the text.
        ("abc-Long-Secret-9", ["Long-Secret-9", "A"], "abc-REDACTED"),
        ("nothing to hide", ["", "xyz"], "nothing to hide"),
    ],
    ids=["long", "short", "one-character", "short-inside-redacted", "absent"],
)
def test_scrub_masks_long_secrets_and_withholds_text_with_a_short_one(
    text: str, secrets: list[str], expected: str
) -> None:
    assert scrub(text, secrets) == expected


# --- (o) the JSON writer inside the error handler -----------------------------------------


def test_the_last_resort_result_is_a_contract_error(agent: str) -> None:
    result = contract.parse_result(_script_string(agent, "script:UnwritableResponse"))
    assert result["ok"] is False and result["error"]["code"] == "Fault"


def test_a_result_that_cannot_be_written_still_yields_a_contract_error(agent: str) -> None:
    body = function(agent, "ConvertTo-ResponseText")
    first = body.index("Write-JsonValue $sb $Response")
    fallback = body.index("New-ErrorResponse $null $null 'Fault' $message $null @()")
    last = body.index("return $script:UnwritableResponse")
    assert first < fallback < last
    assert body.count("} catch {") == 2
    assert "ConvertTo-ResponseText $Response" in function(agent, "Write-AgentOutput")
    # A value that contains itself fails with an error that can be caught, not a stack
    # overflow that ends the process without output.
    writer = function(agent, "Write-JsonValue")
    assert "if ($Depth -gt 64) { throw" in writer
    assert writer.count("($Depth + 1)") == 2


def test_the_error_handler_cannot_fail_in_turn(agent: str) -> None:
    # The request loop (one framed request per stdin line): each request's handler.
    tail = agent[agent.rindex("\nwhile ($true) {\n    $line = $Reader.ReadLine()") :]
    handler = tail[tail.index("} catch {") : tail.index("} finally {")]
    assert re.search(r"try \{\s+\$exception = Get-InnermostException", handler)
    assert "$response = $null" in handler[handler.index("try {") :]
    assert tail.rstrip().endswith("Write-AgentOutput $id $response\n}")
