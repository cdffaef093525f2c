"""applicationHost.config: sections at locations, locking, effective values, sites and bindings.

Reads and writes go through :class:`xmldoc.XmlDocument`, so a write changes only
the element it targets. Element JSON (see iis_clientcert/host/contract.py) is converted to XML with
the schema's rules: unknown attributes, enum and flag values, required attributes and
unique keys are checked the way IIS checks them, and encrypted attributes are sealed with
the host key before they reach the file.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

from lxml import etree

from iis_clientcert.host.contract import LOCK_ATTRIBUTES, element, is_encrypted_value
from iis_clientcert_simulator.errors import (
    HR_ALREADY_EXISTS,
    HR_BAD_DATA,
    HR_FILE_CHANGED,
    HR_INVALID_DATA,
    HR_LOCK_VIOLATION,
    HR_NOT_FOUND,
    CommitConflictError,
    OpError,
)
from iis_clientcert_simulator.files import atomic_write
from iis_clientcert_simulator.machinekey import MachineKey
from iis_clientcert_simulator.schema import (
    CollectionSchema,
    ElementSchema,
    SectionSchema,
    section,
)
from iis_clientcert_simulator.xmldoc import (
    XmlDocument,
    append_child,
    is_element,
    remove_child,
    replace_child,
)

LOCKED_MESSAGE = (
    "This configuration section cannot be used at this path. This happens when the section "
    'is locked at a parent level. Locking is either by default (overrideModeDefault="Deny"), '
    'or set explicitly by a location tag with overrideMode="Deny" or the legacy '
    'allowOverride="false".'
)

_ELEMENT_KEYS = frozenset({"attributes", "children", "items", "clear"})


def child(el: etree._Element, tag: str) -> etree._Element | None:
    """The first child element named ``tag`` (names with dots confuse ElementPath)."""
    for c in el:
        if c.tag == tag:
            return c
    return None


def elements(el: etree._Element) -> Iterator[etree._Element]:
    for c in el:
        if is_element(c):
            yield c


def attrs(el: etree._Element) -> dict[str, str]:
    return {str(k): str(v) for k, v in el.attrib.items()}


def norm_location(location: str) -> str:
    """IIS location paths: no leading/trailing slash; "" (or ".") is the server level."""
    path = location.replace("\\", "/").strip().strip("/")
    return "" if path == "." else path


def _loc_key(path: str) -> str:
    return norm_location(path).lower()


def _short(value: str) -> str:
    return value if len(value) <= 48 else value[:45] + "..."


# --- Element JSON <-> XML ----------------------------------------------------------------


def to_json(el: etree._Element, schema: ElementSchema | None) -> dict[str, Any]:
    """The explicit content of an XML element as contract Element JSON."""
    coll = schema.collection if schema is not None else None
    children: dict[str, dict[str, Any]] = {}
    items: list[dict[str, Any]] = []
    keys: list[tuple[str, ...]] = []
    clear = False
    for c in elements(el):
        if coll is not None and c.tag == coll.add_element:
            items.append(to_json(c, coll.item))
            keys.append(coll.key_of(attrs(c)))
        elif coll is not None and c.tag == coll.clear_element:
            clear, items, keys = True, [], []
        elif coll is not None and c.tag == coll.remove_element:
            gone = coll.key_of(attrs(c))
            kept = [(k, i) for k, i in zip(keys, items, strict=True) if k != gone]
            keys, items = [k for k, _ in kept], [i for _, i in kept]
        else:
            sub = schema.children.get(str(c.tag)) if schema is not None else None
            children[str(c.tag)] = to_json(c, sub)
    return element({str(k): str(v) for k, v in el.attrib.items()}, children, items, clear)


def merge(schema: ElementSchema, levels: list[etree._Element | None]) -> dict[str, Any]:
    """Effective content: attributes by the most specific level (else the schema default);
    collections accumulate from the outermost level, reset by <clear/>, as IIS merges them."""
    attributes: dict[str, str] = {}
    for name, attr in schema.attributes.items():
        value = attr.default
        for el in levels:
            if el is not None and el.get(name) is not None:
                value = el.get(name)
        if value is not None:
            attributes[name] = value
    children = {
        name: merge(sub, [child(el, name) if el is not None else None for el in levels])
        for name, sub in schema.children.items()
    }
    items: list[dict[str, Any]] = []
    coll = schema.collection
    if coll is not None:
        merged: dict[tuple[str, ...], dict[str, Any]] = {}
        for el in levels:
            if el is None:
                continue
            for c in elements(el):
                if c.tag == coll.clear_element:
                    merged.clear()
                elif c.tag == coll.add_element:
                    merged[coll.key_of(attrs(c))] = merge(coll.item, [c])
                elif c.tag == coll.remove_element:
                    merged.pop(coll.key_of(attrs(c)), None)
        items = list(merged.values())
    return element(attributes, children, items, False)


def refuse_undecryptable(undecryptable: list[str]) -> None:
    """A write that changes something rewrites every encrypted value through IIS's API,
    which takes plain text: a ciphertext this host cannot decrypt (from another host, a
    placeholder) cannot be written, and is named (issue 10: decrypting per value)."""
    if undecryptable:
        raise OpError(
            "InvalidValue",
            "The encrypted value of "
            + ", ".join(
                f"'{p.rpartition('@')[2]}' at {p.rpartition('@')[0]}" for p in undecryptable
            )
            + " cannot be decrypted with this host's key (it was encrypted on another host, "
            "or is a placeholder): give the plain value",
            HR_BAD_DATA,
        )


def _invalid(message: str) -> OpError:
    return OpError("InvalidValue", message, HR_INVALID_DATA)


def _duplicate(coll: CollectionSchema, attributes: dict[str, str], where: str) -> OpError:
    keys = coll.key_attributes()
    if len(keys) == 1:
        detail = (
            f"with unique key attribute '{keys[0].name}' set to "
            f"'{_short(attributes.get(keys[0].name, ''))}'"
        )
    else:
        names = ", ".join(k.name for k in keys)
        values = ", ".join(_short(attributes.get(k.name, k.default or "")) for k in keys)
        detail = f"with combined key attributes '{names}' respectively set to '{values}'"
    return OpError(
        "DuplicateKey",
        f"{where}: Cannot add duplicate collection entry of type '{coll.add_element}' {detail}",
        HR_ALREADY_EXISTS,
    )


def build(
    data: Any,
    schema: ElementSchema,
    tag: str,
    previous: etree._Element | None,
    key: MachineKey,
    where: str,
    undecryptable: list[str] | None = None,
) -> etree._Element:
    """Element JSON -> XML, validated against the schema (see the module docstring).

    Encrypted values this host cannot decrypt are kept as they are and named in
    ``undecryptable``: the caller refuses them unless the write changes nothing.
    """
    if undecryptable is None:
        undecryptable = []
    if not isinstance(data, dict):
        raise _invalid(f"{where}: an element must be an object")
    unknown = set(data) - _ELEMENT_KEYS
    if unknown:
        raise _invalid(f"{where}: unknown element fields {sorted(unknown)}")
    attributes = data.get("attributes") or {}
    children = data.get("children") or {}
    items = data.get("items") or []
    clear = data.get("clear", False)
    if not isinstance(attributes, dict) or not isinstance(children, dict):
        raise _invalid(f"{where}: 'attributes' and 'children' must be objects")
    if not isinstance(items, list) or not isinstance(clear, bool):
        raise _invalid(f"{where}: 'items' must be a list and 'clear' a boolean")

    el = etree.Element(tag)
    for name, value in attributes.items():
        if name in LOCK_ATTRIBUTES:
            continue  # the host owner's: keep_locks puts back what the element held
        attr = schema.attributes.get(name)
        if attr is None:
            raise _invalid(f"{where}: Unrecognized attribute '{name}'")
        if not isinstance(value, str):
            raise _invalid(f"{where}: the value of '{name}' must be a string, as in the XML")
        stored = attr.normalize(value, where)
        if attr.encrypted:
            if is_encrypted_value(stored) and key.decrypt(stored) is None:
                undecryptable.append(f"{where}@{name}")
            stored = key.seal(stored, previous.get(name) if previous is not None else None)
        el.set(name, stored)

    coll = schema.collection
    if (items or clear) and coll is None:
        raise _invalid(f"{where}: <{tag}> is not a collection; it takes no items or <clear/>")
    if coll is not None:
        if clear:
            if coll.clear_element is None:
                raise _invalid(f"{where}: <{tag}> has no <clear/>")
            etree.SubElement(el, coll.clear_element)
        old: dict[tuple[str, ...], etree._Element] = {}
        if previous is not None:
            for c in elements(previous):
                if c.tag == coll.add_element:
                    old[coll.key_of(attrs(c))] = c
        seen: set[tuple[str, ...]] = set()
        for index, item in enumerate(items):
            item_where = f"{where}/{tag}/{coll.add_element}[{index}]"
            item_attrs = item.get("attributes") if isinstance(item, dict) else None
            if not isinstance(item_attrs, dict):
                item_attrs = {}
            normal: dict[str, str] = {}
            for attr in coll.key_attributes():
                raw = item_attrs.get(attr.name)
                if isinstance(raw, str):
                    normal[attr.name] = attr.normalize(raw, item_where)
            for attr in coll.item.attributes.values():
                if attr.required and attr.name not in item_attrs:
                    raise _invalid(f"{item_where}: Missing required attribute '{attr.name}'")
            item_key = coll.key_of(normal)
            if item_key in seen:
                raise _duplicate(coll, normal, where)
            seen.add(item_key)
            el.append(
                build(
                    item,
                    coll.item,
                    coll.add_element,
                    old.get(item_key),
                    key,
                    item_where,
                    undecryptable,
                )
            )

    for name in children:
        if name not in schema.children:
            raise _invalid(f"{where}: Unrecognized element '{name}'")
    # Child elements in the schema's order, as IIS writes them (manyToOneMappings first).
    for name, sub in schema.children.items():
        if name not in children:
            continue
        prev_child = child(previous, name) if previous is not None else None
        el.append(
            build(children[name], sub, name, prev_child, key, f"{where}/{name}", undecryptable)
        )
    return el


def keep_locks(previous: etree._Element | None, new: etree._Element, schema: ElementSchema) -> None:
    """Put the lock attributes of the element a write replaces (and of its child elements
    the write keeps) on the new one. IIS's RevertToParent drops them with the element; the
    agent sets them again as metadata, so an owner's lockAttributes survive our writes."""
    if previous is None:
        return
    for name in sorted(LOCK_ATTRIBUTES):
        value = previous.get(name)
        if value is not None:
            new.set(name, value)
    for name, sub in schema.children.items():
        old_child, new_child = child(previous, name), child(new, name)
        if old_child is not None and new_child is not None:
            keep_locks(old_child, new_child, sub)


