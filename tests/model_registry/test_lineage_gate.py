"""Lineage and the residency gate over MLflow's own entity classes (no server): the rules, fail-closed cases and
the messages a refusal prints."""

from __future__ import annotations

import subprocess
from pathlib import Path
from types import SimpleNamespace

import pytest
from mlflow.entities import Dataset, DatasetInput, InputTag

from finml.model_registry.gate import Threshold, metrics_decision, residency_decision
from finml.model_registry.lineage import UNKNOWN, resolve_alias, resolve_lineage

ROOT = Path(__file__).resolve().parents[2]
HYBRID = {"public": ["aws:eu-*", "onprem:*"], "internal": ["aws:eu-*", "onprem:*"],
          "confidential": ["onprem:*", "aws:eu-central-1"], "restricted": ["onprem:fra-dc1"]}


def dataset_input(name: str, classification: str | None, site: str | None, digest: str = "d1") -> DatasetInput:
    tags = [InputTag("mlflow.data.context", "training")]
    if classification is not None:
        tags.append(InputTag("finml.classification", classification))
    if site is not None:
        tags.append(InputTag("finml.site", site))
    return DatasetInput(Dataset(name=name, digest=digest, source_type="local", source=f"file:///{name}"), tags)


class FakeClient:
    """The four MlflowClient calls lineage makes, answering from in-memory entities."""

    def __init__(self, inputs, *, model_id="m-1", run_id="r-1", logged_run="r-1", run_error=None):
        self.inputs, self.model_id, self.run_id, self.logged_run, self.run_error = (inputs, model_id, run_id,
                                                                                    logged_run, run_error)

    def get_model_version(self, name, version):
        return SimpleNamespace(name=name, version=version, run_id=self.run_id, model_id=self.model_id,
                               source=f"models:/{self.model_id}")

    def get_logged_model(self, model_id):
        return SimpleNamespace(model_id=model_id, source_run_id=self.logged_run)

    def get_run(self, run_id):
        if self.run_error:
            raise self.run_error
        return SimpleNamespace(inputs=SimpleNamespace(dataset_inputs=self.inputs))

    def get_model_version_by_alias(self, name, alias):
        return SimpleNamespace(version="7")


def lineage_of(*inputs, **kw):
    return resolve_lineage(FakeClient(list(inputs), **kw), "fraud-scorer", "3")


def test_classification_is_the_highest_of_the_inputs_and_names_the_dataset():
    lin = lineage_of(dataset_input("txns", "confidential", "aws:eu-central-1", "aaa"),
                     dataset_input("kyc", "restricted", "onprem:fra-dc1", "bbb"),
                     dataset_input("calendar", "public", "onprem:fra-dc1", "ccc"))
    assert lin.classification == "restricted"
    assert lin.offending_dataset.name == "kyc" and lin.source_run_id == "r-1" and lin.logged_model_id == "m-1"
    assert [d.name for d in lin.datasets] == ["txns", "kyc", "calendar"]
    refused = residency_decision(lin, "aws:eu-central-1", HYBRID)
    assert not refused.allowed and refused.rule == "residency" and refused.classification == "restricted"
    assert refused.dataset == "kyc@bbb" and refused.site == "aws:eu-central-1"
    for part in ("residency.restricted", "restricted", "'kyc'", "aws:eu-central-1"):
        assert part in refused.message
    assert residency_decision(lin, "onprem:fra-dc1", HYBRID).allowed


@pytest.mark.parametrize("inputs, problem", [
    ([], "no dataset inputs"),
    ([dataset_input("kyc", None, "onprem:fra-dc1")], "finml.classification is missing"),
    ([dataset_input("kyc", "secret", "onprem:fra-dc1")], "'secret' is not one of"),
    ([dataset_input("kyc", "public", None)], "finml.site is missing"),
    ([dataset_input("kyc", "public", "mars:base")], "is not a site id"),
    ([dataset_input("a", "public", "onprem:fra-dc1"), dataset_input("b", "Public", "onprem:fra-dc1")], "'Public'"),
])
def test_missing_or_invalid_lineage_is_unknown_and_allowed_nowhere(inputs, problem):
    lin = lineage_of(*inputs)
    assert lin.classification == UNKNOWN and any(problem in p for p in lin.problems), lin.problems
    for site in ("onprem:fra-dc1", "aws:eu-central-1"):
        decision = residency_decision(lin, site, HYBRID)
        assert not decision.allowed and decision.rule == "lineage-required" and decision.classification == UNKNOWN
        assert problem in decision.message and site in decision.message


