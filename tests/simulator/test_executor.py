"""The executor: agent requests only, PowerShell-like refusals, batches, faults, audit."""

from __future__ import annotations

import hashlib
import json
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from iis_clientcert.host.contract import (
    BOOTSTRAP,
    POWERSHELL,
    SECTION_MAPPING,
    SECTION_SSL,
    Op,
    agent_frame,
    command_arguments,
    element,
    encode_stdin,
    make_op,
    make_request,
    parse_result,
)
from iis_clientcert_simulator import audit, executor
from iis_clientcert_simulator.agent_reading import AgentText
from iis_clientcert_simulator.powershell_errors import encode_command
from iis_clientcert_simulator.testing import AgentRunner, agent_script
from iis_clientcert_simulator.wsman import CommandNotStarted

CANARY = "Exec-Canary-Pw-1!"


@pytest.fixture
def host(tmp_path: Path) -> AgentRunner:
    return AgentRunner(tmp_path / "host")


def stdin_for(*ops: Op[Any]) -> bytes:
    return encode_stdin(agent_script(), make_request(list(ops)))


def audit_lines(host: AgentRunner) -> list[dict[str, Any]]:
    return audit.read(host.state_dir / "audit.log")


@pytest.mark.parametrize(
    ("executable", "arguments", "term"),
    [
        (f"powershell -encodedcommand {encode_command('Get-Date')}", [], "Get-Date"),
        (
            "powershell.exe",
            ["-NoProfile", "-EncodedCommand", encode_command("Get-Date")],
            "Get-Date",
        ),
        (
            "PowerShell.EXE",
            ["-NoProfile -NonInteractive -Command Remove-Item C:\\ -Recurse"],
            "Remove-Item",
        ),
        (
            "C:\\Windows\\System32\\WindowsPowerShell\\v1.0\\powershell.exe",
            ["-NoProfile", "-NonInteractive", "-EncodedCommand", encode_command("  whoami /all")],
            "whoami",
        ),
    ],
)
def test_other_powershell_commands_are_not_recognized(host, executable, arguments, term) -> None:
    outcome = host.command(executable, arguments, stdin_for(make_op("host.facts")))
    assert outcome.exit_code == 1
    assert outcome.stdout == b""
    assert f"The term '{term}' is not recognized".encode() in outcome.stderr
    line = audit_lines(host)[-1]
    assert line["kind"] == "rejected" and line["ops"] == []
    assert "Remove-Item" not in json.dumps(line)  # the command line is never logged


def test_cmd_commands_are_not_recognized(host: AgentRunner) -> None:
    outcome = host.command("ipconfig", ["/all"])
    assert outcome.exit_code == 9009
    assert b"'ipconfig' is not recognized as an internal or external command" in outcome.stderr


def test_agent_request_runs(host: AgentRunner) -> None:
    outcome = host.command(POWERSHELL, command_arguments(), stdin_for(make_op("host.facts")))
    assert outcome.exit_code == 0
    result = parse_result(outcome.stdout)
    assert result["ok"] and result["results"][0]["computer_name"] == "SIMIIS01"


def test_joined_arguments_as_pywinrm_sends_them(host: AgentRunner) -> None:
    outcome = host.command(
        POWERSHELL, [" ".join(command_arguments())], stdin_for(make_op("site.list"))
    )
    assert parse_result(outcome.stdout)["ok"]


def test_bootstrap_by_run_ps_is_an_agent_request(host: AgentRunner) -> None:
    outcome = host.command(
        f"powershell -encodedcommand {encode_command(BOOTSTRAP)}",
        [],
        stdin_for(make_op("host.facts")),
    )
    assert parse_result(outcome.stdout)["ok"]


def test_agent_frame_missing(host: AgentRunner) -> None:
    outcome = host.command(POWERSHELL, command_arguments(), b'{"version":1,"ops":[]}')
    assert outcome.exit_code == 2
    error = parse_result(outcome.stdout)["error"]
    assert (error["code"], error["message"]) == ("BadRequest", "agent frame missing")


def test_foreign_agent_script_is_refused(host: AgentRunner) -> None:
    assert executor.agent_script_digest() is not None, (
        "iis_clientcert/host/agent.ps1 ships with the package"
    )
    stdin = encode_stdin("Remove-Item C:\\ -Recurse\n", make_request([make_op("host.facts")]))
    outcome = host.command(POWERSHELL, command_arguments(), stdin)
    error = parse_result(outcome.stdout)["error"]
    assert error["code"] == "BadRequest" and "agent.ps1" in error["message"]
    # CRLF line ends or a BOM (how an editor may save it) are the same script.
    crlf = "\ufeff" + agent_script().replace("\n", "\r\n")
    outcome = host.command(
        POWERSHELL, command_arguments(), encode_stdin(crlf, make_request([make_op("host.facts")]))
    )
    assert parse_result(outcome.stdout)["ok"]


