"""run(argv): output, exit codes and one-line messages of ``finml gpu probe``."""

from __future__ import annotations

import ctypes
import json
import sys
from pathlib import Path

import pytest

from finml import gpu_probe
from finml.gpu_probe import run
from gpu_profiles import load_profiles, profiles_to_json

SCENARIOS = Path(__file__).parent / "scenarios"


@pytest.fixture
def scenario(monkeypatch):
    def use(name: str) -> None:
        monkeypatch.setenv("FINML_FAKE_NVML", str(SCENARIOS / f"{name}.json"))

    return use


@pytest.fixture
def profiles_json(tmp_path) -> Path:
    path = tmp_path / "profiles.json"
    path.write_text(profiles_to_json(load_profiles()))
    return path


def _stderr_lines(captured) -> list[str]:
    return captured.err.splitlines()


def test_h100x8_json_is_stable_and_sorted(scenario, capsys):
    scenario("h100x8")
    assert run(["--json", "--expect-profile", "H100-80GB"]) == 0
    first = capsys.readouterr()
    assert first.err == ""
    document = json.loads(first.out)
    assert first.out == json.dumps(document, indent=2, sort_keys=True) + "\n"
    assert (document["profile"], document["gpu_count"], document["mismatch"]) == ("H100-80GB", 8, [])
    assert run(["--json", "--expect-profile", "H100-80GB"]) == 0
    assert capsys.readouterr().out == first.out, "same node, same output"


