"""The contract's ops, run against the simulated host (one function per op).

Each op validates before it changes anything, so a failed op leaves the state as it was;
each is idempotent (a repeat reports ``changed: false``).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from typing import Any

from cryptography import x509
from lxml import etree

from iis_clientcert.host.contract import (
    BINDING_FLAG_SETTINGS,
    DEFAULT_LOGON_METHOD,
    LOGON_TYPES,
    OPS,
    PASSWORD_CHECK_LOGON_TYPE,
    SECTION_MAPPING,
    SSLCERT_DEFAULTS,
    is_encrypted_value,
    logon_account_key,
    not_checked,
)
from iis_clientcert_simulator import iis_log, trust
from iis_clientcert_simulator.apphost import (
    Apphost,
    ConfigFile,
    build,
    keep_locks,
    merge,
    norm_location,
    refuse_undecryptable,
    to_json,
)
from iis_clientcert_simulator.errors import HR_BAD_DATA, HR_INVALID_DATA, HR_NOT_FOUND, OpError
from iis_clientcert_simulator.schema import SectionSchema, section
from iis_clientcert_simulator.state import Session
from iis_clientcert_simulator.stores import (
    IIS_APP_ID,
    SSL_FLAG_CENTRAL_STORE,
    HttpSys,
    b64,
    load_der,
    sslcert_key,
)
from iis_clientcert_simulator.xmldoc import replace_child

Handler = Callable[[Session, dict[str, Any]], dict[str, Any]]

# netsh's answer when the certificate has no private key (ERROR_NO_SUCH_LOGON_SESSION).
HR_NO_SUCH_LOGON_SESSION = 0x80070520


def _site_of(session: Session, location: str) -> None:
    site = norm_location(location).split("/")[0]
    if site:
        session.apphost.require_site(site)


def _schema_for_write(session: Session, name: str, location: str) -> SectionSchema:
    schema = section(name)
    if schema.path.lower().startswith("system.applicationhost/"):
        raise OpError(
            "InvalidValue",
            f"{schema.path} is managed with site.list and binding.set/remove",
            HR_INVALID_DATA,
        )
    if schema.path.lower() == SECTION_MAPPING.lower() and not session.feature("Web-Cert-Auth"):
        raise OpError(
            "FeatureMissing",
            f"The configuration section '{schema.path}' is not registered: the Windows feature "
            "Web-Cert-Auth (IIS Client Certificate Mapping Authentication) is not installed. "
            "Install it with Install-WindowsFeature Web-Cert-Auth",
        )
    session.apphost.override_mode_default(schema.path)  # the section must be declared
    _site_of(session, location)
    return schema


def _web_levels(
    session: Session, schema: SectionSchema, location: str
) -> list[etree._Element | None]:
    """The section in the web.config files along ``location``. A locked section found in
    one makes reading configuration at that path fail, as IIS's 500.19 (0x80070021) does."""
    parts = [p for p in norm_location(location).split("/") if p]
    out: list[etree._Element | None] = []
    for depth in range(1, len(parts) + 1):
        path = "/".join(parts[:depth])
        config = session.webconfig(path, create=False)
        if config is None:
            continue
        found = config.section_in(config.root, schema)
        if found is not None:
            session.apphost.check_unlocked(schema, path)
        out.append(found)
    return out


# --- config ----------------------------------------------------------------------------


def config_get(s: Session, args: dict[str, Any]) -> dict[str, Any]:
    # Like IIS's GetSection, reading at the path of a site that does not exist is no error:
    # it shows what would be inherited (writes there are refused).
    schema = section(args["section"])
    location = args["location"]
    found = s.apphost.find_section(schema, location)
    levels = s.apphost.levels(schema, location) + _web_levels(s, schema, location)
    return {
        "present": found is not None,
        "element": to_json(found, schema) if found is not None else None,
        "effective": merge(schema, levels),
    }