def check_entries(coll: CollectionSchema, items: list[etree._Element], where: str) -> None:
    """IIS's checks of a collection as it loads it: required and well-formed attributes,
    each isUniqueKey attribute unique on its own (sites: name, and id), the isCombinedKey
    attributes unique together (bindings: protocol + bindingInformation)."""
    seen: dict[str, set[str]] = {}
    combined: set[tuple[str, ...]] = set()
    combined_attrs = [a for a in coll.item.attributes.values() if a.combined_key]
    for item in items:
        values = attrs(item)
        for attr in coll.item.attributes.values():
            if attr.required and attr.name not in values:
                raise _invalid(f"{where}: Missing required attribute '{attr.name}'")
            if attr.name in values:
                attr.normalize(values[attr.name], where)
        for attr in coll.unique_attributes():
            raw = values.get(attr.name, attr.default or "")
            folded = raw if attr.case_sensitive else raw.lower()
            if folded in seen.setdefault(attr.name, set()):
                raise OpError(
                    "DuplicateKey",
                    f"{where}: Cannot add duplicate collection entry of type "
                    f"'{coll.add_element}' with unique key attribute '{attr.name}' set to "
                    f"'{_short(raw)}'",
                    HR_ALREADY_EXISTS,
                )
            seen[attr.name].add(folded)
        if combined_attrs:
            key = tuple(
                values.get(a.name, a.default or "")
                if a.case_sensitive
                else values.get(a.name, a.default or "").lower()
                for a in combined_attrs
            )
            if key in combined:
                raise _duplicate(coll, values, where)
            combined.add(key)