def test_human_table(scenario, capsys):
    scenario("h200x8")
    assert run([]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "finml gpu probe: driver 570.133.20, CUDA 12.8, 8 GPUs, profile H200-141GB"
    assert lines[1].split() == ["GPU", "NAME", "MEMORY", "MIG", "ECC", "PERSISTENCE", "PROFILE", "UUID"]
    assert lines[2].split() == ["0", "NVIDIA", "H200", "140.4", "GiB", "disabled", "enabled", "enabled", "H200-141GB", "GPU-0000f1a0-0000-0000-0000-000000000000"]
    assert len(lines) == 10


def test_human_table_lists_mig_devices(scenario, capsys):
    scenario("h100_mig")
    assert run(["--expect-profile", "H100-80GB"]) == 0
    out = capsys.readouterr().out
    assert "disabled (pending enabled)" in out
    assert "MIG devices on GPU 0:" in out
    assert out.count("1g.10gb") == 7


def test_mismatch_exits_4_with_one_line(scenario, capsys):
    scenario("a100_on_h200_node")
    assert run(["--expect-profile", "H200-141GB"]) == 4
    captured = capsys.readouterr()
    assert _stderr_lines(captured) == [
        "finml gpu probe: expected profile H200-141GB but found A100-80GB (NVIDIA A100-SXM4-80GB) on 8 of 8 GPUs"
    ]
    assert "  - gpu 7: expected H200-141GB, found A100-80GB (NVIDIA A100-SXM4-80GB)" in captured.out


def test_mismatch_json_still_printed(scenario, capsys):
    scenario("a100_on_h200_node")
    assert run(["--json", "--expect-profile", "H200-141GB"]) == 4
    document = json.loads(capsys.readouterr().out)
    assert (document["profile"], document["expected_profile"], len(document["mismatch"])) == ("A100-80GB", "H200-141GB", 8)


def test_without_expectation_a_foreign_gpu_is_not_an_error(scenario, capsys):
    scenario("a100_on_h200_node")
    assert run(["--json"]) == 0
    assert json.loads(capsys.readouterr().out)["profile"] == "A100-80GB"


def test_no_nvml_exits_3_with_one_line(scenario, capsys):
    scenario("no_nvml")
    assert run([]) == 3
    captured = capsys.readouterr()
    assert _stderr_lines(captured) == ["finml gpu probe: NVML not available on this host (libnvidia-ml.so.1 not found)"]
    assert captured.out == ""


def test_no_nvml_json_for_ansible_facts(scenario, capsys):
    scenario("no_nvml")
    assert run(["--json"]) == 3
    captured = capsys.readouterr()
    assert json.loads(captured.out) == {"schema": "finml-gpu-probe/1", "nvml_available": False, "error": "libnvidia-ml.so.1 not found"}
    assert len(_stderr_lines(captured)) == 1


def test_profiles_json_file(scenario, profiles_json, capsys):
    scenario("h200x8")
    assert run(["--json", "--profiles-json", str(profiles_json), "--expect-profile", "h200-141gb"]) == 0
    assert json.loads(capsys.readouterr().out)["expected_profile"] == "H200-141GB"


def test_profiles_dir(scenario, tmp_path, capsys):
    scenario("t4x1")
    (tmp_path / "T4.yaml").write_text((Path(gpu_probe.DEFAULT_PROFILES_DIR) / "T4.yaml").read_text())
    assert run(["--json", "--profiles-dir", str(tmp_path), "--expect-profile", "T4"]) == 0
    assert run(["--profiles-dir", str(tmp_path), "--expect-profile", "H100-80GB"]) == 2
    assert _stderr_lines(capsys.readouterr())[-1] == "finml gpu probe: unknown profile 'H100-80GB' for --expect-profile; allowed: T4"


@pytest.mark.parametrize(
    ("content", "words"),
    [
        (None, "cannot read profiles"),
        ("{not json", "invalid JSON"),
        ('{"name": "T4"}', "must hold a JSON list of GPU profiles, got dict"),
        ('[{"name": "T4", "nvml_product_names": ["Tesla T4"]}]', "[0].memory_gib: required, a positive integer"),
        ('[{"name": "T4", "memory_gib": 16, "nvml_product_names": "Tesla T4"}]', "[0].nvml_product_names: required, a list of strings"),
    ],
)
def test_bad_profiles_json_exits_2(scenario, tmp_path, capsys, content, words):
    scenario("h100x8")
    path = tmp_path / "profiles.json"
    if content is not None:
        path.write_text(content)
    assert run(["--profiles-json", str(path)]) == 2
    (line,) = _stderr_lines(capsys.readouterr())
    assert line.startswith(f"finml gpu probe: {path}") and words in line


def test_bad_arguments_exit_2(scenario, profiles_json, tmp_path, capsys):
    scenario("h100x8")
    assert run(["--profiles-json", str(profiles_json), "--profiles-dir", str(tmp_path)]) == 2
    assert "not allowed with argument" in capsys.readouterr().err
    assert run(["--frobnicate"]) == 2
    assert "unrecognized arguments: --frobnicate" in capsys.readouterr().err
    assert run(["--expect-profile", "H300"]) == 2
    assert "unknown profile 'H300'" in capsys.readouterr().err
    assert run(["--profiles-dir", str(tmp_path / "absent")]) == 2
    assert "profiles directory does not exist" in capsys.readouterr().err


def test_bad_scenario_exits_2(monkeypatch, tmp_path, capsys):
    bad = tmp_path / "scenario.json"
    bad.write_text('{"gpus": [{"name": "x"}]}')
    monkeypatch.setenv("FINML_FAKE_NVML", str(bad))
    assert run([]) == 2
    (line,) = _stderr_lines(capsys.readouterr())
    assert line == f"finml gpu probe: fake NVML scenario {bad}: fake NVML scenario gpus[0] needs 'name' and 'memory_total_mib'"


def test_help_exits_0(capsys):
    assert run(["--help"]) == 0
    out = capsys.readouterr().out
    assert "--expect-profile NAME" in out and "3 NVML not available" in out


def test_nvml_error_mid_probe_exits_1(monkeypatch, tmp_path, capsys):
    path = tmp_path / "lost.json"
    path.write_text(json.dumps({"gpus": [{"name": "NVIDIA H200", "memory_total_mib": 143771, "errors": {"nvmlDeviceGetMemoryInfo": "GPU_IS_LOST"}}]}))
    monkeypatch.setenv("FINML_FAKE_NVML", str(path))
    assert run([]) == 1
    assert _stderr_lines(capsys.readouterr()) == ["finml gpu probe: NVML error on GPU 0: GPU is lost"]


def _host_has_nvml() -> bool:
    try:
        ctypes.CDLL("libnvidia-ml.so.1")
    except OSError:
        return False
    return True


@pytest.mark.skipif(_host_has_nvml(), reason="this host has libnvidia-ml.so.1; the no-NVML path needs a host without it")
def test_real_pynvml_without_gpu_exits_3(monkeypatch, capsys):
    pytest.importorskip("pynvml")
    monkeypatch.delenv("FINML_FAKE_NVML", raising=False)
    assert run([]) == 3
    captured = capsys.readouterr()
    assert _stderr_lines(captured) == ["finml gpu probe: NVML not available on this host (libnvidia-ml.so.1 not found)"]
    assert "Traceback" not in captured.err


def test_pynvml_not_installed_exits_3(monkeypatch, capsys):
    monkeypatch.delenv("FINML_FAKE_NVML", raising=False)
    monkeypatch.setitem(sys.modules, "pynvml", None)  # makes `import pynvml` raise ImportError
    assert run([]) == 3
    assert _stderr_lines(capsys.readouterr()) == ["finml gpu probe: NVML not available on this host (nvidia-ml-py (pynvml) is not installed)"]
