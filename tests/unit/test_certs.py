"""iis_clientcert/certs.py: every input form, every malformed form, chain checks, flags."""

from __future__ import annotations

import base64
import datetime as dt
import pickle
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.serialization import pkcs7
from cryptography.x509.oid import NameOID

from iis_clientcert import certs
from iis_clientcert.errors import CertificateError
from iis_clientcert_simulator import pki

PFX_PASSWORD = b"Corpus-Pa55word!"
WRONG_PASSWORD = "Not-The-Pa55word?"


def _wrap(text: str, width: int, sep: str) -> str:
    return sep.join(text[i : i + width] for i in range(0, len(text), width))


def _bag_attributes_pem(leaf: pki.Issued, issuer: pki.Issued) -> bytes:
    """What ``openssl pkcs12 -in x.pfx -nodes`` prints: attributes before each block."""
    return (
        b"Bag Attributes\n"
        b"    localKeyID: 01 00 00 00 \n"
        b"    friendlyName: alice\n"
        b"subject=C = DE, CN = alice\n"
        b"issuer=CN = "
        + issuer.common_name.encode()
        + b"\n"
        + leaf.cert_pem()
        + b"Bag Attributes\n"
        b"    friendlyName: issuer\n"
        b"subject=CN = "
        + issuer.common_name.encode()
        + b"\n"
        + issuer.cert_pem()
        + b"Bag Attributes\n"
        b"    localKeyID: 01 00 00 00 \n"
        b"Key Attributes: <No Attributes>\n" + leaf.key_pem()
    )


def _openssl_rc2_pfx(leaf: pki.Issued, tmp: Path) -> bytes:
    """An RC2-40 PFX as Windows Server 2012 or old openssl wrote them (cryptography cannot)."""
    if shutil.which("openssl") is None:
        pytest.skip("openssl CLI not installed: cannot build an RC2 PFX")
    (tmp / "c.pem").write_bytes(leaf.cert_pem())
    (tmp / "k.pem").write_bytes(leaf.key_pem())
    out = tmp / "rc2.pfx"
    result = subprocess.run(
        [
            "openssl",
            "pkcs12",
            "-export",
            "-legacy",
            "-certpbe",
            "PBE-SHA1-RC2-40",
            "-keypbe",
            "PBE-SHA1-3DES",
            "-in",
            str(tmp / "c.pem"),
            "-inkey",
            str(tmp / "k.pem"),
            "-passout",
            "env:PFXPW",
            "-out",
            str(out),
        ],
        capture_output=True,
        env={"PFXPW": PFX_PASSWORD.decode(), "PATH": "/usr/bin:/bin:/usr/local/bin"},
        check=False,
    )
    if result.returncode != 0:
        pytest.skip(f"openssl cannot write RC2 PFX here: {result.stderr[:200]!r}")
    return out.read_bytes()


# --------------------------------------------------------------------------- corpus

Form = tuple[Any, bytes | str | None]  # (data, password)