# --- the file --------------------------------------------------------------------------


class ConfigFile:
    """One configuration file (applicationHost.config, or a web.config) on disk."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.doc = XmlDocument(path.read_bytes())

    @property
    def root(self) -> etree._Element:
        return self.doc.root

    def save(self) -> bool:
        data = self.doc.serialize()
        if data == self.doc.original:
            return False
        # Microsoft.Web.Administration commits optimistically: a file that changed on disk
        # since this copy was read is not overwritten (FACTS.md, "Real-host pitfalls").
        try:
            on_disk = self.path.read_bytes()
        except FileNotFoundError:
            on_disk = None
        if on_disk is not None and on_disk != self.doc.original:
            raise CommitConflictError(
                "Conflict",
                f"Filename: \\\\?\\C:\\Windows\\system32\\inetsrv\\config\\{self.path.name}\r\n"
                "Error: Cannot commit configuration changes because the file has changed on disk",
                HR_FILE_CHANGED,
            )
        atomic_write(self.path, data)
        self.doc = XmlDocument(data)
        return True

    @staticmethod
    def section_in(container: etree._Element, schema: SectionSchema) -> etree._Element | None:
        el: etree._Element | None = container
        for part in schema.xml_path:
            el = child(el, part) if el is not None else None
        return el

    @staticmethod
    def put_section(container: etree._Element, new: etree._Element, schema: SectionSchema) -> None:
        """Insert ``new`` at the section's path under ``container``, creating missing groups."""
        parent = container
        parts = schema.xml_path
        for depth, part in enumerate(parts[:-1]):
            found = child(parent, part)
            if found is None:
                top = etree.Element(part)
                cur = top
                for rest in parts[depth + 1 : -1]:
                    cur = etree.SubElement(cur, rest)
                cur.append(new)
                append_child(parent, top)
                return
            parent = found
        append_child(parent, new)

    @staticmethod
    def drop_section(el: etree._Element, container: etree._Element, prune: bool) -> None:
        """Remove a section element; with ``prune``, also the groups it leaves empty."""
        parent = el.getparent()
        remove_child(el)
        while prune and parent is not None and parent is not container:
            if any(True for _ in parent) or (parent.text or "").strip():
                break
            up = parent.getparent()
            remove_child(parent)
            parent = up


