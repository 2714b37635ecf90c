"""MIG layout planner: choose per-GPU MIG geometries for a site's served models, using as few GPUs as possible.

A MIG-capable GPU (A100, H100, H200) has 7 compute and 8 memory slices. A GPU instance of a profile occupies a run
of `memory_slices` memory slices starting at one of the profile's `placements` (both from the GPU profile YAML,
as `nvidia-smi mig -lgipp` reports them); instances may not overlap, at most `count_per_gpu` of a profile fit, the
compute slices add up to at most 7, and at most one '+me' instance holds the GPU's media engines. A *geometry* is
a multiset of profiles that can be placed on one GPU under these rules; `placement()` returns the concrete
start slices, so every emitted geometry is one the GPU really accepts.

Planning is exact: covering a demand vector with the fewest geometries is solved by memoised search over the
remaining demand, branching only on the maximal geometries that contain the largest still-needed profile (any
optimal cover has a GPU holding it, and enlarging that GPU's geometry to a maximal one keeps the cover valid).
`lower_bound()` is an independent, cheaper bound (slices, memory, per-profile and big-instance counts) reported
beside the result.

Time-sliced services need whole GPUs with MIG off (ceil(replicas / factor)); whole-GPU services one GPU per
replica. `plan_site()` assigns the GPUs to the site's nodes (named bare-metal nodes on-prem; identical nodes of
an EKS node group on AWS) and refuses, naming them, the demands that do not fit.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass, field
from functools import lru_cache
from itertools import product
from typing import Any, Iterable, Mapping, Sequence

from gpu_profiles.schema import MIG_COMPUTE_SLICES, MIG_MEMORY_SLICES, GpuProfile, MigProfile

#: mig-parted config name every node falls back to: MIG off on every GPU.
ALL_DISABLED = "all-disabled"
#: Node label the GPU Operator's MIG manager reads to pick a mig-parted configuration.
MIG_CONFIG_LABEL = "nvidia.com/mig.config"
MIG_PARTED_VERSION = "v1"

Geometry = tuple[tuple[str, int], ...]
"""A MIG geometry: sorted (profile name, count) pairs."""


class PlanError(ValueError):
    """Demands that cannot be met; `demands` names each (service, what it needs)."""

    def __init__(self, message: str, demands: Sequence[str] = ()) -> None:
        super().__init__(message)
        self.demands = tuple(demands)


# ------------------------------------------------------------------------------------------------ geometry rules

def _profiles(gpu: GpuProfile) -> dict[str, MigProfile]:
    if not gpu.mig.supported:
        raise PlanError(f"{gpu.name} does not support MIG")
    return {p.name: p for p in gpu.mig.profiles}


def placement(gpu: GpuProfile, counts: Mapping[str, int]) -> list[tuple[str, int]] | None:
    """Start memory slice of every instance of `counts` on one GPU, or None when no valid placement exists."""
    profiles = _profiles(gpu)
    instances: list[MigProfile] = []
    for name, count in counts.items():
        if count < 0 or name not in profiles:
            return None
        if count > profiles[name].count_per_gpu:
            return None
        instances += [profiles[name]] * count
    if sum(p.slices for p in instances) > MIG_COMPUTE_SLICES:
        return None
    if sum(1 for p in instances if p.media_extensions) > 1:
        return None
    # Largest first: big instances have few placements, so the search fails fast.
    instances.sort(key=lambda p: (-p.memory_slices, -p.slices, p.name))
    used = [False] * MIG_MEMORY_SLICES
    chosen: list[tuple[str, int]] = []

    def place(i: int) -> bool:
        if i == len(instances):
            return True
        prof = instances[i]
        # Identical instances take ascending starts: no need to try their permutations.
        floor = chosen[-1][1] + 1 if i and instances[i - 1].name == prof.name else 0
        for start in prof.placements:
            if start < floor or any(used[start:start + prof.memory_slices]):
                continue
            for s in range(start, start + prof.memory_slices):
                used[s] = True
            chosen.append((prof.name, start))
            if place(i + 1):
                return True
            chosen.pop()
            for s in range(start, start + prof.memory_slices):
                used[s] = False
        return False

    return sorted(chosen, key=lambda c: c[1]) if place(0) else None


def is_valid_geometry(gpu: GpuProfile, counts: Mapping[str, int]) -> bool:
    return any(counts.values()) and placement(gpu, counts) is not None


_GEOMETRY_CACHE: dict[tuple[str, int], tuple[tuple[Geometry, ...], tuple[Geometry, ...]]] = {}


def _geometries_cached(gpu: GpuProfile) -> tuple[tuple[Geometry, ...], tuple[Geometry, ...]]:
    key = (gpu.name, hash(gpu.mig))
    if key not in _GEOMETRY_CACHE:
        _GEOMETRY_CACHE[key] = _enumerate(gpu)
    return _GEOMETRY_CACHE[key]


def _enumerate(gpu: GpuProfile) -> tuple[tuple[Geometry, ...], tuple[Geometry, ...]]:
    profiles = _profiles(gpu)
    names = sorted(profiles)
    valid: list[Geometry] = []
    for counts in product(*(range(profiles[n].count_per_gpu + 1) for n in names)):
        geometry = {n: c for n, c in zip(names, counts) if c}
        if geometry and placement(gpu, geometry) is not None:
            valid.append(tuple(sorted(geometry.items())))
    valid_set = set(valid)
    maximal = []
    for geometry in valid:
        as_dict = dict(geometry)
        if not any(tuple(sorted({**as_dict, n: as_dict.get(n, 0) + 1}.items())) in valid_set for n in names):
            maximal.append(geometry)
    return tuple(valid), tuple(maximal)


def valid_geometries(gpu: GpuProfile) -> tuple[Geometry, ...]:
    """Every non-empty geometry the GPU accepts."""
    return _geometries_cached(gpu)[0]


def maximal_geometries(gpu: GpuProfile) -> tuple[Geometry, ...]:
    """Valid geometries to which no further instance can be added."""
    return _geometries_cached(gpu)[1]


# ------------------------------------------------------------------------------------------------ optimisation

def _order(gpu: GpuProfile) -> list[str]:
    """Profiles from the hardest to place (most memory slices) to the easiest."""
    profiles = _profiles(gpu)
    return sorted(profiles, key=lambda n: (-profiles[n].memory_slices, -profiles[n].slices, n))


def min_gpus(gpu: GpuProfile, demand: Mapping[str, int]) -> list[Geometry]:
    """The fewest geometries (one per GPU) whose instances cover `demand` (profile -> instances); exact."""
    profiles = _profiles(gpu)
    unknown = sorted(set(demand) - set(profiles))
    if unknown:
        raise PlanError(f"{gpu.name} has no MIG profile {', '.join(unknown)}; allowed: {', '.join(profiles)}", unknown)
    order = _order(gpu)
    index = {n: i for i, n in enumerate(order)}
    start = tuple(int(demand.get(n, 0)) for n in order)
    geoms = []
    for geometry in maximal_geometries(gpu):
        vec = [0] * len(order)
        for name, count in geometry:
            vec[index[name]] = count
        geoms.append((tuple(vec), geometry))

    @lru_cache(maxsize=None)
    def solve(rest: tuple[int, ...]) -> tuple[int, Geometry | None]:
        first = next((i for i, r in enumerate(rest) if r > 0), None)
        if first is None:
            return 0, None
        best: tuple[int, Geometry | None] = (math.inf, None)  # type: ignore[assignment]
        for vec, geometry in geoms:
            if vec[first] == 0:
                continue
            nxt = tuple(max(r - v, 0) for r, v in zip(rest, vec))
            cost = 1 + solve(nxt)[0]
            if cost < best[0]:
                best = (cost, geometry)
        return best

    out: list[Geometry] = []
    rest = start
    while any(rest):
        _, geometry = solve(rest)
        assert geometry is not None
        out.append(geometry)
        got = dict(geometry)
        rest = tuple(max(r - got.get(n, 0), 0) for r, n in zip(rest, order))
    solve.cache_clear()
    # Geometries are kept whole: spare instances stay advertised for HPA scale-out and new models.
    return out


def lower_bound(gpu: GpuProfile, demand: Mapping[str, int]) -> int:
    """A bound no plan can beat: compute slices, memory slices, per-profile limits, big instances, media engines."""
    profiles = _profiles(gpu)
    items = [(profiles[n], c) for n, c in demand.items() if c > 0]
    if not items:
        return 0
    bounds = [
        math.ceil(sum(p.slices * c for p, c in items) / MIG_COMPUTE_SLICES),
        math.ceil(sum(p.memory_slices * c for p, c in items) / MIG_MEMORY_SLICES),
        math.ceil(sum(c for p, c in items if p.media_extensions)),
    ]
    bounds += [math.ceil(c / p.count_per_gpu) for p, c in items]
    # At most two instances of 4 or more memory slices per GPU, and a full-GPU instance takes both halves.
    halves = sum(c * (2 if p.memory_slices == MIG_MEMORY_SLICES else 1) for p, c in items if p.memory_slices >= 4)
    bounds.append(math.ceil(halves / 2))
    return max(bounds)


# ------------------------------------------------------------------------------------------------ site planning

@dataclass(frozen=True)
class Demand:
    """What one served model needs on one site."""

    service: str
    gpu_profile: str
    kind: str
    """mig | time-sliced | gpu"""
    replicas: int
    mig_profile: str | None = None
    time_slices: int | None = None

    def describe(self) -> str:
        if self.kind == "mig":
            return f"{self.service}: {self.replicas} x {self.gpu_profile} mig {self.mig_profile}"
        if self.kind == "time-sliced":
            return f"{self.service}: {self.replicas} replicas time-sliced:{self.time_slices} on {self.gpu_profile}"
        return f"{self.service}: {self.replicas} x whole {self.gpu_profile}"


@dataclass
class GpuPool:
    """GPUs of one profile on one node (on-prem) or one node group (AWS: `nodes` identical nodes)."""

    name: str
    gpu_profile: str
    gpus_per_node: int
    nodes: int = 1
    fixed_layout: dict[str, int] | None = None
    """A MIG layout the stack fixes for every GPU of the node (Ansible's migLayout): not replanned."""
    aws: bool = False


@dataclass
class NodePlan:
    pool: str
    gpu_profile: str
    config_name: str
    devices: list[dict[str, Any]]
    """mig-parted device entries: {devices: [i...], mig-enabled, mig-devices?}"""
    gpus_mig: int = 0
    gpus_whole: int = 0
    nodes: int = 1
    fixed: bool = False


@dataclass
class SitePlan:
    site: str
    nodes: list[NodePlan] = field(default_factory=list)
    gpus_used: dict[str, int] = field(default_factory=dict)
    """Per GPU profile: GPUs given a MIG geometry or reserved whole (time-sliced or whole-GPU serving)."""
    lower_bound: dict[str, int] = field(default_factory=dict)
    layouts: dict[str, list[Geometry]] = field(default_factory=dict)
    """Per GPU profile: the planned MIG geometries, one per GPU (fixed layouts excluded)."""
    time_slicing: dict[str, int] = field(default_factory=dict)
    """Per GPU profile: the device plugin's time-slicing replicas, where a time-sliced service runs."""
    mig_resources: dict[str, Counter] = field(default_factory=dict)
    """Per GPU profile: nvidia.com/mig-<profile> instances the layout advertises (fixed layouts included)."""

    def mig_parted_config(self) -> dict[str, Any]:
        configs: dict[str, Any] = {ALL_DISABLED: [{"devices": "all", "mig-enabled": False}]}
        for node in self.nodes:
            configs[node.config_name] = node.devices
        return {"version": MIG_PARTED_VERSION, "mig-configs": configs}

    def node_labels(self) -> dict[str, dict[str, str]]:
        return {n.pool: {MIG_CONFIG_LABEL: n.config_name} for n in self.nodes}


def _device_entries(per_gpu: list[Geometry | None]) -> list[dict[str, Any]]:
    """Consecutive GPUs with the same geometry in one mig-parted entry; None = MIG off (whole GPU)."""
    entries: list[dict[str, Any]] = []
    for index, geometry in enumerate(per_gpu):
        if entries and entries[-1]["_g"] == geometry:
            entries[-1]["devices"].append(index)
            continue
        entry: dict[str, Any] = {"_g": geometry, "devices": [index], "mig-enabled": geometry is not None}
        if geometry is not None:
            entry["mig-devices"] = dict(geometry)
        entries.append(entry)
    for entry in entries:
        del entry["_g"]
    return entries


def config_name(pool: str) -> str:
    return f"finml-{pool}"


def plan_site(site: str, demands: Sequence[Demand], pools: Sequence[GpuPool], profiles: Mapping[str, GpuProfile]
              ) -> SitePlan:
    """Plan every GPU profile's demands onto the site's pools; PlanError names the demands that do not fit."""
    plan = SitePlan(site=site)
    refused: list[str] = []
    # Nodes with a fixed layout keep it in the operator's config too, with or without demand for their slices:
    # otherwise the MIG manager would reset what Ansible configured.
    for pool in pools:
        if pool.fixed_layout:
            plan.nodes.append(NodePlan(pool.name, pool.gpu_profile, config_name(pool.name),
                                       [{"devices": "all", "mig-enabled": True,
                                         "mig-devices": dict(sorted(pool.fixed_layout.items()))}],
                                       gpus_mig=pool.gpus_per_node * pool.nodes, nodes=pool.nodes, fixed=True))
    by_profile: dict[str, list[Demand]] = {}
    for d in demands:
        by_profile.setdefault(d.gpu_profile, []).append(d)
    for gpu_name in sorted(by_profile):
        gpu = profiles[gpu_name]
        group = by_profile[gpu_name]
        group_pools = [p for p in pools if p.gpu_profile == gpu_name]
        mig_demand: Counter = Counter()
        whole = 0
        for d in group:
            if d.kind == "mig":
                if not gpu.mig.supported or d.mig_profile not in {m.name for m in gpu.mig.profiles}:
                    refused.append(f"{d.describe()} ({gpu_name} has no such MIG profile)")
                    continue
                mig_demand[d.mig_profile] += d.replicas
            elif d.kind == "time-sliced":
                plan.time_slicing[gpu_name] = d.time_slices or 1
        ts_replicas = sum(d.replicas for d in group if d.kind == "time-sliced")
        if ts_replicas:
            whole += math.ceil(ts_replicas / plan.time_slicing[gpu_name])
        whole += sum(d.replicas for d in group if d.kind == "gpu")
        if not group_pools:
            refused += [f"{d.describe()} (no {gpu_name} nodes on {site})" for d in group]
            continue
        # Fixed layouts (stack migLayout) serve first; their GPUs are not replanned.
        advertised: Counter = Counter()
        fixed_gpus = 0
        for pool in group_pools:
            if pool.fixed_layout:
                n = pool.gpus_per_node * pool.nodes
                for name, count in pool.fixed_layout.items():
                    advertised[name] += count * n
                fixed_gpus += n
        remaining = Counter({k: max(v - advertised.get(k, 0), 0) for k, v in mig_demand.items()})
        remaining = +remaining
        geometries = min_gpus(gpu, remaining) if remaining else []
        plan.layouts[gpu_name] = geometries
        plan.lower_bound[gpu_name] = ((lower_bound(gpu, remaining) if remaining else 0) + whole
                                      + (fixed_gpus if mig_demand else 0))
        free = [p for p in group_pools if not p.fixed_layout]
        capacity = sum(p.gpus_per_node * p.nodes for p in free)
        needed = len(geometries) + whole
        if needed > capacity:
            refused += [f"{d.describe()} (needs {needed} {gpu_name} GPUs beyond fixed MIG layouts; "
                        f"{site} has {capacity})" for d in group]
            continue
        # Assign: MIG geometries first, then whole GPUs, pool by pool in stack order.
        queue: list[Geometry | None] = list(geometries) + [None] * whole
        if free and all(p.aws for p in free):
            node_plan = _aws_plan(gpu, remaining, whole, free)
            if node_plan is not None:
                plan.nodes.append(node_plan)
                queue = []
                needed = node_plan.nodes * (node_plan.gpus_mig + node_plan.gpus_whole)
                plan.layouts[gpu_name] = [g for e in node_plan.devices if e["mig-enabled"]
                                          for g in [tuple(sorted(e["mig-devices"].items()))] * len(e["devices"])
                                          ] * node_plan.nodes
                geometries = plan.layouts[gpu_name]
        else:
            for pool in free:
                take = queue[:pool.gpus_per_node]
                queue = queue[pool.gpus_per_node:]
                if not take:
                    continue
                per_gpu = take + [None] * (pool.gpus_per_node - len(take))
                plan.nodes.append(NodePlan(pool.name, gpu_name, config_name(pool.name), _device_entries(per_gpu),
                                           gpus_mig=sum(1 for g in take if g), gpus_whole=sum(1 for g in take if not g)))
        if queue:
            refused += [f"{d.describe()} (the {gpu_name} node groups on {site} cannot hold the layout)" for d in group]
            continue
        plan.gpus_used[gpu_name] = (fixed_gpus if mig_demand else 0) + needed
        for geometry in geometries:
            for name, count in geometry:
                advertised[name] += count
        plan.mig_resources[gpu_name] = advertised
    if refused:
        raise PlanError(f"{site}: cannot place: " + "; ".join(refused), refused)
    # The MIG manager only runs on MIG-capable GPUs: other nodes need no mig-parted entry.
    plan.nodes = [n for n in plan.nodes if profiles[n.gpu_profile].mig.supported]
    return plan


def _aws_plan(gpu: GpuProfile, mig_demand: Mapping[str, int], whole: int, pools: Sequence[GpuPool]
              ) -> NodePlan | None:
    """Every node of an EKS node group gets the same mig-parted config (one label per group): the first group and
    the fewest nodes n whose identical per-node layout, planned exactly for ceil(demand / n), fits a node."""
    for pool in pools:
        for n in range(1, pool.nodes + 1):
            per_node = {k: math.ceil(v / n) for k, v in mig_demand.items() if v}
            geometries = min_gpus(gpu, per_node) if per_node else []
            per_node_whole = math.ceil(whole / n)
            if len(geometries) + per_node_whole <= pool.gpus_per_node:
                per_gpu: list[Geometry | None] = list(geometries) + [None] * (pool.gpus_per_node - len(geometries))
                return NodePlan(pool.name, gpu.name, config_name(pool.name), _device_entries(per_gpu),
                                gpus_mig=len(geometries), gpus_whole=per_node_whole, nodes=n)
    return None


def demands_for(stack: Any, site: str, profiles: Mapping[str, GpuProfile]) -> list[Demand]:
    """The GPU demands of a stack's served models on `site` (MIG memory needs resolved to a slice)."""
    from finml.config import resolve_gpu_profile

    out = []
    for svc in stack.platform.workloads.serving:
        if site not in svc.sites:
            continue
        share = svc.gpu_share
        if share.kind == "cpu":
            continue
        gpu = resolve_gpu_profile(svc.gpu_profile, dict(profiles))
        mig_profile = share.mig_profile
        if share.kind == "mig" and mig_profile is None:
            mig_profile = smallest_slice(gpu, svc.gpu_memory_gib or 1)
        out.append(Demand(service=svc.name, gpu_profile=gpu.name, kind=share.kind, replicas=svc.replicas,
                          mig_profile=mig_profile, time_slices=share.time_slices))
    return out


def smallest_slice(gpu: GpuProfile, memory_gib: int) -> str:
    """The MIG profile with the least compute, then memory, that holds `memory_gib` (no media-engine variants)."""
    fits = [p for p in gpu.mig.profiles if p.memory_gib >= memory_gib and not p.media_extensions]
    if not fits:
        raise PlanError(f"no MIG profile of {gpu.name} holds {memory_gib} GB")
    return min(fits, key=lambda p: (p.slices, p.memory_slices, p.name)).name


def pools_for(stack: Any, site: str, profiles: Mapping[str, GpuProfile]) -> list[GpuPool]:
    """The site's GPU nodes: on-prem nodes one by one; AWS node groups as max-size identical nodes."""
    from finml.config import AwsSite, OnPremSite, resolve_gpu_profile

    cfg = stack.platform.sites[site]
    pools = []
    if isinstance(cfg, OnPremSite):
        for node in cfg.nodes:
            gpu = resolve_gpu_profile(node.gpu_profile, dict(profiles))
            pools.append(GpuPool(node.name, gpu.name, node.gpu_count, 1,
                                 dict(node.mig_layout) if node.mig_layout else None))
    elif isinstance(cfg, AwsSite) and cfg.eks is not None:
        from gpu_profiles import parse_gpu_shorthand

        for group in cfg.eks.gpu_node_groups:
            gpu = resolve_gpu_profile(group.gpu, dict(profiles))
            per_node = next((t.gpu_count for t in gpu.aws_instance_types if t.type == group.instance_type), None)
            if per_node is None:
                try:
                    per_node = parse_gpu_shorthand(group.gpu).count or gpu.aws_instance_types[0].gpu_count
                except Exception:  # noqa: BLE001 — a profile name, not shorthand
                    per_node = gpu.aws_instance_types[0].gpu_count
            pools.append(GpuPool(group.name, gpu.name, per_node, group.max_size, aws=True))
    return pools


def plan_stack_site(stack: Any, site: str, profiles: Mapping[str, GpuProfile]) -> SitePlan:
    return plan_site(site, demands_for(stack, site, profiles), pools_for(stack, site, profiles), profiles)


def plan_gpus(stack: Any, site: str, profiles: Mapping[str, GpuProfile]) -> SitePlan:
    """The site's one GPU plan for a Pulumi program: made once per site, before any resource, and handed to both
    consumers (the EKS node groups' MIG config labels and the GPU Operator's mig-parted ConfigMap). A demand that
    does not fit is a ValueError naming the stack file and the demand."""
    try:
        return plan_stack_site(stack, site, profiles)
    except PlanError as exc:
        raise ValueError(f"{stack.source}: {exc}") from None


def node_group_mig_configs(plan: SitePlan, pools: Sequence[GpuPool], profiles: Mapping[str, GpuProfile]
                           ) -> dict[str, str]:
    """The `nvidia.com/mig.config` value of each MIG-capable EKS node group of the site (group name -> config).

    A group the plan gives a layout gets its `finml-<group>` config (an entry of `plan.mig_parted_config()`, the
    ConfigMap the operator's MIG manager reads); every other MIG-capable group gets `all-disabled` explicitly, so its
    GPUs stay whole whatever the operator's default. Groups of GPUs without MIG get no label: the operator runs no
    MIG manager there.
    """
    planned = {n.pool: n.config_name for n in plan.nodes}
    out = {}
    for pool in pools:
        if not pool.aws or not profiles[pool.gpu_profile].mig.supported:
            continue
        out[pool.name] = planned.get(pool.name, ALL_DISABLED)
    configs = plan.mig_parted_config()["mig-configs"]
    missing = sorted(f"{g}={c}" for g, c in out.items() if c not in configs)
    if missing:  # the planner names every planned group in the config: a miss is a planner bug, never deploy it
        raise PlanError(f"{plan.site}: node group MIG configs not in the mig-parted config: {', '.join(missing)}")
    return out


def geometries_of(counts: Iterable[Geometry]) -> Counter:
    total: Counter = Counter()
    for geometry in counts:
        for name, count in geometry:
            total[name] += count
    return total
