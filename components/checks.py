"""What the components share: Inputs resolved for checks, the program's register of
host-scoped objects, and the error a Pulumi user sees.

Checks across resources need values. A value given plainly is checked when the program
runs, before anything is registered; a value given as a Pulumi Output is checked when it
resolves (``when_known``), and every child resource of the component waits for that check
(``gate``): a failed check stops the component's resources, and the run ends with the
check's message (a ``pulumi.RunError``: one line, no traceback).

The register (one per program run) knows, per host endpoint, which component declared each
trusted CA, account, IIS site and https port, so a second declaration is refused naming
both places.
"""

from __future__ import annotations

import difflib
import threading
import weakref
from collections.abc import Callable, Mapping, Sequence
from dataclasses import MISSING, dataclass, field, fields, is_dataclass
from typing import Any, TypeVar, cast

import pulumi

from iis_clientcert.errors import IisClientCertError, ValidationError
from iis_clientcert.host.connection import FIELDS as CONNECTION_FIELDS
from iis_clientcert.host.connection import endpoint_authority

T = TypeVar("T")


class ArgsError(IisClientCertError, pulumi.RunError):
    """Bad component arguments, naming the component, the property and the fix.

    A ``pulumi.RunError``, so Pulumi prints the message alone, without a traceback. Not a
    ValueError on purpose: the SDK wraps a ValueError raised while it resolves a resource's
    inputs into "While processing resource ..." text with a traceback."""

    def __init__(self, resource: str, prop: str, value: Any, problem: str, fix: str = "") -> None:
        self.resource = resource
        self.property = prop
        self.value = value
        self.problem = problem
        self.fix = fix
        super().__init__(str(ValidationError(resource, prop, value, problem, fix)))

    @classmethod
    def of(cls, exc: ValidationError | ArgsError) -> ArgsError:
        if isinstance(exc, ArgsError):
            return exc
        return cls(exc.resource, exc.property, exc.value, exc.problem, exc.fix)


# --- Inputs ------------------------------------------------------------------------------


def is_output(value: Any) -> bool:
    return isinstance(value, pulumi.Output)


def contains_output(value: Any) -> bool:
    """True when a value, or anything inside it (dataclasses, dicts, lists), is an Output."""
    if isinstance(value, pulumi.Output):
        return True
    if is_dataclass(value) and not isinstance(value, type):
        return any(contains_output(getattr(value, f.name)) for f in fields(value))
    if isinstance(value, Mapping):
        return any(contains_output(v) for v in value.values())
    if isinstance(value, list | tuple):
        return any(contains_output(v) for v in value)
    return False


