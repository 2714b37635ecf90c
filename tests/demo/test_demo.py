"""`./dev.sh demo`'s Python entry end to end: every stage runs on real components and has its expected outcome."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
STAGES = ["local services", "feature store", "training set", "training", "lineage", "promotion", "serving",
          "scoring"]


@pytest.mark.slow
def test_demo_runs_every_stage_with_its_expected_outcome(tmp_path):
    summary_path = tmp_path / "summary.json"
    proc = subprocess.run([sys.executable, "-m", "finml.demo", "--dir", str(tmp_path / "demo"), "--rows", "20000",
                           "--epochs", "1", "--json", str(summary_path)],
                          cwd=ROOT, capture_output=True, text=True, timeout=2400)
    assert summary_path.exists(), proc.stdout[-3000:] + proc.stderr[-3000:]
    summary = json.loads(summary_path.read_text())
    stages = {s["name"]: s for s in summary["stages"]}
    assert [s["name"] for s in summary["stages"]] == STAGES, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert all(s["ok"] for s in summary["stages"]), json.dumps(summary["stages"], indent=1)
    assert stages["feature store"]["transactions"] == 20000
    assert stages["feature store"]["feature_server"].startswith("https://127.0.0.1:")
    assert stages["feature store"]["refusals"] == {"no_token": 401, "outsider": 403}
    assert stages["training"]["model_version"] == "1"
    assert stages["lineage"]["classification"] == stages["training set"]["classification"]
    assert (stages["promotion"]["aws_exit"], stages["promotion"]["onprem_exit"]) == (1, 0)
    assert stages["serving"]["url"].startswith("https://127.0.0.1:") and stages["serving"]["aws_gate_exit"] == 1
    assert stages["scoring"]["rows"] == 8 and stages["scoring"]["audit_lines"] >= 8
    assert stages["scoring"]["model_version"] == "1"
    assert proc.returncode == 0 and "every stage had its expected outcome" in proc.stdout
