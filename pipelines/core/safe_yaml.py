"""``yaml.safe_load`` for text a user (or anyone) wrote, with a bound on how far aliases may expand.

``safe_load`` constructs no objects, but an alias is a reference: nine anchors of nine aliases each (the
"billion laughs", a few hundred bytes) load into a small graph that any walk over the data -- validation,
``repr`` in an error message, a YAML dump -- expands to 9^9 values.  :func:`safe_load` counts the nodes the
document would have with every alias expanded, before constructing anything, and refuses beyond
:data:`MAX_NODES` (a real spec has a few hundred).

    >>> safe_load("a: &x [1, 2]\\nb: *x")                      # aliases within the budget are fine
    {'a': [1, 2], 'b': [1, 2]}
"""

from __future__ import annotations

from typing import Any

import yaml

#: Nodes a document may have with its aliases expanded (scalars, sequences, mappings, keys included).
MAX_NODES = 100_000


class AliasBombError(yaml.YAMLError):
    """A document whose aliases expand beyond :data:`MAX_NODES` nodes (or refer to themselves)."""


def _expanded_size(root: yaml.Node, limit: int) -> int:
    """Nodes under ``root`` counting every alias target once per reference; stops past ``limit``."""
    sizes: dict[int, int] = {}
    busy: set[int] = set()

    def size(node: yaml.Node) -> int:
        key = id(node)
        if key in sizes:
            return sizes[key]
        if key in busy:
            raise AliasBombError("an alias refers to a node that contains it (recursive alias)")
        busy.add(key)
        total = 1
        if isinstance(node, yaml.SequenceNode):
            children: list[yaml.Node] = list(node.value)
        elif isinstance(node, yaml.MappingNode):
            children = [part for pair in node.value for part in pair]
        else:
            children = []
        for child in children:
            total += size(child)
            if total > limit:
                raise AliasBombError(f"aliases expand this document beyond {limit} values; write the values out")
        busy.discard(key)
        sizes[key] = total
        return total

    return size(root)


class _BoundedSafeLoader(yaml.SafeLoader):
    """``SafeLoader`` that checks the expanded size of the composed node graph before constructing it."""

    def get_single_node(self) -> Any:
        node = super().get_single_node()
        if node is not None:
            _expanded_size(node, MAX_NODES)
        return node


def safe_load(text: str) -> Any:
    """``yaml.safe_load(text)``, raising :class:`AliasBombError` (a ``yaml.YAMLError``) for an alias bomb."""
    loader = _BoundedSafeLoader(text)
    try:
        return loader.get_single_data()
    finally:
        loader.dispose()
