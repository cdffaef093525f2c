"""The agent contract: the one definition the client, agent.ps1 and the simulator follow.

A provider call becomes one agent request. The agent runs in a command whose command line
is a constant bootstrap; the agent script and JSON requests travel on stdin as frames (one
per line), each JSON result comes back on stdout as a frame. One agent process may serve
many requests (a persistent agent per host) or one (a one-shot command). Values (and so
every secret) only ever travel as JSON data, never as script text.

Request:  {"version": 1, "ops": [{"op": "config.get", "args": {...}}, ...]}
Result:   {"ok": true, "results": [<one result per op>]}
      or  {"ok": false, "results": [<results of the ops that completed>],
           "error": {"op": "...", "index": 2, "code": "Locked", "hresult": "0x80070021",
                     "message": "..."}}

Ops run in order and stop at the first error, so ``results`` tells how far a batch got.

Config elements (``config.get`` / ``config.set``) are JSON trees in the shape of the XML:

    Element = {"attributes": {name: str, ...},       # values exactly as the XML holds them
               "children": {name: Element, ...},      # child elements (e.g. oneToOneMappings)
               "items": [Element, ...],               # <add .../> entries of a collection
               "clear": bool}                          # a <clear/> before the items

Encrypted attributes (``password``) are written as plain text and encrypted by the host
(Microsoft.Web.Administration on Windows), and read back only in their encrypted
``[enc:Provider:...:enc]`` form. A value already in that form is stored as it is, which
lets a resource put back a section it found (restore without ever seeing the password).
Values are decrypted one by one: a stored value the host cannot decrypt (another host's
ciphertext, a placeholder) compares as different, and a desired one fails the write with
InvalidValue / 0x80090005 naming it, unless the write changes nothing (IIS's API takes
plain text, so the agent must decrypt what it writes).
"""

from __future__ import annotations

import base64
import functools
import gzip
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final, Generic, Literal, TypedDict, TypeVar

# ContractError lives with the other project errors (one hierarchy).
from iis_clientcert.errors import ContractError

PROTOCOL_VERSION: Final = 1

# stdin and stdout are streams of frames, one per line (MS-WSMV pipe-mode stdin: the bytes
# the client sends, in order). stdin: first the agent script, then any number of requests;
# the agent answers each request with one result line, in order, and exits at the end of
# stdin. A one-shot command sends one request and ends stdin; a persistent agent keeps
# stdin open and is sent the next request when the next call comes (one Send, one
# Receive). Request JSON is ASCII without line breaks (json.dumps escapes them), so a
# frame never spans lines; the script travels gzip-compressed and base64-encoded.
AGENT_TAG: Final = "iis-clientcert-agent"
REQUEST_TAG: Final = "iis-clientcert-request"
RESULT_TAG: Final = "iis-clientcert-result"
# The id of a result that answers no request (the bootstrap's own error, an unreadable
# request line).
NO_REQUEST: Final = 0

# The constant program that powershell.exe (or pwsh.exe) runs. It reads the first stdin
# line (the agent frame), turns the script into a script block and hands it the reader,
# from which the agent reads its requests. Nothing in it varies between calls, so nothing
# variable reaches the command line.
BOOTSTRAP: Final = (
    "$ErrorActionPreference = 'Stop'\n"
    "$utf8 = New-Object System.Text.UTF8Encoding($false)\n"
    "$reader = New-Object System.IO.StreamReader([Console]::OpenStandardInput(), $utf8)\n"
    "$line = $reader.ReadLine()\n"
    "$tag = 'iis-clientcert-agent '\n"
    # Ordinal: a culture-aware comparison (PowerShell's default for strings) can miss a
    # prefix under ICU (.NET 5+, so PowerShell 7 on current Windows).
    "if ($null -eq $line -or -not $line.StartsWith($tag, [StringComparison]::Ordinal)) {\n"
    "  [Console]::Out.Write('iis-clientcert-result 0 "
    '{"ok":false,"results":[],"error":{"op":null,"index":null,'
    '"code":"BadRequest","hresult":null,"message":"agent frame missing"}}'
    "' + [char]10)\n"
    "  exit 2\n"
    "}\n"
    # The script is gzip-compressed (a quarter of its size: one Send carries it with the
    # first request). GZipStream is in System.dll on .NET Framework and in the shared
    # framework of PowerShell 7.
    "$zipped = New-Object System.IO.MemoryStream(,[Convert]::FromBase64String("
    "$line.Substring($tag.Length)))\n"
    "$gzip = New-Object System.IO.Compression.GZipStream($zipped, "
    "[System.IO.Compression.CompressionMode]::Decompress)\n"
    "$text = (New-Object System.IO.StreamReader($gzip, $utf8)).ReadToEnd()\n"
    "$agent = [ScriptBlock]::Create($text)\n"
    "& $agent $reader\n"
)
# What the bootstrap answers when stdin does not start with the agent frame.
AGENT_FRAME_MISSING: Final = "agent frame missing"

# Which PowerShell runs the agent, per connection (``connection.shell``): Windows
# PowerShell 5.1 ships with every Windows Server; PowerShell 7 (pwsh.exe) is a separate
# install. The agent and the bootstrap are the same for both.
SHELLS: Final[dict[str, str]] = {"powershell": "powershell.exe", "pwsh": "pwsh.exe"}
DEFAULT_SHELL: Final = "powershell"
POWERSHELL: Final = SHELLS[DEFAULT_SHELL]


def executable(shell: str = DEFAULT_SHELL) -> str:
    """The program of an agent command for a ``connection.shell`` value."""
    return SHELLS[shell]


def encoded_bootstrap() -> str:
    """The bootstrap as PowerShell's -EncodedCommand wants it (base64 of UTF-16LE)."""
    return base64.b64encode(BOOTSTRAP.encode("utf-16-le")).decode("ascii")


def command_arguments() -> list[str]:
    """The fixed argument list of every agent command."""
    return ["-NoProfile", "-NonInteractive", "-EncodedCommand", encoded_bootstrap()]


@functools.lru_cache(maxsize=4)
def agent_frame(agent_script: str) -> bytes:
    """The first stdin line: the agent script, gzip-compressed (no timestamp: the same bytes
    every time) and base64-encoded. Made once per process (every host's session sends it)."""
    zipped = gzip.compress(agent_script.encode("utf-8"), mtime=0)
    return f"{AGENT_TAG} {base64.b64encode(zipped).decode('ascii')}\n".encode("ascii")


