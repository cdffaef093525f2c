"""agent.ps1 as the unit tests read it: the shipped text, its PowerShell syntax tree
(tree-sitter's PowerShell grammar) and the text of one function."""

from __future__ import annotations

from collections.abc import Iterator
from importlib import resources
from typing import Any

import tree_sitter
import tree_sitter_powershell

LANGUAGE = tree_sitter.Language(tree_sitter_powershell.language())


def agent_text() -> str:
    """The agent script this installation ships."""
    return resources.files("iis_clientcert.host").joinpath("agent.ps1").read_text("utf-8")


def parse(text: str) -> tuple[Any, bytes]:
    source = text.encode("utf-8")
    return tree_sitter.Parser(LANGUAGE).parse(source), source


def walk(node: Any) -> Iterator[Any]:
    yield node
    for child in node.children:
        yield from walk(child)


def node_text(node: Any, source: bytes) -> str:
    return source[node.start_byte : node.end_byte].decode("utf-8")


def function(agent: str, name: str) -> str:
    """The text of one function of agent.ps1."""
    tree, source = parse(agent)
    for node in walk(tree.root_node):
        if node.type != "function_statement":
            continue
        names = [c for c in node.children if c.type == "function_name"]
        if names and node_text(names[0], source).lower() == name.lower():
            return node_text(node, source)
    raise AssertionError(f"agent.ps1 defines no function {name}")