def _write_target(s: Session, args: dict[str, Any]) -> tuple[str, SectionSchema, bool]:
    """A write's location, its section's schema, and whether it goes to the location's
    web.config (target 'webconfig') rather than applicationHost.config."""
    location = args["location"]
    schema = _schema_for_write(s, args["section"], location)
    webconfig = args.get("target", "apphost") == "webconfig"
    if webconfig:
        if norm_location(location) == "":
            raise OpError(
                "InvalidValue",
                "target 'webconfig' needs a site path; the server level is applicationHost.config",
                HR_INVALID_DATA,
            )
        s.apphost.check_unlocked(schema, location)
    return location, schema, webconfig


def config_set(s: Session, args: dict[str, Any]) -> dict[str, Any]:
    location, schema, webconfig = _write_target(s, args)
    if webconfig:
        config = s.webconfig(norm_location(location), create=True)
        assert config is not None
        return {"changed": _set_in_file(s, config.root, schema, args["element"], location)}
    return {"changed": s.apphost.set_section(schema, location, args["element"], s.key)}


def _set_in_file(
    s: Session, root: etree._Element, schema: SectionSchema, data: Any, location: str
) -> bool:
    existing = ConfigFile.section_in(root, schema)
    undecryptable: list[str] = []
    new = build(
        data,
        schema,
        schema.xml_path[-1],
        existing,
        s.key,
        f"{schema.path} in web.config of '{location}'",
        undecryptable,
    )
    keep_locks(existing, new, schema)
    if existing is not None and to_json(existing, schema) == to_json(new, schema):
        return False
    refuse_undecryptable(undecryptable)
    if existing is not None:
        replace_child(existing, new)
    else:
        ConfigFile.put_section(root, new, schema)
    return True


def config_clear(s: Session, args: dict[str, Any]) -> dict[str, Any]:
    location, schema, webconfig = _write_target(s, args)
    if webconfig:
        config = s.webconfig(norm_location(location), create=False)
        found = config.section_in(config.root, schema) if config is not None else None
        if config is None or found is None:
            return {"changed": False}
        config.drop_section(found, config.root, prune=True)
        return {"changed": True}
    return {"changed": s.apphost.clear_section(schema, location)}


# --- sites and bindings ----------------------------------------------------------------


def site_list(s: Session, args: dict[str, Any]) -> dict[str, Any]:
    sites = []
    httpsys = s.httpsys
    for site in s.apphost.site_elements():
        bindings = []
        for b in Apphost.bindings(site):
            protocol = b.get("protocol", "")
            info = b.get("bindingInformation", "")
            flags = int(b.get("sslFlags", "0") or 0)
            entry = None
            if protocol.lower() == "https":
                try:
                    entry = httpsys.get(sslcert_key(info, flags))
                except OpError:
                    entry = None
            bindings.append(
                {
                    "protocol": protocol,
                    "binding_information": info,
                    "ssl_flags": flags,
                    "certificate_hash": entry["certificate_hash"] if entry else None,
                    "certificate_store": entry["certificate_store"] if entry else None,
                    "client_cert_negotiation": bool(entry and entry["client_cert_negotiation"]),
                    "sslcert": HttpSys.settings(entry) if entry else None,
                }
            )
        sites.append(
            {
                "name": site.get("name", ""),
                "id": int(site.get("id", "0") or 0),
                "physical_path": Apphost.physical_path(site),
                "bindings": bindings,
            }
        )
    return {"sites": sites}


def _https_bindings_using(s: Session, key: str) -> int:
    count = 0
    for site in s.apphost.site_elements():
        for b in Apphost.bindings(site):
            if b.get("protocol", "").lower() != "https":
                continue
            try:
                if (
                    sslcert_key(b.get("bindingInformation", ""), int(b.get("sslFlags", "0") or 0))
                    == key
                ):
                    count += 1
            except OpError:
                continue
    return count