def test_nothing_runs_without_agent_ps1(host, monkeypatch) -> None:
    monkeypatch.setattr(executor, "agent_script_digest", lambda: None)
    stdin = encode_stdin("# some script\n", make_request([make_op("host.facts")]))
    outcome = host.command(POWERSHELL, command_arguments(), stdin)
    error = parse_result(outcome.stdout)["error"]
    assert error["code"] == "BadRequest" and "agent.ps1 is missing" in error["message"]


@pytest.mark.parametrize(
    ("request_text", "words"),
    [
        ("not json", "not JSON"),
        ('{"version": 2, "ops": [{"op": "host.facts"}]}', "version"),
        ('{"version": 1, "ops": []}', "non-empty"),
        ('{"version": 1, "ops": [{"op": "disk.format"}]}', "unknown op"),
        ('{"version": 1, "ops": [{"op": "user.get", "args": {}}]}', "missing argument"),
    ],
)
def test_bad_requests(host: AgentRunner, request_text: str, words: str) -> None:
    stdin = agent_frame(agent_script()) + f"iis-clientcert-request 7 {request_text}\n".encode()
    outcome = host.command(POWERSHELL, command_arguments(), stdin)
    error = parse_result(outcome.stdout)["error"]
    assert error["code"] == "BadRequest" and words in error["message"]


def test_batch_stops_at_first_error(host: AgentRunner) -> None:
    result = host.run(
        make_op(
            "config.set", section=SECTION_SSL, location="shop", element=element({"sslFlags": "Ssl"})
        ),
        make_op(
            "config.set",
            section=SECTION_SSL,
            location="shop",
            target="webconfig",
            element=element({"sslFlags": "Ssl"}),
        ),
        make_op(
            "config.set",
            section=SECTION_SSL,
            location="Default Web Site",
            element=element({"sslFlags": "Ssl"}),
        ),
    )
    assert result["ok"] is False
    assert result["results"] == [{"changed": True}]
    assert (result["error"]["op"], result["error"]["index"], result["error"]["code"]) == (
        "config.set",
        1,
        "Locked",
    )
    assert result["error"]["hresult"] == "0x80070021"
    later = host.one("config.get", section=SECTION_SSL, location="Default Web Site")
    assert later["present"] is False
    line = [x for x in audit_lines(host) if x["result"] == "Locked"][-1]
    assert line["error_index"] == 1 and [o["op"] for o in line["ops"]] == ["config.set"] * 3


def test_fail_op_fault_fires_once(host: AgentRunner) -> None:
    faults = host.state_dir / "faults.json"
    faults.write_text(
        json.dumps(
            {
                "latency_ms": 0,
                "fail_op": {
                    "nth": 3,
                    "code": "AccessDenied",
                    "hresult": "0x80070005",
                    "message": "injected: access denied",
                },
            }
        )
    )
    assert host.ok(make_op("host.facts"), make_op("site.list"))
    result = host.run(make_op("user.get", name="x"), make_op("host.facts"))
    assert result["results"] == [] and result["error"] == {
        "op": "user.get",
        "index": 0,
        "code": "AccessDenied",
        "hresult": "0x80070005",
        "message": "injected: access denied",
    }
    assert json.loads(faults.read_text()) == {"latency_ms": 0}  # other keys untouched
    assert host.ok(make_op("user.get", name="x"), make_op("host.facts"))


def test_fail_op_defaults(host: AgentRunner) -> None:
    (host.state_dir / "faults.json").write_text('{"fail_op": {"nth": 1}}')
    error = host.error("host.facts")
    assert (error["code"], error["hresult"]) == ("Fault", "0x80004005")


