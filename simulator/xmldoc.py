"""An XML file edited through lxml and written back with only the edited parts changed.

lxml alone normalises what it does not model (``<a></a>`` becomes ``<a/>``, attribute
quoting and spacing, whitespace between top-level nodes), so a write would touch bytes
far from what it changed. Here every element parsed from the file keeps its byte span
(found with expat, in document order, which is lxml's element order too); on save an
element whose tag, attributes, text, tail and children are as they were is copied from the
original bytes, and only new or edited elements are serialised. The result: a person's
comments, order, spacing and unrelated sections survive byte for byte.
"""

from __future__ import annotations

import re
import xml.parsers.expat
from dataclasses import dataclass
from typing import Any

from lxml import etree

_PARSER = etree.XMLParser(remove_blank_text=False, remove_comments=False, resolve_entities=False)


@dataclass(frozen=True)
class _Span:
    start: int  # first byte of the start tag
    start_tag_end: int  # one past the '>' of the start tag
    end: int  # one past the element's last byte
    self_closing: bool


@dataclass(frozen=True)
class _Snapshot:
    tag: str
    attrib: tuple[tuple[str, str], ...]
    text: str | None
    tail: str | None
    children: tuple[int, ...]


# A start tag up to its '>': names, spacing and quoted attribute values (which may hold '>').
_START_TAG = re.compile(rb"""<(?:[^>"']|"[^"]*"|'[^']*')*>""")


def _tag_close(data: bytes, start: int) -> int:
    """Index of the '>' that ends the start tag beginning at ``start`` (quotes respected)."""
    match = _START_TAG.match(data, start)
    if match is None:
        raise ValueError("unterminated start tag")
    return match.end() - 1


def _spans(data: bytes) -> list[_Span]:
    parser = xml.parsers.expat.ParserCreate()
    starts: list[int] = []
    stack: list[int] = []
    out: dict[int, _Span] = {}

    def on_start(_name: str, _attrs: Any) -> None:
        stack.append(len(starts))
        starts.append(parser.CurrentByteIndex)

    def on_end(_name: str) -> None:
        index = stack.pop()
        start = starts[index]
        close = _tag_close(data, start)
        if data[close - 1] == 0x2F:  # "/>": the start tag is the whole element
            out[index] = _Span(start, close + 1, close + 1, True)
        else:
            end_gt = data.index(b">", parser.CurrentByteIndex)
            out[index] = _Span(start, close + 1, end_gt + 1, False)

    parser.StartElementHandler = on_start
    parser.EndElementHandler = on_end
    parser.Parse(data, True)
    return [out[i] for i in range(len(starts))]


def _escape_attr(value: str) -> str:
    return (
        value.replace("&", "&amp;")
        .replace("<", "&lt;")
        .replace(">", "&gt;")
        .replace('"', "&quot;")
        .replace("\n", "&#10;")
        .replace("\r", "&#13;")
        .replace("\t", "&#9;")
    )


def _escape_text(value: str) -> str:
    return value.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def is_element(node: etree._Element) -> bool:
    """False for comments and processing instructions (whose tag is not a string)."""
    tag: Any = node.tag
    return isinstance(tag, str)


def _start_tag(el: etree._Element, *, empty: bool) -> str:
    attrs = "".join(f' {k!s}="{_escape_attr(str(v))}"' for k, v in el.attrib.items())
    return f"<{el.tag}{attrs}{' />' if empty else '>'}"