@pytest.fixture(scope="module")
def forms(
    client_leaf: pki.Issued,
    intermediate_ca: pki.Issued,
    root_ca: pki.Issued,
    tmp_path_factory: pytest.TempPathFactory,
) -> dict[str, Form]:
    pem = client_leaf.cert_pem()
    der = client_leaf.cert_der()
    blob = client_leaf.blob
    chain = [intermediate_ca, root_ca]
    pfx_modern = client_leaf.pfx(PFX_PASSWORD, chain=chain)
    return {
        "pem_lf_bytes": (pem, None),
        "pem_lf_str": (pem.decode(), None),
        "pem_crlf": (pem.replace(b"\n", b"\r\n"), None),
        "pem_indented_trailing_spaces": (
            b"\n\n  " + pem.replace(b"\n", b"  \n") + b"\n\n",
            None,
        ),
        "pem_bag_attributes": (_bag_attributes_pem(client_leaf, intermediate_ca), None),
        "pem_bundle_leaf_first": (pem + intermediate_ca.cert_pem() + root_ca.cert_pem(), None),
        "pem_with_key_after": (pem + client_leaf.key_pem(), None),
        "pem_key_before": (client_leaf.key_pem() + pem, None),
        "pem_utf8_bom": (b"\xef\xbb\xbf" + pem, None),
        "pem_utf16_bom": (pem.decode().encode("utf-16"), None),  # PowerShell 5.1 Out-File
        "der": (der, None),
        "der_bytearray": (bytearray(der), None),
        "b64_one_line_str": (blob, None),
        "b64_one_line_bytes": (blob.encode(), None),
        "b64_64_lf": (_wrap(blob, 64, "\n"), None),
        "b64_76_crlf": (_wrap(blob, 76, "\r\n") + "\r\n", None),
        "b64_spaces": (_wrap(blob, 40, " "), None),
        "b64_missing_padding": (blob.rstrip("="), None),
        "pfx_modern": (pfx_modern, PFX_PASSWORD),
        "pfx_modern_str_password": (pfx_modern, PFX_PASSWORD.decode()),
        "pfx_legacy_3des": (client_leaf.pfx(PFX_PASSWORD, legacy=True, chain=chain), PFX_PASSWORD),
        "pfx_legacy_rc2": (
            _openssl_rc2_pfx(client_leaf, tmp_path_factory.mktemp("rc2")),
            PFX_PASSWORD,
        ),
        "pfx_no_password": (client_leaf.pfx(None), None),
        "pfx_base64": (base64.b64encode(pfx_modern).decode(), PFX_PASSWORD),
        "pfx_base64_wrapped": (
            _wrap(base64.b64encode(pfx_modern).decode(), 64, "\r\n"),
            PFX_PASSWORD,
        ),
        "p7b_der_chain_first": (
            pkcs7.serialize_certificates(
                [root_ca.certificate, intermediate_ca.certificate, client_leaf.certificate],
                serialization.Encoding.DER,
            ),
            None,
        ),
        "p7b_pem": (
            pkcs7.serialize_certificates(
                [intermediate_ca.certificate, client_leaf.certificate], serialization.Encoding.PEM
            ),
            None,
        ),
    }


CORPUS_IDS = [
    "pem_lf_bytes",
    "pem_lf_str",
    "pem_crlf",
    "pem_indented_trailing_spaces",
    "pem_bag_attributes",
    "pem_bundle_leaf_first",
    "pem_with_key_after",
    "pem_key_before",
    "pem_utf8_bom",
    "pem_utf16_bom",
    "der",
    "der_bytearray",
    "b64_one_line_str",
    "b64_one_line_bytes",
    "b64_64_lf",
    "b64_76_crlf",
    "b64_spaces",
    "b64_missing_padding",
    "pfx_modern",
    "pfx_modern_str_password",
    "pfx_legacy_3des",
    "pfx_legacy_rc2",
    "pfx_no_password",
    "pfx_base64",
    "pfx_base64_wrapped",
    "p7b_der_chain_first",
    "p7b_pem",
]


@pytest.mark.parametrize("form", CORPUS_IDS, ids=CORPUS_IDS)
def test_every_form_gives_the_same_blob_and_thumbprint(form, forms, client_leaf):
    data, password = forms[form]
    info = certs.load_certificate(data, password)
    expected_thumb = client_leaf.certificate.fingerprint(hashes.SHA1()).hex().upper()  # noqa: S303
    assert info.thumbprint == expected_thumb
    assert info.blob == base64.b64encode(client_leaf.cert_der()).decode()
    assert "\n" not in info.blob and " " not in info.blob
    assert info.der == client_leaf.cert_der()
    assert certs.to_blob(data, password) == info.blob


def test_corpus_covers_every_form(forms):
    assert sorted(forms) == sorted(CORPUS_IDS)


# ------------------------------------------------------------------------- malformed


def _pem_cut(pem: bytes, keep: int) -> bytes:
    return pem[:keep]