def test_audit_log_names_ops_and_targets_without_secrets(host: AgentRunner) -> None:
    host.ok(
        make_op("user.set", name="bob", password=CANARY),
        make_op(
            "config.set",
            section=SECTION_MAPPING,
            location="shop",
            element=element(
                {"enabled": "true"},
                {
                    "oneToOneMappings": element(
                        clear=True,
                        items=[
                            element({"certificate": "QUJD", "userName": "bob", "password": CANARY})
                        ],
                    )
                },
            ),
        ),
        make_op("user.verify_password", name="bob", password=CANARY),
    )
    host.error("user.set", name="bob", password="short")
    raw = (host.state_dir / "audit.log").read_text()
    assert CANARY not in raw and "short" not in raw and "QUJD" not in raw
    lines = audit_lines(host)
    ok_line = lines[-2]
    assert ok_line["user"] == "sim-admin" and ok_line["auth"] == "basic"
    assert ok_line["ops"] == [
        {"op": "user.set", "writes": True, "target": "bob"},
        {"op": "config.set", "writes": True, "target": "shop"},
        {"op": "user.verify_password", "writes": False, "target": "bob"},
    ]
    assert ok_line["result"] == "ok"
    assert lines[-1]["result"] == "PolicyViolation"
    for key in ("time", "shell_id", "command_id", "duration_ms"):
        assert key in ok_line


# --- both PowerShells (FACTS.md, "Real-host pitfalls": PowerShell 7) -----------------------


def _install_powershell_7(host: AgentRunner) -> None:
    facts = json.loads(host.state_dir.joinpath("host.json").read_text())
    facts["powershell_editions"] = ["Desktop", "Core"]
    host.state_dir.joinpath("host.json").write_text(json.dumps(facts))


def _run_as(host: AgentRunner, program: str, *ops: Op[Any], **kwargs: Any) -> Any:
    return host.command(program, command_arguments(), stdin_for(*ops), **kwargs)


def test_pwsh_is_missing_on_a_stock_server(host: AgentRunner) -> None:
    # Without cmd.exe, WinRS's CreateProcess fails; through cmd.exe, cmd says so.
    with pytest.raises(CommandNotStarted) as caught:
        _run_as(host, "pwsh.exe", make_op("host.facts"))
    assert caught.value.code == 0x80070002
    outcome = _run_as(host, "pwsh.exe", make_op("host.facts"), skip_cmd_shell=False)
    assert outcome.exit_code == 9009 and b"'pwsh.exe' is not recognized" in outcome.stderr
    assert audit_lines(host)[-1]["result"] == "NotInstalled"


@pytest.mark.parametrize("program", ["pwsh.exe", '"C:\\Program Files\\PowerShell\\7\\pwsh.exe"'])
def test_the_agent_runs_under_powershell_7(host: AgentRunner, program: str) -> None:
    _install_powershell_7(host)
    outcome = _run_as(host, program, make_op("host.facts"), make_op("site.list"))
    result = parse_result(outcome.stdout)
    assert result["ok"], outcome.stderr
    assert result["results"][0]["computer_name"] == "SIMIIS01"


def test_the_agent_runs_under_windows_powershell(host: AgentRunner) -> None:
    outcome = _run_as(host, "powershell.exe", make_op("host.facts"))
    assert parse_result(outcome.stdout)["ok"], outcome.stderr


def _with_agent(monkeypatch: pytest.MonkeyPatch, script: str) -> bytes:
    """Make ``script`` the agent this host expects; the stdin of a host.facts request."""
    digest = hashlib.sha256(executor._normalize_script(script)).hexdigest()
    monkeypatch.setattr(executor, "agent_script_digest", lambda: digest)
    return encode_stdin(script, make_request([make_op("host.facts")]))


def test_powershell_7_refuses_an_agent_that_needs_windows_powershell(
    host: AgentRunner, monkeypatch: pytest.MonkeyPatch
) -> None:
    _install_powershell_7(host)
    script = agent_script().replace(
        "Set-StrictMode -Version Latest\n",
        "Set-StrictMode -Version Latest\nAdd-Type -AssemblyName System.Web.Extensions\n",
    )
    stdin = _with_agent(monkeypatch, script)
    outcome = host.command("pwsh.exe", command_arguments(), stdin)
    assert (outcome.exit_code, outcome.stdout) == (1, b"")
    assert b"System.Web.Extensions" in outcome.stderr
    assert audit_lines(host)[-1]["result"] == "PowerShellError"
    # Windows PowerShell 5.1 has the assembly.
    outcome = host.command("powershell.exe", command_arguments(), stdin)
    assert parse_result(outcome.stdout)["ok"]


