"""`finml train local --nproc 2` against a real MLflow server (basic-auth, TLS, PostgreSQL): the run carries params,
per-epoch and system metrics, one dataset input per feature view with its classification and site, and a registered
model whose computed lineage is the training set's classification, servable from a CPU through pyfunc."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
from training_harness import ROOT, train_env

MODEL_NAME = "fraud-reference-test"


@pytest.fixture(scope="module")
def tracked_run(tmp_path_factory, fraud_training_set, mlflow_server):
    work = tmp_path_factory.mktemp("train-local")
    env = train_env({k: v for k, v in mlflow_server.env(mlflow_server.writer).items() if k.startswith("MLFLOW_")})
    proc = subprocess.run([sys.executable, "-m", "finml.cli", "train", "local", "--nproc=2", "--mode=fsdp2",
                           "--epochs=3", f"--training-set={fraud_training_set}", f"--model-name={MODEL_NAME}",
                           f"--work-dir={work}", "--run-name=tracked", "--", "--hidden=64,64",
                           "--global-batch-size=1024"],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=420)
    assert proc.returncode == 0, proc.stderr[-5000:]
    summary = json.loads((work / "summary" / "tracked.json").read_text())
    return summary, env


@pytest.fixture(scope="module")
def client(tracked_run):
    import os

    from mlflow.tracking import MlflowClient

    _, env = tracked_run
    saved = {k: os.environ.get(k) for k in env if k.startswith("MLFLOW_")}
    os.environ.update({k: v for k, v in env.items() if k.startswith("MLFLOW_")})
    yield MlflowClient()
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


def test_run_has_params_epoch_metrics_and_system_metrics(tracked_run, client):
    summary, _ = tracked_run
    run = client.get_run(summary["mlflow_run_id"])
    assert run.info.status == "FINISHED"
    params = run.data.params
    assert params["mode"] == "fsdp2" and params["world_size"] == "2" and params["backend"] == "gloo"
    assert params["epochs"] == "3" and params["hidden"] == "64,64"
    history = client.get_metric_history(run.info.run_id, "holdout_pr_auc")
    assert sorted(m.step for m in history) == [0, 1, 2]
    assert run.data.metrics["final_holdout_pr_auc"] == pytest.approx(summary["holdout_pr_auc"])
    assert "baseline_gbt_pr_auc" in run.data.metrics and "baseline_gbt_recall_at_1pct_fpr" in run.data.metrics
    assert any(key.startswith("system/") for key in run.data.metrics), sorted(run.data.metrics)


def test_run_has_one_dataset_input_per_feature_view_with_classification_and_site(tracked_run, client,
                                                                                 fraud_training_set):
    summary, _ = tracked_run
    lineage = json.loads((fraud_training_set / "training_set.lineage.json").read_text())
    run = client.get_run(summary["mlflow_run_id"])
    inputs = {d.dataset.name: {t.key: t.value for t in d.tags} for d in run.inputs.dataset_inputs}
    assert sorted(inputs) == sorted(v["name"] for v in lineage["feature_views"])
    for view in lineage["feature_views"]:
        tags = inputs[view["name"]]
        assert tags["finml.classification"] == view["classification"], view["name"]
        assert tags["finml.site"] == lineage["site"] and tags["mlflow.data.context"] == "training"
    assert run.data.tags["finml.classification"] == lineage["classification"]


def test_the_model_is_registered_and_its_computed_lineage_is_the_training_sets(tracked_run, client,
                                                                               fraud_training_set):
    from finml.model_registry.lineage import resolve_lineage

    summary, _ = tracked_run
    version = client.get_model_version(MODEL_NAME, summary["model_version"])
    assert version.run_id == summary["mlflow_run_id"]
    lineage = resolve_lineage(client, MODEL_NAME, summary["model_version"])
    expected = json.loads((fraud_training_set / "training_set.lineage.json").read_text())["classification"]
    assert lineage.classification == expected


def test_the_registered_model_scores_raw_feature_rows_on_cpu_with_its_signature(tracked_run, client,
                                                                                fraud_training_set):
    import mlflow.pyfunc

    summary, _ = tracked_run
    model = mlflow.pyfunc.load_model(f"models:/{MODEL_NAME}/{summary['model_version']}")
    names = [c.name for c in model.metadata.get_input_schema().inputs]
    frame = pd.read_parquet(fraud_training_set / "training_set.parquet")
    assert "is_fraud" not in names and "card_id" not in names
    scores = np.asarray(model.predict(frame[names].head(64))).reshape(-1)
    assert scores.shape == (64,) and np.all((scores >= 0) & (scores <= 1))
