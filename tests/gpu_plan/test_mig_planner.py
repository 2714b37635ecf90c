"""The MIG layout planner: real geometry rules, exact GPU counts, a lower bound, refusals by name."""

from __future__ import annotations

import random
from collections import Counter
from itertools import combinations

import pytest

from finml import mig_planner as mp
from gpu_profiles import load_profiles
from gpu_profiles.schema import MIG_COMPUTE_SLICES, MIG_MEMORY_SLICES

PROFILES = load_profiles(reload=True)
MIG_GPUS = sorted(name for name, p in PROFILES.items() if p.mig.supported)


def _independent_geometries(gpu) -> set[tuple[tuple[str, int], ...]]:
    """Every multiset of profiles reachable by a set of non-overlapping (profile, start) placements, enumerated
    from scratch (no search order, no pruning) — the reference the planner's geometry rules are checked against."""
    slots = [(p, start) for p in gpu.mig.profiles for start in p.placements]
    found: set[tuple[tuple[str, int], ...]] = set()

    def grow(index: int, used: frozenset[int], chosen: list) -> None:
        if chosen:
            counts = Counter(p.name for p, _ in chosen)
            by_name = {p.name: p for p in gpu.mig.profiles}
            if (sum(p.slices for p, _ in chosen) <= MIG_COMPUTE_SLICES
                    and sum(1 for p, _ in chosen if p.name.endswith("+me")) <= 1
                    and all(c <= by_name[n].count_per_gpu for n, c in counts.items())):
                found.add(tuple(sorted(counts.items())))
        for j in range(index, len(slots)):
            prof, start = slots[j]
            cells = frozenset(range(start, start + prof.memory_slices))
            if cells & used:
                continue
            chosen.append(slots[j])
            grow(j + 1, used | cells, chosen)
            chosen.pop()

    grow(0, frozenset(), [])
    return found


@pytest.mark.parametrize("name", MIG_GPUS)
def test_geometries_equal_an_independent_enumeration_of_placements(name):
    gpu = PROFILES[name]
    assert set(mp.valid_geometries(gpu)) == _independent_geometries(gpu)


@pytest.mark.parametrize("name", MIG_GPUS)
def test_every_geometry_has_a_concrete_non_overlapping_placement(name):
    gpu = PROFILES[name]
    by_name = {p.name: p for p in gpu.mig.profiles}
    for geometry in mp.valid_geometries(gpu):
        placed = mp.placement(gpu, dict(geometry))
        assert placed is not None
        assert Counter(n for n, _ in placed) == Counter(dict(geometry))
        cells: list[int] = []
        for prof_name, start in placed:
            prof = by_name[prof_name]
            assert start in prof.placements, (geometry, prof_name, start)
            cells += range(start, start + prof.memory_slices)
        assert len(cells) == len(set(cells)) and max(cells) < MIG_MEMORY_SLICES, geometry


# Combinations from the MIG user guide's H100 80GB configuration table, and ones the hardware refuses.
H100_VALID = [{"7g.80gb": 1}, {"4g.40gb": 1, "3g.40gb": 1}, {"3g.40gb": 2}, {"2g.20gb": 3, "1g.10gb": 1},
              {"1g.20gb": 4}, {"1g.10gb": 7}, {"4g.40gb": 1, "2g.20gb": 1, "1g.10gb": 1},
              {"3g.40gb": 1, "2g.20gb": 2}, {"1g.10gb+me": 1, "1g.10gb": 6}]
H100_INVALID = [{"7g.80gb": 1, "1g.10gb": 1}, {"4g.40gb": 2}, {"3g.40gb": 2, "1g.10gb": 1}, {"1g.10gb": 8},
                {"1g.10gb+me": 2}, {"2g.20gb": 4}, {"4g.40gb": 1, "3g.40gb": 1, "1g.10gb": 1},
                {"1g.20gb": 4, "1g.10gb": 1}, {"2g.20gb": 3, "1g.20gb": 1, "1g.10gb": 1}]


@pytest.mark.parametrize("counts", H100_VALID, ids=str)
def test_h100_geometries_the_guide_lists_are_valid(counts):
    assert mp.is_valid_geometry(PROFILES["H100-80GB"], counts)