def test_powershell_7_refuses_the_app_domains_dynamic_assemblies(
    host: AgentRunner, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The logon type is emitted in memory; AppDomain.DefineDynamicAssembly (the way many
    # Windows PowerShell scripts do it) is .NET Framework only: the agent uses the static
    # AssemblyBuilder.DefineDynamicAssembly, which both editions have.
    _install_powershell_7(host)
    script = agent_script().replace(
        "[System.Reflection.Emit.AssemblyBuilder]::DefineDynamicAssembly(",
        "[AppDomain]::CurrentDomain.DefineDynamicAssembly(",
    )
    assert script != agent_script()
    stdin = _with_agent(monkeypatch, script)
    outcome = host.command("pwsh.exe", command_arguments(), stdin)
    assert outcome.exit_code == 1 and b"DefineDynamicAssembly" in outcome.stderr
    assert parse_result(host.command("powershell.exe", command_arguments(), stdin).stdout)["ok"]
    # The agent as shipped runs on both.
    stdin = _with_agent(monkeypatch, agent_script())
    for program in ("pwsh.exe", "powershell.exe"):
        assert parse_result(host.command(program, command_arguments(), stdin).stdout)["ok"]


def test_windows_powershell_refuses_an_agent_that_needs_powershell_7(
    host: AgentRunner, monkeypatch: pytest.MonkeyPatch
) -> None:
    _install_powershell_7(host)
    line = "$request = ConvertFrom-Json -AsHashtable $RequestJson\n"
    script = agent_script().replace(
        "Set-StrictMode -Version Latest\n", "Set-StrictMode -Version Latest\n" + line
    )
    stdin = _with_agent(monkeypatch, script)
    outcome = host.command("powershell.exe", command_arguments(), stdin)
    assert outcome.exit_code == 1 and b"AsHashtable" in outcome.stderr
    assert parse_result(host.command("pwsh.exe", command_arguments(), stdin).stdout)["ok"]
    # The same call in a block that runs on PowerShell 7 only is fine on both.
    guarded = agent_script().replace(
        "Set-StrictMode -Version Latest\n",
        "Set-StrictMode -Version Latest\nif (-not $script:IsDesktop) {\n    " + line + "}\n",
    )
    stdin = _with_agent(monkeypatch, guarded)
    outcome = host.command("powershell.exe", command_arguments(), stdin)
    assert parse_result(outcome.stdout)["ok"], outcome.stderr


# --- a writable TEMP (FACTS.md, "Real-host pitfalls"; simulator/agent_reading.py) ---------


def _set_fact(host: AgentRunner, **facts: Any) -> None:
    path = host.state_dir / "host.json"
    data = json.loads(path.read_text())
    data.update(facts)
    path.write_text(json.dumps(data))


@pytest.mark.parametrize("edition", ["powershell.exe", "pwsh.exe"])
def test_the_agent_needs_no_temp_folder(host: AgentRunner, edition: str) -> None:
    # The default host's WinRM account has no TEMP: logons (no Add-Type) and encrypted
    # values (a decryption copy of applicationHost.config) must work all the same.
    _install_powershell_7(host)
    password = "Temp-Less-Pw-1!"
    mapping = element(
        {"enabled": "true"},
        children={
            "oneToOneMappings": element(
                items=[
                    element({"certificate": "QUJD", "userName": "notemp1", "password": password})
                ]
            )
        },
    )
    ops = [
        make_op("user.set", name="notemp1", password=password),
        make_op("user.verify_password", name="notemp1", password=password),
        make_op("config.set", section=SECTION_MAPPING, location="shop", element=mapping),
        make_op("config.set", section=SECTION_MAPPING, location="shop", element=mapping),
        make_op("mapping.verify_logons", site="shop"),
    ]
    result = parse_result(_run_as(host, edition, *ops).stdout)
    assert result["ok"], result.get("error")
    assert result["results"][1]["valid"] is True
    assert result["results"][3]["changed"] is False


def test_an_agent_that_reads_temp_fails_where_the_account_has_none(
    host: AgentRunner, monkeypatch: pytest.MonkeyPatch
) -> None:
    script = agent_script().replace(
        "function Invoke-UserGet($A) {\n",
        "function Invoke-UserGet($A) {\n    $scratch = [System.IO.Path]::GetTempPath()\n",
    )
    digest = hashlib.sha256(executor._normalize_script(script)).hexdigest()
    monkeypatch.setattr(executor, "agent_script_digest", lambda: digest)
    stdin = encode_stdin(
        script, make_request([make_op("host.facts"), make_op("user.get", name="x")])
    )
    result = parse_result(host.command(POWERSHELL, command_arguments(), stdin).stdout)
    error = result["error"]
    assert (error["op"], error["code"], error["hresult"]) == ("user.get", "NotFound", "0x80070003")
    assert "no TEMP" in error["message"] and "GetTempPath" in error["message"]
    assert len(result["results"]) == 1  # host.facts does not reach it
    _set_fact(host, account_has_temp=True)
    result = parse_result(host.command(POWERSHELL, command_arguments(), stdin).stdout)
    assert result["ok"]


def test_add_type_on_windows_powershell_needs_tmp_pointed_elsewhere(
    host: AgentRunner, monkeypatch: pytest.MonkeyPatch
) -> None:
    # 5.1 compiles through csc.exe and files in TMP; PowerShell 7 compiles in memory.
    _install_powershell_7(host)
    script = agent_script().replace(
        "function Invoke-UserGet($A) {\n",
        "function Invoke-UserGet($A) {\n    Add-Type -TypeDefinition 'public class X {}'\n",
    )
    digest = hashlib.sha256(executor._normalize_script(script)).hexdigest()
    monkeypatch.setattr(executor, "agent_script_digest", lambda: digest)
    stdin = encode_stdin(script, make_request([make_op("user.get", name="x")]))
    error = parse_result(host.command(POWERSHELL, command_arguments(), stdin).stdout)["error"]
    assert error["code"] == "NotFound" and "csc.exe" in error["message"]
    assert parse_result(host.command("pwsh.exe", command_arguments(), stdin).stdout)["ok"]


# --- concurrent writers (FACTS.md, "Real-host pitfalls": optimistic commits) ------------------


def _ssl_batch(location: str, flags: str = "Ssl") -> list[Op[Any]]:
    # Read first (the batch's copy of applicationHost.config), write later.
    return [
        make_op("config.get", section=SECTION_SSL, location="shop"),
        make_op(
            "config.set",
            section=SECTION_SSL,
            location=location,
            element=element({"sslFlags": flags}),
        ),
    ]


def _concurrently(host: AgentRunner, *batches: tuple[list[Op[Any]], Any]) -> list[Any]:
    """Run batches on threads, each op pausing 300 ms after the first so they interleave."""
    (host.state_dir / "faults.json").write_text(json.dumps({"op_pause_ms": 300}))
    out: list[Any] = [None] * len(batches)

    def run(i: int) -> None:
        ops, agent = batches[i]
        out[i] = host.executor.run_ops([op.to_json() for op in ops], agent=agent)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(batches))]
    for t in threads:
        t.start()
        time.sleep(0.05)
    for t in threads:
        t.join(30)
    (host.state_dir / "faults.json").write_text("{}")
    return out