# --- what Microsoft.Web.Administration does to HTTP.sys ------------------------------


def _find_https(site: etree._Element, info: str) -> etree._Element | None:
    """The site's https binding ``info`` (None: no such binding)."""
    for b in Apphost.bindings(site):
        if (
            b.get("protocol", "").lower() == "https"
            and b.get("bindingInformation", "").lower() == info.lower()
        ):
            return b
    return None


def _mwa_remove_binding(s: Session, site_name: str, info: str, remove_config_only: bool) -> None:
    """``Bindings.Remove(binding[, removeConfigOnly])`` + commit. Without removeConfigOnly
    MWA also deletes the HTTP.sys record of the binding's ip:port (or host:port), even when
    another site's binding shares it (KB 2405568)."""
    binding = _find_https(s.apphost.require_site(site_name), info)
    if binding is not None:
        key = sslcert_key(info, int(binding.get("sslFlags", "0") or 0))
        s.apphost.remove_binding(site_name, "https", info)
        if not remove_config_only:
            s.httpsys.remove(key)


def _mwa_add_binding_with_certificate(
    s: Session, site_name: str, info: str, flags: int, thumb: str, store: str
) -> None:
    """``Bindings.Add(info, hash, store)`` + commit: MWA writes the HTTP.sys record afresh
    with the certificate only, so every other setting of the record is lost (win-acme
    #2831)."""
    s.apphost.set_binding(site_name, "https", info, flags)
    s.httpsys.put(sslcert_key(info, flags), thumb, store)


def binding_set(s: Session, args: dict[str, Any]) -> dict[str, Any]:
    """As agent.ps1 does it: the IIS binding in config only (sslFlags changed in place,
    never Remove + Add, which would rewrite HTTP.sys), then the HTTP.sys record rewritten
    with every setting it held (netsh update replaces the whole record)."""
    site_name = args["site"]
    info = args["binding_information"]
    flags = args["ssl_flags"]
    store = args["certificate_store"]
    thumb = args["certificate_hash"].replace(" ", "").upper()
    site = s.apphost.require_site(site_name)
    key = sslcert_key(info, flags)  # validates ip:port:host and SNI
    existing = _find_https(site, info)
    old_flags = int(existing.get("sslFlags", "0") or 0) if existing is not None else 0
    if (flags | old_flags) & SSL_FLAG_CENTRAL_STORE:
        # As agent.ps1: a CCS binding's certificate is a file on the CCS share, found by
        # host name; a certificate hash from LocalMachine\My would go to a record that no
        # CCS binding reads (or take another site's ip:port record).
        raise OpError(
            "InvalidValue",
            f"The https binding '{info}' of site '{site_name}' uses the Central Certificate "
            "Store (sslFlags bit 2): its certificate comes from the CCS share, which "
            "binding.set does not manage",
            HR_INVALID_DATA,
        )
    if not s.stores.exists(store, thumb):
        raise OpError(
            "NotFound",
            f"The certificate {thumb} is not in LocalMachine\\{store}",
            HR_NOT_FOUND,
        )
    if s.stores.key_pem(store, thumb) is None:
        raise OpError(
            "BadCertificate",
            f"SSL Certificate add failed: the certificate {thumb} has no private key "
            "(A specified logon session does not exist)",
            HR_NO_SUCH_LOGON_SESSION,
        )
    old_key = sslcert_key(info, old_flags) if existing is not None else None
    changed, created = s.apphost.set_binding(site_name, "https", info, flags)
    s.checkpoint("binding.set:after_config")

    httpsys = s.httpsys
    record = httpsys.get(key)
    settings = HttpSys.settings(record) if record is not None else dict(SSLCERT_DEFAULTS)
    settings["clientcertnegotiation"] = bool(args["client_cert_negotiation"])
    for bit, name in BINDING_FLAG_SETTINGS.items():
        if flags & bit:
            settings[name] = True
        elif old_flags & bit:
            settings[name] = False  # the bit this write clears
    if record is None:
        httpsys.add(key, thumb, store, IIS_APP_ID, settings)
        changed = True
    elif (
        record["certificate_hash"] != thumb
        or record["certificate_store"].lower() != store.lower()
        or HttpSys.settings(record) != settings
    ):
        # Every setting re-passed, the owner's app id kept.
        httpsys.update(key, thumb, store, str(record.get("app_id") or IIS_APP_ID), settings)
        changed = True
    if old_key is not None and old_key != key and _https_bindings_using(s, old_key) == 0:
        s.checkpoint("binding.set:after_httpsys")
        changed = httpsys.remove(old_key) or changed
    return {"changed": changed, "created": created}


