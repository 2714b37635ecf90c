"""Random edits of a parsed document (config, plan, inventory) for the fuzz tests: one implementation for all."""

from __future__ import annotations

import copy


def node_paths(node, prefix=()):
    """Every path in a tree of dicts and lists, the root's empty path first."""
    yield prefix
    if isinstance(node, dict):
        for k, v in node.items():
            yield from node_paths(v, prefix + (k,))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            yield from node_paths(v, prefix + (i,))


def apply_tree(doc, edits: list):
    """Apply (op, pick, value) edits in place and return doc. op: drop the picked node, replace it by value, add an
    unknown key (dict) or item (list) beside it, or copy another node's value over it (types stay plausible,
    references go astray). `pick` chooses the node among all paths, so any integer is valid."""
    for op, pick, value in edits:
        paths = [p for p in node_paths(doc) if p]
        if not paths:
            return doc
        path = paths[pick % len(paths)]
        parent = doc
        for part in path[:-1]:
            parent = parent[part]
        last = path[-1]
        if op == "drop":
            parent.pop(last)
        elif op == "replace":
            parent[last] = value
        elif op == "add" and isinstance(parent, dict):
            parent[f"bogus{pick % 7}"] = value
        elif op == "add":
            parent.append(value)
        elif op == "copy":
            other = paths[(pick // 7) % len(paths)]
            node = doc
            for part in other:
                node = node[part]
            parent[last] = copy.deepcopy(node)
    return doc
