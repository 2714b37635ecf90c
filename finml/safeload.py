"""Bounded, typed reading of every file the CLI takes from a user: stack files, plans, inventories, GPU profiles,
policy config, reports it reads back.

Each reader enforces a size cap, a nesting-depth cap, a YAML alias-expansion budget (no "billion laughs"), strict
UTF-8, unique mapping keys and the expected top-level type, and fails with :class:`InputError` — one line naming the
file (and line where known) and what is allowed. YAML documents come back with a :class:`LineMap` so later checks can
say on which line a bad key sits.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

MAX_FILE_BYTES = 8 * 1024 * 1024
MAX_DEPTH = 64
MAX_YAML_NODES = 200_000  # constructed values, counting each alias expansion again


class InputError(ValueError):
    """An input file that cannot be used; the message is one line: file[:line]: problem — what is allowed."""

    def __init__(self, source: str, message: str, line: int | None = None):
        self.source = source
        self.line = line
        self.problem = message
        where = f"{source}:{line}" if line else source
        super().__init__(f"{where}: {_one_line(message)}")


def _one_line(text: str) -> str:
    return " ".join("".join(ch if ch.isprintable() or ch in "\n\t" else repr(ch)[1:-1] for ch in str(text)).split())


@dataclass
class LineMap:
    """Key path (tuple of mapping keys and list indexes) → 1-based line where that value's key (or item) starts."""

    lines: dict[tuple[Any, ...], int] = field(default_factory=dict)

    def line_of(self, path: tuple[Any, ...]) -> int | None:
        """The line of `path`, or of its nearest ancestor that the file has."""
        path = tuple(path)
        while path:
            if path in self.lines:
                return self.lines[path]
            path = path[:-1]
        return self.lines.get((), None)


def read_bytes(path: Path, what: str, max_bytes: int = MAX_FILE_BYTES) -> bytes:
    source = str(path)
    try:
        if path.is_dir():
            raise InputError(source, f"is a directory; expected {what}")
        with open(path, "rb") as fh:
            data = fh.read(max_bytes + 1)
    except InputError:
        raise
    except OSError as exc:
        raise InputError(source, f"cannot read {what}: {exc.strerror or exc}") from None
    if len(data) > max_bytes:
        raise InputError(source, f"{what} is larger than {max_bytes // (1024 * 1024)} MiB; refusing to read it")
    return data


def decode_text(data: bytes, source: str, what: str) -> str:
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise InputError(source, f"{what} is not valid UTF-8 (byte 0x{data[exc.start]:02x} at offset {exc.start})",
                         line) from None
    return text.removeprefix("\ufeff")


def read_text(path: Path, what: str, max_bytes: int = MAX_FILE_BYTES) -> str:
    return decode_text(read_bytes(path, what, max_bytes), str(path), what)


def _type_name(value: Any) -> str:
    return {dict: "a mapping", list: "a list", str: "a string", type(None): "empty", bool: "a boolean",
            int: "a number", float: "a number"}.get(type(value), type(value).__name__)


def _is_text(value: str) -> bool:
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def check_depth(value: Any, source: str, max_depth: int = MAX_DEPTH) -> None:
    """Nesting depth and valid Unicode (JSON may escape lone surrogates); iterative, so the check itself cannot hit
    the recursion limit."""
    stack = [(value, 1)]
    while stack:
        node, depth = stack.pop()
        if depth > max_depth:
            raise InputError(source, f"nested more than {max_depth} levels deep; allowed: at most {max_depth}")
        if isinstance(node, dict):
            for key in node:
                if not _is_text(key):
                    raise InputError(source, "a key is not valid Unicode text (lone surrogate escape)")
            stack.extend((v, depth + 1) for v in node.values())
        elif isinstance(node, list):
            stack.extend((v, depth + 1) for v in node)
        elif isinstance(node, str) and not _is_text(node):
            raise InputError(source, "a value is not valid Unicode text (lone surrogate escape)")


# ------------------------------------------------------------------------------------------------------------ JSON


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


