"""The mini IIS configuration schema (``schema.xml``, in IIS_schema.xml's format) and its rules.

Value rules (types, enums, flags, required attributes, keys) live here so the model and
its error messages say the same thing IIS would.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cache
from importlib import resources

from lxml import etree

from iis_clientcert_simulator.errors import HR_INVALID_DATA, HR_NOT_FOUND, OpError
from iis_clientcert_simulator.xmldoc import is_element


@dataclass(frozen=True)
class AttributeSchema:
    name: str
    type: str  # bool | string | enum | flags | uint | int
    default: str | None = None
    required: bool = False
    unique_key: bool = False
    combined_key: bool = False
    case_sensitive: bool = False
    encrypted: bool = False
    non_empty: bool = False
    site_name: bool = False
    # enum / flag names with their numeric values, in schema order.
    choices: tuple[tuple[str, int], ...] = ()

    def normalize(self, value: str, where: str) -> str:
        """The value as IIS stores it; raises InvalidValue for what the schema refuses."""
        if self.non_empty and value == "":
            raise _invalid(f"{where}: the attribute '{self.name}' must be a non-empty string")
        if self.site_name:
            bad = sorted(set(value) & _SITE_NAME_FORBIDDEN)
            if value.strip() == "" or bad:
                raise _invalid(
                    f"{where}: '{value}' is not a valid site name for '{self.name}' "
                    f"(it must not be empty or contain {' '.join(sorted(_SITE_NAME_FORBIDDEN))})"
                )
        if self.type == "bool":
            if value.lower() not in ("true", "false"):
                raise _invalid(
                    f"{where}: '{value}' is not a valid value for the boolean "
                    f"attribute '{self.name}' (use true or false)"
                )
            return value.lower()
        if self.type in ("uint", "int"):
            text = value.strip()
            if not (
                text.isdigit()
                or (self.type == "int" and text.startswith("-") and text[1:].isdigit())
            ):
                raise _invalid(f"{where}: '{value}' is not a valid {self.type} for '{self.name}'")
            return text
        if self.type == "enum":
            return self._enum(value, where)
        if self.type == "flags":
            return self._flags(value, where)
        return value

    def _names(self) -> str:
        return ", ".join(name for name, _ in self.choices)

    def _enum(self, value: str, where: str) -> str:
        for name, number in self.choices:
            if value.lower() == name.lower() or value.strip() == str(number):
                return name
        raise _invalid(
            f"{where}: '{value}' is not a valid value for '{self.name}' (allowed: {self._names()})"
        )

    def _flags(self, value: str, where: str) -> str:
        total = 0
        for part in (p.strip() for p in value.split(",")):
            if part == "":
                continue
            if part.isdigit():
                total |= int(part)
                continue
            match = [number for name, number in self.choices if name.lower() == part.lower()]
            if not match:
                hint = (
                    " (SslMapCert is an IIS 6 flag that IIS 7 and later do not have;"
                    " map certificates with iisClientCertificateMappingAuthentication)"
                    if part.lower() == "sslmapcert"
                    else ""
                )
                raise _invalid(
                    f"{where}: '{part}' is not a valid flag for '{self.name}' "
                    f"(allowed: {self._names()}){hint}"
                )
            total |= match[0]
        known = 0
        for _, number in self.choices:
            known |= number
        if total & ~known:
            raise _invalid(f"{where}: {value!r} sets bits unknown to '{self.name}'")
        names = [name for name, number in self.choices if number and total & number == number]
        if not names:
            zero = [name for name, number in self.choices if number == 0]
            return zero[0] if zero else "0"
        # IIS writes flags as their names joined by ", " ("Ssl, SslNegotiateCert"), as
        # appcmd and Microsoft.Web.Administration leave them in applicationHost.config.
        return ", ".join(names)


@dataclass(frozen=True)
class ElementSchema:
    name: str
    attributes: dict[str, AttributeSchema] = field(default_factory=dict)
    children: dict[str, ElementSchema] = field(default_factory=dict)
    collection: CollectionSchema | None = None


@dataclass(frozen=True)
class CollectionSchema:
    add_element: str
    clear_element: str | None
    remove_element: str | None
    item: ElementSchema

    def unique_attributes(self) -> list[AttributeSchema]:
        """The isUniqueKey attributes: each one alone is unique in the collection."""
        return [a for a in self.item.attributes.values() if a.unique_key]

    def key_attributes(self) -> list[AttributeSchema]:
        attrs = list(self.item.attributes.values())
        keys = [a for a in attrs if a.unique_key]
        return keys or [a for a in attrs if a.combined_key]

    def key_of(self, attributes: dict[str, str]) -> tuple[str, ...]:
        """An item's identity: key attributes with defaults applied, folded per case rule."""
        out: list[str] = []
        for attr in self.key_attributes():
            value = attributes.get(attr.name, attr.default or "")
            out.append(value if attr.case_sensitive else value.lower())
        return tuple(out)