def binding_remove(s: Session, args: dict[str, Any]) -> dict[str, Any]:
    """The IIS binding with removeConfigOnly (MWA would otherwise delete the HTTP.sys record
    every site on the ip:port shares, KB 2405568), then the record if no binding uses it."""
    site = s.apphost.require_site(args["site"])
    info = args["binding_information"]
    existing = _find_https(site, info)
    if existing is None:
        return {"changed": False}
    key = sslcert_key(info, int(existing.get("sslFlags", "0") or 0))
    _mwa_remove_binding(s, args["site"], info, remove_config_only=True)
    s.checkpoint("binding.remove:after_config")
    if _https_bindings_using(s, key) == 0:
        s.httpsys.remove(key)
    return {"changed": True}


# --- certificates ----------------------------------------------------------------------


def cert_list(s: Session, args: dict[str, Any]) -> dict[str, Any]:
    return {"certificates": s.stores.list(args["store"])}


def cert_import(s: Session, args: dict[str, Any]) -> dict[str, Any]:
    der, pfx = args.get("der_b64"), args.get("pfx_b64")
    if (der is None) == (pfx is None):
        raise OpError("BadRequest", "cert.import takes exactly one of der_b64 and pfx_b64")
    store = args["store"]
    if der is not None:
        thumb, added = s.stores.import_der(store, der)
        return {"thumbprint": thumb, "added": added}
    assert pfx is not None
    # As the agent: open the PFX without persisting its key, to learn the thumbprint; an
    # entry that is there with its key needs nothing (persisting first would orphan a key
    # container on every rerun: FACTS.md "Key containers").
    opened = s.stores.open_pfx(pfx, args.get("pfx_password"), int(s.facts.get("os_build", 0)))
    if s.stores.exists(store, opened.thumbprint) and (
        opened.key_pem is None or s.stores.key_pem(store, opened.thumbprint) is not None
    ):
        return {"thumbprint": opened.thumbprint, "added": False}
    container = s.stores.persist_key(opened.key_pem) if opened.key_pem is not None else None
    try:
        s.checkpoint("cert.import:after_key")
        thumb, added = s.stores.add(store, opened.certificate, container)
    except BaseException:
        # Our own key container goes with the failure, as the agent removes it.
        if container is not None:
            container.unlink(missing_ok=True)
        raise
    return {"thumbprint": thumb, "added": added}


def cert_remove(s: Session, args: dict[str, Any]) -> dict[str, Any]:
    return {"removed": s.stores.remove(args["store"], args["thumbprint"])}


# --- users, groups, folders ------------------------------------------------------------


def user_get(s: Session, args: dict[str, Any]) -> dict[str, Any]:
    return s.accounts.public(args["name"])


def user_set(s: Session, args: dict[str, Any]) -> dict[str, Any]:
    props = {k: v for k, v in args.items() if k not in ("name", "password")}
    result = s.accounts.set_user(args["name"], args.get("password"), props)
    if result["created"]:
        # The agent creates the account, then sets its properties and flags: a failure
        # there must not leave a half-made account for a rerun to adopt.
        s.checkpoint("user.set:after_create")
    return result


