"""`finml model …` end to end against real MLflow servers (basic-auth, TLS, PostgreSQL): the acceptance cases."""

from __future__ import annotations

import json

import pytest
from registry_helpers import as_user, log_model, run_cli

from finml.model_registry.audit import verify

pytestmark = pytest.mark.slow
KYC = ("customer-kyc", "restricted", "onprem:fra-dc1")
TXNS = ("card-transactions", "confidential", "aws:eu-central-1")
GOOD = {"final_holdout_pr_auc": 0.93}


@pytest.fixture(scope="module")
def audit_path(tmp_path_factory):
    return tmp_path_factory.mktemp("audit") / "audit.jsonl"


@pytest.fixture(scope="module")
def models(registry):
    """Versions logged once for the module: mixed lineage, confidential only, no inputs, weak metrics."""
    return {
        "mixed": log_model(registry, "fraud-mixed", [TXNS, KYC], metrics=GOOD),
        "confidential": log_model(registry, "fraud-conf", [TXNS], metrics=GOOD),
        "bare": log_model(registry, "fraud-bare", [], metrics=GOOD),
        "weak": log_model(registry, "fraud-weak", [TXNS], metrics={"final_holdout_pr_auc": 0.61}),
    }


def cli(server, creds, audit_path, *args):
    return run_cli(*args, "--audit-log", str(audit_path), env=server.env(creds))


def aliases(server, name):
    import mlflow

    with as_user(server, server.reader):
        return mlflow.MlflowClient(server.tracking_uri).get_registered_model(name).aliases


def test_promote_restricted_lineage_to_aws_is_refused_naming_rule_dataset_and_site(registry, models, audit_path):
    proc = cli(registry, registry.writer, audit_path, "model", "promote", "--stack", "hybrid-prod",
               "--site", "aws:eu-central-1", "--tracking-uri", registry.tracking_uri, "fraud-mixed",
               models["mixed"], "--alias", "champion")
    assert proc.returncode == 1, proc.stderr
    for part in ("residency.restricted", "restricted", "customer-kyc", "aws:eu-central-1"):
        assert part in proc.stderr, proc.stderr
    assert "Traceback" not in proc.stderr and aliases(registry, "fraud-mixed") == {}


def test_promote_to_fra_dc1_succeeds(registry, models, audit_path):
    proc = cli(registry, registry.writer, audit_path, "model", "promote", "--stack", "hybrid-prod",
               "--site", "onprem:fra-dc1", "--tracking-uri", registry.tracking_uri, "fraud-mixed", models["mixed"],
               "--alias", "champion")
    assert proc.returncode == 0, proc.stderr
    assert aliases(registry, "fraud-mixed") == {"champion": models["mixed"]}


def test_model_without_dataset_inputs_is_refused(registry, models, audit_path):
    proc = cli(registry, registry.writer, audit_path, "model", "promote", "--stack", "hybrid-prod",
               "--site", "onprem:fra-dc1", "--tracking-uri", registry.tracking_uri, "fraud-bare", models["bare"],
               "--alias", "champion")
    assert proc.returncode == 1 and "lineage-required" in proc.stderr and "no dataset inputs" in proc.stderr
    assert aliases(registry, "fraud-bare") == {}


def test_metric_threshold_from_the_stack_refuses(registry, models, audit_path):
    proc = cli(registry, registry.writer, audit_path, "model", "promote", "--stack", "hybrid-prod",
               "--site", "aws:eu-central-1", "--tracking-uri", registry.tracking_uri, "fraud-weak", models["weak"],
               "--alias", "champion")
    assert proc.returncode == 1 and "promotion-metrics.final_holdout_pr_auc" in proc.stderr and ">= 0.8" in proc.stderr


def test_lineage_command_prints_the_chain(registry, models, audit_path):
    proc = cli(registry, registry.reader, audit_path, "model", "lineage", "--site", "onprem:fra-dc1",
               "--tracking-uri", registry.tracking_uri, "fraud-mixed", models["mixed"])
    assert proc.returncode == 0, proc.stderr
    for part in ("logged model m-", "source run", "customer-kyc", "restricted at onprem:fra-dc1",
                 "classification: restricted", "lineage digest: sha256:"):
        assert part in proc.stdout, proc.stdout
    as_json = cli(registry, registry.reader, audit_path, "model", "lineage", "--site", "onprem:fra-dc1",
                  "--tracking-uri", registry.tracking_uri, "--json", "fraud-mixed", models["mixed"])
    assert json.loads(as_json.stdout)["classification"] == "restricted"


def _target_state(server):
    import mlflow

    with as_user(server, server.admin):
        client = mlflow.MlflowClient(server.tracking_uri)
        models = sorted((m.name, tuple(sorted(v.version for v in client.search_model_versions(f"name='{m.name}'"))))
                        for m in client.search_registered_models())
        experiments = client.search_experiments(view_type=3)
        runs = sorted(r.info.run_id for r in client.search_runs([e.experiment_id for e in experiments],
                                                                  run_view_type=3))
        return models, sorted(e.name for e in experiments), runs


