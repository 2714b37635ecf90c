"""Serving test helpers: a model with lineage in a real MLflow, and a real MLServer process (the serving venv) on loopback.

The MLServer process runs `python -m workloads.model_server.serve` from `.venv-serving` exactly as the container
does: load gate against the registry as the read-only user, then MLServer over TLS. Session-scoped: one server for
every test here; the fixture stops it.
"""

from __future__ import annotations

import json
import os
import secrets
import ssl
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
import yaml

from finml.envscope import scoped_environ
from finml.local.model_server import LocalModelServer

ROOT = Path(__file__).resolve().parents[2]
SERVING_PYTHON = Path(os.environ.get("FINML_SERVING_PYTHON", "/work/main/.venv-serving/bin/python"))
MODEL_NAME = "fraud-scorer-serving"
FEATURES = ("amount", "merchant_risk", "customer_age")
RESTRICTED = ("customer_age",)
ONPREM, AWS = "onprem:fra-dc1", "aws:eu-central-1"

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")


def stack_residency(stack: str = "hybrid-prod") -> dict[str, list[str]]:
    raw = yaml.safe_load((ROOT / "stacks" / f"Pulumi.{stack}.yaml").read_text())
    return raw["config"]["finml:platform"]["residency"]


def as_user(server, creds):
    """MLflow's client variables for `creds` on `server` while active (none leak into later tests)."""
    return scoped_environ(server.env(creds, base={}),
                          also_restore=("MLFLOW_TRACKING_URI", "MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD",
                                        "MLFLOW_TRACKING_SERVER_CERT_PATH", "MLFLOW_DISABLE_TELEMETRY"))


def register_model(server, name: str, classification: str | None, site: str = ONPREM, alias: str = "champion") -> str:
    """Train a tiny logistic regression, log it with one dataset input tagged with its lineage, set the alias."""
    import mlflow
    import numpy as np
    import pandas as pd
    from mlflow.entities import DatasetInput, InputTag
    from sklearn.linear_model import LogisticRegression

    rng = np.random.default_rng(0)
    frame = pd.DataFrame({f: rng.random(200) for f in FEATURES})
    label = (frame["amount"] + frame["merchant_risk"] > 1.0).astype(int)
    model = LogisticRegression().fit(frame, label)
    with as_user(server, server.writer):
        mlflow.set_tracking_uri(server.tracking_uri)
        mlflow.set_experiment("finml-serving-tests")
        with mlflow.start_run() as run:
            ds = mlflow.data.from_pandas(frame, source="file:///data/transactions.parquet", name="transactions")
            tags = [InputTag("mlflow.data.context", "training"), InputTag("finml.site", site)]
            if classification is not None:
                tags.append(InputTag("finml.classification", classification))
            client = mlflow.MlflowClient()
            client.log_inputs(run.info.run_id, datasets=[DatasetInput(ds._to_mlflow_entity(), tags)])
            info = mlflow.sklearn.log_model(model, name="model", registered_model_name=name,
                                            input_example=frame.head(2), pip_requirements=["scikit-learn"])
        version = str(info.registered_model_version)
        client.set_registered_model_alias(name, alias, version)
    return version


def free_port() -> int:
    from finml.local.postgres import free_port as _free

    return _free("127.0.0.1")


class ModelServer(LocalModelServer):
    """The serving tests' server: the restricted feature list of these tests."""

    def __init__(self, *args, **kwargs) -> None:
        kwargs.setdefault("restricted", RESTRICTED)
        super().__init__(*args, **kwargs)


def infer_body(rows: list[dict], request_id: str | None = None) -> bytes:
    body = {"parameters": {"content_type": "pd"},
            "inputs": [{"name": f, "shape": [len(rows)], "datatype": "FP64", "data": [r[f] for r in rows]}
                       for f in FEATURES]}
    if request_id:
        body["id"] = request_id
    return json.dumps(body).encode()
