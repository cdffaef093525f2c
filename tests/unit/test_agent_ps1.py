"""agent.ps1 cannot run here: parse it (and the bootstrap) with a PowerShell grammar and
check its structure against the contract."""

from __future__ import annotations

import re
from typing import Any

import pytest

from iis_clientcert.host import contract
from tests.support.agent_script import agent_text, node_text, parse, walk


def _syntax_errors(text: str) -> list[str]:
    tree, source = parse(text)
    problems = []
    for node in walk(tree.root_node):
        if node.is_error or node.is_missing:
            line, col = node.start_point
            kind = "missing" if node.is_missing else "error"
            excerpt = source[node.start_byte : node.end_byte][:60].decode("utf-8", "replace")
            problems.append(f"{kind} at line {line + 1}, column {col + 1}: {excerpt!r}")
    return problems


@pytest.fixture(scope="module")
def agent() -> str:
    return agent_text()


def test_agent_parses_without_syntax_errors(agent: str) -> None:
    assert _syntax_errors(agent) == []


def test_bootstrap_parses_without_syntax_errors() -> None:
    assert _syntax_errors(contract.BOOTSTRAP) == []


def test_the_grammar_reports_real_errors() -> None:
    problems = _syntax_errors("function F( { if ($x -eq) { }\n")
    assert problems and "line 1" in problems[0]


def _handler_table(agent: str) -> dict[str, str]:
    """Keys of the `$Handlers = @{ 'op' = { ... } }` dispatch table -> handler text."""
    tree, source = parse(agent)
    for node in walk(tree.root_node):
        if node.type != "assignment_expression":
            continue
        left = node.children[0]
        if node_text(left, source).strip() != "$Handlers":
            continue
        table: dict[str, str] = {}
        for entry in walk(node):
            if entry.type != "hash_entry":
                continue
            key = next(c for c in entry.children if c.type == "key_expression")
            table[node_text(key, source).strip().strip("'\"")] = node_text(entry, source)
        return table
    raise AssertionError("agent.ps1 has no $Handlers dispatch table")


def test_every_contract_op_has_exactly_one_handler(agent: str) -> None:
    assert set(_handler_table(agent)) == set(contract.OPS)


def test_every_handler_calls_a_function_the_script_defines(agent: str) -> None:
    tree, source = parse(agent)
    defined = {
        node_text(n, source).lower() for n in walk(tree.root_node) if n.type == "function_name"
    }
    for op, text in _handler_table(agent).items():
        called = re.findall(r"\b(Invoke-[A-Za-z]+)\b", text)
        assert called, op
        assert all(name.lower() in defined for name in called), (op, called)


def _command_names(agent: str) -> set[str]:
    tree, source = parse(agent)
    return {node_text(n, source).lower() for n in walk(tree.root_node) if n.type == "command_name"}


def test_no_invoke_expression_and_no_host_output(agent: str) -> None:
    commands = _command_names(agent)
    assert not commands & {"invoke-expression", "iex", "write-host", "write-output", "echo"}
    assert not re.search(r"(?i)\binvoke-expression\b|\biex\b", agent)


def test_loads_microsoft_web_administration_not_the_module(agent: str) -> None:
    assert re.search(
        r"\[System\.Reflection\.Assembly\]::LoadFrom\(\"\$env:windir\\system32\\inetsrv\\"
        r"Microsoft\.Web\.Administration\.dll\"\)",
        agent,
    )
    assert "import-module" not in _command_names(agent)
    assert "GetApplicationHostConfiguration()" in agent


def test_strict_mode_and_errors_stop(agent: str) -> None:
    lines = [line.strip() for line in agent.splitlines()]
    assert lines.index("param([System.IO.TextReader]$Reader)") < lines.index(
        "Set-StrictMode -Version Latest"
    )
    assert "$ErrorActionPreference = 'Stop'" in lines


def test_output_is_only_the_json_writer(agent: str) -> None:
    # One place writes to stdout; Console.Out text writers and pipelines to the host are
    # not used (they would depend on the shell's code page or mix in other output).
    assert agent.count("[Console]::OpenStandardOutput()") == 1
    assert "[Console]::Out.Write" not in agent
    assert "convertto-json" not in _command_names(agent)


