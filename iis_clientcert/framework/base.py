"""What every resource provider shares: validation plumbing, the pure diff, the host call.

A resource module declares its inputs once (``inputs``, see framework/inputs.py), turns
them into a typed spec (``validate``), says what to read from the host as named ops
(``read_plan``) and how to make its current state of the results (``parse_current``,
which reads them by name), gives a pure ``plan(current, desired, previous)`` and how to
turn live state back into inputs (``live_inputs``). :class:`IisProvider` turns those into
Pulumi's check / diff / create / read / update / delete with these guarantees:

* ``check`` never touches a host; bad input becomes a CheckFailure naming the property.
* ``diff`` is pure: it compares stored outputs with the new inputs.
* ``create`` / ``update`` cost at most two agent calls: one read batch, then one batch
  with the writes followed by the reads that verify them.
* ``read`` returns live state and the inputs that would produce it.

Provider classes hold no state: they are pickled by reference into Pulumi's state and
open their host session inside each method.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, Generic, TypeVar
from urllib.parse import urlsplit

from pulumi.dynamic import (
    CheckFailure,
    CheckResult,
    CreateResult,
    DiffResult,
    ReadResult,
    ResourceProvider,
    UpdateResult,
)
from pulumi.output import Unknown

from iis_clientcert.errors import HostError, NotConvergedError, ValidationError
from iis_clientcert.framework.inputs import Inputs
from iis_clientcert.framework.logons import ProviderClient
from iis_clientcert.host.client import HostClient, ReadPlan, Reads
from iis_clientcert.host.connection import Connection
from iis_clientcert.host.contract import Op, SiteInfo

log = logging.getLogger("iis_clientcert")

# Certificates (trusted roots, server certificates) that expire within this many days draw
# a warning at check: early enough to renew before clients see an expired chain.
EXPIRY_WARNING_DAYS = 30

# The value Pulumi hands a provider for an input not known during preview.
UNKNOWN = "04da6b54-80e4-46f7-96ec-b56ff0331ba9"


def is_unknown(value: Any) -> bool:
    """True when a value, or anything inside it, is not known yet (preview).

    The provider server hands unknowns over as ``pulumi.output.Unknown`` objects (it
    deserialises with keep_unknowns) or, in some paths, as the sentinel string."""
    if isinstance(value, Unknown):
        return True
    if isinstance(value, str):
        return value == UNKNOWN
    if isinstance(value, Mapping):
        return any(is_unknown(v) for v in value.values())
    if isinstance(value, list | tuple):
        return any(is_unknown(v) for v in value)
    return False


@dataclass(frozen=True)
class Change:
    """One step of a plan: what a person reads, and the ops that do it."""

    summary: str
    ops: list[Op[Any]] = field(default_factory=list)


Desired = TypeVar("Desired")
Current = TypeVar("Current")


@dataclass(frozen=True)
class Applied(Generic[Current]):
    before: Current  # what the first read found
    after: Current  # what the verifying read found (same as before when nothing changed)
    changes: list[Change]


class IisProvider(ResourceProvider, Generic[Desired, Current]):
    """Base of every resource provider. Subclasses implement the hooks below."""

    kind: ClassVar[str] = "Resource"
    # Every input, declared once (name, kind, default, doc, secret, replace).
    inputs: ClassVar[Inputs] = Inputs("Resource")
    # Outputs that are computed, not inputs (kept out of the diff and of read's inputs).
    computed: ClassVar[tuple[str, ...]] = ()
    # Inputs that may be unknown during a preview (say, the thumbprint of a certificate
    # being created), with a stand-in that validates: the other inputs are still checked
    # and normalised, so the diff does not see raw values as changes.
    placeholders: ClassVar[dict[str, Any]] = {}

    # --- hooks -----------------------------------------------------------------------

    def validate(self, inputs: Mapping[str, Any]) -> Desired:
        raise NotImplementedError

    def normalised_inputs(self, desired: Desired) -> dict[str, Any]:
        """The inputs as Pulumi should store them (canonical forms, defaults filled)."""
        raise NotImplementedError

    def resource_id(self, connection: Connection, desired: Desired) -> str:
        raise NotImplementedError

    def read_plan(self, desired: Desired) -> ReadPlan:
        """What to read from the host, each op under a name (one batch)."""
        raise NotImplementedError

    def delete_read_plan(self, desired: Desired) -> ReadPlan:
        """What delete reads: by default ``read_plan``. A provider whose reads include
        logons leaves them out (they count towards lockout and prove nothing a delete
        needs); ``parse_current`` then finds those names missing."""
        return self.read_plan(desired)

    def parse_current(self, desired: Desired, reads: Reads) -> Current:
        """The current state, from the results of ``read_plan`` (read by name)."""
        raise NotImplementedError

    def plan(
        self, current: Current, desired: Desired, previous: Mapping[str, Any] | None = None
    ) -> list[Change]:
        """The changes that take the host from ``current`` to ``desired`` (pure).

        ``previous`` holds the stored outputs of an update (None at create, and when
        checking that the writes took): what only the last run knows, say that a password
        input changed although the host cannot show passwords."""
        raise NotImplementedError

    def advise(self, desired: Desired) -> list[str]:
        """Findings that belong to ``check`` only (time-dependent ones, hints): raise
        ValidationError for an error, return warnings. Kept out of ``validate`` so that a
        certificate that expired after it was deployed can still be refreshed and deleted."""
        return []

    def preflight(self, current: Current, desired: Desired) -> None:
        """Host-dependent validation after the first read, before any write."""

    def outputs(
        self,
        desired: Desired,
        before: Current | None,
        after: Current,
        previous: Mapping[str, Any] | None,
    ) -> dict[str, Any]:
        """Computed outputs added to the inputs.

        ``before`` is what create found before writing (None for update and read),
        ``previous`` the stored outputs (None at create): together they carry facts such
        as "the value found at create" from the first run to the delete.
        """
        return {}

    def exists(self, current: Current) -> bool:
        """Whether the managed object is on the host (for refresh)."""
        return True

    def leftovers(self, current: Current, stored: Mapping[str, Any]) -> bool:
        """Whether something of a resource whose object is gone is still on the host, that
        only its stored outputs can name (a deleted account's folder rules, by SID): refresh
        then keeps the resource (as drifted) instead of forgetting what names them."""
        return False

    def stale_inputs(self, olds: Mapping[str, Any]) -> list[str]:
        """Inputs the stored outputs know to be out of step with the host although their
        values look the same: the host never shows a password, so a refresh that finds one
        no longer logging on says so in a computed output, and the diff names the input."""
        return []

    def notices(self, desired: Desired, current: Current) -> list[str]:
        """What the person running Pulumi should know about a read (say, a password that
        could not be verified without risking an account lockout), shown as warnings."""
        return []

    def live_inputs(
        self, desired: Desired, current: Current, stored: Mapping[str, Any]
    ) -> dict[str, Any]:
        """The inputs that would produce the live state (refresh)."""
        raise NotImplementedError

    def delete_changes(
        self, desired: Desired, current: Current, stored: Mapping[str, Any]
    ) -> list[Change]:
        raise NotImplementedError

    # --- Pulumi provider interface ---------------------------------------------------

    def check(self, _olds: dict[str, Any], news: dict[str, Any]) -> CheckResult:
        unknown = {k for k, v in news.items() if k != "__provider" and is_unknown(v)}
        if unknown - set(self.placeholders):
            # Values not known yet are checked again when they are (at update time).
            return CheckResult(news, [])
        probe = {**news, **{k: self.placeholders[k] for k in unknown}}
        try:
            desired = self.validate(probe)
            connection = Connection.from_input(_require(probe, "connection", self.kind), self.kind)
            notes = self.advise(desired)
        except ValidationError as exc:
            return CheckResult(news, [CheckFailure(exc.property, str(exc))])
        for note in notes:
            warn(self.kind, note)
        inputs = self.normalised_inputs(desired)
        inputs["connection"] = connection.to_input()
        inputs.update({k: news[k] for k in unknown})
        return CheckResult(inputs, [])

    def diff(self, _id: str, olds: dict[str, Any], news: dict[str, Any]) -> DiffResult:
        changed: list[str] = []
        replaces: list[str] = []
        for key in sorted(set(news) | set(olds)):
            if key == "__provider" or key in self.computed:
                continue
            if key == "connection":
                old_conn, new_conn = olds.get(key) or {}, news.get(key) or {}
                if is_unknown(new_conn):
                    changed.append(key)  # known at update time; then diffed for real
                    continue
                if _endpoint_host(old_conn) != _endpoint_host(new_conn):
                    replaces.append(key)  # another host: another object
                if old_conn != new_conn:
                    changed.append(key)
                continue
            if olds.get(key) != news.get(key) or is_unknown(news.get(key)):
                changed.append(key)
                if key in self.inputs.replace_on:
                    replaces.append(key)
        for key in self.stale_inputs(olds):
            if key not in changed:
                changed.append(key)
                if key in self.inputs.replace_on:
                    replaces.append(key)
        return DiffResult(
            changes=bool(changed), replaces=replaces, delete_before_replace=bool(replaces)
        )

    def create(self, props: dict[str, Any]) -> CreateResult:
        connection, desired = self._parse(props)

        def undo(client: HostClient, before: Current) -> None:
            self._undo_create(client, props, desired, before)

        applied = self._converge(connection, desired, None, undo)
        outs = self._outs(props, desired, applied.before, applied.after, None)
        return CreateResult(self.resource_id(connection, desired), outs)

    def update(self, _id: str, olds: dict[str, Any], news: dict[str, Any]) -> UpdateResult:
        connection, desired = self._parse(news)
        applied = self._converge(connection, desired, olds)
        return UpdateResult(self._outs(news, desired, None, applied.after, olds))

    def read(self, id_: str, props: dict[str, Any]) -> ReadResult:
        connection, desired = self._parse(props)
        current = self._read_current(ProviderClient(connection), desired)
        if not self.exists(current) and not self.leftovers(current, props):
            return ReadResult(None, {})
        for note in self.notices(desired, current):
            warn(self.kind, f"{connection.host}: {note}")
        inputs = self.live_inputs(desired, current, props)
        inputs["connection"] = props["connection"]
        outs = dict(inputs)
        outs.update(self.outputs(desired, None, current, props))
        # The stored id stands: resources created before ids carried the endpoint's scheme
        # and port keep the id they were created with (only create makes new ids).
        return ReadResult(id_, outs, inputs)

    def delete(self, _id: str, props: dict[str, Any]) -> None:
        connection, desired = self._parse(props)
        for change in self._remove(ProviderClient(connection), desired, props):
            log.info("%s: %s", self.kind, change.summary)

    # --- machinery -------------------------------------------------------------------

    def _parse(self, props: Mapping[str, Any]) -> tuple[Connection, Desired]:
        connection = Connection.from_input(_require(props, "connection", self.kind), self.kind)
        return connection, self.validate(props)

    def _read_current(self, client: HostClient, desired: Desired) -> Current:
        return self.parse_current(desired, client.read(self.read_plan(desired)))

    def _remove(
        self, client: HostClient, desired: Desired, stored: Mapping[str, Any]
    ) -> list[Change]:
        """Delete what ``stored`` (the outputs of a create) says the resource owns, as the
        host is now; returns the changes made."""
        current = self.parse_current(desired, client.read(self.delete_read_plan(desired)))
        changes = self.delete_changes(desired, current, stored)
        ops = [op for change in changes for op in change.ops]
        if ops:
            client.call(ops)
        return changes

    def _converge(
        self,
        connection: Connection,
        desired: Desired,
        previous: Mapping[str, Any] | None,
        undo: Callable[[HostClient, Current], None] | None = None,
    ) -> Applied[Current]:
        client = ProviderClient(connection)
        to_read = self.read_plan(desired)
        current = self.parse_current(desired, client.read(to_read))
        for note in self.notices(desired, current):
            warn(self.kind, f"{connection.host}: {note}")
        self.preflight(current, desired)
        changes = self.plan(current, desired, previous)
        write_ops = [op for change in changes for op in change.ops]
        if not write_ops:
            return Applied(current, current, [])
        try:
            # Writes and the reads that verify them travel as one batch: one agent call.
            verified = self.parse_current(desired, client.write_and_read(write_ops, to_read))
            # Without ``previous``: what is left to do on the host, not what changed since.
            leftover = self.plan(verified, desired)
            if leftover:
                raise NotConvergedError(connection.host, self.kind, [c.summary for c in leftover])
        except HostError:
            if undo is not None:
                undo(client, current)
            raise
        return Applied(current, verified, changes)

    def _undo_create(
        self, client: HostClient, props: Mapping[str, Any], desired: Desired, before: Current
    ) -> None:
        """Take back what a failed create may have written (some or all of its batch).

        A failed create leaves nothing in Pulumi's state, so the next ``up`` creates again
        and would take our own partial writes for what was there before (an "adopted"
        account, a "prior" sslFlags value): destroy would then keep them. Undoing with the
        facts a successful create would have stored avoids that. If the host cannot be
        reached for the undo either, the original error stands and the next run adopts.
        """
        try:
            stored = self._outs(props, desired, before, before, None)
            for change in self._remove(client, desired, stored):
                log.warning("%s: create failed; undone: %s", self.kind, change.summary)
        except HostError as exc:
            log.warning("%s: create failed and could not be undone: %s", self.kind, exc)

    def _outs(
        self,
        props: Mapping[str, Any],
        desired: Desired,
        before: Current | None,
        after: Current,
        previous: Mapping[str, Any] | None,
    ) -> dict[str, Any]:
        outs = self.normalised_inputs(desired)
        outs["connection"] = props["connection"]
        outs.update(self.outputs(desired, before, after, previous))
        return outs


def warn(kind: str, message: str) -> None:
    """A warning for the person running Pulumi: provider stderr reaches the CLI."""
    print(f"warning: {kind}: {message}", file=sys.stderr)


def _require(props: Mapping[str, Any], key: str, kind: str) -> Any:
    if props.get(key) is None:
        raise ValidationError(kind, key, None, "is required")
    return props[key]


def _endpoint_host(conn: Mapping[str, Any]) -> str:
    endpoint = str(conn.get("endpoint", ""))
    return (urlsplit(endpoint).hostname or "").lower()


# --- small validation helpers shared by resources (more in framework/inputs.py) -------


# Site names: IIS refuses these characters in a site name.
_SITE_FORBIDDEN = set('\\/?;:@&=+$,|"<>*')


def validate_site(kind: str, value: str, key: str = "site") -> str:
    if any(ch in _SITE_FORBIDDEN for ch in value) or any(ord(ch) < 32 for ch in value):
        raise ValidationError(
            kind,
            key,
            value,
            "contains a character IIS does not allow in a site name",
            'Site names cannot contain \\ / ? ; : @ & = + $ , | " < > * or control characters.',
        )
    if value != value.strip():
        raise ValidationError(kind, key, value, "has leading or trailing spaces")
    return value


def validate_app_path(kind: str, value: str, key: str = "path") -> str:
    """An application or folder path below a site: '' or '/app[/sub]'."""
    if value in ("", "/"):
        return ""
    if not value.startswith("/") or value.endswith("/") or "//" in value:
        raise ValidationError(
            kind, key, value, "must look like /app or /app/sub (no trailing slash)"
        )
    if any(ch in value for ch in '\\?;:@&=+$,|"<>*') or any(ord(ch) < 32 for ch in value):
        raise ValidationError(kind, key, value, "contains a character IIS does not allow")
    return value


def site_exists(sites: Sequence[SiteInfo], site: str) -> SiteInfo | None:
    for entry in sites:
        if entry["name"] == site:
            return entry
    return None


def require_site(kind: str, connection_host: str, sites: Sequence[SiteInfo], site: str) -> SiteInfo:
    found = site_exists(sites, site)
    if found is None:
        names = ", ".join(sorted(s["name"] for s in sites)) or "none"
        raise ValidationError(
            kind,
            "site",
            site,
            f"no such site on {connection_host} (sites there: {names})",
            "Create the site in IIS first or correct the name.",
        )
    return found


Validator = Callable[[Mapping[str, Any]], Any]
