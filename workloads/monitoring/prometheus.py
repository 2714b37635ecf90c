"""Prometheus configuration for serving: one description of the scrape jobs, rendered two ways.

`scrape_config("kubernetes")` is what a site's Prometheus runs: endpoints discovery in the serving namespace
(MLServer's metrics port, over TLS with the site CA) and in the GPU Operator's namespace (the DCGM exporter, GPU
metrics per GPU and per MIG instance). `scrape_config("file")` is the same jobs with file-based discovery and the
same relabelling, so Debian's promtool 2.42 — built without Kubernetes discovery — can `check config` it in tests;
the Kubernetes rendering differs only in its `*_sd_configs` block.

    python -m workloads.monitoring.prometheus OUT_DIR     # prometheus.yml, prometheus.file_sd.yml, targets/*.json
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

HERE = Path(__file__).resolve().parent
RULES_DIR = HERE / "rules"
DASHBOARDS_DIR = HERE / "dashboards"
SERVING_NAMESPACE = "finml-serving"
GPU_OPERATOR_NAMESPACE = "kube-system"
#: Where the site CA bundle is mounted in the Prometheus pod.
SITE_CA_FILE = "/etc/prometheus/finml-site-ca/ca.crt"


@dataclass(frozen=True)
class ScrapeJob:
    name: str
    namespace: str
    port_name: str
    scheme: str
    service: str | None = None
    """Keep only this Service's endpoints (None: every Service with the port)."""
    interval: str = "15s"
    example_targets: tuple[str, ...] = field(default=())
    """Targets for the file-discovery rendering."""


JOBS = (
    ScrapeJob("finml-model-server", SERVING_NAMESPACE, "metrics", "https",
              example_targets=("fraud-scorer.finml-serving.svc:9443",)),
    ScrapeJob("dcgm-exporter", GPU_OPERATOR_NAMESPACE, "gpu-metrics", "http", service="nvidia-dcgm-exporter",
              interval="30s", example_targets=("nvidia-dcgm-exporter.kube-system.svc:9400",)),
)


def _relabel(job: ScrapeJob) -> list[dict[str, Any]]:
    rules: list[dict[str, Any]] = [
        {"source_labels": ["__meta_kubernetes_endpoint_port_name"], "action": "keep", "regex": job.port_name},
    ]
    if job.service:
        rules.append({"source_labels": ["__meta_kubernetes_service_name"], "action": "keep", "regex": job.service})
    rules += [
        {"source_labels": ["__meta_kubernetes_namespace"], "target_label": "namespace"},
        {"source_labels": ["__meta_kubernetes_service_name"], "target_label": "service"},
        {"source_labels": ["__meta_kubernetes_pod_name"], "target_label": "pod"},
        {"source_labels": ["__meta_kubernetes_pod_node_name"], "target_label": "node"},
    ]
    return rules


def scrape_config(discovery: str = "kubernetes", *, ca_file: str = SITE_CA_FILE, targets_dir: str = "targets",
                  rule_files: list[str] | None = None) -> dict[str, Any]:
    if discovery not in ("kubernetes", "file"):
        raise ValueError(f"discovery {discovery!r}; allowed: kubernetes, file")
    jobs = []
    for job in JOBS:
        entry: dict[str, Any] = {"job_name": job.name, "scrape_interval": job.interval, "scheme": job.scheme,
                                 "metrics_path": "/metrics"}
        if job.scheme == "https":
            entry["tls_config"] = {"ca_file": ca_file, "min_version": "TLS12"}
        if discovery == "kubernetes":
            entry["kubernetes_sd_configs"] = [{"role": "endpoints", "namespaces": {"names": [job.namespace]}}]
        else:
            entry["file_sd_configs"] = [{"files": [f"{targets_dir}/{job.name}.json"]}]
        entry["relabel_configs"] = _relabel(job)
        jobs.append(entry)
    return {
        "global": {"scrape_interval": "15s", "evaluation_interval": "30s",
                   "external_labels": {"platform": "finml"}},
        "rule_files": rule_files if rule_files is not None else [str(RULES_DIR / "serving.rules.yml")],
        "scrape_configs": jobs,
    }


def file_targets() -> dict[str, list[dict[str, Any]]]:
    return {job.name: [{"targets": list(job.example_targets), "labels": {"namespace": job.namespace}}]
            for job in JOBS}


def write(out_dir: Path, *, ca_file: str = SITE_CA_FILE) -> dict[str, Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "targets").mkdir(exist_ok=True)
    rules = [str(p) for p in sorted(RULES_DIR.glob("*.rules.yml"))]
    paths = {"kubernetes": out_dir / "prometheus.yml", "file": out_dir / "prometheus.file_sd.yml"}
    for discovery, path in paths.items():
        path.write_text(yaml.safe_dump(scrape_config(discovery, ca_file=ca_file, rule_files=rules,
                                                     targets_dir=str(out_dir / "targets")), sort_keys=False))
    for name, groups in file_targets().items():
        (out_dir / "targets" / f"{name}.json").write_text(json.dumps(groups, indent=2) + "\n")
    return paths


if __name__ == "__main__":
    if len(sys.argv) != 2:
        print("usage: python -m workloads.monitoring.prometheus OUT_DIR", file=sys.stderr)
        sys.exit(2)
    for path in write(Path(sys.argv[1])).values():
        print(path)