def as_tree(value: Any) -> Any:
    """Dataclasses as dicts, recursively, without copying what is inside (``asdict``
    deep-copies, and Outputs refuse to be copied)."""
    if is_dataclass(value) and not isinstance(value, type):
        return {f.name: as_tree(getattr(value, f.name)) for f in fields(value)}
    if isinstance(value, Mapping):
        return {str(k): as_tree(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [as_tree(v) for v in value]
    return value


def when_known(value: Any, check: Callable[[Any], T]) -> T | pulumi.Output[T]:
    """``check(plain value)`` now if nothing inside ``value`` is an Output, else when every
    Output inside has resolved (not at all in a preview that cannot know them: the
    providers' own check runs then)."""
    tree = as_tree(value)
    if not contains_output(tree):
        return check(tree)
    return pulumi.Output.from_input(tree).apply(check)


def gate(result: Any) -> pulumi.Input[pulumi.Resource] | None:
    """A ``depends_on`` entry that waits for a check made by ``when_known``: resolves to no
    resource, or fails the resource that lists it when the check failed."""
    if not is_output(result):
        return None
    return cast("pulumi.Input[pulumi.Resource]", result.apply(lambda _: None))


def plain_text(value: Any) -> str | None:
    """The value when it is a plain string now (not an Output), else None."""
    return value if isinstance(value, str) else None


def coerce(cls: type[T], value: Any, where: str, prop: str) -> T:
    """A dataclass from itself or from its ``...Dict`` form, naming an unknown key."""
    if isinstance(value, cls):
        return value
    if not isinstance(value, Mapping):
        raise ArgsError(
            where, prop, None, f"must be a {cls.__name__} or a dict, not {type(value).__name__}"
        )
    known = [f.name for f in fields(cast("Any", cls))]
    for key in value:
        if key not in known:
            close = difflib.get_close_matches(str(key), known, n=1)
            hint = f"Did you mean {close[0]!r}? " if close else ""
            raise ArgsError(
                where, _path(prop, key), None, "is not a known property", hint + ", ".join(known)
            )
    missing = [
        f.name
        for f in fields(cast("Any", cls))
        if f.name not in value and f.default is MISSING and f.default_factory is MISSING
    ]
    if missing:
        raise ArgsError(where, _path(prop, missing[0]), None, "is required")
    return cls(**value)


def _path(prop: str, key: str) -> str:
    return f"{prop}.{key}" if prop else key


# --- the connection ----------------------------------------------------------------------

_CONNECTION_DEFAULTS: dict[str, Any] = {"transport": "ntlm"}


def _connection_dict(value: Any, where: str) -> dict[str, Any]:
    tree = as_tree(value)
    if not isinstance(tree, Mapping):
        raise ArgsError(where, "connection", None, "must be a ConnectionArgs or a dict")
    for key in tree:
        if key not in CONNECTION_FIELDS:
            raise ArgsError(
                where,
                f"connection.{key}",
                None,
                "is not a connection property",
                f"use one of: {', '.join(CONNECTION_FIELDS)}",
            )
    return {k: v for k, v in tree.items() if v is not None}


def connection_fields(connection: Any, where: str) -> dict[str, Any]:
    """The connection as a dict of field Inputs (what every resource takes): from
    ConnectionArgs, a ConnectionArgsDict, or an Output of either."""
    if not is_output(connection):
        return _connection_dict(connection, where)
    whole: pulumi.Output[dict[str, Any]] = connection.apply(
        lambda value: pulumi.Output.from_input(_connection_dict(value, where))
    )

    def field_of(key: str) -> pulumi.Output[Any]:
        return whole.apply(lambda d: d.get(key, _CONNECTION_DEFAULTS.get(key)))

    return {key: field_of(key) for key in CONNECTION_FIELDS}


def authority_of(connection: Mapping[str, Any]) -> pulumi.Input[str]:
    """The endpoint's ``scheme://host:port`` (the register's key), plain or an Output."""
    endpoint = connection.get("endpoint")
    if isinstance(endpoint, str):
        return endpoint_authority(endpoint)
    return pulumi.Output.from_input(endpoint).apply(lambda e: endpoint_authority(str(e or "")))


# --- the register of host-scoped objects ------------------------------------------------


@dataclass
class _Port:
    site: str
    host_name: str
    sni: bool
    place: str


@dataclass
class _Host:
    owner: str | None = None  # the ClientCertHost of this endpoint, if any
    roots: dict[str, str] = field(default_factory=dict)  # thumbprint -> place
    users: dict[str, str] = field(default_factory=dict)  # lower-cased name -> place
    sites: dict[str, str] = field(default_factory=dict)  # lower-cased IIS site -> place
    ports: dict[tuple[str, int], list[_Port]] = field(default_factory=dict)


ONE_OWNER_FIX = (
    "Declare it once on a ClientCertHost and let every site refer to it by name "
    '(see README, "Host-scoped objects: ClientCertHost")'
)


class Register:
    """Who declared what on each host endpoint, for one program run."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._hosts: dict[str, _Host] = {}

    def _host(self, authority: str) -> _Host:
        return self._hosts.setdefault(authority, _Host())

    def claim_host(self, authority: str, where: str) -> None:
        with self._lock:
            host = self._host(authority)
            if host.owner is not None and host.owner != where:
                raise ArgsError(
                    where,
                    "connection.endpoint",
                    authority,
                    f"is also the host of {host.owner}",
                    "Use one ClientCertHost per host and pass it to every site on that host",
                )
            host.owner = where

    def claim_root(self, authority: str, thumbprint: str, subject: str, place: str) -> None:
        self._claim(authority, "roots", thumbprint, f"{subject} ({thumbprint})", place)

    def claim_user(self, authority: str, name: str, place: str) -> None:
        self._claim(authority, "users", name.lower(), name, place)

    def _claim(self, authority: str, kind: str, key: str, shown: str, place: str) -> None:
        with self._lock:
            table: dict[str, str] = getattr(self._host(authority), kind)
            other = table.get(key)
            if other is None or other == place:
                table[key] = place
                return
        where, _, prop = place.partition(": ")
        what = "a certificate" if kind == "roots" else "an account"
        raise ArgsError(
            where,
            prop,
            shown,
            f"is also declared by {other} on {authority}: {what} on a host needs one owner "
            "(removing either declaration would delete it from under the other)",
            ONE_OWNER_FIX,
        )

    def claim_site(self, authority: str, site: str, where: str) -> None:
        with self._lock:
            sites = self._host(authority).sites
            other = sites.get(site.lower())
            if other is None or other == where:
                sites[site.lower()] = where
                return
        raise ArgsError(
            where,
            "site",
            site,
            f"is also managed by {other} on {authority}: both would own its mappings and sslFlags",
            "Manage each IIS site with one ClientCertSite",
        )

    def claim_port(
        self,
        authority: str,
        ip: str,
        port: int,
        site: str,
        host_name: str,
        sni: bool,
        where: str,
    ) -> None:
        mine = _Port(site, host_name, sni, where)
        with self._lock:
            taken = self._host(authority).ports.setdefault((ip, port), [])
            for other in taken:
                if other.place == where:
                    continue
                if not (sni and other.sni and host_name.lower() != other.host_name.lower()):
                    raise ArgsError(
                        where,
                        "https.port",
                        port,
                        f"is also bound by site {other.site!r} ({other.place}) on {authority} "
                        f"({ip}:{port}) without SNI: only one certificate can answer there",
                        "Use another port, or SNI with distinct host names on both sites",
                    )
            taken.append(mine)


_REGISTERS: weakref.WeakKeyDictionary[Any, Register] = weakref.WeakKeyDictionary()
_REGISTERS_LOCK = threading.Lock()


def register() -> Register:
    """The register of the program run in progress (a program run by the Automation API
    runs again in the same process for preview and up: each run starts empty)."""
    root = pulumi.runtime.get_root_resource()
    if root is None:
        return Register()
    with _REGISTERS_LOCK:
        found = _REGISTERS.get(root)
        if found is None:
            found = _REGISTERS[root] = Register()
        return found


def names_list(values: Sequence[str]) -> str:
    return ", ".join(values) if values else "none"