def _unique_object(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise ValueError(f"duplicate key {key!r}")
        out[key] = value
    return out


def loads_json(text: str, source: str, what: str, expect: type | None = dict) -> Any:
    try:
        data = json.loads(text, object_pairs_hook=_unique_object, parse_constant=_reject_constant)
    except json.JSONDecodeError as exc:
        raise InputError(source, f"not valid JSON: {exc.msg} (column {exc.colno}); expected {what}", exc.lineno) \
            from None
    except RecursionError:
        raise InputError(source, f"nested more than {MAX_DEPTH} levels deep; expected {what}") from None
    except ValueError as exc:
        raise InputError(source, f"not valid JSON: {exc}; expected {what}") from None
    check_depth(data, source)
    if expect is not None and not isinstance(data, expect):
        raise InputError(source, f"is {_type_name(data)}; expected {what} ({_type_name(expect())} at the top level)")
    return data


def load_json(path: Path, what: str, expect: type | None = dict, max_bytes: int = MAX_FILE_BYTES) -> Any:
    return loads_json(read_text(path, what, max_bytes), str(path), what, expect)


# ------------------------------------------------------------------------------------------------------------ YAML


class _Budget(Exception):
    pass


class _Loader(yaml.SafeLoader):
    """SafeLoader for composing only; values are built by `_build` below (duplicate keys, budgets, lines)."""


def _build(loader: _Loader, root: yaml.Node, source: str, lines: LineMap) -> Any:
    budget = [MAX_YAML_NODES]
    on_path: set[int] = set()

    def build(node: yaml.Node, path: tuple[Any, ...], depth: int) -> Any:
        budget[0] -= 1
        if budget[0] < 0:
            raise InputError(source, f"expands to more than {MAX_YAML_NODES} values (YAML aliases?); refusing to "
                                     f"expand it", node.start_mark.line + 1)
        if depth > MAX_DEPTH:
            raise InputError(source, f"nested more than {MAX_DEPTH} levels deep; allowed: at most {MAX_DEPTH}",
                             node.start_mark.line + 1)
        if isinstance(node, yaml.ScalarNode):
            return loader.construct_object(node, deep=True)
        if id(node) in on_path:
            raise InputError(source, "a YAML alias refers to a value that contains it (recursive alias)",
                             node.start_mark.line + 1)
        on_path.add(id(node))
        try:
            if isinstance(node, yaml.SequenceNode):
                if node.tag not in ("tag:yaml.org,2002:seq",):
                    raise InputError(source, f"unsupported YAML tag {node.tag}; allowed: plain YAML mappings, lists and scalars", node.start_mark.line + 1)
                out_list = []
                for i, item in enumerate(node.value):
                    lines.lines.setdefault(path + (i,), item.start_mark.line + 1)
                    out_list.append(build(item, path + (i,), depth + 1))
                return out_list
            if isinstance(node, yaml.MappingNode):
                if node.tag not in ("tag:yaml.org,2002:map",):
                    raise InputError(source, f"unsupported YAML tag {node.tag}; allowed: plain YAML mappings, lists and scalars", node.start_mark.line + 1)
                loader.flatten_mapping(node)  # YAML merge keys (<<), as PyYAML's SafeLoader does
                out: dict[Any, Any] = {}
                for key_node, value_node in node.value:
                    if not isinstance(key_node, yaml.ScalarNode):
                        raise InputError(source, "a mapping key must be a plain value, not a list or mapping",
                                         key_node.start_mark.line + 1)
                    key = loader.construct_object(key_node, deep=True)
                    try:
                        hash(key)
                    except TypeError:
                        raise InputError(source, f"mapping key {key!r} cannot be used as a key",
                                         key_node.start_mark.line + 1) from None
                    if key in out:
                        first = lines.lines.get(path + (key,))
                        raise InputError(source, f"duplicate key {key!r}"
                                                 + (f" (first at line {first})" if first else "")
                                                 + "; each key may appear once in a mapping",
                                         key_node.start_mark.line + 1)
                    lines.lines.setdefault(path + (key,), key_node.start_mark.line + 1)
                    out[key] = build(value_node, path + (key,), depth + 1)
                return out
            raise InputError(source, f"unsupported YAML node {type(node).__name__}", node.start_mark.line + 1)
        finally:
            on_path.discard(id(node))

    return build(root, (), 1)


def loads_yaml(text: str, source: str, what: str, expect: type | None = dict) -> tuple[Any, LineMap]:
    lines = LineMap()
    loader = None
    try:
        loader = _Loader(text)
        root = loader.get_single_node()
        if root is None:
            data = None
        else:
            lines.lines[()] = root.start_mark.line + 1
            data = _build(loader, root, source, lines)
    except InputError:
        raise
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        problem = exc.problem or exc.context or "syntax error"
        raise InputError(source, f"not valid YAML: {problem}; expected {what}",
                         mark.line + 1 if mark else None) from None
    except yaml.reader.ReaderError as exc:
        line = text[: exc.position].count("\n") + 1 if isinstance(exc.position, int) else None
        raise InputError(source, f"not valid YAML: character {exc.character!r} is not allowed in YAML; expected "
                                 f"{what}", line) from None
    except yaml.YAMLError as exc:
        raise InputError(source, f"not valid YAML: {exc}; expected {what}") from None
    except RecursionError:
        raise InputError(source, f"nested more than {MAX_DEPTH} levels deep; allowed: at most {MAX_DEPTH}") from None
    except (ValueError, TypeError, OverflowError) as exc:  # e.g. a timestamp scalar out of range
        raise InputError(source, f"not valid YAML: {exc}; expected {what}") from None
    finally:
        if loader is not None:
            loader.dispose()
    if expect is not None and not isinstance(data, expect):
        raise InputError(source, f"is {_type_name(data)}; expected {what} ({_type_name(expect())} at the top level)")
    return data, lines


def load_yaml(path: Path, what: str, expect: type | None = dict,
              max_bytes: int = MAX_FILE_BYTES) -> tuple[Any, LineMap]:
    return loads_yaml(read_text(path, what, max_bytes), str(path), what, expect)


def display(path: Path | str) -> str:
    """A path as the user gave it, or relative to the working directory when it lies below it."""
    path = Path(path)
    if not path.is_absolute():
        return str(path)
    try:
        return str(path.relative_to(Path(os.getcwd())))
    except ValueError:
        return str(path)
