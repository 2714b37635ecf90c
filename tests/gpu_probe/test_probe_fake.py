"""probe() and match_profiles() against the fake NVML: exact fields for each shipped scenario."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest

from finml import fake_nvml
from finml.gpu_probe import NvmlUnavailable, ProbeError, ProbeUsageError, match_profiles, probe
from gpu_profiles import load_profiles

SCENARIOS = Path(__file__).parent / "scenarios"
PROFILES = load_profiles()


def _fake(name: str) -> fake_nvml.FakeNvml:
    return fake_nvml.load_scenario(str(SCENARIOS / f"{name}.json"))


def _gpu(name: str, mib: int, **extra) -> dict:
    return {"name": name, "memory_total_mib": mib, "mig": {"current": 0, "pending": 0}, **extra}


def test_h100x8_exact_result():
    nvml = _fake("h100x8")
    result = probe(nvml)
    assert {k: v for k, v in result.items() if k != "gpus"} == {
        "schema": "finml-gpu-probe/1",
        "nvml_available": True,
        "driver_version": "570.124.06",
        "cuda_driver_version": "12.8",
        "gpu_count": 8,
    }
    assert result["gpus"][3] == {
        "index": 3,
        "uuid": "GPU-0000f1a0-0000-0000-0000-000000000003",
        "name": "NVIDIA H100 80GB HBM3",
        "memory_total_mib": 81559,
        "memory_total_gib": 79.6,
        "mig_mode_current": "disabled",
        "mig_mode_pending": "disabled",
        "mig_instances": [],
        "ecc_mode_current": "enabled",
        "persistence_mode": "enabled",
    }
    assert [g["index"] for g in result["gpus"]] == list(range(8))
    assert len({g["uuid"] for g in result["gpus"]}) == 8
    assert nvml.initialized == 0, "probe must shut NVML down"
    assert nvml.calls[0] == "nvmlInit" and nvml.calls[-1] == "nvmlShutdown"


def test_h100x8_matches_h100_profile():
    result = match_profiles(probe(_fake("h100x8")), PROFILES, expected="H100-80GB")
    assert result["profile"] == "H100-80GB"
    assert result["expected_profile"] == "H100-80GB"
    assert result["mismatch"] == []
    assert {(g["profile"], g["profile_match"]) for g in result["gpus"]} == {("H100-80GB", "product_name")}


def test_h200x8_memory_and_profile():
    result = match_profiles(probe(_fake("h200x8")), PROFILES)
    assert result["driver_version"] == "570.133.20"
    assert {(g["name"], g["memory_total_mib"], g["memory_total_gib"]) for g in result["gpus"]} == {("NVIDIA H200", 143771, 140.4)}
    assert result["gpu_count"] == 8
    assert result["profile"] == "H200-141GB"
    assert result["expected_profile"] is None
    assert result["mismatch"] == []


def test_h100_with_mig_instances():
    result = probe(_fake("h100_mig"))
    first, second = result["gpus"]
    assert (first["mig_mode_current"], first["mig_mode_pending"]) == ("enabled", "enabled")
    assert [m["profile"] for m in first["mig_instances"]] == ["1g.10gb"] * 7
    assert [m["gpu_instance_id"] for m in first["mig_instances"]] == list(range(7, 14))
    assert first["mig_instances"][0] == {
        "index": 0,
        "uuid": "MIG-0000f1a1-0000-0000-0000-000000000000",
        "profile": "1g.10gb",
        "gpu_instance_id": 7,
        "compute_instance_id": 0,
        "memory_total_mib": 9856,
        "memory_total_gib": 9.6,
    }
    assert (second["mig_mode_current"], second["mig_mode_pending"], second["mig_instances"]) == ("disabled", "enabled", [])
    # The MIG profiles found exist in the GPU's profile, with their real memory below the rounded name.
    allowed = {p.name: p for p in PROFILES["H100-80GB"].mig.profiles}
    for mig in first["mig_instances"]:
        assert mig["memory_total_gib"] <= allowed[mig["profile"]].memory_gib
    assert match_profiles(result, PROFILES, expected="H100-80GB")["mismatch"] == []


def test_t4_without_mig_support():
    result = match_profiles(probe(_fake("t4x1")), PROFILES)
    (gpu,) = result["gpus"]
    assert (gpu["mig_mode_current"], gpu["mig_mode_pending"], gpu["mig_instances"]) == ("unsupported", "unsupported", [])
    assert (gpu["ecc_mode_current"], gpu["persistence_mode"]) == ("enabled", "disabled")
    assert (gpu["memory_total_mib"], gpu["profile"]) == (15360, "T4")


def test_a100_on_h200_node_mismatch():
    result = match_profiles(probe(_fake("a100_on_h200_node")), PROFILES, expected="h200-141gb")
    assert result["profile"] == "A100-80GB"
    assert result["expected_profile"] == "H200-141GB"
    assert result["mismatch"] == [f"gpu {i}: expected H200-141GB, found A100-80GB (NVIDIA A100-SXM4-80GB)" for i in range(8)]


def test_no_nvml_scenario_raises_library_not_found():
    nvml = _fake("no_nvml")
    with pytest.raises(fake_nvml.NVMLError) as info:
        nvml.nvmlInit()
    assert type(info.value).__name__ == "NVMLError_LibraryNotFound"
    assert info.value.value == 12
    with pytest.raises(NvmlUnavailable) as unavailable:
        probe(_fake("no_nvml"))
    assert unavailable.value.reason == "libnvidia-ml.so.1 not found"


@pytest.mark.parametrize(
    ("init_error", "reason"),
    [
        ("DRIVER_NOT_LOADED", "NVIDIA kernel driver not loaded"),
        ("LIB_RM_VERSION_MISMATCH", "libnvidia-ml.so.1 does not match the loaded kernel driver version"),
        (4, "no permission to open the NVIDIA devices"),
        ("UNKNOWN", "Unknown Error (NVML error 999)"),
    ],
)
def test_other_init_failures_mean_no_nvml(init_error, reason):
    with pytest.raises(NvmlUnavailable) as info:
        probe(fake_nvml.from_scenario({"init_error": init_error, "gpus": []}))
    assert info.value.reason == reason


def test_failure_mid_probe_names_the_gpu_and_still_shuts_down():
    nvml = fake_nvml.from_scenario(
        {"gpus": [_gpu("NVIDIA H200", 143771), _gpu("NVIDIA H200", 143771, errors={"nvmlDeviceGetUUID": "GPU_IS_LOST"})]}
    )
    with pytest.raises(ProbeError, match=r"^NVML error on GPU 1: GPU is lost$"):
        probe(nvml)
    assert nvml.initialized == 0


def test_unsupported_queries_are_reported_not_fatal():
    nvml = fake_nvml.from_scenario(
        {"gpus": [_gpu("NVIDIA L4", 23034, mig=None, errors={"nvmlDeviceGetEccMode": "NOT_SUPPORTED", "nvmlDeviceGetPersistenceMode": 3})]}
    )
    (gpu,) = probe(nvml)["gpus"]
    assert (gpu["mig_mode_current"], gpu["ecc_mode_current"], gpu["persistence_mode"]) == ("unsupported", "unsupported", "unsupported")


def test_no_gpus_with_expectation_is_a_mismatch():
    result = match_profiles(probe(fake_nvml.from_scenario({"gpus": []})), PROFILES, expected="H100-80GB")
    assert result["gpu_count"] == 0
    assert result["profile"] is None
    assert result["mismatch"] == ["expected H100-80GB, found no GPUs"]


@pytest.mark.parametrize(
    ("name", "mib", "profile", "how"),
    [
        ("NVIDIA H100 PCIe", 81559, "H100-80GB", "memory"),  # 80 GB like A100-80GB; the name decides
        ("NVIDIA A100-PCIE-40GB", 40960, "A100-40GB", "memory"),
        ("GRID T4-16Q", 16384, "T4", "memory"),  # the only 16 GB profile
        ("NVIDIA Mystery 80GB", 81920, None, "none"),  # 80 GB, but A100 or H100?
        ("NVIDIA B200", 183359, None, "none"),
    ],
)
def test_memory_fallback(name, mib, profile, how):
    result = match_profiles(probe(fake_nvml.from_scenario({"gpus": [_gpu(name, mib)]})), PROFILES)
    (gpu,) = result["gpus"]
    assert (gpu["profile"], gpu["profile_match"]) == (profile, how)
    if profile is None:
        assert result["profile"] is None
        assert result["mismatch"] == [f"gpu 0: {name} ({gpu['memory_total_gib']} GiB) matches no GPU profile"]


def test_mixed_gpus_on_one_node():
    nvml = fake_nvml.from_scenario({"gpus": [_gpu("NVIDIA H100 80GB HBM3", 81559, repeat=2), _gpu("NVIDIA H200", 143771)]})
    result = match_profiles(probe(nvml), PROFILES)
    assert result["profile"] is None
    assert result["mismatch"] == ["GPUs of different profiles on one node: H100-80GB on gpus 0,1; H200-141GB on gpus 2"]


def test_match_profiles_accepts_json_dicts_and_does_not_mutate():
    raw = probe(_fake("h200x8"))
    before = copy.deepcopy(raw)
    as_json = json.loads(json.dumps([p.model_dump(mode="json") for p in PROFILES.values()]))
    assert match_profiles(raw, as_json) == match_profiles(raw, PROFILES)
    assert raw == before


def test_unknown_expected_profile():
    with pytest.raises(ProbeUsageError, match=r"unknown profile 'H300' for --expect-profile; allowed: A100-40GB, A100-80GB"):
        match_profiles(probe(_fake("h200x8")), PROFILES, expected="H300")


def test_fake_errors_mirror_pynvml():
    pynvml = pytest.importorskip("pynvml")
    for suffix, code in fake_nvml.ERROR_CODES.items():
        assert getattr(pynvml, "NVML_ERROR_" + suffix) == code, suffix
        real_class = type(pynvml.NVMLError(code)).__name__
        assert type(fake_nvml.NVMLError(code)).__name__ == real_class, suffix
    assert str(fake_nvml.NVMLError_LibraryNotFound()) == str(pynvml.NVMLError_LibraryNotFound())


def test_fake_requires_init_like_nvml():
    nvml = _fake("h100x8")
    with pytest.raises(fake_nvml.NVMLError) as info:
        nvml.nvmlDeviceGetCount()
    assert type(info.value).__name__ == "NVMLError_Uninitialized"


@pytest.mark.parametrize(
    ("scenario", "words"),
    [
        ({"gpus": [{"name": "x"}]}, "gpus[0] needs 'name' and 'memory_total_mib'"),
        ({"gpus": [], "init_error": "EXPLODED"}, "unknown NVML error 'EXPLODED'"),
        ({"gpus": [], "colour": 1}, "unknown fake NVML scenario keys: colour"),
        ([], "must be a JSON object"),
    ],
)
def test_bad_scenarios(tmp_path, scenario, words):
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(scenario))
    with pytest.raises(ValueError) as info:
        fake_nvml.load_scenario(str(path))
    assert str(path) in str(info.value) and words in str(info.value)


# Memory NVML really reports for each model (MiB): below the marketing GB because of ECC and reserved memory.
REPORTED_MIB = {
    "T4": 15360,
    "A10G": 23028,
    "L4": 23034,
    "L40S": 46068,
    "A100-40GB": 40960,
    "A100-80GB": 81920,
    "H100-80GB": 81559,
    "H200-141GB": 143771,
}


@pytest.mark.parametrize("profile", sorted(REPORTED_MIB))
def test_memory_fallback_window_fits_real_reported_sizes(profile):
    """An unrecognised product name falls back to memory: unique sizes resolve, shared sizes (24, 80 GB) do not guess."""
    nvml = fake_nvml.from_scenario({"gpus": [_gpu("Unrecognised GPU", REPORTED_MIB[profile])]})
    (gpu,) = match_profiles(probe(nvml), PROFILES)["gpus"]
    same_size = [p for p in PROFILES.values() if p.memory_gib == PROFILES[profile].memory_gib]
    if len(same_size) == 1:
        assert (gpu["profile"], gpu["profile_match"]) == (profile, "memory")
    else:
        assert (gpu["profile"], gpu["profile_match"]) == (None, "none")
