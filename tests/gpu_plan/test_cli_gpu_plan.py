"""`finml gpu plan`: prints the layout, GPUs used and the lower bound, writes the mig-parted config, refuses by name."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]


def finml(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "finml.cli", *args], capture_output=True, text=True, cwd=ROOT,
                          timeout=300)


def _stack_dir(tmp_path: Path, serving: list[dict]) -> Path:
    stacks = tmp_path / "stacks"
    stacks.mkdir()
    doc = yaml.safe_load((ROOT / "stacks" / "Pulumi.hybrid-prod.yaml").read_text())
    doc["config"]["finml:platform"]["workloads"]["serving"] = serving
    (stacks / "Pulumi.shared.yaml").write_text(yaml.safe_dump(doc, sort_keys=False))
    return stacks


SERVING = [
    {"name": "aml-large", "model": "aml-detector", "sites": ["onprem:fra-dc1"], "gpuProfile": "H200-141GB",
     "share": "mig:3g.71gb", "replicas": 3},
    {"name": "aml-small", "model": "aml-detector", "sites": ["onprem:fra-dc1"], "gpuProfile": "H200-141GB",
     "share": "mig:1g.18gb", "replicas": 9},
]


def test_plan_prints_layout_bound_and_writes_the_mig_parted_config(tmp_path):
    stacks = _stack_dir(tmp_path, SERVING)
    proc = finml("--stacks-dir", str(stacks), "gpu", "plan", "--stack", "shared", "--site", "onprem:fra-dc1",
                 "--out", str(tmp_path / "out"))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "H200-141GB: 3 GPUs used, lower bound 3" in proc.stdout
    assert "nvidia.com/mig.config=finml-fra-h200-01" in proc.stdout
    config = yaml.safe_load((tmp_path / "out" / "onprem-fra-dc1" / "mig-parted.yaml").read_text())
    assert config["version"] == "v1" and "finml-fra-h200-01" in config["mig-configs"]
    assert config["mig-configs"]["finml-fra-h100-01"][0]["mig-devices"] == {"1g.10gb": 7}  # fixed layout kept


def test_plan_refuses_demands_that_do_not_fit_naming_them(tmp_path):
    serving = [dict(SERVING[0], replicas=40)] + SERVING[1:]
    stacks = _stack_dir(tmp_path, serving)
    proc = finml("--stacks-dir", str(stacks), "gpu", "plan", "--stack", "shared", "--out", str(tmp_path / "o"))
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "refused: aml-large: 40 x H200-141GB mig 3g.71gb" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_unknown_site_is_bad_input_in_one_line():
    proc = finml("gpu", "plan", "--stack", "hybrid-prod", "--site", "onprem:nowhere")
    assert proc.returncode == 2
    assert proc.stderr.strip().count("\n") == 0 and "allowed: aws:eu-central-1, onprem:fra-dc1" in proc.stderr


def test_every_shipped_stack_plans(tmp_path):
    for stack in ("dev", "aws-eu-prod", "hybrid-prod", "onprem-dc1"):
        proc = finml("gpu", "plan", "--stack", stack, "--json", "--out", str(tmp_path / stack))
        assert proc.returncode == 0, (stack, proc.stdout, proc.stderr)
