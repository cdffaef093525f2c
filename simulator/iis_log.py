"""IIS's W3C request log of each site, written by the HTTPS front and read by site.log_tail.

IIS writes one file a day per site, in %SystemDrive%\\inetpub\\logs\\LogFiles\\W3SVC<site id>
\\u_ex<yyMMdd>.log (UTC, the default ``localTimeRollover="false"``), in the W3C extended
format: ``#`` directives, then one space-separated line per request with the fields that
``#Fields:`` names (spaces in a value become ``+``, an empty value is ``-``). The fields
below are IIS 10's default set. The status IIS answered is split over ``sc-status``,
``sc-substatus`` (the ".16" of 403.16) and ``sc-win32-status`` (the Windows error as an
unsigned decimal, e.g. 2148204809 = 0x800B0109 for an untrusted root), which is what a real
IIS puts nowhere in the response (Microsoft, "The HTTP status code in IIS 7.0 and later
versions").

The state folder keeps the files under DIR/inetpub/logs/LogFiles.
"""

from __future__ import annotations

import datetime as dt
import threading
from pathlib import Path
from typing import Any, Final

FIELDS: Final = (
    "date",
    "time",
    "s-ip",
    "cs-method",
    "cs-uri-stem",
    "cs-uri-query",
    "s-port",
    "cs-username",
    "c-ip",
    "cs(User-Agent)",
    "cs(Referer)",
    "sc-status",
    "sc-substatus",
    "sc-win32-status",
    "time-taken",
)
LOG_ROOT: Final = Path("inetpub") / "logs" / "LogFiles"
# What the op reports as the folder (as on Windows, for messages).
WINDOWS_LOG_ROOT: Final = "C:\\inetpub\\logs\\LogFiles"

_LOCK = threading.Lock()


def site_log_dir(state_dir: Path, site_id: int) -> Path:
    return Path(state_dir) / LOG_ROOT / f"W3SVC{site_id}"


def win32_status(hresult: str | None) -> int:
    """sc-win32-status for an HRESULT: the Win32 code of a FACILITY_WIN32 one
    (0x80070569 -> 1385), else the HRESULT as an unsigned number."""
    if not hresult:
        return 0
    try:
        value = int(hresult, 16) & 0xFFFFFFFF
    except ValueError:
        return 0
    if value & 0xFFFF0000 == 0x80070000:
        return value & 0xFFFF
    return value


def _value(value: Any) -> str:
    text = str(value) if value is not None else ""
    return text.replace(" ", "+") if text else "-"


def write_entry(state_dir: Path, site_id: int, entry: dict[str, Any]) -> None:
    """Append one request (keys: FIELDS) to the site's log of today (UTC)."""
    now = dt.datetime.now(dt.UTC)
    folder = site_log_dir(state_dir, site_id)
    path = folder / f"u_ex{now:%y%m%d}.log"
    values = {"date": f"{now:%Y-%m-%d}", "time": f"{now:%H:%M:%S}", **entry}
    line = " ".join(_value(values.get(name)) for name in FIELDS) + "\r\n"
    with _LOCK:
        folder.mkdir(parents=True, exist_ok=True)
        header = ""
        if not path.exists():
            header = (
                "#Software: Microsoft Internet Information Services 10.0\r\n"
                "#Version: 1.0\r\n"
                f"#Date: {now:%Y-%m-%d %H:%M:%S}\r\n"
                f"#Fields: {' '.join(FIELDS)}\r\n"
            )
        with path.open("a", encoding="utf-8", newline="") as fh:
            fh.write(header + line)


def _int(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        return 0


def parse(lines: list[str]) -> list[dict[str, Any]]:
    """The entries of a W3C log (any field order its #Fields directives say)."""
    fields: list[str] = []
    out: list[dict[str, Any]] = []
    for raw in lines:
        line = raw.rstrip("\r\n")
        if line.startswith("#Fields:"):
            fields = line[len("#Fields:") :].split()
            continue
        if not line or line.startswith("#") or not fields:
            continue
        row = dict(zip(fields, line.split(" "), strict=False))

        def text(name: str, row: dict[str, str] = row) -> str:
            value = row.get(name, "-")
            return "" if value == "-" else value.replace("+", " ")

        out.append(
            {
                "date": text("date"),
                "time": text("time"),
                "method": text("cs-method"),
                "uri_stem": text("cs-uri-stem"),
                "uri_query": text("cs-uri-query"),
                "port": _int(text("s-port")),
                "username": text("cs-username"),
                "client_ip": text("c-ip"),
                "status": _int(text("sc-status")),
                "substatus": _int(text("sc-substatus")),
                "win32_status": _int(text("sc-win32-status")),
            }
        )
    return out


def tail(state_dir: Path, site_id: int, count: int) -> list[dict[str, Any]]:
    """The last ``count`` entries of the site's newest log file (oldest first)."""
    folder = site_log_dir(state_dir, site_id)
    files = sorted(folder.glob("u_ex*.log")) if folder.is_dir() else []
    if not files:
        return []
    with _LOCK:
        lines = files[-1].read_text("utf-8").splitlines()
    return parse(lines)[-count:] if count > 0 else []


__all__ = ["FIELDS", "parse", "site_log_dir", "tail", "win32_status", "write_entry"]