def test_secrets_never_reach_a_command_line(agent: str) -> None:
    # The only external program is netsh, and only with certificate hash / app id / endpoint.
    tree, source = parse(agent)
    externals = [
        node_text(n, source)
        for n in walk(tree.root_node)
        if n.type == "command" and re.search(r"(?i)\.exe\b", node_text(n, source).split()[0])
    ]
    assert all("netsh.exe" in text for text in externals), externals
    netsh_args = re.findall(r"Invoke-Netsh\s+(.*)", agent)
    assert netsh_args
    for args in netsh_args:
        assert "password" not in args.lower() and "pfx" not in args.lower()
    assert "SetPassword" in agent  # passwords set through ADSI with the JSON value
    assert not re.search(r"(?i)net(\.exe)?\s+user\b", agent)


def test_pfx_import_is_machine_persisted_and_not_exportable_by_default(agent: str) -> None:
    assert "MachineKeySet -bor" in agent
    assert "PersistKeySet" in agent
    exportable = agent.index("X509KeyStorageFlags]::Exportable")
    guard = agent.rfind("if ([bool](Get-Arg $A 'exportable' $false))", 0, exportable)
    assert guard != -1 and exportable - guard < 200


def _redacted_by_agent(agent: str) -> tuple[set[str], set[str]]:
    """What Invoke-Request hides from error messages: (string arguments taken as secrets,
    arguments whose config element's password attributes are)."""
    tree, source = parse(agent)
    body = next(
        node_text(n, source)
        for n in walk(tree.root_node)
        if n.type == "function_statement" and "Invoke-Request" in node_text(n, source).split("{")[0]
    )
    listed = re.search(r"\$script:Secrets\.Clear\(\)\s+foreach \(\$k in @\(([^)]*)\)\)", body)
    assert listed, "Invoke-Request no longer lists the secret argument names"
    strings = set(re.findall(r"'([^']+)'", listed.group(1)))
    elements = set(re.findall(r"ContainsKey\('([^']+)'\)\)\s*\{\s*Add-ElementSecrets", body))
    return strings, elements


def test_the_agent_redacts_exactly_the_contracts_secret_arguments(agent: str) -> None:
    # agent.ps1 carries its own list of secret argument names (it cannot import the
    # contract); it must be the contract's `secret=True` arguments, no more, no fewer.
    secret = [(name, arg) for spec in contract.OPS.values() for name, arg in spec.args.items()]
    strings, elements = _redacted_by_agent(agent)
    assert strings == {name for name, arg in secret if arg.secret and arg.kind == "str"}
    assert elements == {name for name, arg in secret if arg.secret and arg.kind == "dict"}
    assert {arg.kind for _, arg in secret if arg.secret} <= {"str", "dict"}


# --- both PowerShells (FACTS.md, "Real-host pitfalls": PowerShell 7) -----------------------


def _edition_of_block(node: Any, source: bytes) -> str | None:
    """The edition a node runs on: inside `if ($script:IsDesktop) {...} else {...}` blocks."""
    while node is not None:
        parent = node.parent
        if node.type == "statement_block" and parent is not None:
            branch_if, inverted = None, False
            if parent.type == "if_statement":
                branch_if = parent
            elif parent.type == "else_clause" and parent.parent is not None:
                branch_if, inverted = parent.parent, True
            if branch_if is not None:
                kids = branch_if.children
                opened = next(i for i, c in enumerate(kids) if c.type == "(")
                condition = node_text(kids[opened + 1], source).strip()
                desktop = {"$script:IsDesktop": True, "-not $script:IsDesktop": False}.get(
                    condition
                )
                if desktop is not None:
                    return "Desktop" if desktop != inverted else "Core"
        node = parent
    return None


def _uses(text: str, patterns: Any) -> list[tuple[int, str]]:
    """(offset, what) of each use of an API of ``patterns`` outside comments."""
    tree, _ = parse(text)
    comments = [(n.start_byte, n.end_byte) for n in walk(tree.root_node) if n.type == "comment"]
    found = []
    for api in patterns:
        for match in api.pattern.finditer(text):
            start = len(text[: match.start()].encode("utf-8"))
            if not any(a <= start < b for a, b in comments):
                found.append((start, api.what))
    return found