def _ssl_at(host: AgentRunner, location: str) -> bool:
    return bool(host.one("config.get", section=SECTION_SSL, location=location)["present"])


def test_interleaved_write_batches_conflict_without_the_agent_mutex(host: AgentRunner) -> None:
    plain = executor.AgentRun()
    first, second = _concurrently(
        host, (_ssl_batch("shop/conc-a"), plain), (_ssl_batch("shop/conc-b"), plain)
    )
    assert first["ok"], first
    error = second["error"]
    assert (error["op"], error["code"], error["hresult"]) == (
        "config.set",
        "Conflict",
        "0x800703EE",
    )
    assert (
        "Cannot commit configuration changes because the file has changed on disk"
        in (error["message"])
    )
    # No lost update: the first batch's change is there, the refused one is not.
    assert _ssl_at(host, "shop/conc-a") and not _ssl_at(host, "shop/conc-b")


def test_the_agent_mutex_serialises_write_batches(host: AgentRunner) -> None:
    agent = executor.AgentRun(takes_mutex=True)
    results = _concurrently(
        host, (_ssl_batch("shop/conc-a"), agent), (_ssl_batch("shop/conc-b"), agent)
    )
    assert [r["ok"] for r in results] == [True, True], results
    assert _ssl_at(host, "shop/conc-a") and _ssl_at(host, "shop/conc-b")


@pytest.mark.parametrize("retries", [True, False])
def test_a_conflict_with_another_writer_is_retried_once_after_reading_again(
    host: AgentRunner, retries: bool
) -> None:
    # Another tool (IIS Manager, appcmd) takes no mutex of ours: only the retry helps.
    agent = executor.AgentRun(takes_mutex=True, retries_conflict=retries)
    other = [
        make_op(
            "config.set",
            section=SECTION_SSL,
            location="shop/conc-x",
            element=element({"sslFlags": "Ssl"}),
        )
    ]
    ours, theirs = _concurrently(
        host, (_ssl_batch("shop/conc-a"), agent), (other, executor.AgentRun())
    )
    assert theirs["ok"]
    if retries:
        assert ours["ok"], ours
        assert _ssl_at(host, "shop/conc-a") and _ssl_at(host, "shop/conc-x")
    else:
        assert ours["error"]["code"] == "Conflict"


def test_the_shipped_agent_takes_the_mutex_and_retries_a_conflict() -> None:
    reading = AgentText.read(agent_script())
    assert reading.takes_host_mutex()
    assert reading.retries_commit_conflict()
