"""Unknown-safe property access, the violation message format the report parser relies on, and the fail-closed
guards: no unknown preview value and no crashing rule ever passes silently."""

from __future__ import annotations

import contextlib
import fnmatch
import functools
import re
from collections import defaultdict
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Iterator, Mapping, Optional, Sequence

from pulumi_policy import ReportViolation
from pulumi_policy import proxy as _proxy
from pulumi_policy.deserialize import SPECIAL_SIG_KEY as _SPECIAL_SIG_KEY
from pulumi_policy.deserialize import _deserialize_property, deserialize_properties
from pulumi_policy.proxy import UnknownValueError
from google.protobuf import json_format

from . import engine

import collections.abc as _abc  # noqa: E402 - the ABCs themselves: typing's aliases make isinstance slow

_SCALARS = frozenset((bool, int, float))

try:  # not-applicable is signalled with this exception; it must pass through the fail-closed guards
    from pulumi_policy.policy import _NotApplicableError as NotApplicable
except ImportError:  # pragma: no cover - older/newer SDK layout
    NotApplicable = type("NotApplicable", (Exception,), {})

# --- unknown-safe property access -------------------------------------------------------------------

class _Unknown:
    """Marker for a value the engine could not know during preview.

    Using it as a boolean raises, so sloppy truthiness tests fail (and are reported) instead of passing."""

    _instance: Optional["_Unknown"] = None

    def __new__(cls) -> "_Unknown":
        if cls._instance is None:
            cls._instance = super().__new__(cls)
        return cls._instance

    def __repr__(self) -> str:
        return "<unknown>"

    def __bool__(self) -> bool:
        raise TypeError("an unknown preview value was used as a boolean")


UNKNOWN: Any = _Unknown()
_UNKNOWN_SENTINELS = frozenset((
    _proxy.UNKNOWN_BOOLEAN_VALUE, _proxy.UNKNOWN_NUMBER_VALUE, _proxy.UNKNOWN_STRING_VALUE,
    _proxy.UNKNOWN_ARRAY_VALUE, _proxy.UNKNOWN_ASSET_VALUE, _proxy.UNKNOWN_ARCHIVE_VALUE,
    _proxy.UNKNOWN_OBJECT_VALUE,
))


def is_unknown(value: Any) -> bool:
    return value is UNKNOWN


def plain(value: Any) -> Any:
    """Copy (possibly proxied) props into plain dicts/lists with ``UNKNOWN`` where the engine sent an unknown.

    The runtime wraps props in ``unknown_checking_proxy``, which raises ``UnknownValueError`` on access; an
    escaping error becomes an ADVISORY diagnostic, so rules only ever look at this plain copy."""
    kind = type(value)
    if kind is engine.LazyProxy:
        return value.finml_plain  # decoded once per request (engine.py); rules read it, never write it
    if kind is str:
        return UNKNOWN if value in _UNKNOWN_SENTINELS else value
    if kind in _SCALARS or value is None:
        return value
    if isinstance(value, str):
        return UNKNOWN if value in _UNKNOWN_SENTINELS else value
    if isinstance(value, _abc.Mapping):
        out: dict[Any, Any] = {}
        for key in list(iter(value)):
            try:
                out[key] = plain(value[key])
            except UnknownValueError:
                out[key] = UNKNOWN
        return out
    if isinstance(value, _abc.Sequence) and not isinstance(value, (bytes, bytearray)):
        items: list[Any] = []
        for index in range(len(value)):
            try:
                items.append(plain(value[index]))
            except UnknownValueError:
                items.append(UNKNOWN)
        return items
    return value


class _NotPlain(Exception):
    """A value ``plain_struct`` leaves to the SDK's own decoding (a NaN or infinite number: the SDK refuses it)."""


def plain_struct(struct: Any) -> dict[Any, Any]:
    """``plain(deserialize_properties(MessageToDict(struct)))`` in one pass over a ``google.protobuf.Struct``.

    The SDK decodes a request's props through ``json_format`` (pure Python, one call per field and value) and then
    rules copy the result once more with ``plain``; this walks the message once. Values carrying the SDK's special
    signature (secrets, assets, archives) and numbers the SDK refuses go through the SDK's own functions, so the
    result, its key order and the errors raised are the same (tests/policies/test_policy_engine.py compares them)."""
    fields = struct.fields  # (iterating keys: a protobuf map's items() is a pure-Python view, twice as slow)
    try:
        return {key: _plain_value(fields[key]) for key in fields}
    except _NotPlain:
        return plain(deserialize_properties(json_format.MessageToDict(struct)))  # raises as the SDK does