def test_no_api_missing_from_either_powershell_outside_a_block_for_the_other(agent: str) -> None:
    from iis_clientcert_simulator.powershell_editions import CORE_ONLY, DESKTOP_ONLY

    tree, source = parse(agent)
    wrong = []
    for patterns, needs in ((DESKTOP_ONLY, "Desktop"), (CORE_ONLY, "Core")):
        for offset, what in _uses(agent, patterns):
            node = tree.root_node.descendant_for_byte_range(offset, offset + 1)
            if _edition_of_block(node, source) != needs:
                line = source[:offset].count(b"\n") + 1
                wrong.append(f"line {line}: {what} outside an edition block for {needs}")
    assert wrong == []


def test_the_edition_test_uses_psedition(agent: str) -> None:
    # $IsCoreCLR does not exist in 5.1 (an error under Set-StrictMode); PSEdition is
    # 'Desktop' there and 'Core' in PowerShell 7.
    assert "$script:IsDesktop = ($PSVersionTable.PSEdition -ne 'Core')" in agent
    assert "Add-Type -AssemblyName" not in agent  # no System.Web(.Extensions) on any edition


def _string_searches(text: str) -> list[str]:
    """IndexOf/LastIndexOf/StartsWith/EndsWith calls that compare strings."""
    tree, source = parse(text)
    calls = []
    for node in walk(tree.root_node):
        if node.type != "invokation_expression":
            continue
        names = [c for c in node.children if c.type == "member_name"]
        if not names or node_text(names[-1], source) not in (
            "IndexOf",
            "LastIndexOf",
            "StartsWith",
            "EndsWith",
        ):
            continue
        calls.append(node_text(node, source))
    return calls


@pytest.mark.parametrize("which", ["agent", "bootstrap"])
def test_string_searches_compare_ordinally(agent: str, which: str) -> None:
    # String.IndexOf(string) compares with the current culture: with ICU (.NET 5+ on
    # recent Windows) "\r\n" is one text element, so a marker after a CR is not found.
    text = agent if which == "agent" else contract.BOOTSTRAP
    calls = _string_searches(text)
    if which == "bootstrap":
        assert calls, "the bootstrap finds its marker with IndexOf"
    cultural = [c for c in calls if not re.search(r"StringComparison\]::Ordinal|\[char\]", c)]
    assert cultural == []


# --- TEMP and Add-Type (FACTS.md, "Real-host pitfalls": script-block logging, TEMP) -------


def _function_bodies(text: str) -> dict[str, str]:
    tree, source = parse(text)
    out = {}
    for node in walk(tree.root_node):
        if node.type == "function_statement":
            name = next(c for c in node.children if c.type == "function_name")
            out[node_text(name, source).lower()] = node_text(node, source)
    return out


def test_the_logon_type_is_emitted_once_per_process_without_a_compiler(agent: str) -> None:
    # Add-Type runs the C# compiler (csc.exe through files in TMP on 5.1): about a second
    # at the first logon of every agent process. The LogonUser binding is emitted in memory.
    assert not re.search(r"(?i)Add-Type\b[^\n]*-(?:TypeDefinition|MemberDefinition)", agent)
    body = _function_bodies(agent)["initialize-logontype"]
    code = [line.strip() for line in body.splitlines()[1:] if not line.strip().startswith("#")]
    # Looked up first: one type per agent process (and StrictMode needs it set at load).
    assert code[0] == "if ($null -ne $script:LogonApi) { return }"
    assert "\n$script:LogonApi = $null\n" in agent
    # The static AssemblyBuilder method: AppDomain's is .NET Framework only.
    assert "[System.Reflection.Emit.AssemblyBuilder]::DefineDynamicAssembly(" in body
    assert "AssemblyBuilderAccess]::Run)" in body  # in memory, never saved
    # LogonUserW with SetLastError, and its error read inside the emitted method.
    assert "New-DllImport 'advapi32.dll' 'LogonUserW' $true" in body
    assert "GetMethod('GetLastWin32Error')" in body
    assert body.index("MarkLabel($failed)") < body.index("GetLastWin32Error")
    dll_import = _function_bodies(agent)["new-dllimport"]
    for field in ("EntryPoint", "CharSet", "SetLastError"):
        assert f"GetField('{field}')" in dll_import
    assert "CharSet]::Unicode" in dll_import
    test_logon = _function_bodies(agent)["test-logon"]
    assert "Initialize-LogonType" in test_logon and "$script:LogonApi::TryLogon(" in test_logon