@pytest.mark.parametrize("counts", H100_INVALID, ids=str)
def test_h100_geometries_the_hardware_refuses_are_invalid(counts):
    assert not mp.is_valid_geometry(PROFILES["H100-80GB"], counts)


def _exhaustive_min_gpus(gpu, demand: dict[str, int], limit: int = 6) -> int:
    """Breadth-first over every valid geometry per added GPU (not only maximal ones): the true optimum."""
    names = sorted(demand)
    geoms = [tuple(dict(g).get(n, 0) for n in names) for g in mp.valid_geometries(gpu)]
    level = {tuple(demand[n] for n in names)}
    for k in range(limit + 1):
        if any(not any(state) for state in level):
            return k
        level = {tuple(max(s - g, 0) for s, g in zip(state, geom)) for state in level for geom in geoms}
    raise AssertionError(f"more than {limit} GPUs for {demand}")


def _covers(geometries, demand) -> bool:
    got = mp.geometries_of(geometries)
    return all(got[n] >= c for n, c in demand.items())


SMALL_CASES = [
    ("H100-80GB", {"3g.40gb": 3, "1g.10gb": 2}),
    ("H100-80GB", {"4g.40gb": 2, "2g.20gb": 2, "1g.10gb": 2}),
    ("H100-80GB", {"1g.20gb": 5, "2g.20gb": 1}),
    ("H100-80GB", {"7g.80gb": 1, "1g.10gb+me": 2}),
    ("H200-141GB", {"1g.18gb": 9, "3g.71gb": 1}),
    ("H200-141GB", {"2g.35gb": 4, "1g.35gb": 3}),
    ("A100-40GB", {"4g.20gb": 1, "3g.20gb": 2, "1g.5gb": 3}),
    ("A100-80GB", {"2g.20gb": 5, "1g.10gb": 4}),
]


@pytest.mark.parametrize("gpu_name,demand", SMALL_CASES, ids=lambda v: str(v))
def test_planner_count_is_optimal_against_exhaustive_search(gpu_name, demand):
    gpu = PROFILES[gpu_name]
    plan = mp.min_gpus(gpu, demand)
    assert _covers(plan, demand)
    assert all(mp.is_valid_geometry(gpu, dict(g)) for g in plan)
    assert len(plan) == _exhaustive_min_gpus(gpu, demand)
    assert mp.lower_bound(gpu, demand) <= len(plan)


def test_random_small_demands_are_optimal_against_exhaustive_search():
    rng = random.Random(14)
    gpu = PROFILES["H100-80GB"]
    names = [p.name for p in gpu.mig.profiles]
    for _ in range(40):
        demand = {n: rng.randint(1, 3) for n in rng.sample(names, rng.randint(1, 3))}
        if mp.lower_bound(gpu, demand) > 4:
            continue
        assert len(mp.min_gpus(gpu, demand)) == _exhaustive_min_gpus(gpu, demand), demand


def test_thousand_random_demands_against_the_lower_bound(capsys):
    rng = random.Random(2026)
    gaps: Counter = Counter()
    for i in range(1000):
        gpu = PROFILES[MIG_GPUS[i % len(MIG_GPUS)]]
        names = [p.name for p in gpu.mig.profiles]
        demand = {n: rng.randint(1, 8) for n in rng.sample(names, rng.randint(1, 4))}
        plan = mp.min_gpus(gpu, demand)
        assert _covers(plan, demand), demand
        assert all(mp.is_valid_geometry(gpu, dict(g)) for g in plan), demand
        bound = mp.lower_bound(gpu, demand)
        assert len(plan) >= bound, demand
        gaps[len(plan) - bound] += 1
    with capsys.disabled():
        print("\nMIG planner vs lower bound on 1000 random demands: "
              + ", ".join(f"gap {g}: {n}" for g, n in sorted(gaps.items())))
    assert sum(gaps.values()) == 1000


def test_lower_bound_is_tight_on_simple_cases():
    gpu = PROFILES["H100-80GB"]
    assert mp.lower_bound(gpu, {"1g.10gb": 14}) == 2 == len(mp.min_gpus(gpu, {"1g.10gb": 14}))
    assert mp.lower_bound(gpu, {"7g.80gb": 3}) == 3
    assert mp.lower_bound(gpu, {"4g.40gb": 1, "3g.40gb": 3}) == 2