def request_frame(request_id: int, request: dict[str, Any]) -> bytes:
    """One request as a stdin line (ASCII JSON: no line break can occur in it)."""
    text = json.dumps(request, separators=(",", ":"), ensure_ascii=True)
    return f"{REQUEST_TAG} {request_id} {text}\n".encode("ascii")


def encode_stdin(agent_script: str, request: dict[str, Any], request_id: int = 1) -> bytes:
    """The whole stdin of a one-shot command: the agent and one request."""
    return agent_frame(agent_script) + request_frame(request_id, request)


@dataclass(frozen=True)
class StdinFrame:
    """One stdin line as the agent reads it (used by the simulator)."""

    kind: Literal["agent", "request", "unknown"]
    request_id: int = NO_REQUEST
    text: str = ""  # the script (agent) or the request JSON (request)


def parse_stdin_line(line: bytes) -> StdinFrame:
    """What the bootstrap and the agent make of one stdin line (without its line break)."""
    text = line.decode("utf-8", "replace").rstrip("\r")
    tag, _, rest = text.partition(" ")
    if tag == AGENT_TAG:
        try:
            script = gzip.decompress(base64.b64decode(rest, validate=True)).decode("utf-8")
        except (ValueError, UnicodeDecodeError, OSError, EOFError):
            return StdinFrame("unknown")
        return StdinFrame("agent", text=script)
    if tag == REQUEST_TAG:
        number, _, body = rest.partition(" ")
        if number.isdigit() and len(number) <= 18:
            return StdinFrame("request", int(number), body)
    return StdinFrame("unknown")


def result_frame(request_id: int, result: dict[str, Any] | str) -> bytes:
    """One result line on stdout (what the agent writes for each request)."""
    text = result if isinstance(result, str) else json.dumps(result, separators=(",", ":"))
    return f"{RESULT_TAG} {request_id} {text}\n".encode()


def take_results(buffer: bytearray) -> list[tuple[int, bytes]]:
    """Complete result lines at the start of ``buffer`` (removed from it), as
    (request id, JSON bytes). Lines that are no result frame (stray output) are dropped;
    an incomplete last line stays in the buffer for the next read."""
    found: list[tuple[int, bytes]] = []
    prefix = RESULT_TAG.encode() + b" "
    while True:
        end = buffer.find(b"\n")
        if end < 0:
            return found
        line = bytes(buffer[:end]).rstrip(b"\r")
        del buffer[: end + 1]
        at = line.find(prefix)
        if at < 0:
            continue
        number, _, body = line[at + len(prefix) :].partition(b" ")
        if number.isdigit():
            found.append((int(number), body))


# --- op results ----------------------------------------------------------------------
# What each op returns, as types: providers read results through them (mypy checks the
# keys), HostClient checks every result against them (iis_clientcert.host.shapes), and the
# contract suite checks the real results of the simulator and of a Windows host.


class Element(TypedDict):
    """A config element in the shape of the XML (see the module docstring)."""

    attributes: dict[str, str]
    children: dict[str, Element]
    items: list[Element]
    clear: bool


class PasswordPolicy(TypedDict):
    min_length: int
    complexity: bool


class LockoutPolicy(TypedDict):
    """The host's account lockout policy (NetUserModalsGet level 3; on the WinNT object of
    the computer's account domain: MaxBadPasswordsAllowed, LockoutObservationInterval,
    AutoUnlockInterval)."""

    threshold: int  # bad logons that lock an account; 0: never locked; -1: not readable
    observation_window_s: int  # the count restarts after this long without a bad logon
    duration_s: int  # how long a lockout lasts; 0: until an administrator unlocks it


class HostFactsResult(TypedDict):
    computer_name: str
    os_caption: str
    os_build: int
    iis_version: str  # "" when IIS is not installed
    web_cert_auth_installed: bool
    client_auth_trust_mode: int
    send_trusted_issuer_list: int
    tls13_enabled: bool
    password_policy: PasswordPolicy
    lockout_policy: LockoutPolicy


class BindingInfo(TypedDict):
    protocol: str
    binding_information: str  # ip:port:host_name
    ssl_flags: int
    # The HTTP.sys certificate binding of an https binding; None for other protocols or
    # when HTTP.sys has none.
    certificate_hash: str | None
    certificate_store: str | None
    client_cert_negotiation: bool
    # The whole HTTP.sys record (netsh's setting names, see SSLCERT_DEFAULTS), so a change
    # can pass every setting again; None when HTTP.sys has none.
    sslcert: dict[str, bool | int | str] | None


class SiteInfo(TypedDict):
    name: str
    id: int
    physical_path: str
    bindings: list[BindingInfo]


class SiteListResult(TypedDict):
    sites: list[SiteInfo]


class SiteLogEntry(TypedDict):
    """One request of a site's W3C log (IIS's default fields that say what was answered)."""

    date: str  # yyyy-MM-dd, UTC
    time: str  # HH:mm:ss, UTC
    method: str
    uri_stem: str
    uri_query: str
    port: int
    username: str
    client_ip: str
    status: int  # sc-status
    substatus: int  # sc-substatus: the 16 of 403.16
    win32_status: int  # sc-win32-status: e.g. 2148204809 = 0x800B0109


class SiteLogTailResult(TypedDict):
    site: str
    site_id: int
    log_directory: str  # the W3SVC<id> folder read ("" when the site logs nowhere)
    entries: list[SiteLogEntry]  # oldest first


class ConfigGetResult(TypedDict):
    present: bool  # the section is written at the location itself
    element: Element | None  # what is written there (None when not present)
    effective: Element  # the value in force there (inherited and defaults included)


class ChangedResult(TypedDict):
    changed: bool


class BindingSetResult(TypedDict):
    changed: bool
    created: bool


class CertificateInfo(TypedDict):
    thumbprint: str  # upper-case hex
    subject: str
    issuer: str
    not_before: str  # ISO 8601, UTC
    not_after: str
    has_private_key: bool
    der_b64: str


class CertListResult(TypedDict):
    certificates: list[CertificateInfo]


class CertImportResult(TypedDict):
    thumbprint: str
    added: bool


class RemovedResult(TypedDict):
    removed: bool


class RevocationStatus(TypedDict):
    thumbprint: str
    status: Literal["good", "revoked", "offline", "no_cdp"]
    hresult: str | None
    urls: list[str]


class CertRevocationResult(TypedDict):
    results: list[RevocationStatus]


