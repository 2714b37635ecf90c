"""Per-request state of the pack process: derive each resource once per request, not once per rule.

The Python policy SDK hands every policy its own copy of the request: for each resource policy it deserialises the
resource's properties again, and for each stack policy it deserialises *every* resource again and rebuilds the
lineage. With 40+ rules that is most of the pack's time. ``install()`` (called by ``policies/__main__.py``) wraps the
servicer's ``Analyze``/``AnalyzeStack`` so that, within one request:

- ``Analyze`` decodes the resource once for all resource rules, and skips rules that declare (``finml_applies``)
  that they do not look at the resource's type;
- ``AnalyzeStack`` decodes the resources and their lineage once for all stack rules, which then share one
  :class:`StackIndex` (plain props, types, lineage, sites).

The replacements follow the SDK's own loops (pulumi-policy 1.x) step by step: same diagnostics, same not-applicable
answers, same handling of unknown values; tests drive the pack through both paths.

Nothing is cached across requests: each request starts a new generation, so a plan checked twice with different
props (mutation tests reuse one pack process) is never answered from stale state. Without ``install()`` (unit tests
calling policies directly) every call computes afresh.

It also carries the findings that waivers took out of the mandatory rules until ``policy-waived-findings`` reports
them at the end of the stack request.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
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


class LazyProxy(Mapping):
    """Props as the SDK gives them (``unknown_checking_proxy``), but built only when something reads them directly.

    Our rules read props through ``plain()``, which reads ``finml_raw`` - the deserialised props - and maps the
    engine's unknown sentinels to UNKNOWN itself; anything else that reads the mapping gets the SDK's real proxy
    (unknown values raise), so nothing can see a raw unknown sentinel."""

    __slots__ = ("finml_raw", "_proxy", "_make")

    def __init__(self, raw: Any, make: Callable[[Any], Any]) -> None:
        self.finml_raw = raw
        self._proxy = None
        self._make = make

    def _real(self) -> Any:
        if self._proxy is None:
            self._proxy = self._make(self.finml_raw)
        return self._proxy

    def __getitem__(self, key: Any) -> Any:
        return self._real()[key]

    def __iter__(self) -> Any:
        return iter(self._real())

    def __len__(self) -> int:
        return len(self._real())


# urn -> (serialised props, deserialised props) of the resources the Analyze calls decoded since the last stack
# request: AnalyzeStack reuses a decode when the bytes are identical (a component's stack view can differ).
_analyzed: dict[str, tuple[bytes, Any]] = {}


def _remember(urn: str, message: Any, deserialized: Any) -> None:
    with _lock:
        if len(_analyzed) > 200_000:
            _analyzed.clear()
        _analyzed[urn] = (message.SerializeToString(deterministic=True), deserialized)


def _take_analyzed() -> dict[str, tuple[bytes, Any]]:
    with _lock:
        found = dict(_analyzed)
        _analyzed.clear()
    return found


def _recall(seen: dict[str, tuple[bytes, Any]], urn: str, message: Any, sdk: Any) -> Any:
    hit = seen.get(urn)
    if hit is not None and hit[0] == message.SerializeToString(deterministic=True):
        return hit[1]
    return sdk.deserialize_properties(sdk.json_format.MessageToDict(message))


_counter = [0]
_TABLES = ("cache",)


def _per_request(method: Callable[..., Any]) -> Callable[..., Any]:
    def wrapper(self: Any, request: Any, context: Any) -> Any:
        with _lock:  # one request at a time: the memo tables are per request
            _counter[0] += 1
            _state.generation = _counter[0]
            for table in _TABLES:
                setattr(_state, table, {})
            try:
                return method(self, request, context)
            finally:
                _state.generation = None
                for table in _TABLES:
                    setattr(_state, table, None)
    wrapper.__wrapped__ = method  # type: ignore[attr-defined]
    return wrapper


def _lean_analyze(sdk: Any) -> Callable[..., Any]:
    """The SDK's Analyze with the request decoded once, and rules that declare the types they look at
    (``policy.finml_applies``) skipped for other types: same diagnostics, same error handling."""
    import asyncio  # pylint: disable=import-outside-toplevel
    from inspect import isawaitable  # pylint: disable=import-outside-toplevel

    EL, proto = sdk.EnforcementLevel, sdk.proto

    def analyze(self: Any, request: Any, _context: Any) -> Any:
        self._configure_runtime_settings()
        response = proto.AnalyzeResponse()
        props = opts = provider = None
        for policy in self._PolicyAnalyzerServicer__policies:
            if not isinstance(policy, sdk.ResourceValidationPolicy):
                continue
            applies = getattr(policy, "finml_applies", None)
            if applies is not None and not applies(request.type):
                continue
            level = self._get_enforcement_level(policy)
            if level == EL.DISABLED:
                continue
            if not policy.has_validation():
                response.not_applicable.append(proto.PolicyNotApplicable(
                    policy_name=policy.name, reason="Policy does not implement validate"))
                continue
            if level == EL.REMEDIATE:
                level = EL.MANDATORY
            report = self._create_report_violation(response, policy.name, policy.description, level,
                                                   policy.severity)
            if props is None:
                deserialized = sdk.deserialize_properties(sdk.json_format.MessageToDict(request.properties))
                props = LazyProxy(deserialized, sdk.unknown_checking_proxy)
                _remember(request.urn, request.properties, deserialized)
                opts = self._get_resource_options(request)
                provider = self._get_provider_resource(request)
            args = sdk.ResourceValidationArgs(request.type, props, request.urn, request.name, opts, provider,
                                              self._get_policy_config(policy.name),
                                              self._PolicyAnalyzerServicer__stack_tags)
            try:
                result = policy.validate(args, report)
                if isawaitable(result):
                    loop = asyncio.new_event_loop()
                    loop.run_until_complete(asyncio.Task(result, loop=loop))
                    loop.close()
            except sdk.UnknownValueError as error:
                response.diagnostics.append(proto.AnalyzeDiagnostic(
                    policyName=policy.name, policyPackName=self._PolicyAnalyzerServicer__policy_pack_name,
                    policyPackVersion=self._PolicyAnalyzerServicer__policy_pack_version,
                    message=f"can't run policy '{policy.name}' during preview: {error.message}", urn="",
                    description=policy.description, enforcementLevel=self._map_enforcement_level(EL.ADVISORY)))
            except sdk._NotApplicableError as error:  # pylint: disable=protected-access
                response.not_applicable.append(proto.PolicyNotApplicable(policy_name=policy.name,
                                                                         reason=error.reason or ""))
        return response

    return analyze


def _lean_analyze_stack(sdk: Any) -> Callable[..., Any]:
    """The SDK's AnalyzeStack with the resources (and their lineage) decoded once for all stack rules instead of
    once per rule. Rules get the same list of PolicyResource objects; none of ours mutates it."""
    import asyncio  # pylint: disable=import-outside-toplevel
    from inspect import isawaitable  # pylint: disable=import-outside-toplevel

    EL, proto = sdk.EnforcementLevel, sdk.proto

    def decode(self: Any, request: Any) -> list:
        resources, parents, deps, prop_deps = [], [], [], []
        seen = _take_analyzed()
        providers: dict[tuple[str, bytes], Any] = {}
        for r in request.resources:
            props = LazyProxy(_recall(seen, r.urn, r.properties, sdk), sdk.unknown_checking_proxy)
            provider = None
            if r.HasField("provider"):
                key = (r.provider.urn, r.provider.SerializeToString(deterministic=True))
                if key not in providers:
                    providers[key] = self._get_provider_resource(r)
                provider = providers[key]
            resources.append(sdk.PolicyResource(r.type, props, r.urn, r.name, self._get_resource_options(r),
                                                provider, None, [], {}))
            parents.append(r.parent)
            deps.append(list(r.dependencies))
            prop_deps.append({k: list(v.urns) for k, v in r.propertyDependencies.items()})
        by_urn = {r.urn: r for r in resources}
        for resource, parent, dependencies, property_dependencies in zip(resources, parents, deps, prop_deps):
            if parent is not None and parent in by_urn:
                resource.parent = by_urn[parent]
            resource.dependencies.extend(by_urn[d] for d in dependencies if d in by_urn)
            for key, urns in property_dependencies.items():
                resource.property_dependencies[key] = [by_urn[d] for d in urns if d in by_urn]
        return resources

    def analyze_stack(self: Any, request: Any, _context: Any) -> Any:
        self._configure_runtime_settings()
        response = proto.AnalyzeResponse()
        resources = None
        for policy in self._PolicyAnalyzerServicer__policies:
            level = self._get_enforcement_level(policy)
            if level == EL.DISABLED or not isinstance(policy, sdk.StackValidationPolicy):
                continue
            if level == EL.REMEDIATE:
                level = EL.MANDATORY
            report = self._create_report_violation(response, policy.name, policy.description, level,
                                                   policy.severity)
            if resources is None:
                resources = decode(self, request)
            args = sdk.StackValidationArgs(resources, self._get_policy_config(policy.name),
                                           self._PolicyAnalyzerServicer__stack_tags)
            try:
                result = policy.validate(args, report)
                if isawaitable(result):
                    loop = asyncio.new_event_loop()
                    loop.run_until_complete(asyncio.Task(result, loop=loop))
                    loop.close()
            except sdk.UnknownValueError as error:
                response.diagnostics.append(proto.AnalyzeDiagnostic(
                    policyName=policy.name, policyPackName=self._PolicyAnalyzerServicer__policy_pack_name,
                    policyPackVersion=self._PolicyAnalyzerServicer__policy_pack_version,
                    message=f"can't run policy '{policy.name}' during preview: {error.message}", urn="",
                    description=policy.description, enforcementLevel=self._map_enforcement_level(EL.ADVISORY)))
            except sdk._NotApplicableError as error:  # pylint: disable=protected-access
                response.not_applicable.append(proto.PolicyNotApplicable(policy_name=policy.name,
                                                                         reason=error.reason or ""))
        return response

    return analyze_stack


def install() -> None:
    """Patch the SDK's analyzer servicer (idempotent)."""
    global _installed  # pylint: disable=global-statement
    if _installed:
        return
    from pulumi_policy import policy as sdk  # pylint: disable=import-outside-toplevel

    servicer = sdk._PolicyAnalyzerServicer  # pylint: disable=protected-access
    servicer.Analyze = _per_request(_lean_analyze(sdk))
    servicer.AnalyzeStack = _per_request(_lean_analyze_stack(sdk))
    _installed = True
