"""YAML with its aliases bounded: a "billion laughs" file is refused before it is built.

PyYAML builds an alias as a reference to the anchored object, so 300 bytes of nested aliases
load quickly into a structure that reaches billions of nodes once anything walks it (validation,
an error message's repr, yaml.safe_dump of run.yaml). `load_yaml` composes the node graph first,
counts its nodes with every alias expanded (each node's count is computed once, so the count costs
the size of the file, not of the expansion), and refuses a graph that is too large or recursive.
Every YAML document runctl reads (configs, run.yaml, keys, `--set` values, edited configs) goes
through here.
"""

from __future__ import annotations

from typing import Any

import yaml

# Nodes after alias expansion: a config is hundreds; a run.yaml with a long curriculum thousands.
MAX_EXPANDED_NODES = 100_000


class YAMLBombError(yaml.MarkedYAMLError):
    """Aliases that expand too far, or an alias inside its own anchor."""


def safe_loader() -> type:
    return getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def load_yaml(text: str | bytes, loader: type | None = None, *, max_nodes: int = MAX_EXPANDED_NODES) -> Any:
    """`yaml.load(text, loader)` (a SafeLoader class; the C one by default) with aliases bounded.

    Raises yaml.YAMLError (YAMLBombError for the alias bound) like yaml.load does.
    """
    instance = (loader or safe_loader())(text)
    try:
        node = instance.get_single_node()
        if node is None:
            return None
        check_expansion(node, max_nodes)
        return instance.construct_document(node)
    finally:
        instance.dispose()


def check_expansion(root: yaml.Node, max_nodes: int = MAX_EXPANDED_NODES) -> int:
    """The node count of `root` with aliases expanded; YAMLBombError above `max_nodes` or on a cycle."""
    counts: dict[int, int] = {}
    on_path: set[int] = set()
    # iterative post-order walk: (node, children pushed?)
    stack: list[tuple[yaml.Node, bool]] = [(root, False)]
    while stack:
        node, expanded = stack.pop()
        key = id(node)
        if expanded:
            on_path.discard(key)
            total = 1 + sum(counts[id(child)] for child in _children(node))
            if total > max_nodes:
                raise YAMLBombError(None, None, f"aliases expand to more than {max_nodes:,} nodes; refused "
                                    "(a \"billion laughs\" document)", node.start_mark)
            counts[key] = total
            continue
        if key in counts:
            continue
        if key in on_path:
            raise YAMLBombError(None, None, "an alias refers to the node that contains it; refused",
                                node.start_mark)
        on_path.add(key)
        stack.append((node, True))
        for child in _children(node):
            if id(child) in on_path:
                raise YAMLBombError(None, None, "an alias refers to the node that contains it; refused",
                                    child.start_mark)
            if id(child) not in counts:
                stack.append((child, False))
    return counts[id(root)]


def _children(node: yaml.Node) -> list[yaml.Node]:
    if isinstance(node, yaml.SequenceNode):
        return list(node.value)
    if isinstance(node, yaml.MappingNode):
        return [item for pair in node.value for item in pair]
    return []
