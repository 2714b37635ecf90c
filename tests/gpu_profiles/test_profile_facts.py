"""The shipped GPU profiles load, hold together, and state the real hardware facts."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import gpu_profiles
from gpu_profiles import GpuProfile, instance_types_for, load_profile_file, load_profiles, profiles_to_json

PROFILE_FILES = sorted(gpu_profiles.PROFILES_DIR.glob("*.yaml"))
REQUIRED = {"T4", "A10G", "L4", "L40S", "A100-40GB", "A100-80GB", "H100-80GB", "H200-141GB"}

# (memory GB, compute capability, architecture) from NVIDIA's data sheets.
CORE_FACTS = {
    "T4": (16, "7.5", "Turing"),
    "A10G": (24, "8.6", "Ampere"),
    "L4": (24, "8.9", "Ada"),
    "L40S": (48, "8.9", "Ada"),
    "A100-40GB": (40, "8.0", "Ampere"),
    "A100-80GB": (80, "8.0", "Ampere"),
    "H100-80GB": (80, "9.0", "Hopper"),
    "H200-141GB": (141, "9.0", "Hopper"),
}
# MIG profile -> instances per GPU, from NVIDIA's MIG user guide (the '+me' media-extension variants included).
MIG_TABLES = {
    "A100-40GB": {"1g.5gb": 7, "1g.5gb+me": 1, "1g.10gb": 4, "2g.10gb": 3, "3g.20gb": 2, "4g.20gb": 1, "7g.40gb": 1},
    "A100-80GB": {"1g.10gb": 7, "1g.10gb+me": 1, "1g.20gb": 4, "2g.20gb": 3, "3g.40gb": 2, "4g.40gb": 1, "7g.80gb": 1},
    "H100-80GB": {"1g.10gb": 7, "1g.10gb+me": 1, "1g.20gb": 4, "2g.20gb": 3, "3g.40gb": 2, "4g.40gb": 1, "7g.80gb": 1},
    "H200-141GB": {"1g.18gb": 7, "1g.18gb+me": 1, "1g.35gb": 4, "2g.35gb": 3, "3g.71gb": 2, "4g.71gb": 1, "7g.141gb": 1},
}
AWS_INSTANCES = {
    "T4": {"g4dn.xlarge": 1, "g4dn.2xlarge": 1, "g4dn.4xlarge": 1, "g4dn.8xlarge": 1, "g4dn.16xlarge": 1, "g4dn.12xlarge": 4, "g4dn.metal": 8},
    "A10G": {"g5.xlarge": 1, "g5.2xlarge": 1, "g5.4xlarge": 1, "g5.8xlarge": 1, "g5.16xlarge": 1, "g5.12xlarge": 4, "g5.24xlarge": 4, "g5.48xlarge": 8},
    "L4": {"g6.xlarge": 1, "g6.2xlarge": 1, "g6.4xlarge": 1, "g6.8xlarge": 1, "g6.16xlarge": 1, "g6.12xlarge": 4, "g6.24xlarge": 4, "g6.48xlarge": 8},
    "L40S": {"g6e.xlarge": 1, "g6e.2xlarge": 1, "g6e.4xlarge": 1, "g6e.8xlarge": 1, "g6e.16xlarge": 1, "g6e.12xlarge": 4, "g6e.24xlarge": 4, "g6e.48xlarge": 8},
    "A100-40GB": {"p4d.24xlarge": 8},
    "A100-80GB": {"p4de.24xlarge": 8},
    "H100-80GB": {"p5.4xlarge": 1, "p5.48xlarge": 8},
    "H200-141GB": {"p5e.48xlarge": 8, "p5en.48xlarge": 8},
}
NVSWITCH_SXM = {"A100-40GB", "A100-80GB", "H100-80GB", "H200-141GB"}


@pytest.fixture(scope="module")
def profiles() -> dict[str, GpuProfile]:
    return load_profiles(reload=True)


def test_required_profiles_are_shipped(profiles):
    assert REQUIRED <= set(profiles), f"missing: {sorted(REQUIRED - set(profiles))}"


@pytest.mark.parametrize("path", PROFILE_FILES, ids=lambda p: p.stem)
def test_every_profile_file_loads_on_its_own(path: Path):
    profile = load_profile_file(path)
    assert profile.name == path.stem
    assert profile.vendor == "nvidia"
    assert profile.kubernetes.labels["finml.io/gpu-profile"] == path.stem.lower() == profile.k8s_label_value
    assert any((t.key, t.value, t.effect) == ("nvidia.com/gpu", "present", "NoSchedule") for t in profile.kubernetes.taints)
    assert profile.aws_ami_type == "AL2023_x86_64_NVIDIA"


@pytest.mark.parametrize("name", sorted(CORE_FACTS))
def test_memory_compute_capability_and_architecture(profiles, name):
    memory, compute_capability, architecture = CORE_FACTS[name]
    profile = profiles[name]
    assert (profile.memory_gib, profile.compute_capability, profile.architecture) == (memory, compute_capability, architecture)


def test_spot_checks_named_in_the_brief(profiles):
    assert profiles["H200-141GB"].memory_gib == 141
    assert profiles["H100-80GB"].compute_capability == "9.0"
    assert profiles["T4"].mig.supported is False and profiles["T4"].mig.profiles == ()
    p5 = {i.type: i.gpu_count for i in profiles["H100-80GB"].aws_instance_types}
    assert p5["p5.48xlarge"] == 8


@pytest.mark.parametrize("name", sorted(MIG_TABLES))
def test_mig_tables_match_nvidia(profiles, name):
    mig = profiles[name].mig
    assert mig.supported and mig.max_instances == 7
    assert {p.name: p.count_per_gpu for p in mig.profiles} == MIG_TABLES[name]
    # The full-GPU slice carries the GPU's whole (marketing) memory.
    assert max(p.memory_gib for p in mig.profiles) == profiles[name].memory_gib


@pytest.mark.parametrize("name", sorted(REQUIRED - set(MIG_TABLES)))
def test_non_mig_gpus_have_no_mig_profiles(profiles, name):
    mig = profiles[name].mig
    assert (mig.supported, mig.max_instances, mig.profiles) == (False, 0, ())


@pytest.mark.parametrize("name", sorted(REQUIRED))
def test_mig_slices_never_exceed_memory_or_slice_count(profiles, name):
    profile = profiles[name]
    for mig in profile.mig.profiles:
        assert mig.memory_gib <= profile.memory_gib, mig.name
        assert 1 <= mig.count_per_gpu <= profile.mig.max_instances <= 7, mig.name
        assert mig.slices * mig.count_per_gpu <= 7, mig.name
        # MIG memory comes in eighths of the GPU (names round it): a profile takes 1, 2, 4 or 8 memory slices,
        # and its instances together never take more than the 8 a GPU has.
        memory_slices = round(mig.memory_gib / (profile.memory_gib / 8))
        assert memory_slices in (1, 2, 4, 8), mig.name
        assert abs(memory_slices * profile.memory_gib / 8 - mig.memory_gib) < 1, mig.name
        assert memory_slices * mig.count_per_gpu <= 8, mig.name


@pytest.mark.parametrize("name", sorted(AWS_INSTANCES))
def test_aws_instance_types(profiles, name):
    assert {i.type: i.gpu_count for i in profiles[name].aws_instance_types} == AWS_INSTANCES[name]
    assert instance_types_for(profiles[name]) == set(AWS_INSTANCES[name])


def test_first_instance_type_is_the_usual_one(profiles):
    # Node groups that name no instance type get the first: the 8-GPU HGX box for SXM GPUs, the smallest otherwise.
    first = {name: p.aws_instance_types[0].type for name, p in profiles.items()}
    assert {k: first[k] for k in ("H100-80GB", "H200-141GB", "A100-40GB", "T4", "L4")} == {
        "H100-80GB": "p5.48xlarge",
        "H200-141GB": "p5en.48xlarge",
        "A100-40GB": "p4d.24xlarge",
        "T4": "g4dn.xlarge",
        "L4": "g6.xlarge",
    }


def test_an_instance_type_belongs_to_one_profile(profiles):
    owners: dict[str, str] = {}
    for profile in profiles.values():
        for instance_type in instance_types_for(profile):
            assert instance_type not in owners, f"{instance_type} in {owners.get(instance_type)} and {profile.name}"
            owners[instance_type] = profile.name


def test_nvml_product_names(profiles):
    expected = {
        "T4": "Tesla T4",
        "A10G": "NVIDIA A10G",
        "L4": "NVIDIA L4",
        "L40S": "NVIDIA L40S",
        "A100-40GB": "NVIDIA A100-SXM4-40GB",
        "A100-80GB": "NVIDIA A100-SXM4-80GB",
        "H100-80GB": "NVIDIA H100 80GB HBM3",
        "H200-141GB": "NVIDIA H200",
    }
    for name, product in expected.items():
        assert product in profiles[name].nvml_product_names, name
    all_names = [n.lower() for p in profiles.values() for n in p.nvml_product_names]
    assert len(all_names) == len(set(all_names)), "an NVML product name is claimed by two profiles"


def test_fabric_manager_and_nvswitch_only_on_sxm_baseboards(profiles):
    for profile in profiles.values():
        expected = profile.name in NVSWITCH_SXM
        assert (profile.driver.fabric_manager, profile.driver.nvswitch) == (expected, expected), profile.name


def test_h200_driver_branch_supports_it(profiles):
    assert int(profiles["H200-141GB"].driver.branch) >= 550


def test_profiles_to_json_round_trips(profiles):
    entries = json.loads(profiles_to_json(profiles))
    assert [e["name"] for e in entries] == sorted(profiles)
    for entry in entries:
        assert GpuProfile.model_validate(entry) == profiles[entry["name"]]


def test_profiles_are_immutable(profiles):
    with pytest.raises(Exception) as info:
        profiles["H100-80GB"].memory_gib = 1  # type: ignore[misc]
    assert "frozen" in str(info.value).lower()


def test_load_profiles_caches_per_directory_and_reloads(tmp_path):
    source = gpu_profiles.PROFILES_DIR / "L4.yaml"
    (tmp_path / "L4.yaml").write_text(source.read_text())
    first = load_profiles(tmp_path)
    assert set(first) == {"L4"}
    (tmp_path / "T4.yaml").write_text((gpu_profiles.PROFILES_DIR / "T4.yaml").read_text())
    assert set(load_profiles(tmp_path)) == {"L4"}, "cached result expected without reload"
    assert set(load_profiles(tmp_path, reload=True)) == {"L4", "T4"}
    gpu_profiles.clear_cache()
    (tmp_path / "T4.yaml").unlink()
    assert set(load_profiles(tmp_path)) == {"L4"}
    # The default directory is unaffected by loading another one.
    assert REQUIRED <= set(load_profiles())