def test_unreadable_run_and_inconsistent_chain_are_unknown():
    lin = lineage_of(dataset_input("a", "public", "onprem:fra-dc1"), run_error=PermissionError("403 forbidden"))
    assert lin.unknown and "cannot be read" in lin.problems[0]
    lin = lineage_of(dataset_input("a", "public", "onprem:fra-dc1"), logged_run="r-other")
    assert lin.unknown and "r-other" in lin.problems[0]
    lin = lineage_of(dataset_input("a", "public", "onprem:fra-dc1"), model_id=None, run_id=None)
    assert lin.unknown and "no source run" in lin.problems[0]
    # A version registered from a run (no logged model) still resolves through the run.
    lin = lineage_of(dataset_input("a", "internal", "onprem:fra-dc1"), model_id=None)
    assert lin.classification == "internal"


def test_classification_without_a_residency_rule_is_refused():
    lin = lineage_of(dataset_input("a", "internal", "onprem:fra-dc1"))
    decision = residency_decision(lin, "onprem:fra-dc1", {"restricted": ["onprem:*"]})
    assert not decision.allowed and "[no site]" in decision.message


def test_digest_covers_the_data_lineage_only():
    a = lineage_of(dataset_input("kyc", "restricted", "onprem:fra-dc1", "bbb"))
    b = resolve_lineage(FakeClient([dataset_input("kyc", "restricted", "onprem:fra-dc1", "bbb")], run_id="r-9",
                                   logged_run="r-9", model_id="m-9"), "fraud-scorer", "12")
    c = lineage_of(dataset_input("kyc", "restricted", "onprem:fra-dc1", "bbc"))
    assert a.digest == b.digest != c.digest and a.digest.startswith("sha256:")


def test_metrics_thresholds():
    lin = lineage_of(dataset_input("a", "internal", "onprem:fra-dc1"))
    ts = [Threshold("val_auc", min=0.8), Threshold("val_loss", max=0.5)]
    assert metrics_decision(lin, "onprem:fra-dc1", {"val_auc": 0.9, "val_loss": 0.3}, ts).allowed
    low = metrics_decision(lin, "onprem:fra-dc1", {"val_auc": 0.7, "val_loss": 0.3}, ts)
    assert not low.allowed and low.rule == "promotion-metrics.val_auc" and ">= 0.8" in low.message
    missing = metrics_decision(lin, "onprem:fra-dc1", {"val_auc": 0.9}, ts)
    assert not missing.allowed and "not logged" in missing.message
    nan = metrics_decision(lin, "onprem:fra-dc1", {"val_auc": float("nan"), "val_loss": 0.1}, ts)
    assert not nan.allowed


def test_resolve_alias():
    assert resolve_alias(FakeClient([]), "fraud-scorer", "champion") == "7"


def test_lineage_and_gate_import_in_the_serving_venv():
    python = Path("/work/main/.venv-serving/bin/python")
    if not python.exists():
        pytest.skip("serving venv not present")
    code = ("import sys; sys.path.insert(0, '.');"
            "from finml.model_registry.lineage import resolve_lineage, resolve_alias;"
            "from finml.model_registry.gate import residency_decision;"
            "import finml.model_registry.lineage as l, sys;"
            "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('pulumi', 'pulumi_aws', 'psycopg', 'torch'));"
            "assert not bad, bad; print('ok')")
    proc = subprocess.run([str(python), "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120,
                          env={"MLFLOW_DISABLE_TELEMETRY": "true", "PATH": "/usr/bin:/bin"})
    assert proc.returncode == 0 and "ok" in proc.stdout, proc.stderr
