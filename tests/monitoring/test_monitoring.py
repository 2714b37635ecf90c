"""Serving monitoring, checked by Debian's promtool: scrape config, alert rules and their unit tests, and the
Grafana dashboard's PromQL; plus the prediction audit log's format."""

from __future__ import annotations

import copy
import io
import json
import re
import shutil
import subprocess
from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml

from workloads.monitoring import prometheus
from workloads.model_server.audit import AuditLog, keyed_hash

PROMTOOL = shutil.which("promtool")
needs_promtool = pytest.mark.skipif(PROMTOOL is None, reason="promtool (Debian package prometheus) is not installed")
DASHBOARD = prometheus.DASHBOARDS_DIR / "serving.json"
RULES = prometheus.RULES_DIR / "serving.rules.yml"


def promtool(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([PROMTOOL, *args], capture_output=True, text=True, cwd=cwd, timeout=120)


@needs_promtool
def test_scrape_config_passes_promtool_check_config(tmp_path):
    ca = tmp_path / "ca.crt"
    ca.write_text("placeholder: promtool only checks that the file exists\n")
    paths = prometheus.write(tmp_path / "prom", ca_file=str(ca))
    proc = promtool("check", "config", str(paths["file"]))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "SUCCESS" in proc.stdout


def test_kubernetes_rendering_differs_only_in_discovery():
    k8s = prometheus.scrape_config("kubernetes")
    files = prometheus.scrape_config("file")
    for a, b in zip(k8s["scrape_configs"], files["scrape_configs"]):
        a, b = copy.deepcopy(a), copy.deepcopy(b)
        (sd,) = a.pop("kubernetes_sd_configs")
        assert sd["role"] == "endpoints" and len(sd["namespaces"]["names"]) == 1
        b.pop("file_sd_configs")
        assert a == b
    jobs = {j["job_name"]: j for j in k8s["scrape_configs"]}
    assert jobs["finml-model-server"]["scheme"] == "https"
    assert jobs["finml-model-server"]["tls_config"]["ca_file"] == prometheus.SITE_CA_FILE
    assert jobs["finml-model-server"]["kubernetes_sd_configs"][0]["namespaces"]["names"] == ["finml-serving"]
    assert jobs["dcgm-exporter"]["kubernetes_sd_configs"][0]["namespaces"]["names"] == ["kube-system"]


@needs_promtool
def test_promtool_2_42_really_lacks_kubernetes_discovery(tmp_path):
    """Why the file rendering exists: if this starts passing, check the Kubernetes rendering directly instead."""
    path = tmp_path / "k8s.yml"
    path.write_text(yaml.safe_dump(prometheus.scrape_config("kubernetes", rule_files=[])))
    proc = promtool("check", "config", str(path))
    assert proc.returncode != 0 and "kubernetes_sd_configs" in proc.stdout + proc.stderr


@needs_promtool
def test_alert_rules_pass_promtool_check_rules():
    proc = promtool("check", "rules", str(RULES))
    assert proc.returncode == 0, proc.stdout + proc.stderr


@needs_promtool
def test_alert_rules_unit_tests_pass():
    proc = promtool("test", "rules", "serving.rules.test.yml", cwd=prometheus.RULES_DIR)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_alerts_cover_latency_slo_gpu_memory_and_error_rate():
    groups = yaml.safe_load(RULES.read_text())["groups"]
    alerts = {r["alert"]: r for g in groups for r in g["rules"] if "alert" in r}
    assert {"FinmlServingLatencySLOBreached", "FinmlServingErrorRateHigh", "FinmlGpuMemoryHigh"} <= set(alerts)
    tests = yaml.safe_load((prometheus.RULES_DIR / "serving.rules.test.yml").read_text())["tests"]
    tested = {t["alertname"] for case in tests for t in case.get("alert_rule_test", [])}
    assert set(alerts) <= tested, f"alerts without a unit test: {sorted(set(alerts) - tested)}"


def _dashboard_exprs() -> list[tuple[str, str]]:
    dash = json.loads(DASHBOARD.read_text())
    return [(panel["title"], target["expr"]) for panel in dash["panels"] for target in panel["targets"]]


@needs_promtool
def test_every_dashboard_query_is_valid_promql(tmp_path):
    rules = [{"record": f"finml:dashboard_check_{i}", "expr": re.sub(r"\$\w+", ".*", expr)}
             for i, (_, expr) in enumerate(_dashboard_exprs())]
    path = tmp_path / "dashboard.rules.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    proc = promtool("check", "rules", str(path))
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_dashboard_shows_latency_batch_size_and_gpu_per_mig_slice():
    dash = json.loads(DASHBOARD.read_text())
    assert dash["uid"] == "finml-serving"
    assert len({p["id"] for p in dash["panels"]}) == len(dash["panels"])
    text = " ".join(expr for _, expr in _dashboard_exprs())
    for metric in ("rest_server_request_duration_seconds_bucket", "finml_inference_batch_size_bucket",
                   "DCGM_FI_PROF_GR_ENGINE_ACTIVE", "DCGM_FI_DEV_FB_USED"):
        assert metric in text, metric
    mig_panels = [p for p in dash["panels"] if "MIG slice" in p["title"]]
    assert mig_panels and all("GPU_I_PROFILE" in t["legendFormat"] for p in mig_panels for t in p["targets"])
    assert {v["name"] for v in dash["templating"]["list"]} == {"datasource", "namespace", "service", "node"}


# -- prediction audit log ---------------------------------------------------------------------------------------------


def _payload(request_id, columns):
    rows = len(next(iter(columns.values())))
    return SimpleNamespace(id=request_id, inputs=[SimpleNamespace(name=n, shape=[rows], data=v)
                                                  for n, v in columns.items()])


def test_audit_log_hashes_restricted_features_with_a_key():
    stream = io.StringIO()
    log = AuditLog("fraud", "7", b"site-key", ["customer_age"], stream=stream)
    response = SimpleNamespace(outputs=[SimpleNamespace(data=[0.91, 0.02])])
    log.write(_payload("req-1", {"amount": [12.5, 3.0], "customer_age": [41, 63]}), response)
    lines = [json.loads(line) for line in stream.getvalue().splitlines()]
    assert [(l["request_id"], l["row"], l["model"], l["version"], l["score"]) for l in lines] == [
        ("req-1", 0, "fraud", "7", 0.91), ("req-1", 1, "fraud", "7", 0.02)]
    assert lines[0]["features"]["amount"] == 12.5
    assert lines[0]["features"]["customer_age"] == keyed_hash(b"site-key", "customer_age", 41)
    assert keyed_hash(b"other-key", "customer_age", 41) != lines[0]["features"]["customer_age"]
    assert all(l["event"] == "finml.prediction" and l["timestamp"].endswith("Z") for l in lines)


def test_audit_log_refuses_an_empty_key():
    with pytest.raises(ValueError):
        AuditLog("m", "1", b"", ["x"])