def test_the_accounts_temp_folder_is_never_read(agent: str) -> None:
    tree, source = parse(agent)
    code = "".join(
        node_text(n, source)
        for n in walk(tree.root_node)
        if n.child_count == 0 and n.type != "comment"
    )
    assert not re.search(r"(?i)GetTempPath|GetTempFileName|New-TemporaryFile", code)
    assert not re.search(r"(?i)\$env:TE?MP\b(?!\s*=)", agent)


def test_the_private_temp_folder_is_admin_only_and_removed(agent: str) -> None:
    body = _function_bodies(agent)["get-agenttempdirectory"]
    assert "Join-Path $env:windir" in body and "NewGuid()" in body
    assert "SetAccessRuleProtection($true, $false)" in body
    assert "'S-1-5-18'" in body and "'S-1-5-32-544'" in body  # SYSTEM, Administrators
    last = agent[agent.rindex("\ntry {") :]
    assert "finally" in last and "Remove-AgentTempDirectory" in last


# --- concurrent writers (FACTS.md, "Real-host pitfalls": optimistic commits) ------------------


def test_write_batches_hold_the_host_mutex(agent: str) -> None:
    listed = re.search(r"\$script:WriteOps = @\(([^)]*)\)", agent)
    assert listed, "the agent lists the ops that write"
    names = set(re.findall(r"'([a-z]+\.[a-z_]+)'", listed.group(1)))
    assert names == {name for name, spec in contract.OPS.items() if spec.writes}
    bodies = _function_bodies(agent)
    request = bodies["invoke-request"]
    assert request.index("Enter-HostLock") < request.index("& $Handlers[$name]")
    assert "Exit-HostLock" in request[request.index("finally") :]
    lock = bodies["enter-hostlock"]
    assert "System.Threading.Mutex($false, 'Global\\iis-clientcert-agent')" in lock
    assert ".WaitOne(" in lock and "AbandonedMutexException" in lock
    assert ".ReleaseMutex()" in bodies["exit-hostlock"]


def test_a_commit_conflict_is_retried_once(agent: str) -> None:
    bodies = _function_bodies(agent)
    conflict = bodies["test-commitconflict"]
    # FileLoadException, except a locked section (0x80070021 maps to the same type).
    assert re.search(r"-is(not)? \[System\.IO\.FileLoadException\]", conflict)
    assert "0x80070021" in conflict
    request = bodies["invoke-request"]
    retry = request[
        request.index("Test-CommitConflict") - 200 : request.index("Test-CommitConflict")
    ]
    assert "$attempt -eq 0" in retry


def _script_value(agent: str, name: str) -> str:
    """The right-hand side of `$script:<name> = ...` (one line)."""
    found = re.search(rf"^\$script:{name} = (.+)$", agent, re.MULTILINE)
    assert found, f"agent.ps1 no longer sets $script:{name}"
    return found.group(1)


def test_the_agent_classifies_logons_with_the_contracts_codes(agent: str) -> None:
    # agent.ps1 cannot import the contract: its list of LogonUser errors that prove the
    # password right must be contract.LOGON_VALID_CODES, or one op would call a password
    # wrong that another calls right (a never-ending diff).
    listed = _script_value(agent, "LogonValidCodes")
    assert {int(n) for n in re.findall(r"\d+", listed)} == set(contract.LOGON_VALID_CODES)
    assert int(_script_value(agent, "ErrorAccountLockedOut")) == contract.ERROR_ACCOUNT_LOCKED_OUT
    assert int(_script_value(agent, "ErrorLogonFailure")) == contract.ERROR_LOGON_FAILURE


def test_the_agent_maps_logon_methods_as_the_contract(agent: str) -> None:
    types = dict(re.findall(r"(\w+) = (\d+)", _script_value(agent, "LogonTypes")))
    assert {k: int(v) for k, v in types.items()} == contract.LOGON_TYPES
    # Every logon goes through the guard; Test-Logon (LogonUser) is called from it alone.
    calls = re.findall(r"\(Test-Logon ", agent)
    assert len(calls) == 1
    guarded = agent[agent.index("function Invoke-GuardedLogon") :]
    assert "(Test-Logon " in guarded[: guarded.index("\n}\n")]
    for op in ("Invoke-UserVerifyPassword", "Invoke-MappingVerifyLogons"):
        body = agent[agent.index(f"function {op}") :]
        assert "Invoke-GuardedLogon" in body[: body.index("\n}\n")], op