class UserGetResult(TypedDict):
    exists: bool
    name: str
    full_name: str
    description: str
    disabled: bool
    password_never_expires: bool
    user_cannot_change_password: bool
    groups: list[str]
    # BadPasswordAttempts as the host stores it (reset by a successful logon, or by the
    # next bad one after the observation window), and whether the account is locked out.
    bad_password_count: int
    locked_out: bool
    # The account's security identifier (None when it does not exist). Folder ACEs hold
    # SIDs: once the account is deleted its ACEs show (and are revoked) by SID alone.
    sid: str | None


class UserSetResult(TypedDict):
    created: bool
    changed: list[str]  # the properties that changed ([] when created)


class VerifyPasswordResult(TypedDict):
    """One logon, classified the same way by every op (see "Logons" below)."""

    valid: bool  # the password is right (even if the logon itself was refused)
    hresult: str | None  # why LogonUser failed, e.g. "0x8007052E"; None when it succeeded
    checked: bool  # a logon was tried and its answer says whether the password is right


class AceInfo(TypedDict):
    # The account's name (DOMAIN\name, BUILTIN\Users, NT AUTHORITY\SYSTEM), or the SID
    # itself when it names no account any more (a deleted account).
    identity: str
    sid: str
    rights: str
    type: Literal["Allow", "Deny"]
    inherited: bool


class AclGetResult(TypedDict):
    exists: bool
    aces: list[AceInfo]


class LogonResult(TypedDict):
    kind: Literal["one_to_one", "many_to_one"]
    key: str  # the certificate blob (one-to-one) or the mapping's name (many-to-one)
    user_name: str
    valid: bool  # as VerifyPasswordResult
    hresult: str | None
    checked: bool


class VerifyLogonsResult(TypedDict):
    results: list[LogonResult]


# --- ops -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Arg:
    """One argument of an op. ``kind`` is a JSON type name; ``secret`` args are never logged."""

    kind: str  # "str" | "int" | "bool" | "dict" | "list"
    required: bool = True
    secret: bool = False
    choices: tuple[str, ...] = ()


@dataclass(frozen=True)
class OpSpec:
    name: str
    summary: str
    writes: bool
    # The TypedDict class of the op's result (a type object, checked by shapes.check).
    result: Any
    args: dict[str, Arg] = field(default_factory=dict)
    # The argument that names what the op touches, for audit logs and error messages.
    target: str | None = None


STORES: Final = ("Root", "CA", "My")

# An HTTP.sys SSL certificate record's settings, by `netsh http add sslcert` parameter
# name, with the value the record gets when an add or update does not name them. `netsh
# http update sslcert` replaces the whole record (FACTS.md "Real-host pitfalls"): whoever
# rewrites one passes every setting it found, or the owner's DisableTLS13, OCSP, CTL ...
# settings are silently lost (win-acme #2831).
SSLCERT_DEFAULTS: Final[dict[str, bool | int | str]] = {
    "verifyclientcertrevocation": True,
    "verifyrevocationwithcachedclientcertonly": False,
    "usagecheck": True,
    "revocationfreshnesstime": 0,
    "urlretrievaltimeout": 0,
    "sslctlidentifier": "",
    "sslctlstorename": "",
    "dsmapperusage": False,
    "clientcertnegotiation": False,
    "reject": False,
    "disablehttp2": False,
    "disablequic": False,
    "disabletls13": False,
    "disableocspstapling": False,
    "enabletokenbinding": False,
    "logextendedevents": False,
    "disablelegacytls": False,
    "enablesessionticket": False,
    "disabletls12": False,
    "disablesessionid": False,
}

# IIS binding sslFlags bits that stand for an HTTP.sys record setting (IIS 10 on Server
# 2019+: IIS Manager's "Disable TLS 1.3 over TCP" etc. set both). binding.set turns the
# setting on for a bit that is set and off for a bit it clears; others stay as found.
BINDING_FLAG_SETTINGS: Final[dict[int, str]] = {
    4: "disablehttp2",
    8: "disableocspstapling",
    16: "disablequic",
    32: "disabletls13",
    64: "disablelegacytls",
}

# Windows builds that open AES-256/PBES2 PFX files (Server 2019 = 17763 and later); older
# ones fail with 0x80070056, which reads like a wrong password (FACTS.md).
PFX_AES_MIN_BUILD: Final = 17763
CONFIG_TARGETS: Final = ("apphost", "webconfig")
FOLDER_RIGHTS: Final = ("Read", "ReadAndExecute", "Modify", "FullControl")