class XmlDocument:
    """A parsed XML file that serialises back minimally (see the module docstring)."""

    def __init__(self, data: bytes) -> None:
        self.original = data
        self.root: etree._Element = etree.fromstring(data, _PARSER)
        # Holding the proxies keeps their identity stable for the id() keys below.
        self._elements = [e for e in self.root.iter() if is_element(e)]
        self._snap: dict[int, _Snapshot] = {id(el): self._snapshot(el) for el in self._elements}
        # The tree as lxml writes it when read: a save that changed nothing is told from
        # it at C speed, without the byte spans (found only when something changed).
        self._as_read = etree.tostring(self.root)
        self._span_of: dict[int, _Span] | None = None

    @property
    def _span(self) -> dict[int, _Span]:
        if self._span_of is None:
            spans = _spans(self.original)
            if len(spans) != len(self._elements):
                raise ValueError("element count differs between expat and lxml")
            self._span_of = {id(el): span for el, span in zip(self._elements, spans, strict=True)}
        return self._span_of

    @staticmethod
    def _snapshot(el: etree._Element) -> _Snapshot:
        return _Snapshot(
            str(el.tag),
            tuple((str(k), str(v)) for k, v in el.attrib.items()),
            el.text,
            el.tail,
            tuple(id(c) for c in el),
        )

    def _unchanged(self, el: etree._Element) -> bool:
        snap = self._snap.get(id(el))
        if snap is None or self._snapshot(el) != snap:
            return False
        return all(not is_element(c) or self._unchanged(c) for c in el)

    def _emit(self, el: etree._Element) -> str:
        if not is_element(el):  # comment or processing instruction
            return etree.tostring(el, encoding="unicode", with_tail=False)
        span = self._span.get(id(el))
        if span is not None and self._unchanged(el):
            return self.original[span.start : span.end].decode("utf-8")
        snap = self._snap.get(id(el))
        has_content = len(el) > 0 or bool(el.text)
        if (
            span is not None
            and snap is not None
            and snap.attrib == tuple((str(k), str(v)) for k, v in el.attrib.items())
        ):
            start = self.original[span.start : span.start_tag_end].decode("utf-8")
            if span.self_closing:
                if not has_content:
                    return start
                start = _start_tag(el, empty=False)
        else:
            if not has_content:
                return _start_tag(el, empty=True)
            start = _start_tag(el, empty=False)
        parts = [start, _escape_text(el.text or "")]
        for child in el:
            parts.append(self._emit(child))
            parts.append(_escape_text(child.tail or ""))
        parts.append(f"</{el.tag}>")
        return "".join(parts)

    def serialize(self) -> bytes:
        if etree.tostring(self.root) == self._as_read:
            return self.original  # nothing changed
        span = self._span[id(self.root)]
        body = self._emit(self.root).encode("utf-8")
        return self.original[: span.start] + body + self.original[span.end :]


# --- whitespace-aware tree edits -------------------------------------------------------


def _line_indent(text: str | None) -> str | None:
    if text is None or "\n" not in text:
        return None
    tail = text.rsplit("\n", 1)[1]
    return tail if not tail.strip() else None


def indent_of(el: etree._Element) -> str:
    """The whitespace that starts ``el``'s line in the file."""
    prev = el.getprevious()
    parent = el.getparent()
    found = _line_indent(
        prev.tail if prev is not None else (parent.text if parent is not None else None)
    )
    if found is not None:
        return found
    if parent is None:
        return ""
    return indent_of(parent) + "    "


def _pretty(el: etree._Element, indent: str, step: str) -> None:
    """Indent a freshly built subtree whose own line starts with ``indent``."""
    children = [c for c in el]
    if not children:
        return
    el.text = "\n" + indent + step
    for i, child in enumerate(children):
        _pretty(child, indent + step, step)
        child.tail = "\n" + indent + (step if i < len(children) - 1 else "")


def append_child(parent: etree._Element, child: etree._Element, step: str = "    ") -> None:
    """Append a new subtree as ``parent``'s last child, laid out like its siblings."""
    base = indent_of(parent) if parent.getparent() is not None else ""
    inner = base + step
    children = list(parent)
    if children:
        found = _line_indent(parent.text)
        inner = found if found is not None else inner
        last = children[-1]
        found = _line_indent(last.tail)
        closing = found if found is not None else base
        # Keep blank lines that separated the last child from the closing tag.
        before = (last.tail or "").rsplit("\n", 1)[0] if "\n" in (last.tail or "") else ""
        last.tail = before + "\n" + inner
        child.tail = "\n" + closing
    else:
        parent.text = "\n" + inner
        child.tail = "\n" + base
    _pretty(child, inner, step)
    parent.append(child)


def replace_child(old: etree._Element, new: etree._Element, step: str = "    ") -> None:
    """Put ``new`` where ``old`` is, on the same line and indentation."""
    parent = old.getparent()
    assert parent is not None
    new.tail = old.tail
    _pretty(new, indent_of(old), step)
    parent.replace(old, new)


def remove_child(el: etree._Element) -> None:
    """Remove ``el`` with its line, keeping the surrounding layout."""
    parent = el.getparent()
    assert parent is not None
    if el.getnext() is None:
        # The last child's tail holds the indentation of the parent's closing tag.
        prev = el.getprevious()
        if prev is not None:
            prev.tail = el.tail
        else:
            parent.text = None
    parent.remove(el)
