"""Client-certificate PKIs for tests of what a host makes of client certificates."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from iis_clientcert_simulator import pki

# Where the root of a ClientPki publishes its CRL (carol names it as her CDP).
CRL_URL = "http://pki.doctor.test/root.crl"


@dataclass(frozen=True)
class ClientPki:
    ca: pki.Issued  # a root the host trusts
    intermediate: pki.Issued  # an issuing CA under it
    other_ca: pki.Issued  # a root nobody trusts
    alice: pki.Issued  # issued by the root
    bob: pki.Issued  # issued by the issuing CA
    expired: pki.Issued  # issued by the root, expired the day before ``now`` (CN=old)
    stranger: pki.Issued  # issued by the untrusted root (CN=mallory)
    carol: pki.Issued  # issued by the root, names CRL_URL as its CRL distribution point


def make_client_pki(now: dt.datetime) -> ClientPki:
    """A PKI whose certificates (but the expired one) are valid from a month before ``now``
    to three months after it."""
    start = now - dt.timedelta(days=30)
    end = now + dt.timedelta(days=90)
    ca = pki.make_ca("Doctor Root CA", not_before=start - dt.timedelta(days=1))
    inter = pki.make_intermediate(ca, "Doctor Issuing CA", not_before=start)
    other = pki.make_ca("Unknown Root CA", not_before=start)
    return ClientPki(
        ca=ca,
        intermediate=inter,
        other_ca=other,
        alice=pki.make_leaf(ca, "alice", not_before=start, not_after=end),
        bob=pki.make_leaf(inter, "bob", not_before=start, not_after=end),
        expired=pki.make_leaf(ca, "old", not_before=start, not_after=now - dt.timedelta(days=1)),
        stranger=pki.make_leaf(other, "mallory", not_before=start, not_after=end),
        carol=pki.make_leaf(ca, "carol", not_before=start, not_after=end, crl_urls=[CRL_URL]),
    )