def test_unknown_profile_is_refused_by_name():
    with pytest.raises(mp.PlanError, match="1g.18gb"):
        mp.min_gpus(PROFILES["H100-80GB"], {"1g.18gb": 1})


def _pools(*nodes):
    return [mp.GpuPool(name, gpu, count, 1, layout) for name, gpu, count, layout in nodes]


def test_site_plan_assigns_gpus_to_nodes_and_writes_mig_parted():
    demands = [mp.Demand("fraud", "H100-80GB", "mig", 9, mig_profile="1g.10gb"),
               mp.Demand("aml", "H100-80GB", "mig", 2, mig_profile="3g.40gb"),
               mp.Demand("chat", "H100-80GB", "time-sliced", 5, time_slices=4)]
    plan = mp.plan_site("onprem:fra-dc1", demands, _pools(("n1", "H100-80GB", 2, None), ("n2", "H100-80GB", 8, None)),
                        PROFILES)
    assert plan.gpus_used["H100-80GB"] == len(plan.layouts["H100-80GB"]) + 2
    assert plan.gpus_used["H100-80GB"] >= plan.lower_bound["H100-80GB"]
    assert plan.mig_resources["H100-80GB"]["1g.10gb"] >= 9 and plan.mig_resources["H100-80GB"]["3g.40gb"] >= 2
    config = plan.mig_parted_config()
    assert config["version"] == "v1" and config["mig-configs"]["all-disabled"] == [{"devices": "all", "mig-enabled": False}]
    n1 = config["mig-configs"]["finml-n1"]
    assert [e["devices"] for e in n1] in ([[0], [1]], [[0, 1]])
    devices = [d for e in config["mig-configs"]["finml-n2"] for d in e["devices"]]
    assert devices == list(range(8))
    assert plan.node_labels()["n1"] == {"nvidia.com/mig.config": "finml-n1"}
    for entries in config["mig-configs"].values():
        for entry in entries:
            if entry["mig-enabled"]:
                assert mp.is_valid_geometry(PROFILES["H100-80GB"], entry["mig-devices"])


def test_fixed_layout_nodes_serve_first_and_stay_in_the_config():
    demands = [mp.Demand("fraud", "H100-80GB", "mig", 10, mig_profile="1g.10gb")]
    plan = mp.plan_site("onprem:x", demands, _pools(("fixed", "H100-80GB", 1, {"1g.10gb": 7}),
                                                    ("free", "H100-80GB", 8, None)), PROFILES)
    assert plan.mig_parted_config()["mig-configs"]["finml-fixed"] == [
        {"devices": "all", "mig-enabled": True, "mig-devices": {"1g.10gb": 7}}]
    assert len(plan.layouts["H100-80GB"]) == 1  # 3 more slices: one more GPU


def test_infeasible_demands_are_refused_naming_them():
    demands = [mp.Demand("big", "H100-80GB", "mig", 5, mig_profile="7g.80gb"),
               mp.Demand("small", "H200-141GB", "mig", 1, mig_profile="1g.18gb")]
    with pytest.raises(mp.PlanError) as info:
        mp.plan_site("onprem:x", demands, _pools(("n1", "H100-80GB", 4, None)), PROFILES)
    refused = " | ".join(info.value.demands)
    assert "big: 5 x H100-80GB mig 7g.80gb" in refused and "has 4" in refused
    assert "small" in refused and "no H200-141GB nodes" in refused


def test_aws_node_groups_get_one_identical_layout_per_node():
    demands = [mp.Demand("fraud", "H100-80GB", "mig", 20, mig_profile="1g.10gb")]
    pool = mp.GpuPool("h100", "H100-80GB", 2, nodes=4, aws=True)
    plan = mp.plan_site("aws:eu-central-1", demands, [pool], PROFILES)
    node = plan.nodes[0]
    assert node.nodes * sum(e["mig-devices"]["1g.10gb"] * len(e["devices"]) for e in node.devices
                            if e["mig-enabled"]) >= 20
    assert node.nodes == 2