_OPS: list[OpSpec] = [
    OpSpec(
        "host.facts",
        "Facts about the host that decide what works.",
        writes=False,
        result=HostFactsResult,
    ),
    OpSpec(
        "site.list",
        "Sites with their physical path and bindings.",
        writes=False,
        result=SiteListResult,
    ),
    OpSpec(
        "site.log_tail",
        "The last entries of a site's W3C request log (status, substatus, win32 status): "
        "what a real IIS says only there, not in its responses.",
        writes=False,
        args={"site": Arg("str"), "count": Arg("int")},
        result=SiteLogTailResult,
        target="site",
    ),
    OpSpec(
        "config.get",
        "Read a configuration section at a location of applicationHost.config.",
        writes=False,
        args={"section": Arg("str"), "location": Arg("str")},
        result=ConfigGetResult,
        target="location",
    ),
    OpSpec(
        "config.set",
        "Replace a configuration section at a location (authoritative, like <clear/>).",
        writes=True,
        args={
            "section": Arg("str"),
            "location": Arg("str"),
            "element": Arg("dict", secret=True),
            "target": Arg("str", required=False, choices=CONFIG_TARGETS),
        },
        result=ChangedResult,
        target="location",
    ),
    OpSpec(
        "config.clear",
        "Remove a section from a location so the location inherits it again.",
        writes=True,
        args={
            "section": Arg("str"),
            "location": Arg("str"),
            "target": Arg("str", required=False, choices=CONFIG_TARGETS),
        },
        result=ChangedResult,
        target="location",
    ),
    OpSpec(
        "binding.set",
        "Create or update a site's https binding and its HTTP.sys certificate binding. "
        "The HTTP.sys record is rewritten whole with every setting it held (and the "
        "binding's BINDING_FLAG_SETTINGS bits); the IIS binding is changed in config only.",
        writes=True,
        args={
            "site": Arg("str"),
            "binding_information": Arg("str"),
            "ssl_flags": Arg("int"),
            "certificate_hash": Arg("str"),
            "certificate_store": Arg("str", choices=STORES),
            "client_cert_negotiation": Arg("bool"),
        },
        result=BindingSetResult,
        target="site",
    ),
    OpSpec(
        "binding.remove",
        "Remove a site's https binding (config only), then its HTTP.sys certificate binding "
        "unless another site's https binding still uses the same ip:port or host:port.",
        writes=True,
        args={"site": Arg("str"), "binding_information": Arg("str")},
        result=ChangedResult,
        target="site",
    ),
    OpSpec(
        "cert.list",
        "Certificates in a LocalMachine store.",
        writes=False,
        args={"store": Arg("str", choices=STORES)},
        result=CertListResult,
        target="store",
    ),
    OpSpec(
        "cert.import",
        "Import a certificate (DER) or a PFX with its key into a LocalMachine store.",
        writes=True,
        args={
            "store": Arg("str", choices=STORES),
            "der_b64": Arg("str", required=False),
            "pfx_b64": Arg("str", required=False, secret=True),
            "pfx_password": Arg("str", required=False, secret=True),
            "exportable": Arg("bool", required=False),
        },
        result=CertImportResult,
        target="store",
    ),
    OpSpec(
        "cert.remove",
        "Remove a certificate (and its key) from a LocalMachine store.",
        writes=True,
        args={"store": Arg("str", choices=STORES), "thumbprint": Arg("str")},
        result=RemovedResult,
        target="thumbprint",
    ),
    OpSpec(
        "cert.revocation",
        "Whether this host can check the revocation of certificates as HTTP.sys does for "
        "client certificates: the CRL at each CRL distribution point, fetched from the host.",
        writes=False,
        args={"certificates": Arg("list")},
        result=CertRevocationResult,
    ),
    OpSpec(
        "user.get",
        "A local account.",
        writes=False,
        args={"name": Arg("str")},
        result=UserGetResult,
        target="name",
    ),
    OpSpec(
        "user.set",
        "Create a local account or update its properties; the password only when given.",
        writes=True,
        args={
            "name": Arg("str"),
            "password": Arg("str", required=False, secret=True),
            "full_name": Arg("str", required=False),
            "description": Arg("str", required=False),
            "disabled": Arg("bool", required=False),
            "password_never_expires": Arg("bool", required=False),
            "user_cannot_change_password": Arg("bool", required=False),
        },
        result=UserSetResult,
        target="name",
    ),
    OpSpec(
        "user.delete",
        "Delete a local account.",
        writes=True,
        args={"name": Arg("str")},
        result=RemovedResult,
        target="name",
    ),
    OpSpec(
        "user.verify_password",
        "Whether a password logs the account on (LogonUser); the password is never returned.",
        writes=False,
        args={"name": Arg("str"), "password": Arg("str", secret=True)},
        result=VerifyPasswordResult,
        target="name",
    ),
    OpSpec(
        "group.add_member",
        "Add a local account to a local group.",
        writes=True,
        args={"group": Arg("str"), "member": Arg("str")},
        result=ChangedResult,
        target="group",
    ),
    OpSpec(
        "group.remove_member",
        "Remove a local account from a local group.",
        writes=True,
        args={"group": Arg("str"), "member": Arg("str")},
        result=ChangedResult,
        target="group",
    ),
    OpSpec(
        "acl.get",
        "The explicit access rules of a folder.",
        writes=False,
        args={"path": Arg("str")},
        result=AclGetResult,
        target="path",
    ),
    OpSpec(
        "acl.grant",
        "Add an Allow rule (inherited by files and subfolders) for an identity on a folder.",
        writes=True,
        args={
            "path": Arg("str"),
            "identity": Arg("str"),
            "rights": Arg("str", choices=FOLDER_RIGHTS),
        },
        result=ChangedResult,
        target="path",
    ),
    OpSpec(
        "acl.revoke",
        "Remove the explicit Allow rules of an identity (a name, or a SID for an account "
        "that no longer exists) on a folder.",
        writes=True,
        args={"path": Arg("str"), "identity": Arg("str")},
        result=ChangedResult,
        target="path",
    ),
    OpSpec(
        "mapping.verify_logons",
        "Try the logon of every mapping of a site with its stored (encrypted) password "
        "(the section's logonMethod and defaultLogonDomain; never the accounts in "
        "skip_users, nor one whose logon is not safe to try).",
        writes=False,
        args={"site": Arg("str"), "skip_users": Arg("list", required=False)},
        result=VerifyLogonsResult,
        target="site",
    ),
]

OPS: Final[dict[str, OpSpec]] = {spec.name: spec for spec in _OPS}

# --- logons --------------------------------------------------------------------------
# Two ops try logons (user.verify_password, mapping.verify_logons) and user.set tries one
# before it sets a password. Every logon with a wrong password counts towards the host's
# lockout threshold, and a locked mapped account gets 401.1 for every certificate
# (FACTS.md "Logons lock accounts"). agent.ps1 and the simulator follow these rules, and
# providers read the results through them:
#
# * Logon types are IIS's logonMethod values (LOGON_TYPES); user.verify_password and
#   user.set use a network logon, like Ansible's Test-LocalCredential. The user name is
#   split as LogonUser gets it: DOMAIN\user, user@domain (UPN) or the default domain
#   (defaultLogonDomain; '' means '.', this host).
# * A logon is tried only for an account of this host that exists, is not locked out, and
#   whose bad-password count is below half the lockout threshold (logon_guard_allows), so
#   reading never uses more than half of the attempts that lock it; and within one
#   request, at most once per account. Otherwise the answer is ``checked: false``. The
#   one exception: a logon with the password user.set has just set in the same request
#   (it cannot be a wrong password, and its success resets the count).
# * The Win32 error of LogonUser is classified once (logon_verdict): 0 and the codes of
#   LOGON_VALID_CODES prove the password right (the logon may still be refused:
#   ``hresult`` says why); ERROR_ACCOUNT_LOCKED_OUT says nothing about the password
#   (``checked: false``); every other code is a wrong password or unknown account.

LOGON_TYPES: Final[dict[str, int]] = {"Interactive": 2, "Network": 3, "Batch": 4, "ClearText": 8}
# IIS's default logonMethod (IIS_schema.xml) and the logon type of the password checks.
DEFAULT_LOGON_METHOD: Final = "ClearText"
PASSWORD_CHECK_LOGON_TYPE: Final = LOGON_TYPES["Network"]

ERROR_LOGON_FAILURE: Final = 1326
ERROR_ACCOUNT_LOCKED_OUT: Final = 1909

