"""Broken profile files fail with a ProfileError naming the file, the key path and what is allowed."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any, Callable

import pytest
import yaml
from pydantic import ValidationError

import gpu_profiles
from gpu_profiles import ProfileError, load_profile_file, load_profiles


def _good(name: str) -> dict[str, Any]:
    return yaml.safe_load((gpu_profiles.PROFILES_DIR / f"{name}.yaml").read_text())


def _write(directory: Path, data: Any, stem: str) -> Path:
    path = directory / f"{stem}.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def _broken(tmp_path: Path, name: str, mutate: Callable[[dict[str, Any]], None]) -> Path:
    data = copy.deepcopy(_good(name))
    mutate(data)
    return _write(tmp_path, data, name)


def _set(*keys: Any, value: Any) -> Callable[[dict[str, Any]], None]:
    def mutate(data: dict[str, Any]) -> None:
        target = data
        for key in keys[:-1]:
            target = target[key]
        target[keys[-1]] = value

    return mutate


CASES = [
    # (id, profile, mutation, key path, words that say what is allowed)
    ("mig-memory-over-gpu", "H100-80GB", _set("memory_gib", value=40), "mig.profiles[6].memory_gib", "allowed: 1..40"),
    ("count-over-max", "H100-80GB", _set("mig", "max_instances", value=3), "mig.profiles[0].count_per_gpu", "allowed: 1..3"),
    ("max-instances-over-7", "A100-80GB", _set("mig", "max_instances", value=8), "mig.max_instances", "less than or equal to 7"),
    ("mig-name-memory", "H200-141GB", _set("mig", "profiles", 2, "memory_gib", value=36), "mig.profiles[2].memory_gib", "allowed: 35"),
    ("mig-name-syntax", "A100-40GB", _set("mig", "profiles", 0, "name", value="1g-5gb"), "mig.profiles[0].name", "'<1-7>g.<memory>gb'"),
    ("slices-over-7", "A100-40GB", _set("mig", "profiles", 3, "count_per_gpu", value=4), "mig.profiles[3].count_per_gpu", "a GPU has 7"),
    (
        "unsupported-with-profiles",
        "H100-80GB",
        _set("mig", "supported", value=False),
        "mig.profiles",
        "must be empty when mig.supported is false",
    ),
    ("gpu-count-zero", "T4", _set("aws_instance_types", 0, "gpu_count", value=0), "aws_instance_types[0].gpu_count", "greater than or equal to 1"),
    ("taint-effect", "L4", _set("kubernetes", "taints", 0, "effect", value="Never"), "kubernetes.taints[0].effect", "'NoSchedule', 'PreferNoSchedule' or 'NoExecute'"),
    ("missing-gpu-taint", "L4", _set("kubernetes", "taints", value=[{"key": "dedicated", "value": "ml", "effect": "NoSchedule"}]), "kubernetes.taints", "nvidia.com/gpu"),
    ("label-value", "L40S", _set("kubernetes", "labels", "finml.io/gpu-profile", value="l40"), 'kubernetes.labels["finml.io/gpu-profile"]', "allowed: 'l40s'"),
    ("unknown-key", "T4", _set("colour", value="green"), "colour", "allowed keys here: name, vendor"),
    ("unknown-nested-key", "T4", _set("driver", "version", value="570.1"), "driver.version", "allowed keys here: branch, fabric_manager, nvswitch"),
    ("cc-unquoted", "L4", _set("compute_capability", value=8.9), "compute_capability", 'quoted string such as "9.0"'),
    ("cc-architecture", "L4", _set("compute_capability", value="9.0"), "compute_capability", "allowed: 8.9"),
    ("vendor", "T4", _set("vendor", value="amd"), "vendor", "'nvidia'"),
    ("memory-string", "T4", _set("memory_gib", value="16"), "memory_gib", "valid integer"),
    ("ami-type", "A10G", _set("aws_ami_type", value="AL2_x86_64"), "aws_ami_type", "AL2023_x86_64_NVIDIA"),
    ("fabric-without-nvswitch", "H200-141GB", _set("driver", "nvswitch", value=False), "driver.fabric_manager", "NVSwitch"),
    ("driver-branch", "H200-141GB", _set("driver", "branch", value="r570"), "driver.branch", 'three digits such as "570"'),
    ("instance-type", "T4", _set("aws_instance_types", 1, "type", value="g4dn"), "aws_instance_types[1].type", "'<family>.<size>'"),
]


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_error_names_file_key_and_allowed(tmp_path, case):
    _, name, mutate, key, allowed = case
    path = _broken(tmp_path, name, mutate)
    with pytest.raises(ProfileError) as info:
        load_profile_file(path)
    message = str(info.value)
    assert str(path) in message or path.name in message
    assert f": {key}: " in message, message
    assert allowed in message, message
    assert info.value.path == path
    assert info.value.key == key
    # No pydantic internals leak to the user.
    assert "pydantic" not in message and "errors.pydantic.dev" not in message
    assert info.value.__cause__ is None and info.value.__suppress_context__


def test_missing_required_key(tmp_path):
    path = _broken(tmp_path, "T4", lambda d: d.pop("nvml_product_names"))
    with pytest.raises(ProfileError, match=r"T4\.yaml: nvml_product_names: required key is missing"):
        load_profile_file(path)


def test_name_must_equal_file_stem(tmp_path):
    path = _write(tmp_path, _good("H100-80GB"), "H100")
    with pytest.raises(ProfileError) as info:
        load_profile_file(path)
    assert "H100.yaml: name: is 'H100-80GB'" in str(info.value)
    assert "allowed: 'H100'" in str(info.value)
    assert info.value.key == "name"


def test_invalid_yaml_names_file_and_line(tmp_path):
    path = tmp_path / "T4.yaml"
    path.write_text("name: T4\nmig: [unclosed\n")
    with pytest.raises(ProfileError) as info:
        load_profile_file(path)
    assert "T4.yaml: invalid YAML at line 3" in str(info.value)


def test_duplicate_yaml_key_is_rejected(tmp_path):
    text = (gpu_profiles.PROFILES_DIR / "T4.yaml").read_text() + "memory_gib: 32\n"
    path = tmp_path / "T4.yaml"
    path.write_text(text)
    with pytest.raises(ProfileError, match=r"T4\.yaml: invalid YAML.*duplicate key 'memory_gib'"):
        load_profile_file(path)


@pytest.mark.parametrize("content", ["- name: T4\n", "just a string\n", ""])
def test_top_level_must_be_a_mapping(tmp_path, content):
    path = tmp_path / "T4.yaml"
    path.write_text(content)
    with pytest.raises(ProfileError, match=r"T4\.yaml: a GPU profile must be a YAML mapping"):
        load_profile_file(path)


def test_unreadable_file(tmp_path):
    with pytest.raises(ProfileError, match=r"nope\.yaml: cannot read GPU profile"):
        load_profile_file(tmp_path / "nope.yaml")


def test_directory_reports_every_bad_file(tmp_path):
    _broken(tmp_path, "T4", _set("memory_gib", value=0))
    _broken(tmp_path, "L4", _set("kubernetes", "taints", 0, "effect", value="Always"))
    _write(tmp_path, _good("A10G"), "A10G")
    with pytest.raises(ProfileError) as info:
        load_profiles(tmp_path, reload=True)
    message = str(info.value)
    assert "T4.yaml: memory_gib:" in message
    assert "L4.yaml: kubernetes.taints[0].effect:" in message
    assert "A10G" not in message
    assert len(info.value.problems) == 2


def test_product_name_claimed_by_two_profiles(tmp_path):
    _write(tmp_path, _good("A10G"), "A10G")
    _broken(tmp_path, "L4", _set("nvml_product_names", value=["NVIDIA L4", "NVIDIA A10G"]))
    with pytest.raises(ProfileError) as info:
        load_profiles(tmp_path, reload=True)
    assert "L4.yaml: nvml_product_names[1]: 'NVIDIA A10G' is already claimed by profile A10G" in str(info.value)


def test_empty_or_missing_directory(tmp_path):
    with pytest.raises(ProfileError, match="no GPU profiles"):
        load_profiles(tmp_path, reload=True)
    with pytest.raises(ProfileError, match="does not exist"):
        load_profiles(tmp_path / "absent", reload=True)


def test_profile_error_is_a_value_error_not_a_validation_error(tmp_path):
    path = _broken(tmp_path, "T4", _set("memory_gib", value=-1))
    with pytest.raises(ValueError) as info:
        load_profile_file(path)
    assert isinstance(info.value, ProfileError)
    assert not isinstance(info.value, ValidationError)


def test_module_cli_exports_json_and_reports_errors(tmp_path, capsys):
    from gpu_profiles.__main__ import main

    assert main([]) == 0
    names = [entry["name"] for entry in __import__("json").loads(capsys.readouterr().out)]
    assert {"H100-80GB", "H200-141GB", "T4"} <= set(names)
    _broken(tmp_path, "T4", _set("mig", "max_instances", value=2))
    assert main([str(tmp_path)]) == 2
    assert "T4.yaml: mig.max_instances: is 2 but mig.supported is false; allowed: 0" in capsys.readouterr().err
    assert main(["--bogus"]) == 2
