"""Reading YAML from strangers: PyYAML's safe loader under two bounds, for every YAML file jimeng-batch reads
(manifests, simulator configs). One place, one value each.

- ``MAX_YAML_VALUES``: the values a file may hold once its aliases (``*name``) and merges (``<<: *name``) are
  expanded. The composed node graph shares an anchored node between its uses, so a 451-byte file of nested aliases
  ("billion laughs") composes in microseconds and expands to billions of values; :func:`check_bounds` counts the
  expansion, without making it, and stops at the bound. A hand-written file holds hundreds; large batches belong in
  a spreadsheet (``rows:``), which is streamed and not bound by this.
- ``MAX_YAML_DEPTH``: mappings and lists inside each other. PyYAML's composer recurses once per level (500 levels of
  ``[`` end in RecursionError), so :class:`BoundedLoader` stops it first; a recursive alias (``&a [*a]``) is an
  infinitely deep document and is stopped by :func:`check_bounds`.

Both raise :class:`YamlTooBig`, with the place; each reader turns it into its own located error.
"""

from __future__ import annotations

from typing import Any

import yaml
from yaml.error import Mark
from yaml.nodes import MappingNode, Node, SequenceNode

MAX_YAML_VALUES = 100_000
MAX_YAML_DEPTH = 64


class YamlTooBig(ValueError):
    """A bound was passed: ``line`` and ``column`` (1-based) say where."""

    def __init__(self, mark: Mark, message: str) -> None:
        super().__init__(message)
        self.line = mark.line + 1
        self.column = mark.column + 1
        self.message = message


def _too_deep(mark: Mark, recursive: bool) -> YamlTooBig:
    why = " (an alias that contains itself?)" if recursive else ""
    return YamlTooBig(mark, f"nested more than {MAX_YAML_DEPTH} levels deep{why}")


class BoundedLoader(yaml.SafeLoader):
    """The safe loader, refusing to compose more than :data:`MAX_YAML_DEPTH` levels."""

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self._depth = 0

    def compose_node(self, parent: Node | None, index: Any) -> Node | None:
        self._depth += 1
        try:
            if self._depth > MAX_YAML_DEPTH:
                raise _too_deep(self.peek_event().start_mark, recursive=False)  # type: ignore[no-untyped-call]
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1


def check_bounds(root: Node) -> None:
    """Raise YamlTooBig if the document under ``root`` would expand past the bounds; counted, never expanded."""
    values = 0
    # (node, depth, where to point if it expands too far: the top-level entry it is under)
    stack: list[tuple[Node, int, Mark]] = [(root, 0, root.start_mark)]
    while stack:
        node, depth, top = stack.pop()
        values += 1
        if depth > MAX_YAML_DEPTH:
            raise _too_deep(node.start_mark, recursive=True)
        if values > MAX_YAML_VALUES:
            raise YamlTooBig(top, f"expands to more than {MAX_YAML_VALUES:,} values through its aliases (*name) or "
                                  "merges (<<); write large batches as a spreadsheet (`rows:`)")
        if isinstance(node, MappingNode):
            children = [(value, key.start_mark) for key, value in node.value]
        elif isinstance(node, SequenceNode):
            children = [(item, item.start_mark) for item in node.value]
        else:
            continue
        for child, mark in reversed(children):  # in document order: the first entry to pass the bound is named
            stack.append((child, depth + 1, mark if depth == 0 else top))


def load(text: str) -> Any:
    """The one document of ``text`` as plain data, under both bounds (YamlTooBig, or yaml.YAMLError); for the small
    files read whole, without node positions (protocol files)."""
    loader = BoundedLoader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        check_bounds(node)
        return loader.construct_document(node)
    finally:
        loader.dispose()
