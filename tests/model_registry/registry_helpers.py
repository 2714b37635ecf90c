"""Helpers for the model-registry tests: act as a user of a real MLflow server, log runs with lineage, run the CLI.
(A uniquely named module: `from conftest import …` is ambiguous when several test folders are collected.)"""

from __future__ import annotations

import contextlib
import os
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")


@contextlib.contextmanager
def as_user(server, creds):
    """Point MLflow's standard environment variables at `server` as `creds` for the duration."""
    keys = ("MLFLOW_TRACKING_URI", "MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD",
            "MLFLOW_TRACKING_SERVER_CERT_PATH", "MLFLOW_DISABLE_TELEMETRY")
    saved = {k: os.environ.get(k) for k in keys}
    os.environ.update({k: v for k, v in server.env(creds, base={}).items()})
    if creds is None:
        for k in ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD"):
            os.environ.pop(k, None)
    import mlflow

    saved_uri = mlflow.get_tracking_uri()
    mlflow.set_tracking_uri(server.tracking_uri)  # an explicit set_tracking_uri() would win over the variable
    try:
        yield
    finally:
        mlflow.set_tracking_uri(saved_uri)
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


class _Const:
    """A tiny pyfunc model: artifacts worth copying, no heavy flavour needed."""


def log_model(server, name: str, datasets: list[tuple[str, str, str]], *, metrics: dict | None = None,
              experiment: str = "finml-tests") -> str:
    """Log a run with `datasets` [(name, classification, site)] as dataset inputs, register it as `name`;
    returns the new version. A classification or site of None leaves that tag out."""
    import mlflow
    import numpy as np
    import pandas as pd
    from mlflow.entities import Dataset, DatasetInput, InputTag
    from mlflow.pyfunc import PythonModel

    class Const(PythonModel):
        def predict(self, context, model_input, params=None):
            return np.zeros(len(model_input))

    with as_user(server, server.writer):
        mlflow.set_tracking_uri(server.tracking_uri)
        mlflow.set_experiment(experiment)
        with mlflow.start_run() as run:
            inputs = []
            for i, (ds_name, classification, site) in enumerate(datasets):
                df = pd.DataFrame({"x": [i, i + 1]})
                ds = mlflow.data.from_pandas(df, source=f"file:///data/{ds_name}.parquet", name=ds_name)
                tags = [InputTag("mlflow.data.context", "training")]
                if classification is not None:
                    tags.append(InputTag("finml.classification", classification))
                if site is not None:
                    tags.append(InputTag("finml.site", site))
                inputs.append(DatasetInput(ds._to_mlflow_entity(), tags))
            client = mlflow.MlflowClient()
            for start in range(0, len(inputs), 100):
                client.log_inputs(run.info.run_id, datasets=inputs[start:start + 100])
            if metrics:
                mlflow.log_metrics(metrics)
            info = mlflow.pyfunc.log_model(name="model", python_model=Const(), pip_requirements=["numpy"],
                                           registered_model_name=name)
        return str(info.registered_model_version)


def run_cli(*args: str, env: dict[str, str], timeout: int = 600):
    import subprocess

    return subprocess.run([sys.executable, "-m", "finml.cli", *args], capture_output=True, text=True,
                          cwd=ROOT, env=env, timeout=timeout)