# LogonUser errors that Windows reports only once the password has been found right
# (MSV1_0 checks the password before account restrictions and logon rights). The first
# four are the ones Ansible's Test-LocalCredential (ansible.windows, win_user) takes as
# valid; the other four are restrictions of the same kind (Ansible never asks: it sets the
# password of disabled and expired accounts) and are for a real host to confirm
# (docs/real-host.md).
LOGON_VALID_CODES: Final[dict[int, str]] = {
    1327: "ERROR_ACCOUNT_RESTRICTION: an account restriction (say, a blank password)",
    1328: "ERROR_INVALID_LOGON_HOURS: outside the account's logon hours",
    1329: "ERROR_INVALID_WORKSTATION: not allowed to log on at this computer",
    1385: "ERROR_LOGON_TYPE_NOT_GRANTED: the account lacks the right for this logon type",
    1330: "ERROR_PASSWORD_EXPIRED: the password has expired",
    1331: "ERROR_ACCOUNT_DISABLED: the account is disabled",
    1793: "ERROR_ACCOUNT_EXPIRED: the account has expired",
    1907: "ERROR_PASSWORD_MUST_CHANGE: the password must be changed at the next logon",
}


def logon_hresult(code: int) -> str | None:
    """A Win32 error of LogonUser as the contract's HRESULT text (None for success)."""
    return f"0x{0x80070000 | code:08X}" if code else None


def logon_verdict(code: int) -> VerifyPasswordResult:
    """What a LogonUser answer says about the password (the one classification)."""
    if code == ERROR_ACCOUNT_LOCKED_OUT:
        return {"valid": False, "hresult": logon_hresult(code), "checked": False}
    valid = code == 0 or code in LOGON_VALID_CODES
    return {"valid": valid, "hresult": logon_hresult(code), "checked": True}


def not_checked(hresult: str | None = None) -> VerifyPasswordResult:
    """The answer of a verify op that did not try a logon."""
    return {"valid": False, "hresult": hresult, "checked": False}


def logon_guard_allows(bad_password_count: int, threshold: int) -> bool:
    """Whether a logon may be tried on an account with this many bad logons already.

    No lockout policy (0): always. Otherwise only below half the threshold, so our reads
    never use more than half the attempts (Windows 11: 5 of 10; a domain's 3: 1); an
    unreadable policy or count (-1) allows a logon only on an untouched account."""
    if threshold == 0:
        return True
    if threshold < 0 or bad_password_count < 0:
        return bad_password_count == 0
    return bad_password_count < threshold // 2


def logon_account_key(user_name: str) -> str:
    """The account a logon name stands for, to ration logons per account: the name without
    its domain (DOMAIN\\user) or UPN suffix (user@domain), lower case. Accounts of the same
    name in two domains share a key: rationing them together errs on the safe side."""
    return user_name.rsplit("\\", 1)[-1].split("@", 1)[0].lower()


# --- errors --------------------------------------------------------------------------

ERROR_CODES: Final[dict[str, str]] = {
    "BadRequest": "the request does not follow the contract (version, op name, arguments)",
    "NotFound": "the named site, user, certificate, folder or section does not exist",
    "Locked": "the section is locked at this path (overrideModeDefault=Deny)",
    "InvalidValue": "a value is outside what the IIS schema or Windows accepts",
    "DuplicateKey": "a collection already holds an entry with the same key",
    "FeatureMissing": "a Windows feature the operation needs is not installed",
    "LogonFailure": "the user name or password is incorrect",
    "PolicyViolation": "the password or account name breaks the host's policy",
    "BadCertificate": "the certificate or PFX cannot be decoded",
    "AccessDenied": "the agent's account lacks the right to do this",
    "Conflict": (
        "applicationHost.config changed on disk between the agent's read and its commit "
        "(another writer), or another agent held the host's write lock too long"
    ),
    "Fault": "an injected or unexpected failure on the host",
}


# How the agent files a Windows HRESULT under a contract kind when an API throws it (the
# agent's $script:HResultKinds is a copy of this table; a test keeps them equal). Anything
# else is a Fault, with its HRESULT.
HRESULT_KINDS: Final[dict[int, str]] = {
    0x80070021: "Locked",
    0x80070005: "AccessDenied",
    0x8007052E: "LogonFailure",
    0x80070057: "InvalidValue",
    0x8007000D: "InvalidValue",
    0x80070002: "NotFound",
    0x80070003: "NotFound",
    0x80070490: "NotFound",
    0x800708AC: "NotFound",
    0x800708AD: "NotFound",
    0x80070534: "NotFound",
    0x8007056B: "NotFound",
    0x80092004: "NotFound",
    0x80070035: "NotFound",
    0x800700B7: "DuplicateKey",
    0x800708B0: "DuplicateKey",
    0x80070562: "DuplicateKey",
    0x800708B7: "DuplicateKey",
    0x800708C5: "PolicyViolation",
    0x800708C4: "PolicyViolation",
    0x8007052D: "PolicyViolation",
    0x8007089A: "PolicyViolation",
    0x80070523: "PolicyViolation",
    0x80093102: "BadCertificate",
    0x8009310B: "BadCertificate",
    0x80092002: "BadCertificate",
    0x80070056: "BadCertificate",
    0x80092009: "BadCertificate",
    0x8009200D: "BadCertificate",
    # netsh http add sslcert "Error: 1312": the certificate's private key is missing or
    # not readable.
    0x80070520: "BadCertificate",
    # Commit conflicts: the file changed since it was read (Microsoft.Web.Administration's
    # FileLoadException; HRESULT unconfirmed, docs/real-host.md), or another process had
    # it open.
    0x800703EE: "Conflict",
    0x80070020: "Conflict",
}

# What to do about an error of a kind, whatever its HRESULT (shown when the HRESULT has no
# entry in WINDOWS_CODES).
KIND_FIXES: Final[dict[str, str]] = {
    "Conflict": (
        "run again: the agent serialises its own writes on a host and retries a conflicting "
        "commit once, so a repeat means another tool (IIS Manager, appcmd, a deployment) "
        "keeps writing applicationHost.config at the same time"
    ),
}


@dataclass(frozen=True)
class WindowsCode:
    name: str
    meaning: str
    action: str