def user_delete(s: Session, args: dict[str, Any]) -> dict[str, Any]:
    return {"removed": s.accounts.delete_user(args["name"])}


def user_verify_password(s: Session, args: dict[str, Any]) -> dict[str, Any]:
    # As agent.ps1: a network logon on this host, under the contract's guard.
    return dict(s.accounts.guarded_logon(args["name"], args["password"], PASSWORD_CHECK_LOGON_TYPE))


def group_add_member(s: Session, args: dict[str, Any]) -> dict[str, Any]:
    return {"changed": s.accounts.add_member(args["group"], args["member"])}


def group_remove_member(s: Session, args: dict[str, Any]) -> dict[str, Any]:
    return {"changed": s.accounts.remove_member(args["group"], args["member"])}


def acl_get(s: Session, args: dict[str, Any]) -> dict[str, Any]:
    return s.folders.get(args["path"])


def acl_grant(s: Session, args: dict[str, Any]) -> dict[str, Any]:
    folders = s.folders
    folders.require(args["path"])  # NotFound before the identity is looked up, as Get-Acl
    accounts = s.accounts
    sid = accounts.resolve_sid(args["identity"])
    name = accounts.name_of_sid(sid) or sid
    return {"changed": folders.grant(args["path"], sid, args["rights"], name)}


def acl_revoke(s: Session, args: dict[str, Any]) -> dict[str, Any]:
    folders = s.folders
    folders.require(args["path"])
    try:
        sid = s.accounts.resolve_sid(args["identity"])
    except OpError:
        # As the agent: a name that resolves to no account (a deleted one) matches no ACE,
        # whose SID only the account's SID names (revoke those by SID).
        return {"changed": False}
    return {"changed": folders.revoke(args["path"], sid)}


# --- mappings and facts ----------------------------------------------------------------


def mapping_verify_logons(s: Session, args: dict[str, Any]) -> dict[str, Any]:
    site = args["site"]
    s.apphost.require_site(site)
    schema = section(SECTION_MAPPING)
    effective = merge(schema, s.apphost.levels(schema, site))
    # As agent.ps1 (and IIS) log on: the section's logonMethod and defaultLogonDomain.
    attrs = effective["attributes"]
    logon_type = LOGON_TYPES.get(str(attrs.get("logonMethod", DEFAULT_LOGON_METHOD)), 8)
    domain = str(attrs.get("defaultLogonDomain", ""))
    skip = {logon_account_key(str(u)) for u in args.get("skip_users") or []}
    results: list[dict[str, Any]] = []
    accounts = s.accounts
    # One logon per account and stored password, whatever the number of mappings.
    tried: dict[tuple[str, str], dict[str, Any]] = {}
    for kind, tag, key_attr in (
        ("one_to_one", "oneToOneMappings", "certificate"),
        ("many_to_one", "manyToOneMappings", "name"),
    ):
        for item in effective["children"][tag]["items"]:
            item_attrs = item["attributes"]
            user_name = str(item_attrs.get("userName", ""))
            if not user_name:
                continue
            account = logon_account_key(user_name)
            # The passwords stay encrypted until here (a value stored plain is used as is).
            stored = str(item_attrs.get("password", ""))
            plain = s.key.decrypt(stored) if is_encrypted_value(stored) else stored
            verdict: dict[str, Any]
            if account in skip:
                verdict = dict(not_checked())
            elif plain is None:
                # Per value: a password this host cannot decrypt fails its own mapping, with
                # what IIS reports for it (NTE_BAD_DATA), not as a wrong password.
                verdict = {"valid": False, "hresult": f"0x{HR_BAD_DATA:08X}", "checked": True}
            elif (account, plain) in tried:
                verdict = tried[(account, plain)]
            else:
                verdict = dict(accounts.guarded_logon(user_name, plain, logon_type, domain))
                tried[(account, plain)] = verdict
            results.append(
                {
                    "kind": kind,
                    "key": item_attrs.get(key_attr, ""),
                    "user_name": user_name,
                    **verdict,
                }
            )
    return {"results": results}


