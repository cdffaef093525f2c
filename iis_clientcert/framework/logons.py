"""Logons rationed per provider process: at most one failed logon per account and run.

Every logon with a wrong password counts towards the host's account lockout threshold
(FACTS.md "Logons lock accounts"). The host side keeps each request safe (contract.py,
"Logons": never past half the threshold, once per account per request); this side keeps a
whole run to one failed logon per account: a ``pulumi refresh`` reads a LocalUser and the
CertificateMapping that uses its account, and ``up`` reads each of them twice.

:class:`ProviderClient` is the HostClient of providers. Before a batch goes out it answers
``user.verify_password`` from what this process already learnt (the same account and
password: the same answer; an account whose logon already failed: not tried again), and
tells ``mapping.verify_logons`` which accounts to leave alone (``skip_users``). Writes to
an account in the batch (``user.set`` with a password, ``user.delete``) make the ops after
them go to the host. The ledger lives at module level, never in a pickled provider; it
holds keyed digests of passwords (a random key per process), never the passwords.
"""

from __future__ import annotations

import copy
import hashlib
import hmac
import os
import threading
from collections.abc import Sequence
from typing import Any

from iis_clientcert.errors import AgentError
from iis_clientcert.framework.host_facts import FACTS
from iis_clientcert.host import contract
from iis_clientcert.host.client import HostClient
from iis_clientcert.host.contract import Op, VerifyPasswordResult

Account = tuple[str, str]  # (endpoint authority, contract.logon_account_key(user name))


class LogonLedger:
    """What this process learnt from logons, per endpoint (``Connection.authority``:
    scheme://host:port) and account."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._key = os.urandom(32)
        self._answers: dict[Account, dict[str, VerifyPasswordResult]] = {}
        self._failed: set[Account] = set()

    def clear(self) -> None:
        """Forget everything (a new run; tests)."""
        with self._lock:
            self._answers.clear()
            self._failed.clear()

    def _digest(self, password: str) -> str:
        return hmac.new(self._key, password.encode("utf-8"), hashlib.sha256).hexdigest()

    @staticmethod
    def _account(endpoint: str, user_name: str) -> Account:
        return endpoint.lower(), contract.logon_account_key(user_name)

    def prepare(
        self, endpoint: str, ops: Sequence[Op[Any]]
    ) -> tuple[list[Op[Any]], dict[int, Any]]:
        """The ops to send, and the answers known already (by index in ``ops``)."""
        send: list[Op[Any]] = []
        known: dict[int, Any] = {}
        written: set[Account] = set()  # accounts a write earlier in this batch changes
        with self._lock:
            for index, op in enumerate(ops):
                if _changes_password(op):
                    written.add(self._account(endpoint, str(op.args["name"])))
                elif op.name == "user.verify_password":
                    account = self._account(endpoint, str(op.args["name"]))
                    if account not in written:
                        answer = self._answers.get(account, {}).get(
                            self._digest(str(op.args["password"]))
                        )
                        if answer is not None:
                            known[index] = dict(answer)
                            continue
                        if account in self._failed:
                            known[index] = contract.not_checked()
                            continue
                elif op.name == "mapping.verify_logons":
                    skip = sorted(
                        {
                            name
                            for (e, name) in self._failed
                            if e == endpoint.lower() and (e, name) not in written
                        }
                        | {contract.logon_account_key(u) for u in op.args.get("skip_users", [])}
                    )
                    if skip:
                        send.append(contract.mapping_verify_logons(str(op.args["site"]), skip))
                        continue
                send.append(op)
        return send, known

    def record(self, endpoint: str, ops: Sequence[Op[Any]], results: Sequence[Any]) -> None:
        """Learn from the results of ``ops`` (in order; as many as completed)."""
        with self._lock:
            for op, result in zip(ops, results, strict=False):
                if _changes_password(op):
                    account = self._account(endpoint, str(op.args["name"]))
                    self._answers.pop(account, None)
                    self._failed.discard(account)
                elif op.name == "user.verify_password" and result.get("checked"):
                    account = self._account(endpoint, str(op.args["name"]))
                    digest = self._digest(str(op.args["password"]))
                    self._answers.setdefault(account, {})[digest] = VerifyPasswordResult(
                        valid=bool(result["valid"]),
                        hresult=result["hresult"],
                        checked=True,
                    )
                    if not result["valid"]:
                        self._failed.add(account)
                elif op.name == "mapping.verify_logons":
                    for entry in result.get("results", []):
                        if entry.get("checked") and not entry.get("valid"):
                            self._failed.add(self._account(endpoint, str(entry["user_name"])))


def _changes_password(op: Op[Any]) -> bool:
    return op.name == "user.delete" or (op.name == "user.set" and "password" in op.args)


LEDGER = LogonLedger()


class ProviderClient(HostClient):
    """The HostClient providers use: logons rationed through :data:`LEDGER`, host facts
    read once per process and host (:data:`iis_clientcert.framework.host_facts.FACTS`)."""

    def call(self, ops: Sequence[Op[Any]]) -> list[Any]:
        # Keyed like resource ids (scheme://host:port): hosts behind one name on different
        # WinRM ports (NAT) are separate machines, each with the local accounts of its own
        # SAM (FACTS.md, "Local accounts"), which the simulator keeps per host's state.
        authority = self.connection.authority
        send, known = LEDGER.prepare(authority, ops)
        positions = [i for i in range(len(ops)) if i not in known]
        facts_at = [i for i, op in zip(positions, send, strict=True) if op.name == "host.facts"]
        # Host facts: read once per process and host (host_facts.FACTS); while another
        # call reads them, this one sends the rest and takes that call's answer.
        reading = waiting = False
        if facts_at:
            facts, reading = FACTS.claim(authority)
            if not reading:
                waiting = facts is None
                _fill(known, facts_at, facts)
                kept = [(i, op) for i, op in zip(positions, send, strict=True) if i not in facts_at]
                send = [op for _, op in kept]
                positions = [i for i, _ in kept]
        try:
            try:
                sent = super().call(send) if send else []
            except AgentError as exc:
                if waiting:
                    _fill(known, facts_at, FACTS.get(authority))
                done = _merge(len(ops), positions, exc.results, known)
                LEDGER.record(authority, ops, done)
                FACTS.record(authority, ops, done)
                index = positions[exc.index] if exc.index is not None else None
                raise AgentError(
                    self.host,
                    exc.op,
                    exc.code,
                    exc.agent_message,
                    exc.hresult,
                    index,
                    done,
                ) from exc
            if waiting:
                facts = FACTS.wait(authority)
                if facts is None:  # the other call failed before its facts: read them here
                    read = contract.host_facts()
                    facts = super().call([read])[0]
                    FACTS.record(authority, [read], [facts])
                _fill(known, facts_at, facts)
            results = _merge(len(ops), positions, sent, known)
            LEDGER.record(authority, ops, results)
            FACTS.record(authority, ops, results)
            return results
        finally:
            if reading:
                FACTS.release(authority)


def _fill(known: dict[int, Any], positions: Sequence[int], facts: Any) -> None:
    if facts is not None:
        for at in positions:
            known[at] = copy.deepcopy(facts)


def _merge(
    count: int, positions: Sequence[int], sent: Sequence[Any], known: dict[int, Any]
) -> list[Any]:
    """The results in the order of the original ops, up to the first one missing."""
    by_index = dict(known)
    by_index.update(zip(positions, sent, strict=False))
    out: list[Any] = []
    for index in range(count):
        if index not in by_index:
            break
        out.append(by_index[index])
    return out