# Windows HRESULTs users meet on this road, with what they mean and what to do.
WINDOWS_CODES: Final[dict[int, WindowsCode]] = {
    0x8007052E: WindowsCode(
        "ERROR_LOGON_FAILURE",
        "the user name or password is incorrect",
        "set the password of the mapping to the account's current password "
        "(for IIS one-to-one mappings a wrong password shows as 401.1)",
    ),
    0x80093102: WindowsCode(
        "CRYPT_E_ASN1_EOD",
        "the certificate blob ends too early (truncated or not joined into one line)",
        "give the certificate as PEM, DER or PFX and let the provider produce the blob",
    ),
    0x8009310B: WindowsCode(
        "CRYPT_E_ASN1_BADTAG",
        "the certificate blob is not DER (bad ASN.1 tag)",
        "give the certificate as PEM, DER or PFX and let the provider produce the blob",
    ),
    0x80070021: WindowsCode(
        "ERROR_LOCK_VIOLATION",
        "the configuration section is locked at this path (overrideModeDefault=Deny)",
        "write the section to applicationHost.config inside <location path=...>, "
        "never to the site's web.config",
    ),
    0x800B0109: WindowsCode(
        "CERT_E_UNTRUSTEDROOT",
        "the certificate chain ends in a root that is not trusted",
        "add the issuing CA to LocalMachine\\Root (self-signed) or LocalMachine\\CA "
        "(intermediate), and keep non-self-signed certificates out of Root (KB 2802568)",
    ),
    0x800B010A: WindowsCode(
        "CERT_E_CHAINING",
        "no chain to a trusted root could be built: an issuing CA is missing",
        "put the intermediate CAs in LocalMachine\\CA (or have clients send them) and the "
        "root in LocalMachine\\Root",
    ),
    0x800B0110: WindowsCode(
        "CERT_E_WRONG_USAGE",
        "the certificate is not valid for client authentication (EKU)",
        "issue a client certificate whose Enhanced Key Usage includes Client Authentication",
    ),
    0x800B0101: WindowsCode(
        "CERT_E_EXPIRED",
        "a certificate of the chain is expired or not yet valid",
        "renew the certificate (or the CA certificate) and map the new one",
    ),
    0x800B0111: WindowsCode(
        "TRUST_E_EXPLICIT_DISTRUST",
        "a certificate of the chain is explicitly distrusted (LocalMachine\\Disallowed)",
        "remove it from the Disallowed store only if the distrust was a mistake",
    ),
    0x80092010: WindowsCode(
        "CRYPT_E_REVOKED",
        "the certificate is revoked (on its issuer's CRL)",
        "issue the client a new certificate and map that one",
    ),
    0x80092013: WindowsCode(
        "CRYPT_E_REVOCATION_OFFLINE",
        "the revocation server was offline: the host cannot fetch the CRL at the "
        "certificate's CRL distribution point",
        "let the host reach the CDP URL (proxy, firewall, DNS) or publish a current CRL there; "
        "HTTP.sys's verifyclientcertrevocation=disable turns the check off for a binding",
    ),
    0x80070005: WindowsCode(
        "E_ACCESSDENIED",
        "access is denied",
        "connect as a member of the host's Administrators group",
    ),
    0x80070002: WindowsCode(
        "ERROR_FILE_NOT_FOUND",
        "the file or folder does not exist",
        "create the site folder first, or correct the path",
    ),
    0x800708C5: WindowsCode(
        "NERR_PasswordTooShort",
        "the password does not meet the host's password policy",
        "use a longer password with characters from three of: upper case, lower case, "
        "digits, symbols",
    ),
    0x80070569: WindowsCode(
        "ERROR_LOGON_TYPE_NOT_GRANTED",
        "the account may not log on this way (a 'Deny ...' logon right, or a missing one)",
        "grant the account the logon right of its logonMethod (ClearText and Network need "
        "'Access this computer from the network', Batch 'Log on as a batch job', which a "
        "server gives no ordinary account), or change logon_method",
    ),
    0x80070533: WindowsCode(
        "ERROR_ACCOUNT_DISABLED",
        "the account is disabled (its password is right)",
        "enable the account (LocalUser disabled=False, or net user NAME /active:yes)",
    ),
    0x80070532: WindowsCode(
        "ERROR_PASSWORD_EXPIRED",
        "the account's password is older than the host's maximum password age",
        "set a new password (and the mapping's), or mark the account's password as never "
        "expiring (password_never_expires=True)",
    ),
    0x80070773: WindowsCode(
        "ERROR_PASSWORD_MUST_CHANGE",
        "the account must change its password at the next logon, which IIS cannot do",
        "clear 'User must change password at next logon' (net user NAME "
        "/logonpasswordchg:no), or change the password in the program",
    ),
    0x80070701: WindowsCode(
        "ERROR_ACCOUNT_EXPIRED",
        "the account's expiry date has passed",
        "extend or clear the account's expiry date (net user NAME /expires:never)",
    ),
    0x8007052F: WindowsCode(
        "ERROR_ACCOUNT_RESTRICTION",
        "an account restriction refuses this logon: most often a blank password, which "
        "Windows allows only at the console",
        "give the account a password (and the mapping the same one)",
    ),
    0x80070775: WindowsCode(
        "ERROR_ACCOUNT_LOCKED_OUT",
        "the account is locked out after too many logons with a wrong password",
        "correct the password where it is wrong (a mapping, a service), then unlock the "
        "account or wait for the lockout duration",
    ),
    0x80070032: WindowsCode(
        "ERROR_NOT_SUPPORTED",
        "the request is not supported (on Windows Server 2025: client certificate "
        "renegotiation under TLS 1.3)",
        "negotiate client certificates in the handshake (client_cert_negotiation=true)",
    ),
    0x800700B7: WindowsCode(
        "ERROR_ALREADY_EXISTS",
        "an object with that name or key already exists",
        "remove the duplicate or let the provider adopt the existing object",
    ),
    0x80070056: WindowsCode(
        "ERROR_INVALID_PASSWORD",
        "the PFX password is not correct; on Windows before build 17763 (Server 2016) also "
        "what an AES-256/PBES2-encrypted PFX gives, which that Windows cannot open",
        "give the PFX's password; for Server 2016 export the PFX with TripleDES-SHA1 (the "
        "ServerCertificate resource re-wraps it for such a host itself)",
    ),
    0x80090005: WindowsCode(
        "NTE_BAD_DATA",
        "an encrypted configuration value cannot be decrypted with this host's key (it was "
        "encrypted on another host, e.g. a copied applicationHost.config, or is a placeholder)",
        "give the plain value (a password input) so it is encrypted with this host's key; "
        "a mapping whose stored password cannot be decrypted is rewritten on the next update",
    ),
    0x80070490: WindowsCode(
        "ERROR_NOT_FOUND",
        "the element was not found",
        "check the site, user or certificate name",
    ),
    0x80070520: WindowsCode(
        "ERROR_NO_SUCH_LOGON_SESSION",
        "HTTP.sys cannot use the server certificate's private key: it is missing or not "
        "accessible (netsh http add sslcert: 'A specified logon session does not exist', "
        "Error: 1312)",
        "import the certificate with its private key into LocalMachine\\My (a PFX, as a "
        "machine key), not into a user's store; if it is there, give SYSTEM read access to "
        "the key",
    ),
    0x800703EE: WindowsCode(
        "ERROR_FILE_INVALID",
        "applicationHost.config changed on disk between the agent's read and its commit "
        "('Cannot commit configuration changes because the file has changed on disk')",
        KIND_FIXES["Conflict"],
    ),
    0x80070020: WindowsCode(
        "ERROR_SHARING_VIOLATION",
        "another process had the configuration file open while the agent committed",
        KIND_FIXES["Conflict"],
    ),
    0x80070057: WindowsCode(
        "E_INVALIDARG",
        "a value was refused: the parameter is incorrect (netsh 'Error: 87')",
        "check the binding's IP:port:host and the certificate hash and store",
    ),
}