def test_copy_to_a_disallowed_site_leaves_the_target_unchanged(registry, target_registry, models, audit_path):
    before = _target_state(target_registry)
    env = registry.env(registry.writer)
    env.update({"FINML_TARGET_TRACKING_USERNAME": target_registry.writer.username,
                "FINML_TARGET_TRACKING_PASSWORD": target_registry.writer.password})
    proc = run_cli("model", "copy", "--stack", "hybrid-prod", "--from", "onprem:fra-dc1", "--to", "aws:eu-central-1",
                   "--from-uri", registry.tracking_uri, "--to-uri", target_registry.tracking_uri,
                   "--audit-log", str(audit_path), "fraud-mixed", models["mixed"], env=env)
    assert proc.returncode == 1 and "customer-kyc" in proc.stderr and "aws:eu-central-1" in proc.stderr
    assert _target_state(target_registry) == before


def test_allowed_copy_carries_artifacts_lineage_and_source_reference(registry, target_registry, models, audit_path):
    import mlflow

    env = registry.env(registry.writer)
    env.update({"FINML_TARGET_TRACKING_USERNAME": target_registry.writer.username,
                "FINML_TARGET_TRACKING_PASSWORD": target_registry.writer.password})
    proc = run_cli("model", "copy", "--stack", "hybrid-prod", "--from", "onprem:fra-dc1", "--to", "aws:eu-central-1",
                   "--from-uri", registry.tracking_uri, "--to-uri", target_registry.tracking_uri,
                   "--audit-log", str(audit_path), "fraud-conf", models["confidential"], env=env)
    assert proc.returncode == 0, proc.stderr
    from finml.model_registry.lineage import resolve_lineage

    with as_user(registry, registry.reader):
        source = resolve_lineage(mlflow.MlflowClient(registry.tracking_uri), "fraud-conf", models["confidential"])
    with as_user(target_registry, target_registry.reader):
        client = mlflow.MlflowClient(target_registry.tracking_uri)
        (mv,) = client.search_model_versions("name='fraud-conf'")
        copied = resolve_lineage(client, "fraud-conf", mv.version)
        assert copied.digest == source.digest and copied.classification == "confidential"
        assert mv.tags["finml.copy.source_site"] == "onprem:fra-dc1"
        assert mv.tags["finml.copy.source_registry"] == registry.tracking_uri
        assert mv.tags["finml.copy.source_version"] == models["confidential"]
        model = mlflow.pyfunc.load_model(f"models:/fraud-conf/{mv.version}")
        assert list(model.predict(__import__("pandas").DataFrame({"x": [1, 2, 3]}))) == [0, 0, 0]


def test_unauthenticated_cli_is_refused(registry, models, audit_path):
    proc = cli(registry, None, audit_path, "model", "lineage", "--site", "onprem:fra-dc1",
               "--tracking-uri", registry.tracking_uri, "fraud-mixed", models["mixed"])
    assert proc.returncode == 3 and "MLFLOW_TRACKING_USERNAME" in proc.stderr and "Traceback" not in proc.stderr


def test_plain_http_cli_is_refused(registry, models, audit_path):
    proc = cli(registry, registry.reader, audit_path, "model", "lineage", "--site", "onprem:fra-dc1",
               "--tracking-uri", registry.plain_http_uri, "fraud-mixed", models["mixed"])
    assert proc.returncode == 3 and "Traceback" not in proc.stderr


def test_every_decision_is_in_the_audit_log(audit_path):
    records = [json.loads(line) for line in audit_path.read_text().splitlines()]
    decisions = [(r["action"], r["decision"], r["rule"]) for r in records]
    assert ("promote", "refused", "residency") in decisions and ("promote", "allowed", "residency") in decisions
    assert ("promote", "refused", "lineage-required") in decisions
    assert ("copy", "refused", "residency") in decisions and ("copy", "allowed", "residency") in decisions
    assert all(r["lineage_digest"].startswith("sha256:") and r["actor"]["registry_user"] for r in records)
    assert verify(audit_path).ok


def test_ten_concurrent_promotions_and_refusals_lose_no_audit_record(registry, models, tmp_path):
    import subprocess
    import sys

    from registry_helpers import ROOT

    audit = tmp_path / "concurrent.jsonl"
    env = registry.env(registry.writer)
    procs = []
    for i in range(10):
        site = "onprem:fra-dc1" if i % 2 == 0 else "aws:eu-central-1"
        procs.append(subprocess.Popen(
            [sys.executable, "-m", "finml.cli", "model", "promote", "--stack", "hybrid-prod", "--site", site,
             "--tracking-uri", registry.tracking_uri, "--audit-log", str(audit), "--alias", f"c{i}",
             "fraud-mixed", models["mixed"]], cwd=ROOT, env=env, stdout=subprocess.PIPE,
            stderr=subprocess.PIPE, text=True))
    codes = [p.wait(timeout=600) for p in procs]
    assert codes == [0, 1] * 5, [p.stderr.read()[-300:] for p in procs]
    result = verify(audit)
    assert result.ok and result.records == 10, result
    records = [json.loads(line) for line in audit.read_text().splitlines()]
    assert sorted(r["alias"] for r in records) == sorted(f"c{i}" for i in range(10))
    assert sum(r["decision"] == "refused" for r in records) == 5