def _plain_value(value: Any) -> Any:
    kind = value.WhichOneof("kind")
    if kind == "string_value":
        text = value.string_value
        return UNKNOWN if text in _UNKNOWN_SENTINELS else text
    if kind == "struct_value":
        fields = value.struct_value.fields
        if _SPECIAL_SIG_KEY in fields:  # a secret, asset or archive: the SDK unwraps it
            return plain(_deserialize_property(json_format.MessageToDict(value.struct_value)))
        return {key: _plain_value(fields[key]) for key in fields}
    if kind == "list_value":
        return [_plain_value(item) for item in value.list_value.values]
    if kind == "bool_value":
        return value.bool_value
    if kind == "number_value":
        number = value.number_value
        if number - number != 0:  # inf or NaN
            raise _NotPlain
        return number
    return None  # null_value or unset


def props_of(args: Any) -> Any:
    """Plain props of the resource a resource rule is looking at, computed once per request for all rules."""
    return engine.cached(("props", args.urn), lambda: plain(args.props))


def get(obj: Any, *path: Any, default: Any = None) -> Any:
    """Walk ``path`` through plain props; ``UNKNOWN`` as soon as any step is unknown, ``default`` if absent."""
    current = obj
    for step in path:
        if current is UNKNOWN:
            return UNKNOWN
        if type(current) is dict or isinstance(current, _abc.Mapping):
            if step not in current or current[step] is None:
                return default
            current = current[step]
        elif isinstance(current, list) and isinstance(step, int):
            if step >= len(current):
                return default
            current = current[step]
        else:
            return default
    return current


def as_list(value: Any) -> Any:
    """A list for list/None values; ``UNKNOWN`` stays ``UNKNOWN``; a single object becomes a one-item list."""
    if value is UNKNOWN:
        return UNKNOWN
    if value is None:
        return []
    if isinstance(value, list):
        return value
    return [value]


def as_bool(value: Any) -> Any:
    """True/False for booleans or "true"/"false" strings (some AWS inputs are strings), else None/UNKNOWN."""
    if value is UNKNOWN:
        return UNKNOWN
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in ("true", "false"):
        return value.lower() == "true"
    return None


# --- message format --------------------------------------------------------------------------------

def violation_message(text: str, site: Optional[str] = None, classification: Optional[str] = None) -> str:
    """``<sentence> [site=<site>; classification=<cls>]``; ``?`` for an unknown part; no suffix if both unknown."""
    if site is None and classification is None:
        return text
    return f"{text} [site={site or '?'}; classification={classification or '?'}]"


def describe(resource: Any) -> str:
    return f"{resource.resource_type} '{resource.name}'"


# --- fail-closed wrappers ----------------------------------------------------------------------------

@contextlib.contextmanager
def failing_closed(report: ReportViolation, urn: Optional[str], what: str) -> Iterator[None]:
    """Turn anything that stops a rule from deciding about one resource into a violation on that resource."""
    try:
        yield
    except NotApplicable:
        raise
    except UnknownValueError as error:
        report(f"{what}: {error.message}; the rule cannot decide, so it fails closed.", urn)
    except Exception as error:  # pylint: disable=broad-except  # a crashing rule must not pass
        report(f"{what}: the rule could not evaluate it ({type(error).__name__}: {error}); failing closed.", urn)


def fail_closed(validate: Callable[[Any, ReportViolation], None]) -> Callable[[Any, ReportViolation], None]:
    """Backstop for a whole validate function (per-resource guards should catch first)."""

    @functools.wraps(validate)
    def wrapper(args: Any, report: ReportViolation) -> None:
        urn = getattr(args, "urn", None)
        with failing_closed(report, urn, getattr(args, "name", None) and describe(args) or "stack"):
            validate(args, report)

    return wrapper