@dataclass(frozen=True)
class SectionSchema(ElementSchema):
    path: str = ""

    @property
    def xml_path(self) -> list[str]:
        return self.path.split("/")


def _invalid(message: str) -> OpError:
    return OpError("InvalidValue", message, HR_INVALID_DATA)


# validationType="siteName": what IIS Manager refuses in a site name.
_SITE_NAME_FORBIDDEN = frozenset('\\/?;:@&=+$,|"<>')


def _bool(el: etree._Element, name: str) -> bool:
    return (el.get(name) or "false").lower() == "true"


def _parse_attribute(el: etree._Element) -> AttributeSchema:
    kind = el.get("type", "string")
    choices = tuple(
        (str(c.get("name")), int(str(c.get("value")), 0))
        for c in el
        if is_element(c) and c.tag in ("enum", "flag")
    )
    return AttributeSchema(
        name=str(el.get("name")),
        type=kind,
        default=el.get("defaultValue"),
        required=_bool(el, "required"),
        unique_key=_bool(el, "isUniqueKey"),
        combined_key=_bool(el, "isCombinedKey"),
        case_sensitive=_bool(el, "caseSensitive"),
        encrypted=_bool(el, "encrypted"),
        non_empty=el.get("validationType") == "nonEmptyString",
        site_name=el.get("validationType") == "siteName",
        choices=choices,
    )


def _parse_body(
    el: etree._Element,
) -> tuple[dict[str, AttributeSchema], dict[str, ElementSchema], CollectionSchema | None]:
    attributes: dict[str, AttributeSchema] = {}
    children: dict[str, ElementSchema] = {}
    collection: CollectionSchema | None = None
    for child in el:
        if not is_element(child):
            continue
        if child.tag == "attribute":
            attr = _parse_attribute(child)
            attributes[attr.name] = attr
        elif child.tag == "element":
            children[str(child.get("name"))] = _parse_element(child, str(child.get("name")))
        elif child.tag == "collection":
            collection = CollectionSchema(
                add_element=str(child.get("addElement")),
                clear_element=child.get("clearElement"),
                remove_element=child.get("removeElement"),
                item=_parse_element(child, str(child.get("addElement"))),
            )
    return attributes, children, collection


def _parse_element(el: etree._Element, name: str) -> ElementSchema:
    attributes, children, collection = _parse_body(el)
    return ElementSchema(name, attributes, children, collection)


def parse_schema(data: bytes) -> dict[str, SectionSchema]:
    root = etree.fromstring(data)
    out: dict[str, SectionSchema] = {}
    for el in root:
        if not is_element(el) or el.tag != "sectionSchema":
            continue
        path = str(el.get("name"))
        attributes, children, collection = _parse_body(el)
        out[path.lower()] = SectionSchema(
            path.rsplit("/", 1)[-1], attributes, children, collection, path=path
        )
    return out


@cache
def sections() -> dict[str, SectionSchema]:
    """The sections of ``schema.xml`` by lower-cased path (IIS ignores case in section names)."""
    data = resources.files("iis_clientcert_simulator").joinpath("schema.xml").read_bytes()
    return parse_schema(data)


def section(path: str) -> SectionSchema:
    found = sections().get(path.strip("/").lower())
    if found is None:
        raise OpError(
            "NotFound",
            f"Cannot find configuration section '{path}': it is not declared in the schema",
            HR_NOT_FOUND,
        )
    return found


__all__ = [
    "AttributeSchema",
    "CollectionSchema",
    "ElementSchema",
    "SectionSchema",
    "section",
    "sections",
]