def cert_revocation(s: Session, args: dict[str, Any]) -> dict[str, Any]:
    """Each certificate against the CRLs at its distribution points, fetched from this host
    (published CRLs and the host fact ``cdp_reachable``), as HTTP.sys checks them."""
    certs: list[x509.Certificate] = []
    for index, value in enumerate(args["certificates"]):
        if not isinstance(value, str):
            raise OpError(
                "BadRequest", f"certificates[{index}] must be base64 DER", HR_INVALID_DATA
            )
        certs.append(load_der(b64(value, f"certificates[{index}]")))
    issuers = [*s.stores.certificates("Root"), *s.stores.certificates("CA"), *certs]
    fetch = trust.crl_fetcher(s.state.published_crls(), s.state.cdp_reachable())
    now = dt.datetime.now(dt.UTC)
    results = []
    for cert in certs:
        issuer = next(
            (
                c
                for c in issuers
                if c.subject == cert.issuer and c != cert and trust.signed_by(cert, c)
            ),
            None,
        )
        found = trust.check_certificate(cert, issuer, fetch, now)
        results.append(
            {
                "thumbprint": trust.thumbprint(cert),
                "status": found.status,
                "hresult": found.hresult,
                "urls": list(found.urls) or trust.cdp_urls(cert),
            }
        )
    return {"results": results}


def host_facts(s: Session, args: dict[str, Any]) -> dict[str, Any]:
    facts = s.facts
    policy = s.state.password_policy()
    return {
        "computer_name": facts.get("computer_name"),
        "os_caption": facts.get("os_caption"),
        "os_build": int(facts.get("os_build", 0)),
        "iis_version": facts.get("iis_version"),
        "web_cert_auth_installed": s.feature("Web-Cert-Auth"),
        "client_auth_trust_mode": int(facts.get("client_auth_trust_mode", 0)),
        "send_trusted_issuer_list": int(facts.get("send_trusted_issuer_list", 0)),
        "tls13_enabled": bool(facts.get("tls13_enabled", False)),
        "password_policy": {"min_length": policy.min_length, "complexity": policy.complexity},
        "lockout_policy": dict(vars(s.state.lockout_policy())),
    }


def site_log_tail(s: Session, args: dict[str, Any]) -> dict[str, Any]:
    site = s.apphost.require_site(str(args["site"]))
    site_id = int(site.get("id", "0") or 0)
    count = max(0, min(int(args["count"]), 1000))
    return {
        "site": str(site.get("name", "")),
        "site_id": site_id,
        "log_directory": f"{iis_log.WINDOWS_LOG_ROOT}\\W3SVC{site_id}",
        "entries": iis_log.tail(s.state.dir, site_id, count),
    }


HANDLERS: dict[str, Handler] = {
    "host.facts": host_facts,
    "site.list": site_list,
    "site.log_tail": site_log_tail,
    "config.get": config_get,
    "config.set": config_set,
    "config.clear": config_clear,
    "binding.set": binding_set,
    "binding.remove": binding_remove,
    "cert.list": cert_list,
    "cert.import": cert_import,
    "cert.remove": cert_remove,
    "cert.revocation": cert_revocation,
    "user.get": user_get,
    "user.set": user_set,
    "user.delete": user_delete,
    "user.verify_password": user_verify_password,
    "group.add_member": group_add_member,
    "group.remove_member": group_remove_member,
    "acl.get": acl_get,
    "acl.grant": acl_grant,
    "acl.revoke": acl_revoke,
    "mapping.verify_logons": mapping_verify_logons,
}

# Every op of the contract has a handler (checked at import, so a new op cannot be missed).
_missing = set(OPS) - set(HANDLERS)
if _missing:
    raise RuntimeError(f"simulator ops without a handler: {sorted(_missing)}")

__all__ = ["HANDLERS"]
