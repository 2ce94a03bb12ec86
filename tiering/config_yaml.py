"""The one YAML reader of the product (``tiering.yaml`` and policy files): safe, and bounded.

PyYAML's ``SafeLoader`` builds no objects but still expands aliases: a few hundred bytes of nested
anchors ("billion laughs") describe 10^9 nodes, and whatever walks the result (validation, an error
message) runs for minutes or fills the memory. :class:`BoundedSafeLoader` refuses such a document while it
is composed, before anything is built from it:

* at most :data:`MAX_ALIASES` alias uses (``*name``) per document;
* at most :data:`MAX_EXPANDED_NODES` nodes once every alias is expanded, and no alias inside itself;
* at most :data:`MAX_DEPTH` levels of nesting (the composer recurses once per level).

:func:`read_yaml_text` also refuses a file over :data:`MAX_DOCUMENT_BYTES` before parsing it.
Every refusal is a :class:`YamlRefused` (a ``yaml.YAMLError``) whose message names the limit, never the input.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

#: the largest file read as a config or policy (bytes)
MAX_DOCUMENT_BYTES = 2**20
#: alias uses (``*name``) allowed in one document
MAX_ALIASES = 100
#: nodes of the document with every alias expanded
MAX_EXPANDED_NODES = 100_000
#: levels of nested mappings and lists
MAX_DEPTH = 64


class YamlRefused(yaml.YAMLError):
    """A document over one of the bounds. ``problem`` says which; ``line`` is 1-based, or None."""

    def __init__(self, problem: str, *, line: int | None = None) -> None:
        self.problem = problem
        self.line = line
        super().__init__(problem)


class BoundedSafeLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` that refuses documents that expand beyond the bounds of this module."""

    def __init__(self, stream: str | bytes) -> None:
        super().__init__(stream)
        self._aliases = 0
        self._depth = 0

    def compose_node(self, parent: yaml.Node | None, index: int) -> yaml.Node | None:
        if self.check_event(yaml.AliasEvent):
            self._aliases += 1
            if self._aliases > MAX_ALIASES:
                mark = self.peek_event().start_mark  # type: ignore[no-untyped-call]
                raise YamlRefused(f"more than {MAX_ALIASES} aliases (*name) in one document",
                                  line=mark.line + 1)
        self._depth += 1
        try:
            if self._depth > MAX_DEPTH:
                mark = self.peek_event().start_mark  # type: ignore[no-untyped-call]
                raise YamlRefused(f"nested more than {MAX_DEPTH} levels deep", line=mark.line + 1)
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1

    def compose_document(self) -> yaml.Node | None:
        node: yaml.Node | None = super().compose_document()
        if node is not None:
            _check_expansion(node)
        return node


def _check_expansion(root: yaml.Node) -> None:
    """Raise :class:`YamlRefused` when ``root`` with every alias expanded has more than
    :data:`MAX_EXPANDED_NODES` nodes, or a collection contains itself.

    Aliases make the node graph a DAG whose shared parts count once per use: sizes are summed bottom-up,
    once per distinct node, so the walk costs the document's size, not its expansion.
    """
    sizes: dict[int, int] = {}
    on_path: set[int] = set()
    stack: list[tuple[yaml.Node, bool]] = [(root, False)]
    while stack:
        node, children_done = stack.pop()
        key = id(node)
        if children_done:
            on_path.discard(key)
            total = 1 + sum(sizes[id(child)] for child in _children(node))
            if total > MAX_EXPANDED_NODES:
                raise YamlRefused(
                    f"expands to more than {MAX_EXPANDED_NODES} values through its aliases (*name)",
                    line=node.start_mark.line + 1,
                )
            sizes[key] = total
            continue
        if key in sizes:
            continue
        if key in on_path:
            raise YamlRefused("an alias (*name) refers to a mapping or list that contains it",
                              line=node.start_mark.line + 1)
        on_path.add(key)
        stack.append((node, True))
        stack.extend((child, False) for child in _children(node) if id(child) not in sizes)


def _children(node: yaml.Node) -> list[yaml.Node]:
    if isinstance(node, yaml.SequenceNode):
        return list(node.value)
    if isinstance(node, yaml.MappingNode):
        return [part for pair in node.value for part in pair]
    return []


def compose_yaml(text: str) -> yaml.Node | None:
    """The node graph of ``text`` (one document), within the bounds. Raises ``yaml.YAMLError``."""
    loader = BoundedSafeLoader(text)
    try:
        node: yaml.Node | None = loader.get_single_node()
        return node
    finally:
        loader.dispose()


def construct_yaml(node: yaml.Node | None) -> Any:
    """Plain Python data (dicts, lists, scalars) from a node of :func:`compose_yaml`."""
    if node is None:
        return None
    loader = BoundedSafeLoader("")
    try:
        return loader.construct_document(node)
    finally:
        loader.dispose()


def load_yaml(text: str) -> Any:
    """``yaml.safe_load`` within the bounds of this module. Raises ``yaml.YAMLError`` (``YamlRefused``)."""
    return construct_yaml(compose_yaml(text))


def read_yaml_text(path: Path) -> str:
    """The text of ``path`` (UTF-8) when it is at most :data:`MAX_DOCUMENT_BYTES` long.

    Raises :class:`YamlRefused` for a larger file, ``OSError`` and ``UnicodeDecodeError`` as reading does.
    """
    with path.open("rb") as fh:
        data = fh.read(MAX_DOCUMENT_BYTES + 1)
    if len(data) > MAX_DOCUMENT_BYTES:
        raise YamlRefused(f"larger than {MAX_DOCUMENT_BYTES // 2**20} MiB; a config or policy file is far smaller")
    return data.decode("utf-8")
