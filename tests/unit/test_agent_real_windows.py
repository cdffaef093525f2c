"""agent.ps1 against what a real Windows host does (issue 10), read from the script.

agent.ps1 cannot run here. The simulator's ops model these rules and the model tests
prove the behaviour; these tests pin the calls the agent makes to get the same behaviour
on Windows (each names the rule and its source), and the tables the agent shares with
the contract.
"""

from __future__ import annotations

import re

import pytest

from iis_clientcert.host import contract
from tests.support.agent_script import agent_text, function


@pytest.fixture(scope="module")
def agent() -> str:
    return agent_text()


def _ordered_table(agent: str, variable: str) -> dict[str, str]:
    match = re.search(rf"\${variable} = \[ordered\]@\{{(.*?)\n\}}", agent, re.S)
    assert match, variable
    pairs = re.findall(r"^\s*(\w+) = (.+?)\s*$", match.group(1), re.M)
    return dict(pairs)


def _ps_value(text: str) -> bool | int | str:
    if text in ("$true", "$false"):
        return text == "$true"
    if text.startswith("'"):
        return text.strip("'")
    return int(text, 0)


# --- 5. HTTP.sys records kept whole ----------------------------------------------------------


def test_sslcert_settings_and_defaults_are_the_contracts(agent: str) -> None:
    table = {k: _ps_value(v) for k, v in _ordered_table(agent, "script:SslCertDefaults").items()}
    assert table == contract.SSLCERT_DEFAULTS


def test_every_boolean_flag_setting_has_its_http_h_bit(agent: str) -> None:
    bits = {k: int(v, 0) for k, v in _ordered_table(agent, "script:SslFlagBits").items()}
    # http.h HTTP_SERVICE_CONFIG_SSL_FLAG_*: the ones netsh has a parameter for.
    assert bits == {
        "dsmapperusage": 0x1,
        "clientcertnegotiation": 0x2,
        "reject": 0x8,
        "disablehttp2": 0x10,
        "disablequic": 0x20,
        "disabletls13": 0x40,
        "disableocspstapling": 0x80,
        "enabletokenbinding": 0x100,
        "logextendedevents": 0x200,
        "disablelegacytls": 0x400,
        "enablesessionticket": 0x800,
        "disabletls12": 0x1000,
        "disablesessionid": 0x4000,
    }
    check_mode = {
        "verifyclientcertrevocation",
        "verifyrevocationwithcachedclientcertonly",
        "usagecheck",
    }
    booleans = {k for k, v in contract.SSLCERT_DEFAULTS.items() if isinstance(v, bool)}
    assert set(bits) == booleans - check_mode


def test_binding_flag_settings_are_the_contracts(agent: str) -> None:
    found = re.findall(
        r"@\((\d+), '(\w+)'\)", agent[agent.index("$script:BindingFlagSettings") :][:400]
    )
    assert {int(bit): name for bit, name in found} == contract.BINDING_FLAG_SETTINGS


def test_bindings_are_removed_config_only(agent: str) -> None:
    # KB 2405568: Bindings.Remove(binding) also deletes the HTTP.sys record of the ip:port,
    # which other sites share; removeConfigOnly leaves it to the agent.
    removes = re.findall(r"\.Bindings\.Remove\(([^)]*)\)", agent)
    assert removes and all(args.replace(" ", "").endswith(",$true") for args in removes), removes


def test_bindings_are_added_without_a_certificate(agent: str) -> None:
    # win-acme #2831: Bindings.Add(info, hash, store) writes the HTTP.sys record afresh and
    # loses its other settings; the agent adds the binding to config and writes the record.
    adds = re.findall(r"\.Bindings\.Add\(([^)]*)\)", agent)
    assert adds and all(args.endswith("'https'") for args in adds), adds


def test_binding_set_changes_flags_in_place_and_rewrites_the_record_whole(agent: str) -> None:
    body = function(agent, "Invoke-BindingSet")
    assert "$existing.SetAttributeValue('sslFlags', $flags)" in body
    assert "Get-HttpSslRecord $endpoint" in body
    # Every netsh add/update is built from the whole settings table.
    assert re.findall(r"Get-NetshSslArgs '(add|update)'", body) == ["add", "update", "update"]
    assert "'update', 'sslcert'" not in agent and "$netshArgs" not in body
    builder = function(agent, "Get-NetshSslArgs")
    assert "foreach ($name in $script:SslCertDefaults.Keys)" in builder


def test_a_record_with_settings_netsh_cannot_pass_is_not_rewritten(agent: str) -> None:
    body = function(agent, "Invoke-BindingSet")
    guard = body.index("$record.unknownFlags -ne 0")
    assert guard < body.index("CommitChanges()")


def test_site_list_shows_the_whole_record(agent: str) -> None:
    assert "sslcert = $sslcert" in function(agent, "Invoke-SiteList")


# --- 6. Decrypting per value ------------------------------------------------------------------


def test_decrypting_tolerates_each_value_it_cannot_decrypt(agent: str) -> None:
    body = function(agent, "Unprotect-IisValues")
    assert "throw" not in body
    assert re.search(r"try \{\s*\$section = \$cfg\.GetSection", body)


def test_reads_take_encrypted_values_from_the_raw_xml(agent: str) -> None:
    # Reading .Value makes IIS decrypt: one foreign ciphertext would fail config.get whole.
    body = function(agent, "ConvertFrom-ConfigElement")
    encrypted = body[body.index("$s.IsEncrypted") :]
    raw = encrypted.index("$c.GetAttribute($attr.Name)")
    value = encrypted.index("$attr.Value")
    assert raw < value and "try { if ([string]$attr.Value" in encrypted


