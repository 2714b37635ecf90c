"""Serving tests' fixtures (helpers in serving_helpers.py): a restricted-lineage model in the session's real MLflow
and one real MLServer process serving it by alias over TLS; the fixture stops the process."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
for path in (HERE.parents[1], HERE):
    if str(path) not in sys.path:
        sys.path.insert(0, str(path))

from serving_helpers import MODEL_NAME, ONPREM, ModelServer, register_model, stack_residency  # noqa: E402


@pytest.fixture(scope="session")
def restricted_model(mlflow_server) -> str:
    """A registered model whose training data is restricted (lineage), alias champion; returns its version."""
    return register_model(mlflow_server, MODEL_NAME, "restricted")


@pytest.fixture(scope="session")
def model_server(tmp_path_factory, mlflow_server, local_ca, restricted_model):
    server = ModelServer(tmp_path_factory.mktemp("mlserver"), mlflow_server, local_ca, name=MODEL_NAME, site=ONPREM,
                         residency=stack_residency())
    try:
        server.wait_ready()
        yield server
    finally:
        server.stop()
