"""The pack's Analyze/AnalyzeStack loops and per-request state: derive each resource once per request, not once
per rule, and run a rule only on the types it claims.

The Python policy SDK hands every policy its own copy of the request: for each resource policy it deserialises the
resource's properties again (through ``json_format``, pure Python), and for each stack policy it deserialises
*every* resource again and rebuilds the lineage; its ``Analyze`` walks every policy for every resource. With 60
rules that was most of the pack's time. ``install()`` (called by ``policies/__main__.py``) replaces the servicer's
``Analyze``/``AnalyzeStack`` so that:

- ``Analyze`` runs the rules of a per-type dispatch table (built once per resource type and ``Configure``: the
  rules that declare, via ``finml_applies``, that they look at the type, with their enforcement levels) and decodes
  the resource once for all of them, straight from the protobuf Struct to the plain props rules read
  (``values.plain_struct``; the SDK's proxy over the SDK's own decoding is built only if something reads the props
  another way);
- ``AnalyzeStack`` decodes the resources and their lineage once for all stack rules (reusing an ``Analyze`` decode
  when the bytes are identical; each resource's options built on first read), which then share one
  :class:`StackIndex` (plain props, types, lineage, sites);
- the validate/await/report step of both loops is one helper, ``_validate``.

The replacements follow the SDK's own loops (pulumi-policy 1.x) step by step: same diagnostics, same not-applicable
answers, same levels, same handling of unknown values; tests/policies/test_policy_engine.py compares the responses
with the SDK's byte for byte. ``tune_gc()`` keeps the cyclic garbage collector off the loaded pack.

Nothing is cached across checks: each request starts a new generation, and the only thing one request hands the
next is the ``Analyze`` decodes the following ``AnalyzeStack`` of the same check reuses for identical bytes, so a
plan checked twice with different props (mutation tests reuse one pack process) is never answered from stale state.
Without ``install()`` (unit tests calling policies directly) every call computes afresh.

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

    Our rules read props through ``plain()``, which returns ``finml_plain`` - the request's props decoded once with
    unknown values as ``UNKNOWN`` (``values.plain_struct``); anything else that reads the mapping gets the SDK's
    real proxy over the SDK's own decoding of the same message (unknown values raise), so nothing can see a raw
    unknown sentinel."""

    __slots__ = ("finml_plain", "_message", "_raw", "_proxy")

    def __init__(self, message: Any, plain_props: Any) -> None:
        self.finml_plain = plain_props
        self._message = message
        self._raw = None
        self._proxy = None

    @property
    def finml_raw(self) -> Any:
        """The props exactly as the SDK deserialises them (``deserialize_properties(MessageToDict(...))``)."""
        if self._raw is None:
            self._raw = _sdk.deserialize_properties(_sdk.json_format.MessageToDict(self._message))
        return self._raw

    def _real(self) -> Any:
        if self._proxy is None:
            self._proxy = _sdk.unknown_checking_proxy(self.finml_raw)
        return self._proxy

    def __getitem__(self, key: Any) -> Any:
        return self._real()[key]

    def __iter__(self) -> Any:
        return iter(self._real())

    def __len__(self) -> int:
        return len(self._real())


_sdk: Any = None  # pulumi_policy.policy, set by install()
_plain_struct: Callable[[Any], Any] = None  # type: ignore[assignment]  # values.plain_struct, set by install()


def _props(message: Any) -> LazyProxy:
    """Decode a props Struct once (raising where the SDK's decoding raises, at the same point of the request)."""
    return LazyProxy(message, _plain_struct(message))


# urn -> (serialised props, plain props) of the resources the Analyze calls decoded since the last stack request:
# AnalyzeStack reuses a decode when the bytes are identical (a component's stack view can differ). Rules only read
# plain props (tests/policies/test_policy_engine.py checks that no rule writes them).
_analyzed: dict[str, tuple[bytes, Any]] = {}


def _remember(urn: str, message: Any, props: LazyProxy) -> None:
    with _lock:
        if len(_analyzed) > 200_000:
            _analyzed.clear()
        _analyzed[urn] = (message.SerializeToString(deterministic=True), props.finml_plain)


def _take_analyzed() -> dict[str, tuple[bytes, Any]]:
    with _lock:
        found = dict(_analyzed)
        _analyzed.clear()
    return found