def test_config_set_names_a_desired_value_it_cannot_decrypt(agent: str) -> None:
    body = function(agent, "Invoke-ConfigSet")
    assert "$desiredPaths" in body and "0x80090005" in body
    assert body.index("0x80090005") < body.index("$section.RevertToParent()")


def test_verify_logons_decrypts_per_mapping(agent: str) -> None:
    body = function(agent, "Invoke-MappingVerifyLogons")
    assert re.search(r"try \{\s*\$password = \[string\]\$mapping\.GetAttributeValue", body)
    assert "hresult = '0x80090005'" in body


# --- 9. Atomic ops ----------------------------------------------------------------------------


def _catch_block(body: str) -> str:
    return body[body.index("} catch {") :]


def test_binding_set_undoes_its_config_and_http_sys_changes_on_failure(agent: str) -> None:
    undo = _catch_block(function(agent, "Invoke-BindingSet"))
    assert "if ($added) { Invoke-Netsh @('http', 'delete', 'sslcert'" in undo
    assert "if ($updated) { Invoke-Netsh (Get-NetshSslArgs 'update' $endpoint $record.hash" in undo
    assert "if ($configChanged) { Restore-BindingConfig" in undo
    assert undo.rstrip().endswith("}") and "throw $failure" in undo
    restore = function(agent, "Restore-BindingConfig")
    assert "$site.Bindings.Remove($b, $true)" in restore
    assert "$b.SetAttributeValue('sslFlags', [int]$OldFlags)" in restore


def test_binding_remove_puts_the_binding_back_when_http_sys_fails(agent: str) -> None:
    undo = _catch_block(function(agent, "Invoke-BindingRemove"))
    assert ".Bindings.Add($info, 'https')" in undo and "throw $failure" in undo


def test_user_set_removes_the_account_it_created_when_a_later_step_fails(agent: str) -> None:
    body = function(agent, "Invoke-UserSet")
    create = body.index("$computer.Create('user', $name)")
    guarded = body.index("try {", create)
    assert guarded < body.index("$user.Properties['UserFlags'].Value")
    undo = _catch_block(body[guarded:])
    assert "if ($created)" in undo and "Children.Remove($leftover)" in undo


def test_cert_import_removes_the_keys_it_persisted_when_the_store_add_fails(agent: str) -> None:
    body = function(agent, "Invoke-CertImport")
    add = body.index("$store.Add($cert)\n    } catch {")
    undo = body[add:]
    assert "Remove-PrivateKey $c" in undo[: undo.index("throw $failure")]


# --- 11. PFX import hygiene -------------------------------------------------------------------


def test_the_thumbprint_is_known_before_a_key_is_persisted(agent: str) -> None:
    body = function(agent, "Invoke-CertImport")
    probe = body.index("$thumbprint = Get-PfxThumbprint $bytes $password")
    present = body.index("if ($null -ne $present -and $present.HasPrivateKey) { return")
    persisted = body.index("X509KeyStorageFlags]::PersistKeySet")
    assert probe < present < persisted
    opener = function(agent, "Get-PfxThumbprint")
    assert "PersistKeySet" not in opener and "EphemeralKeySet" in opener
    assert "$c.Reset()" in opener[opener.index("finally") :]


def test_an_aes_pfx_on_server_2016_is_explained_not_called_a_wrong_password(agent: str) -> None:
    opener = function(agent, "Get-PfxThumbprint")
    assert "$build -lt 17763 -and (Test-Pbes2Pfx $Bytes)" in opener
    assert "AES-256/PBES2" in opener and "0x80070056" in opener
    assert "06-09-2A-86-48-86-F7-0D-01-05-0D" in function(agent, "Test-Pbes2Pfx")


# --- 10. Host facts that are true -------------------------------------------------------------


def test_host_facts_read_the_password_policy_from_the_host(agent: str) -> None:
    facts = function(agent, "Invoke-HostFacts")
    assert "password_policy = $policy" in facts and "$policy = Get-PasswordPolicy" in facts
    assert "complexity = $true" not in facts and "$minLength = 0" not in facts
    policy = function(agent, "Get-PasswordPolicy")
    # The WinNT domain object of the computer carries MinPasswordLength; ",computer" does not.
    assert "[ADSI]\"WinNT://$env:COMPUTERNAME\").Properties['MinPasswordLength']" in policy
    assert "WinNT://$env:COMPUTERNAME,computer" not in policy
    assert "PasswordComplexity" in policy and "/areas SECURITYPOLICY" in policy
    # Only a fixed command line: the export goes to a private folder, no value on it.
    secedit = re.search(r"& \"\$env:windir\\system32\\secedit\.exe\" (.*)", policy)
    assert secedit and secedit.group(1).startswith("/export /cfg $cfg /areas SECURITYPOLICY")


def test_a_bare_name_resolves_to_a_local_account_only(agent: str) -> None:
    body = function(agent, "Resolve-Identity")
    local = body.index('NTAccount("$env:COMPUTERNAME\\$Identity")')
    bare = body.index("NTAccount($Identity)).Translate($sidType) } catch")
    assert local < bare
    # What the bare lookup finds is kept only when it is no machine or domain account.
    assert (
        "-not $sid.Value.StartsWith('S-1-5-21-', [System.StringComparison]::Ordinal)" in body[bare:]
    )
