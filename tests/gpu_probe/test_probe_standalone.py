"""gpu_probe.py as Ansible runs it: a single file on a bare node, outside the repository, stdlib only."""

from __future__ import annotations

import ast
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from gpu_profiles import load_profiles, profiles_to_json

REPO = Path(__file__).resolve().parents[2]
PROBE = REPO / "finml" / "gpu_probe.py"
FAKE = REPO / "finml" / "fake_nvml.py"
SCENARIOS = Path(__file__).parent / "scenarios"
STDLIB = set(sys.stdlib_module_names)


def _run(args: list[str], scenario: str | None, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in ("FINML_FAKE_NVML", "PYTHONPATH")}
    if scenario:
        env["FINML_FAKE_NVML"] = str(SCENARIOS / f"{scenario}.json")
    return subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=60, check=False)


@pytest.fixture
def profiles_json(tmp_path) -> Path:
    path = tmp_path / "profiles.json"
    path.write_text(profiles_to_json(load_profiles()))
    return path


@pytest.fixture
def libexec(tmp_path) -> Path:
    """A copy as Ansible installs it: /usr/local/libexec/finml/gpu_probe.py, with the fake beside it for tests."""
    target = tmp_path / "usr" / "local" / "libexec" / "finml"
    target.mkdir(parents=True)
    shutil.copy(PROBE, target / "gpu_probe.py")
    shutil.copy(FAKE, target / "fake_nvml.py")
    return target


def test_script_in_repo_with_env_hook(profiles_json):
    proc = _run(
        [sys.executable, "finml/gpu_probe.py", "--json", "--profiles-json", str(profiles_json), "--expect-profile", "H200-141GB"],
        "h200x8",
        REPO,
    )
    assert proc.returncode == 0, proc.stderr
    document = json.loads(proc.stdout)
    assert (document["profile"], document["gpu_count"], document["driver_version"]) == ("H200-141GB", 8, "570.133.20")


def test_module_entry_point():
    proc = _run([sys.executable, "-m", "finml.gpu_probe", "--expect-profile", "H100-80GB"], "h100x8", REPO)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("finml gpu probe: driver 570.124.06, CUDA 12.8, 8 GPUs, profile H100-80GB")


def test_copied_script_runs_without_site_packages(libexec, profiles_json, tmp_path):
    # -I: ignore the environment and the script's directory on sys.path; -S: no site-packages (no pydantic, yaml, pynvml).
    base = [sys.executable, "-I", "-S", str(libexec / "gpu_probe.py"), "--profiles-json", str(profiles_json)]
    ok = _run(base + ["--json", "--expect-profile", "H100-80GB"], "h100_mig", tmp_path)
    assert ok.returncode == 0, ok.stderr
    assert [m["profile"] for m in json.loads(ok.stdout)["gpus"][0]["mig_instances"]] == ["1g.10gb"] * 7

    wrong = _run(base + ["--expect-profile", "H200-141GB"], "a100_on_h200_node", tmp_path)
    assert wrong.returncode == 4
    assert wrong.stderr.splitlines() == [
        "finml gpu probe: expected profile H200-141GB but found A100-80GB (NVIDIA A100-SXM4-80GB) on 8 of 8 GPUs"
    ]

    none = _run(base, "no_nvml", tmp_path)
    assert (none.returncode, none.stderr.splitlines()) == (3, ["finml gpu probe: NVML not available on this host (libnvidia-ml.so.1 not found)"])


def test_copied_script_without_pynvml_exits_3(libexec, tmp_path):
    proc = _run([sys.executable, "-I", "-S", str(libexec / "gpu_probe.py")], None, tmp_path)
    assert proc.returncode == 3
    assert proc.stderr.splitlines() == ["finml gpu probe: NVML not available on this host (nvidia-ml-py (pynvml) is not installed)"]


def test_copied_script_with_real_pynvml_and_no_gpu(libexec, tmp_path):
    pytest.importorskip("pynvml")
    proc = _run([sys.executable, "-I", str(libexec / "gpu_probe.py"), "--json"], None, tmp_path)
    if proc.returncode == 0:
        pytest.skip("this host has NVIDIA GPUs")
    assert proc.returncode == 3
    assert len(proc.stderr.splitlines()) == 1 and "Traceback" not in proc.stderr
    assert json.loads(proc.stdout)["nvml_available"] is False


def test_env_hook_without_fake_beside_copy(libexec, tmp_path):
    (libexec / "fake_nvml.py").unlink()
    proc = _run([sys.executable, "-I", "-S", str(libexec / "gpu_probe.py")], "h100x8", tmp_path)
    assert proc.returncode == 2
    assert proc.stderr.splitlines() == [
        "finml gpu probe: FINML_FAKE_NVML is set but fake_nvml.py is neither next to gpu_probe.py nor importable as finml.fake_nvml"
    ]


@pytest.mark.parametrize("path", [PROBE, FAKE], ids=lambda p: p.name)
def test_imports_only_stdlib_at_module_level(path):
    tree = ast.parse(path.read_text())
    top_level = set()
    for node in tree.body:
        if isinstance(node, ast.Import):
            top_level.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            top_level.add(node.module.split(".")[0])
    assert top_level - {"__future__"} <= STDLIB, sorted(top_level - STDLIB)
    every = {
        (alias.name if isinstance(node, ast.Import) else node.module or "").split(".")[0]
        for node in ast.walk(tree)
        if isinstance(node, (ast.Import, ast.ImportFrom))
        for alias in node.names
    }
    assert every - STDLIB - {"__future__"} <= {"pynvml", "yaml", "finml"}


def test_system_python_can_run_the_copy(libexec, profiles_json, tmp_path):
    system_python = shutil.which("python3", path="/usr/bin:/bin")
    if system_python is None:
        pytest.skip("no system python3")
    proc = _run([system_python, "-I", "-S", str(libexec / "gpu_probe.py"), "--profiles-json", str(profiles_json), "--expect-profile", "T4"], "t4x1", tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "Tesla T4" in proc.stdout