def explain_hresult(hresult: str | int | None) -> WindowsCode | None:
    if hresult is None:
        return None
    try:
        value = int(hresult, 16) if isinstance(hresult, str) else int(hresult)
    except ValueError:
        return None
    return WINDOWS_CODES.get(value & 0xFFFFFFFF)


# --- request / result shape ----------------------------------------------------------


_JSON_KINDS: Final[dict[str, type | tuple[type, ...]]] = {
    "str": str,
    "int": int,
    "bool": bool,
    "dict": dict,
    "list": list,
}

ENCRYPTED_VALUE: Final = re.compile(r"^\[enc:[A-Za-z0-9]+:[^:\]]*:enc\]$")

R = TypeVar("R")


@dataclass(frozen=True)
class Op(Generic[R]):
    """One op of a request, checked against the contract when made; ``R`` is the type of
    its result (the op's ``OpSpec.result``). Build ops with the typed functions below
    (``site_list()``, ``config_get(...)``) or, untyped, with :func:`make_op`."""

    name: str
    args: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        validate_op(self.to_json())

    @property
    def spec(self) -> OpSpec:
        return OPS[self.name]

    def to_json(self) -> dict[str, Any]:
        return {"op": self.name, "args": dict(self.args)}


def make_op(op: str, **args: Any) -> Op[Any]:
    """One op of a request, checked against the contract (``None`` arguments are left out)."""
    return Op(op, {k: v for k, v in args.items() if v is not None})


def make_request(ops: Sequence[Op[Any]]) -> dict[str, Any]:
    request = {"version": PROTOCOL_VERSION, "ops": [op.to_json() for op in ops]}
    validate_request(request)
    return request


# --- typed op builders: one per op, named after it, its arguments as parameters (a test
# keeps them in step with OPS) ----------------------------------------------------------


def host_facts() -> Op[HostFactsResult]:
    return make_op("host.facts")


def site_list() -> Op[SiteListResult]:
    return make_op("site.list")


def site_log_tail(site: str, count: int) -> Op[SiteLogTailResult]:
    return make_op("site.log_tail", site=site, count=count)


def config_get(section: str, location: str) -> Op[ConfigGetResult]:
    return make_op("config.get", section=section, location=location)


def config_set(
    section: str, location: str, element: Mapping[str, Any], target: str | None = None
) -> Op[ChangedResult]:
    return make_op(
        "config.set", section=section, location=location, element=dict(element), target=target
    )


def config_clear(section: str, location: str, target: str | None = None) -> Op[ChangedResult]:
    return make_op("config.clear", section=section, location=location, target=target)


def binding_set(
    site: str,
    binding_information: str,
    ssl_flags: int,
    certificate_hash: str,
    certificate_store: str,
    client_cert_negotiation: bool,
) -> Op[BindingSetResult]:
    return make_op(
        "binding.set",
        site=site,
        binding_information=binding_information,
        ssl_flags=ssl_flags,
        certificate_hash=certificate_hash,
        certificate_store=certificate_store,
        client_cert_negotiation=client_cert_negotiation,
    )


def binding_remove(site: str, binding_information: str) -> Op[ChangedResult]:
    return make_op("binding.remove", site=site, binding_information=binding_information)


def cert_list(store: str) -> Op[CertListResult]:
    return make_op("cert.list", store=store)


def cert_import(
    store: str,
    der_b64: str | None = None,
    pfx_b64: str | None = None,
    pfx_password: str | None = None,
    exportable: bool | None = None,
) -> Op[CertImportResult]:
    return make_op(
        "cert.import",
        store=store,
        der_b64=der_b64,
        pfx_b64=pfx_b64,
        pfx_password=pfx_password,
        exportable=exportable,
    )


def cert_remove(store: str, thumbprint: str) -> Op[RemovedResult]:
    return make_op("cert.remove", store=store, thumbprint=thumbprint)


def cert_revocation(certificates: list[str]) -> Op[CertRevocationResult]:
    """``certificates``: base64 DER of each certificate to check."""
    return make_op("cert.revocation", certificates=certificates)


def user_get(name: str) -> Op[UserGetResult]:
    return make_op("user.get", name=name)


def user_set(
    name: str,
    password: str | None = None,
    full_name: str | None = None,
    description: str | None = None,
    disabled: bool | None = None,
    password_never_expires: bool | None = None,
    user_cannot_change_password: bool | None = None,
) -> Op[UserSetResult]:
    return make_op(
        "user.set",
        name=name,
        password=password,
        full_name=full_name,
        description=description,
        disabled=disabled,
        password_never_expires=password_never_expires,
        user_cannot_change_password=user_cannot_change_password,
    )


def user_delete(name: str) -> Op[RemovedResult]:
    return make_op("user.delete", name=name)


def user_verify_password(name: str, password: str) -> Op[VerifyPasswordResult]:
    return make_op("user.verify_password", name=name, password=password)


def group_add_member(group: str, member: str) -> Op[ChangedResult]:
    return make_op("group.add_member", group=group, member=member)


def group_remove_member(group: str, member: str) -> Op[ChangedResult]:
    return make_op("group.remove_member", group=group, member=member)


def acl_get(path: str) -> Op[AclGetResult]:
    return make_op("acl.get", path=path)


def acl_grant(path: str, identity: str, rights: str) -> Op[ChangedResult]:
    return make_op("acl.grant", path=path, identity=identity, rights=rights)


def acl_revoke(path: str, identity: str) -> Op[ChangedResult]:
    return make_op("acl.revoke", path=path, identity=identity)


def mapping_verify_logons(
    site: str, skip_users: Sequence[str] | None = None
) -> Op[VerifyLogonsResult]:
    return make_op(
        "mapping.verify_logons",
        site=site,
        skip_users=list(skip_users) if skip_users is not None else None,
    )