class Apphost(ConfigFile):
    """applicationHost.config: configSections, server-level sections, locations, sites."""

    # --- locking ------------------------------------------------------------------

    def override_mode_default(self, section_path: str) -> str:
        el = child(self.root, "configSections")
        parts = section_path.split("/")
        for part in parts[:-1]:
            el = (
                next(
                    (c for c in elements(el) if c.tag == "sectionGroup" and c.get("name") == part),
                    None,
                )
                if el is not None
                else None
            )
        declared = (
            next(
                (c for c in elements(el) if c.tag == "section" and c.get("name") == parts[-1]),
                None,
            )
            if el is not None
            else None
        )
        if declared is None:
            raise OpError(
                "NotFound",
                f"The configuration section '{section_path}' cannot be read because it is "
                "missing a section declaration",
                HR_NOT_FOUND,
            )
        # No overrideModeDefault means Allow.
        return declared.get("overrideModeDefault", "Allow")

    def override_mode(self, schema: SectionSchema, location: str) -> str:
        """Whether a web.config at ``location`` may set the section (Allow) or not (Deny)."""
        mode = self.override_mode_default(schema.path)
        for container in self._chain(location, include_self=True):
            if container is self.root or self.section_in(container, schema) is None:
                continue
            explicit = container.get("overrideMode")
            if container.get("allowOverride", "").lower() == "false":
                explicit = "Deny"
            if explicit in ("Allow", "Deny"):
                mode = explicit
        return mode

    def check_unlocked(self, schema: SectionSchema, location: str) -> None:
        if self.override_mode(schema, location) == "Deny":
            raise OpError(
                "Locked",
                f"{schema.path} at '{location}': {LOCKED_MESSAGE}",
                HR_LOCK_VIOLATION,
            )

    # --- locations ----------------------------------------------------------------

    def locations(self, location: str) -> list[etree._Element]:
        key = _loc_key(location)
        return [
            c
            for c in elements(self.root)
            if c.tag == "location" and _loc_key(c.get("path", "")) == key
        ]

    def _chain(self, location: str, include_self: bool) -> list[etree._Element]:
        """Containers from the server level down to ``location`` (its ancestors' locations too)."""
        out = [self.root, *self.locations("")]
        parts = [p for p in norm_location(location).split("/") if p]
        stop = len(parts) if include_self else len(parts) - 1
        for depth in range(1, stop + 1):
            out.extend(self.locations("/".join(parts[:depth])))
        return out

    def containers(self, location: str) -> list[etree._Element]:
        """The containers whose content is *at* ``location`` (not inherited)."""
        if norm_location(location) == "":
            return [self.root, *self.locations("")]
        return self.locations(location)

    def find_section(self, schema: SectionSchema, location: str) -> etree._Element | None:
        for container in self.containers(location):
            found = self.section_in(container, schema)
            if found is not None:
                return found
        return None

    def levels(self, schema: SectionSchema, location: str) -> list[etree._Element | None]:
        return [self.section_in(c, schema) for c in self._chain(location, include_self=True)]

    def effective(self, schema: SectionSchema, location: str) -> dict[str, Any]:
        return merge(schema, self.levels(schema, location))

    def set_section(self, schema: SectionSchema, location: str, data: Any, key: MachineKey) -> bool:
        where = f"{schema.path} at '{norm_location(location) or 'MACHINE/WEBROOT/APPHOST'}'"
        existing = self.find_section(schema, location)
        undecryptable: list[str] = []
        new = build(data, schema, schema.xml_path[-1], existing, key, where, undecryptable)
        keep_locks(existing, new, schema)
        self._check_inherited_keys(schema, location, new, where)
        if existing is not None and to_json(existing, schema) == to_json(new, schema):
            return False
        refuse_undecryptable(undecryptable)
        if existing is not None:
            replace_child(existing, new)
            return True
        container = self._container_for_write(location)
        if container.getparent() is None and container is not self.root:
            # A new <location>: build it whole, then lay it out once.
            chain_root: etree._Element = new
            for part in reversed(schema.xml_path[:-1]):
                wrapper = etree.Element(part)
                wrapper.append(chain_root)
                chain_root = wrapper
            container.append(chain_root)
            append_child(self.root, container)
        else:
            self.put_section(container, new, schema)
        return True

    def clear_section(self, schema: SectionSchema, location: str) -> bool:
        for container in self.containers(location):
            found = self.section_in(container, schema)
            if found is None:
                continue
            self.drop_section(found, container, prune=container is not self.root)
            if container is not self.root and not any(True for _ in elements(container)):
                remove_child(container)
            return True
        return False

    def _container_for_write(self, location: str) -> etree._Element:
        path = norm_location(location)
        if path == "":
            return self.root
        found = self.locations(path)
        plain = [
            c for c in found if c.get("overrideMode") is None and c.get("allowOverride") is None
        ]
        if plain:
            return plain[0]
        if found:
            return found[0]
        return etree.Element("location", path=self._canonical_path(path))

    def _canonical_path(self, path: str) -> str:
        site, _, rest = path.partition("/")
        found = self.find_site(site)
        name = str(found.get("name")) if found is not None else site
        return f"{name}/{rest}" if rest else name

    def _check_inherited_keys(
        self, schema: SectionSchema, location: str, new: etree._Element, where: str
    ) -> None:
        """IIS refuses an <add> whose key an outer level already added (unless <clear/>)."""
        if norm_location(location) == "":
            return
        outer = [self.section_in(c, schema) for c in self._chain(location, include_self=False)]
        pairs: list[tuple[ElementSchema, etree._Element, list[etree._Element | None]]] = [
            (schema, new, outer)
        ]
        for name, sub in schema.children.items():
            found = child(new, name)
            if found is not None:
                pairs.append(
                    (sub, found, [child(o, name) if o is not None else None for o in outer])
                )
        for sub, el, outer_levels in pairs:
            coll = sub.collection
            if coll is None or child(el, coll.clear_element or "") is not None:
                continue
            inherited = {
                coll.key_of(item["attributes"]) for item in merge(sub, outer_levels)["items"]
            }
            for c in elements(el):
                if c.tag == coll.add_element and coll.key_of(attrs(c)) in inherited:
                    raise _duplicate(coll, attrs(c), where)

    # --- sites --------------------------------------------------------------------

    def sites_element(self) -> etree._Element:
        host = child(self.root, "system.applicationHost")
        sites = child(host, "sites") if host is not None else None
        if sites is None:
            raise OpError("NotFound", "applicationHost.config has no <sites>", HR_NOT_FOUND)
        return sites

    def site_elements(self) -> list[etree._Element]:
        """The sites, checked as IIS checks them when it loads the file: a duplicate site
        name or id, or a binding without protocol or bindingInformation, fails every read
        (IIS_schema.xml: sites@name and sites@id are unique keys; binding attributes are
        required nonEmptyString)."""
        sites = [c for c in elements(self.sites_element()) if c.tag == "site"]
        schema = section("system.applicationHost/sites")
        coll = schema.collection
        if coll is not None:
            where = "system.applicationHost/sites"
            check_entries(coll, sites, where)
            holder = coll.item.children.get("bindings")
            binding_coll = holder.collection if holder is not None else None
            for site in sites:
                if binding_coll is not None:
                    check_entries(
                        binding_coll,
                        self.bindings(site),
                        f"{where}/site[@name='{site.get('name', '')}']/bindings",
                    )
        return sites

    def find_site(self, name: str) -> etree._Element | None:
        for site in self.site_elements():
            if str(site.get("name", "")).lower() == name.lower():
                return site
        return None

    def require_site(self, name: str) -> etree._Element:
        site = self.find_site(name)
        if site is None:
            raise OpError("NotFound", f"The site '{name}' does not exist", HR_NOT_FOUND)
        return site

    @staticmethod
    def physical_path(site: etree._Element) -> str:
        for app in elements(site):
            if app.tag == "application" and app.get("path") == "/":
                for vdir in elements(app):
                    if vdir.tag == "virtualDirectory" and vdir.get("path") == "/":
                        return str(vdir.get("physicalPath", ""))
        return ""

    @staticmethod
    def bindings(site: etree._Element) -> list[etree._Element]:
        holder = child(site, "bindings")
        return [] if holder is None else [b for b in elements(holder) if b.tag == "binding"]

    def set_binding(
        self, site_name: str, protocol: str, information: str, ssl_flags: int
    ) -> tuple[bool, bool]:
        """Create or update a binding; returns (changed, created)."""
        site = self.require_site(site_name)
        for binding in self.bindings(site):
            if (
                binding.get("protocol", "").lower() == protocol.lower()
                and binding.get("bindingInformation", "").lower() == information.lower()
            ):
                if binding.get("sslFlags", "0") == str(ssl_flags):
                    return False, False
                binding.set("sslFlags", str(ssl_flags))
                return True, False
        holder = child(site, "bindings")
        new = etree.Element(
            "binding", protocol=protocol, bindingInformation=information, sslFlags=str(ssl_flags)
        )
        if holder is None:
            holder = etree.Element("bindings")
            holder.append(new)
            append_child(site, holder)
        else:
            append_child(holder, new)
        return True, True

    def remove_binding(self, site_name: str, protocol: str, information: str) -> bool:
        site = self.require_site(site_name)
        for binding in self.bindings(site):
            if (
                binding.get("protocol", "").lower() == protocol.lower()
                and binding.get("bindingInformation", "").lower() == information.lower()
            ):
                remove_child(binding)
                return True
        return False
