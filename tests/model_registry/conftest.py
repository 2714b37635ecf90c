"""Model-registry test fixtures: the registry (the shared `mlflow_server`) and a second site's registry for copies."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
for path in (HERE.parents[1], HERE):
    if str(path) not in sys.path:
        sys.path.insert(0, str(path))

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")


@pytest.fixture(scope="session")
def registry(mlflow_server):
    return mlflow_server


@pytest.fixture(scope="session")
def target_registry(tmp_path_factory, local_ca, postgres):
    """A second site's registry (another real server on the same private PostgreSQL, its own databases)."""
    from finml.local.mlflow_server import MlflowServer

    with MlflowServer(Path(tmp_path_factory.mktemp("mlflow-target")), local_ca, postgres,
                      name="mlflow_target") as server:
        yield server