# --- checking requests -----------------------------------------------------------------


def validate_op(entry: Any) -> None:
    if not isinstance(entry, dict) or not isinstance(entry.get("op"), str):
        raise ContractError("each op must be an object with an 'op' name")
    spec = OPS.get(entry["op"])
    if spec is None:
        raise ContractError(f"unknown op {entry['op']!r}")
    args = entry.get("args", {})
    if not isinstance(args, dict):
        raise ContractError(f"{spec.name}: 'args' must be an object")
    for name in args:
        if name not in spec.args:
            raise ContractError(f"{spec.name}: unknown argument {name!r}")
    for name, arg in spec.args.items():
        if name not in args:
            if arg.required:
                raise ContractError(f"{spec.name}: missing argument {name!r}")
            continue
        value = args[name]
        kind = _JSON_KINDS[arg.kind]
        # bool is an int in Python; the contract keeps them apart.
        if not isinstance(value, kind) or (arg.kind == "int" and isinstance(value, bool)):
            raise ContractError(f"{spec.name}: argument {name!r} must be {arg.kind}")
        if arg.choices and value not in arg.choices:
            raise ContractError(
                f"{spec.name}: argument {name!r} must be one of {', '.join(arg.choices)}"
            )


def validate_request(request: Any) -> None:
    if not isinstance(request, dict):
        raise ContractError("the request must be a JSON object")
    if request.get("version") != PROTOCOL_VERSION:
        raise ContractError(
            f"protocol version {request.get('version')!r} is not {PROTOCOL_VERSION}"
        )
    ops = request.get("ops")
    if not isinstance(ops, list) or not ops:
        raise ContractError("the request must carry a non-empty list of ops")
    for entry in ops:
        validate_op(entry)


# What a message that holds a secret of 1 to 3 characters becomes (agent.ps1's Hide-Secrets
# and the client's scrub): such a value cannot be masked inside a text (every "a" of it
# replaced is unreadable and still shows where it was), so the text goes whole.
WITHHELD_MESSAGE: Final = (
    "the message was withheld: it contains a value as short as a secret of this request "
    "(1 to 3 characters), which cannot be masked in it; the error code and HRESULT stand"
)


def redact_args(op: str, args: dict[str, Any]) -> dict[str, Any]:
    """Arguments fit for a log: secrets replaced, config elements reduced to their shape."""
    spec = OPS.get(op)
    out: dict[str, Any] = {}
    for name, value in args.items():
        arg = spec.args.get(name) if spec else None
        if arg is not None and arg.secret:
            out[name] = "REDACTED"
        else:
            out[name] = value
    return out


def error_result(
    op: str | None,
    index: int | None,
    code: str,
    message: str,
    hresult: int | None = None,
    results: list[Any] | None = None,
) -> dict[str, Any]:
    return {
        "ok": False,
        "results": results or [],
        "error": {
            "op": op,
            "index": index,
            "code": code,
            "hresult": f"0x{hresult & 0xFFFFFFFF:08X}" if hresult is not None else None,
            "message": message,
        },
    }


def parse_result(stdout: bytes | str) -> dict[str, Any]:
    """Decode an agent's answer (its last result frame on stdout, or a bare JSON document);
    raises ContractError if it is not a contract result."""
    raw = stdout.encode("utf-8") if isinstance(stdout, str) else stdout
    frames = take_results(bytearray(raw.lstrip(b"\xef\xbb\xbf") + b"\n"))
    if frames:
        raw = frames[-1][1]
    text = raw.decode("utf-8", "replace").strip().lstrip("\ufeff")
    try:
        result = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ContractError(f"the agent's output is not JSON ({exc.msg})") from None
    if not isinstance(result, dict) or not isinstance(result.get("ok"), bool):
        raise ContractError("the agent's output has no 'ok' field")
    if not isinstance(result.get("results", []), list):
        raise ContractError("the agent's 'results' is not a list")
    if not result["ok"]:
        error = result.get("error")
        if not isinstance(error, dict) or "code" not in error or "message" not in error:
            raise ContractError("the agent reported a failure without a structured error")
    return result


# --- config elements -----------------------------------------------------------------


def element(
    attributes: dict[str, str] | None = None,
    children: dict[str, dict[str, Any]] | None = None,
    items: list[dict[str, Any]] | None = None,
    clear: bool = False,
) -> dict[str, Any]:
    """Build a config Element (see the module docstring)."""
    return {
        "attributes": dict(attributes or {}),
        "children": dict(children or {}),
        "items": list(items or []),
        "clear": clear,
    }


def is_encrypted_value(value: str) -> bool:
    return bool(ENCRYPTED_VALUE.match(value))


_SID: Final = re.compile(r"S-1-\d+(?:-\d+)+")


def is_sid(value: str) -> bool:
    """Whether ``value`` is a SID in its string form (S-1-5-21-...-1001)."""
    return bool(_SID.fullmatch(value))


# Attributes IIS's configuration system puts on any element to lock parts of it for lower
# levels (Microsoft docs, "Locking in IIS configuration"). They are the host owner's: a
# config.set keeps the ones the replaced element held and ignores any it is given (agent.ps1
# re-applies them with SetMetadata after RevertToParent, as Microsoft's IIS.Administration
# copies them when it replaces an element), and comparisons leave them out.
LOCK_ATTRIBUTES: Final = frozenset(
    {
        "lockAttributes",
        "lockAllAttributesExcept",
        "lockElements",
        "lockAllElementsExcept",
        "lockItem",
    }
)
# Attributes that are no schema attribute of any element: the locks, and configSource
# (the section's content lives in that file, next to applicationHost.config).
META_ATTRIBUTES: Final = LOCK_ATTRIBUTES | {"configSource"}


# Sections the product touches, with their XML path under <configuration>.
SECTION_SSL: Final = "system.webServer/security/access"
# The sslFlags that make IIS require a client certificate over HTTPS: the default of
# SslSettings, ClientCertSite and the stack configuration, and the doctor's fix.
DEFAULT_SSL_FLAGS: Final = ("Ssl", "SslNegotiateCert", "SslRequireCert")
SECTION_ANONYMOUS: Final = "system.webServer/security/authentication/anonymousAuthentication"
SECTION_MAPPING: Final = (
    "system.webServer/security/authentication/iisClientCertificateMappingAuthentication"
)
SECTION_AD_MAPPING: Final = (
    "system.webServer/security/authentication/clientCertificateMappingAuthentication"
)