def _pem_body_truncated(pem: bytes) -> bytes:
    lines = pem.decode().splitlines()
    body = lines[1:-1]
    return "\n".join([lines[0], *body[: len(body) // 2], lines[-1]]).encode() + b"\n"


def _csr(leaf: pki.Issued) -> x509.CertificateSigningRequest:
    return (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "csr")]))
        .sign(leaf.key, hashes.SHA256())
    )


Maker = Callable[[pki.Issued], tuple[Any, bytes | str | None]]

MALFORMED: list[tuple[str, Maker, str]] = [
    ("empty_bytes", lambda c: (b"", None), "empty"),
    ("empty_str", lambda c: ("", None), "empty"),
    ("whitespace_only", lambda c: (" \r\n\t ", None), "empty"),
    ("der_truncated", lambda c: (c.cert_der()[:-20], None), "truncated"),
    ("der_header_only", lambda c: (c.cert_der()[:4], None), "truncated"),
    ("b64_truncated", lambda c: (c.blob[:-16], None), "truncated"),
    ("b64_truncated_odd_length", lambda c: (c.blob[:-7], None), "truncated"),
    ("b64_half", lambda c: (c.blob[: len(c.blob) // 2], None), "truncated"),
    ("pem_without_end", lambda c: (_pem_cut(c.cert_pem(), -40), None), "truncated"),
    ("pem_body_cut", lambda c: (_pem_body_truncated(c.cert_pem()), None), "truncated"),
    (
        "pem_end_without_begin",
        lambda c: (c.cert_pem()[len(c.cert_pem()) // 2 :], None),
        "truncated",
    ),
    (
        "pem_missing_end_then_next",
        lambda c: (c.cert_pem().replace(b"-----END CERTIFICATE-----\n", b"") + c.cert_pem(), None),
        "truncated",
    ),
    ("truncated_pfx", lambda c: (c.pfx(PFX_PASSWORD)[:-30], PFX_PASSWORD), "truncated"),
    ("b64_bad_character", lambda c: (c.blob[:30] + "!" + c.blob[31:], None), "bad_encoding"),
    ("b64_joined_blobs", lambda c: (c.blob + c.blob, None), "bad_encoding"),
    ("der_bad_tag", lambda c: (b"\x31" + c.cert_der()[1:], None), "bad_encoding"),
    ("b64_bad_tag", lambda c: ("AAAA" + c.blob[4:], None), "bad_encoding"),
    ("der_trailing_garbage", lambda c: (c.cert_der() + b"\x00\x00\x01", None), "bad_encoding"),
    ("two_der_concatenated", lambda c: (c.cert_der() + c.cert_der(), None), "bad_encoding"),
    (
        "pem_label_mismatch",
        lambda c: (c.cert_pem().replace(b"END CERTIFICATE", b"END X509 CRL"), None),
        "bad_encoding",
    ),
    ("random_binary", lambda c: (bytes(range(256)), None), "bad_encoding"),
    ("plain_text", lambda c: ("this is not a certificate!", None), "not_a_certificate"),
    (
        "csr_pem",
        lambda c: (_csr(c).public_bytes(serialization.Encoding.PEM), None),
        "not_a_certificate",
    ),
    (
        "csr_der",
        lambda c: (_csr(c).public_bytes(serialization.Encoding.DER), None),
        "not_a_certificate",
    ),
    (
        "public_key_pem",
        lambda c: (
            c.key.public_key().public_bytes(
                serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
            ),
            None,
        ),
        "not_a_certificate",
    ),
    (
        "public_key_der",
        lambda c: (
            c.key.public_key().public_bytes(
                serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
            ),
            None,
        ),
        "not_a_certificate",
    ),
    (
        "openssl_trusted_certificate",
        lambda c: (c.cert_pem().replace(b"CERTIFICATE", b"TRUSTED CERTIFICATE"), None),
        "not_a_certificate",
    ),
    ("private_key_pem", lambda c: (c.key_pem(), None), "private_key_not_certificate"),
    (
        "encrypted_private_key_pem",
        lambda c: (c.key_pem(b"keypass"), None),
        "private_key_not_certificate",
    ),
    (
        "traditional_ec_key_pem",
        lambda c: (
            c.key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.TraditionalOpenSSL,
                serialization.NoEncryption(),
            ),
            None,
        ),
        "private_key_not_certificate",
    ),
    (
        "private_key_der",
        lambda c: (
            c.key.private_bytes(
                serialization.Encoding.DER,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            ),
            None,
        ),
        "private_key_not_certificate",
    ),
    ("pfx_wrong_password", lambda c: (c.pfx(PFX_PASSWORD), WRONG_PASSWORD), "wrong_password"),
    (
        "pfx_legacy_wrong_password",
        lambda c: (c.pfx(PFX_PASSWORD, legacy=True), WRONG_PASSWORD),
        "wrong_password",
    ),
    ("pfx_no_password_given", lambda c: (c.pfx(PFX_PASSWORD), None), "pfx_needs_password"),
]


@pytest.mark.parametrize(
    ("maker", "kind"), [(m, k) for _, m, k in MALFORMED], ids=[i for i, _, _ in MALFORMED]
)
def test_malformed_input_has_its_own_kind(maker, kind, client_leaf):
    data, password = maker(client_leaf)
    with pytest.raises(CertificateError) as caught:
        certs.load_certificate(data, password)
    assert caught.value.kind == kind, str(caught.value)
    message = str(caught.value)
    assert message
    if kind == "truncated":
        assert "0x80093102" in message
    if kind == "bad_encoding" and "tag" in message:
        assert "0x8009310B" in message
    for secret in (PFX_PASSWORD.decode(), WRONG_PASSWORD, "keypass"):
        assert secret not in message
    # No key material: not even a short run of the key's base64 may show up.
    for line in client_leaf.key_pem().decode().splitlines()[1:-1]:
        assert line[:16] not in message


def test_malformed_is_also_a_value_error(client_leaf):
    with pytest.raises(ValueError, match="cut short"):
        certs.load_certificate(client_leaf.blob[:-16])


# --------------------------------------------------------------------------- PFX


def test_load_pfx_bundle(client_leaf, intermediate_ca, root_ca):
    pfx = client_leaf.pfx(PFX_PASSWORD, chain=[intermediate_ca, root_ca])
    bundle = certs.load_pfx(base64.b64encode(pfx), PFX_PASSWORD)
    assert bundle.has_key
    assert bundle.pfx_der == pfx
    assert bundle.certificate.thumbprint == client_leaf.thumbprint
    assert {c.thumbprint for c in bundle.chain} == {intermediate_ca.thumbprint, root_ca.thumbprint}
    everything = certs.load_certificates(pfx, PFX_PASSWORD)
    assert everything[0].thumbprint == client_leaf.thumbprint
    assert len(everything) == 3


@pytest.mark.parametrize(
    ("maker", "password", "kind"),
    [
        (lambda c: c.pfx(PFX_PASSWORD, include_key=False), PFX_PASSWORD, "pfx_without_key"),
        (lambda c: c.pfx(PFX_PASSWORD), WRONG_PASSWORD, "wrong_password"),
        (lambda c: c.pfx(PFX_PASSWORD), None, "pfx_needs_password"),
        (lambda c: c.cert_pem(), None, "not_a_certificate"),
        (lambda c: c.cert_der(), None, "not_a_certificate"),
        (lambda c: c.pfx(PFX_PASSWORD)[:-25], PFX_PASSWORD, "truncated"),
        (lambda c: b"", PFX_PASSWORD, "empty"),
    ],
    ids=["no_key", "wrong_password", "no_password", "pem_given", "der_given", "truncated", "empty"],
)
def test_load_pfx_errors(maker, password, kind, client_leaf):
    with pytest.raises(CertificateError) as caught:
        certs.load_pfx(maker(client_leaf), password)
    assert caught.value.kind == kind
    assert PFX_PASSWORD.decode() not in str(caught.value)
    assert WRONG_PASSWORD not in str(caught.value)


def test_load_pfx_without_key_when_allowed(client_leaf, intermediate_ca):
    pfx = client_leaf.pfx(PFX_PASSWORD, include_key=False, chain=[intermediate_ca])
    bundle = certs.load_pfx(pfx, PFX_PASSWORD, require_key=False)
    assert not bundle.has_key
    # Without a key the leaf is the certificate that issued none of the others.
    assert bundle.certificate.thumbprint == client_leaf.thumbprint


def test_pem_bundle_order_is_kept(client_leaf, intermediate_ca, root_ca):
    pem = root_ca.cert_pem() + client_leaf.cert_pem() + intermediate_ca.cert_pem()
    infos = certs.load_certificates(pem)
    assert [i.thumbprint for i in infos] == [
        root_ca.thumbprint,
        client_leaf.thumbprint,
        intermediate_ca.thumbprint,
    ]
    assert certs.load_certificate(pem).thumbprint == root_ca.thumbprint  # first block wins


# -------------------------------------------------------------------------- chain


def _info(issued: pki.Issued) -> certs.CertInfo:
    return certs.load_certificate(issued.cert_der())


def _root_without_basic_constraints() -> pki.Issued:
    """An old-style root with no extensions at all: Windows still trusts it as a root."""
    key = pki.new_key()
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Legacy v1-style Root")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=1))
        .not_valid_after(now + dt.timedelta(days=3650))
        .sign(key, hashes.SHA256())
    )
    return pki.Issued(cert, key)


@pytest.fixture(scope="module")
def chain_material(
    root_ca, intermediate_ca, other_root_ca, client_leaf, expired_leaf, future_leaf, server_leaf
):
    now = dt.datetime.now(dt.UTC)
    # Same issuer name as the real intermediate, different key: signatures do not check.
    impostor = pki.make_intermediate(
        other_root_ca, "Test Issuing CA", subject_extra={"O": "Example"}
    )
    forged = pki.make_leaf(impostor, "mallory")
    not_a_ca = pki.make_leaf(intermediate_ca, "not-a-ca")
    under_leaf = pki.make_leaf(not_a_ca, "under-a-leaf")
    old_intermediate = pki.make_intermediate(
        root_ca,
        "Old Issuing CA",
        not_before=now - dt.timedelta(days=400),
        not_after=now - dt.timedelta(days=2),
    )
    under_old = pki.make_leaf(
        old_intermediate,
        "frank",
        not_before=now - dt.timedelta(days=30),
        not_after=now + dt.timedelta(days=30),
    )
    no_eku = pki.make_leaf(intermediate_ca, "no-eku", include_eku=False)
    strict_root = pki.make_ca("Strict Root", path_length=0)
    strict_inter = pki.make_intermediate(strict_root, "Too Deep CA")
    v1_root = _root_without_basic_constraints()
    self_signed = pki.make_leaf(None, "selfie", self_signed=True)
    return {
        "root": root_ca,
        "inter": intermediate_ca,
        "other_root": other_root_ca,
        "client": client_leaf,
        "expired": expired_leaf,
        "future": future_leaf,
        "server": server_leaf,
        "forged": forged,
        "not_a_ca": not_a_ca,
        "under_leaf": under_leaf,
        "old_inter": old_intermediate,
        "under_old": under_old,
        "no_eku": no_eku,
        "self_signed": self_signed,
        "strict_root": strict_root,
        "strict_inter": strict_inter,
        "too_deep": pki.make_leaf(strict_inter, "too-deep"),
        "v1_root": v1_root,
        "under_v1": pki.make_leaf(v1_root, "under-v1"),
    }


CHAIN_CASES = [
    # id, leaf, roots, intermediates, days from now, extra kwargs, status
    ("trusted_via_intermediate", "client", ["root"], ["inter"], 0, {}, "trusted"),
    ("intermediate_listed_twice", "client", ["root"], ["inter", "inter"], 0, {}, "trusted"),
    ("untrusted_other_root", "client", ["other_root"], ["inter"], 0, {}, "untrusted"),
    ("missing_intermediate", "client", ["root"], [], 0, {}, "untrusted"),
    ("expired_leaf", "expired", ["root"], ["inter"], 0, {}, "expired"),
    ("not_yet_valid_leaf", "future", ["root"], ["inter"], 0, {}, "not_yet_valid"),
    ("leaf_expired_at_given_time", "client", ["root"], ["inter"], 800, {}, "expired"),
    ("leaf_before_its_start", "client", ["root"], ["inter"], -30, {}, "not_yet_valid"),
    ("expired_intermediate", "under_old", ["root"], ["old_inter"], 0, {}, "expired"),
    ("forged_signature", "forged", ["root"], ["inter"], 0, {}, "bad_signature"),
    ("issued_by_a_non_ca", "under_leaf", ["root"], ["inter", "not_a_ca"], 0, {}, "untrusted"),
    ("server_eku_refused", "server", ["root"], [], 0, {}, "untrusted"),
    (
        "server_eku_any_purpose",
        "server",
        ["root"],
        [],
        0,
        {"require_client_auth": False},
        "trusted",
    ),
    ("no_eku_is_any_purpose", "no_eku", ["root"], ["inter"], 0, {}, "trusted"),
    ("self_signed_trusted", "self_signed", ["self_signed"], [], 0, {}, "trusted"),
    ("self_signed_untrusted", "self_signed", ["root"], [], 0, {}, "untrusted"),
    ("path_length_exceeded", "too_deep", ["strict_root"], ["strict_inter"], 0, {}, "untrusted"),
    ("root_without_basic_constraints", "under_v1", ["v1_root"], [], 0, {}, "trusted"),
]


@pytest.mark.parametrize(
    ("leaf", "roots", "inters", "days", "kwargs", "status"),
    [c[1:] for c in CHAIN_CASES],
    ids=[c[0] for c in CHAIN_CASES],
)
def test_verify_chain(chain_material, leaf, roots, inters, days, kwargs, status):
    m = chain_material
    at = dt.datetime.now(dt.UTC) + dt.timedelta(days=days)
    result = certs.verify_chain(
        _info(m[leaf]),
        [_info(m[r]) for r in roots],
        [_info(m[i]) for i in inters],
        at=at,
        **kwargs,
    )
    assert result.status == status, result.message
    assert result.ok == (status == "trusted")
    assert result.message
    assert result.chain[0].thumbprint == m[leaf].thumbprint


def test_trusted_chain_is_leaf_to_root(chain_material):
    m = chain_material
    result = certs.verify_chain(_info(m["client"]), [_info(m["root"])], [_info(m["inter"])])
    assert [c.thumbprint for c in result.chain] == [
        m["client"].thumbprint,
        m["inter"].thumbprint,
        m["root"].thumbprint,
    ]


def test_naive_time_is_utc(chain_material):
    m = chain_material
    naive = dt.datetime.now(dt.UTC).replace(tzinfo=None)
    result = certs.verify_chain(
        _info(m["client"]), [_info(m["root"])], [_info(m["inter"])], at=naive
    )
    assert result.ok


# --------------------------------------------------------------------------- flags


def _twin() -> pki.Issued:
    """Subject equals issuer, but signed by another key: not self-signed."""
    ca = pki.make_ca("Twin")
    return pki.make_leaf(ca, "Twin")


FLAG_CASES = [
    # id, maker, self_signed, is_ca, eku_present, client_auth, server_auth
    ("root_ca", lambda f: f["root"], True, True, False, False, False),
    ("intermediate", lambda f: f["inter"], False, True, False, False, False),
    ("client", lambda f: f["client"], False, False, True, True, False),
    ("server", lambda f: f["server"], False, False, True, False, True),
    ("self_signed_leaf", lambda f: f["self_signed"], True, False, True, True, False),
    ("no_eku", lambda f: f["no_eku"], False, False, False, False, False),
    ("same_name_other_key", lambda f: _twin(), False, False, True, True, False),
    (
        "client_and_server",
        lambda f: pki.make_leaf(f["inter"], "both", server_auth=True),
        False,
        False,
        True,
        True,
        True,
    ),
]


@pytest.mark.parametrize(
    ("maker", "self_signed", "is_ca", "eku_present", "client_auth", "server_auth"),
    [c[1:] for c in FLAG_CASES],
    ids=[c[0] for c in FLAG_CASES],
)
def test_flags(chain_material, maker, self_signed, is_ca, eku_present, client_auth, server_auth):
    info = _info(maker(chain_material))
    assert info.self_signed is self_signed
    assert info.is_ca is is_ca
    assert info.eku_present is eku_present
    assert info.client_auth_eku is client_auth
    assert info.server_auth_eku is server_auth
    assert info.usable_for_client_auth is (client_auth or not eku_present)


def test_fields_and_names(client_leaf, intermediate_ca, server_leaf):
    info = _info(client_leaf)
    assert info.subject_fields["CN"] == ["alice"]
    assert info.subject_fields["OU"] == ["Engineering", "Web"]
    assert info.subject_fields["E"] == ["alice@example.com"]
    assert info.subject_fields["S"] == ["Berlin"]
    assert info.issuer_fields["CN"] == [intermediate_ca.common_name]
    assert "CN=alice" in info.subject
    assert "E=alice@example.com" in info.subject
    assert info.issuer == intermediate_ca.certificate.subject.rfc4514_string()
    assert info.serial == format(client_leaf.certificate.serial_number, "X").rjust(
        len(info.serial), "0"
    )
    assert len(info.serial) % 2 == 0
    assert info.key_type == "EC secp256r1"
    assert _info(server_leaf).dns_names == ("localhost",)
    assert info.not_before.tzinfo is not None
    assert info.common_name == "alice"


@pytest.mark.parametrize(
    ("field", "sub_field", "expected"),
    [
        ("Subject", "CN", ["alice"]),
        ("subject", "ou", ["Engineering", "Web"]),
        ("Subject", "O", ["Example"]),
        ("Subject", "C", ["DE"]),
        ("Subject", "L", ["Berlin"]),
        ("Subject", "S", ["Berlin"]),
        ("Subject", "ST", ["Berlin"]),
        ("Subject", "E", ["alice@example.com"]),
        ("Issuer", "CN", ["Test Issuing CA"]),
        ("Issuer", "O", ["Example"]),
        ("Issuer", "OU", []),
    ],
    ids=str,
)
def test_rdn_value(client_leaf, field, sub_field, expected):
    assert certs.rdn_value(_info(client_leaf), field, sub_field) == expected


@pytest.mark.parametrize(("field", "sub_field"), [("Serial", "CN"), ("Subject", "XX")])
def test_rdn_value_rejects_unknown(client_leaf, field, sub_field):
    with pytest.raises(ValueError, match=field if field == "Serial" else sub_field):
        certs.rdn_value(_info(client_leaf), field, sub_field)


def test_validity_helpers(client_leaf, expired_leaf):
    info = _info(client_leaf)
    now = dt.datetime.now(dt.UTC)
    assert info.valid_at(now)
    assert not info.valid_at(now + dt.timedelta(days=800))
    assert not info.expires_within(30, now)
    assert info.expires_within(400, now)
    assert _info(expired_leaf).expires_within(0)
    assert not _info(expired_leaf).valid_at(now)


def test_certinfo_is_picklable_and_compares_by_der(client_leaf):
    info = _info(client_leaf)
    again = pickle.loads(pickle.dumps(info))  # noqa: S301 - our own bytes
    assert again == info
    assert hash(again) == hash(info)
    assert again.certificate == client_leaf.certificate
    assert info.pem().startswith("-----BEGIN CERTIFICATE-----")
    assert "der=" not in repr(info)  # repr stays short: subject, thumbprint, dates


def test_rsa_leaf(rsa_client_leaf):
    info = certs.load_certificate(rsa_client_leaf.pfx(b"pw", legacy=True), "pw")
    assert info.key_type == "RSA 2048"
    assert info.thumbprint == rsa_client_leaf.thumbprint