def _recall(seen: dict[str, tuple[bytes, Any]], urn: str, message: Any) -> LazyProxy:
    hit = seen.get(urn)
    if hit is not None and hit[0] == message.SerializeToString(deterministic=True):
        return LazyProxy(message, hit[1])
    return _props(message)


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


def _validate(self: Any, sdk: Any, response: Any, policy: Any, args: Any, report: Any) -> None:
    """Run one rule as the SDK's Analyze/AnalyzeStack loops do: await a coroutine, turn an escaping unknown value
    into an advisory diagnostic and not-applicable into a not-applicable entry."""
    try:
        result = policy.validate(args, report)
        if sdk.isawaitable(result):
            loop = sdk.asyncio.new_event_loop()
            loop.run_until_complete(sdk.asyncio.Task(result, loop=loop))
            loop.close()
    except sdk.UnknownValueError as error:
        response.diagnostics.append(sdk.proto.AnalyzeDiagnostic(
            policyName=policy.name, policyPackName=self._PolicyAnalyzerServicer__policy_pack_name,
            policyPackVersion=self._PolicyAnalyzerServicer__policy_pack_version,
            message=f"can't run policy '{policy.name}' during preview: {error.message}", urn="",
            description=policy.description, enforcementLevel=self._map_enforcement_level(sdk.EnforcementLevel.ADVISORY)))
    except sdk._NotApplicableError as error:  # pylint: disable=protected-access
        response.not_applicable.append(sdk.proto.PolicyNotApplicable(policy_name=policy.name,
                                                                     reason=error.reason or ""))


def _level(self: Any, sdk: Any, policy: Any) -> Any:
    """The policy's enforcement level as the SDK's loops use it (None: disabled; remediate runs as mandatory)."""
    level = self._get_enforcement_level(policy)
    if level == sdk.EnforcementLevel.DISABLED:
        return None
    return sdk.EnforcementLevel.MANDATORY if level == sdk.EnforcementLevel.REMEDIATE else level


_NOT_IMPLEMENTED = object()  # dispatch entry: a resource policy without validate (reported not applicable)


def _resource_dispatch(self: Any, sdk: Any, resource_type: str) -> list:
    """The resource policies Analyze runs for ``resource_type``, in pack order, with their levels: computed once per
    type and configuration (``Configure`` replaces the level table, which drops this one) instead of once per
    resource. Skips what the SDK's loop skips (other kinds, disabled) and rules whose declared types
    (``policy.finml_applies``) do not include the type."""
    levels = self._PolicyAnalyzerServicer__policy_pack_config_enforcement_level
    table = getattr(self, "_finml_dispatch", None)
    if table is None or table[0] is not levels or len(table[1]) > 10_000:
        table = (levels, {})  # holds the level table itself, so an identity test cannot be fooled by id reuse
        self._finml_dispatch = table
    entries = table[1].get(resource_type)
    if entries is None:
        entries = []
        for policy in self._PolicyAnalyzerServicer__policies:
            if not isinstance(policy, sdk.ResourceValidationPolicy):
                continue
            applies = getattr(policy, "finml_applies", None)
            if applies is not None and not applies(resource_type):
                continue
            level = _level(self, sdk, policy)
            if level is None:
                continue
            entries.append((policy, level if policy.has_validation() else _NOT_IMPLEMENTED))
        table[1][resource_type] = entries
    return entries


def _provider_resource(sdk: Any, request: Any) -> Any:
    if not request.HasField("provider"):
        return None
    prov = request.provider
    return sdk.PolicyProviderResource(prov.type, _props(prov.properties), prov.urn, prov.name)


def _lean_analyze(sdk: Any) -> Callable[..., Any]:
    """The SDK's Analyze with the request decoded once, and rules that declare the types they look at
    (``policy.finml_applies``) skipped for other types: same diagnostics, same error handling."""
    proto = sdk.proto

    def analyze(self: Any, request: Any, _context: Any) -> Any:
        self._configure_runtime_settings()
        response = proto.AnalyzeResponse()
        props = opts = provider = None
        for policy, level in _resource_dispatch(self, sdk, request.type):
            if level is _NOT_IMPLEMENTED:
                response.not_applicable.append(proto.PolicyNotApplicable(
                    policy_name=policy.name, reason="Policy does not implement validate"))
                continue
            report = self._create_report_violation(response, policy.name, policy.description, level,
                                                   policy.severity)
            if props is None:
                props = _props(request.properties)
                _remember(request.urn, request.properties, props)
                opts = self._get_resource_options(request)
                provider = _provider_resource(sdk, request)
            args = sdk.ResourceValidationArgs(request.type, props, request.urn, request.name, opts, provider,
                                              self._get_policy_config(policy.name),
                                              self._PolicyAnalyzerServicer__stack_tags)
            _validate(self, sdk, response, policy, args, report)
        return response

    return analyze


