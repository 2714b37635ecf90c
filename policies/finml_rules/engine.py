"""Per-request state of the pack process: derive each resource once per request, not once per rule.

The Python policy SDK hands every policy its own copy of the request: for each resource policy it deserialises the
resource's properties again, and for each stack policy it deserialises *every* resource again and rebuilds the
lineage. With 40+ rules that is most of the pack's time. ``install()`` (called by ``policies/__main__.py``) wraps the
servicer's ``Analyze``/``AnalyzeStack`` so that, within one request:

- the protobuf -> dict conversion and the SDK's property deserialisation run once per resource (memoised by object
  identity, holding the objects for the request so identities cannot be reused);
- rules share one :class:`StackIndex` (plain props, types, lineage, sites) and one plain copy of a resource's props.

Nothing is cached across requests: each request starts a new generation, so a plan checked twice with different
props (mutation tests reuse one pack process) is never answered from stale state. Without ``install()`` (unit tests
calling policies directly) every call computes afresh.

It also carries the findings that waivers took out of the mandatory rules until ``policy-waived-findings`` reports
them at the end of the stack request.
"""

from __future__ import annotations

import threading
from typing import Any, Callable, Optional

_state = threading.local()
_lock = threading.RLock()
_installed = False
_waived: list[dict[str, Any]] = []


def generation() -> Optional[int]:
    """The current request's id while a request runs in an installed pack; None otherwise (no caching)."""
    return getattr(_state, "generation", None)


def request_cache() -> Optional[dict]:
    return getattr(_state, "cache", None)


def cached(key: Any, compute: Callable[[], Any]) -> Any:
    cache = request_cache()
    if cache is None:
        return compute()
    if key not in cache:
        cache[key] = compute()
    return cache[key]


def record_waived(entry: dict[str, Any]) -> None:
    with _lock:
        _waived.append(entry)


def take_waived() -> list[dict[str, Any]]:
    with _lock:
        found = list(_waived)
        _waived.clear()
    return found


class _MemoJsonFormat:
    """Stands in for ``google.protobuf.json_format`` inside the SDK module: MessageToDict memoised per request."""

    def __init__(self, real: Any) -> None:
        self._real = real

    def __getattr__(self, name: str) -> Any:
        return getattr(self._real, name)

    def MessageToDict(self, message: Any, *args: Any, **kwargs: Any) -> Any:  # noqa: N802 - protobuf's name
        memo = getattr(_state, "to_dict", None)
        if memo is None or args or kwargs:
            return self._real.MessageToDict(message, *args, **kwargs)
        hit = memo.get(id(message))
        if hit is None or hit[0] is not message:
            hit = (message, self._real.MessageToDict(message))
            memo[id(message)] = hit
        return hit[1]


def _memo_deserialize(real: Callable[..., Any]) -> Callable[..., Any]:
    def deserialize(props: Any, *args: Any, **kwargs: Any) -> Any:
        memo = getattr(_state, "deserialized", None)
        if memo is None or args or kwargs:
            return real(props, *args, **kwargs)
        hit = memo.get(id(props))
        if hit is None or hit[0] is not props:
            hit = (props, real(props))
            memo[id(props)] = hit
        return hit[1]
    return deserialize


_counter = [0]


def _per_request(method: Callable[..., Any]) -> Callable[..., Any]:
    def wrapper(self: Any, request: Any, context: Any) -> Any:
        with _lock:  # one request at a time: the memo tables are per request
            _counter[0] += 1
            _state.generation = _counter[0]
            _state.cache, _state.to_dict, _state.deserialized = {}, {}, {}
            try:
                return method(self, request, context)
            finally:
                _state.generation = None
                _state.cache = _state.to_dict = _state.deserialized = None
    wrapper.__wrapped__ = method  # type: ignore[attr-defined]
    return wrapper


def install() -> None:
    """Patch the SDK's analyzer servicer (idempotent)."""
    global _installed  # pylint: disable=global-statement
    if _installed:
        return
    from pulumi_policy import policy as sdk  # pylint: disable=import-outside-toplevel

    servicer = sdk._PolicyAnalyzerServicer  # pylint: disable=protected-access
    servicer.Analyze = _per_request(servicer.Analyze)
    servicer.AnalyzeStack = _per_request(servicer.AnalyzeStack)
    sdk.json_format = _MemoJsonFormat(sdk.json_format)
    sdk.deserialize_properties = _memo_deserialize(sdk.deserialize_properties)
    _installed = True