def _lean_analyze_stack(sdk: Any) -> Callable[..., Any]:
    """The SDK's AnalyzeStack with the resources (and their lineage) decoded once for all stack rules instead of
    once per rule. Rules get the same list of PolicyResource objects; none of ours mutates it."""
    proto = sdk.proto

    class StackResource(sdk.PolicyResource):
        """A ``PolicyResource`` whose ``opts`` are built from the request on first read, not for every resource of
        every stack request (no rule of ours reads them; anything that does gets what the SDK would build)."""

        @property
        def opts(self) -> Any:
            source = self.__dict__.pop("_finml_source", None)
            if source is not None:
                self.__dict__["_finml_opts"] = source[0]._get_resource_options(source[1])
            return self.__dict__.get("_finml_opts")

        @opts.setter
        def opts(self, value: Any) -> None:
            self.__dict__.pop("_finml_source", None)
            self.__dict__["_finml_opts"] = value

    def decode(self: Any, request: Any) -> list:
        resources, parents, deps, prop_deps = [], [], [], []
        seen = _take_analyzed()
        providers: dict[tuple[str, bytes], Any] = {}
        for r in request.resources:
            props = _recall(seen, r.urn, r.properties)
            provider = None
            if r.HasField("provider"):
                key = (r.provider.urn, r.provider.SerializeToString(deterministic=True))
                if key not in providers:
                    providers[key] = _provider_resource(sdk, r)
                provider = providers[key]
            resource = StackResource(r.type, props, r.urn, r.name, None, provider, None, [], {})
            resource.__dict__["_finml_source"] = (self, r)
            resources.append(resource)
            parents.append(r.parent)
            deps.append(list(r.dependencies))
            by_prop = r.propertyDependencies  # (by key: a protobuf map's items() is a slow pure-Python view)
            prop_deps.append({k: list(by_prop[k].urns) for k in by_prop})
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
            if not isinstance(policy, sdk.StackValidationPolicy):
                continue
            level = _level(self, sdk, policy)
            if level is None:
                continue
            report = self._create_report_violation(response, policy.name, policy.description, level,
                                                   policy.severity)
            if resources is None:
                resources = decode(self, request)
            args = sdk.StackValidationArgs(resources, self._get_policy_config(policy.name),
                                           self._PolicyAnalyzerServicer__stack_tags)
            _validate(self, sdk, response, policy, args, report)
        return response

    return analyze_stack


SDK_METHODS: dict[str, Callable[..., Any]] = {}  # the SDK's own Analyze/AnalyzeStack, kept by install()
GC_THRESHOLD = (20_000, 10, 10)


def tune_gc() -> None:
    """Called by ``policies/__main__.py`` once the pack is loaded, before it serves.

    A check allocates tens of thousands of small containers (plain props, rule arguments, stack resources) that
    reference counting frees as each request ends; with CPython's default threshold (a young-generation collection
    every 700 allocations) the cyclic collector ran about 25 times per 1,000-resource check, and its older
    generations walked every object of the loaded pack. So: freeze what is loaded (modules, rules, schemas: never
    garbage) out of the collector's sight, and collect the young generation every 20,000 allocations. The collector
    still runs; memory is bounded the same way."""
    import gc  # pylint: disable=import-outside-toplevel

    gc.collect()
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLD)


def install() -> None:
    """Patch the SDK's analyzer servicer (idempotent)."""
    global _installed, _sdk, _plain_struct  # pylint: disable=global-statement
    if _installed:
        return
    from pulumi_policy import policy as sdk  # pylint: disable=import-outside-toplevel

    from .values import plain_struct  # pylint: disable=import-outside-toplevel  # values imports this module

    _sdk, _plain_struct = sdk, plain_struct
    servicer = sdk._PolicyAnalyzerServicer  # pylint: disable=protected-access
    SDK_METHODS.update(Analyze=servicer.Analyze, AnalyzeStack=servicer.AnalyzeStack)  # tests compare against them
    servicer.Analyze = _per_request(_lean_analyze(sdk))
    servicer.AnalyzeStack = _per_request(_lean_analyze_stack(sdk))
    _installed = True
