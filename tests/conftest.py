"""Shared test helpers: the repository root, a way to run the finml CLI as a user would, and the session-scoped
real servers the ML platform's tests share (local CA, private PostgreSQL; later MLflow, Redis, feature server)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def run_finml(*args: str, cwd: Path = ROOT, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "finml.cli", *args], capture_output=True, text=True, cwd=cwd,
                          env=env, timeout=900)


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return ROOT


# Tests of real parts (marked `slow` or `sshhosts`) may skip on a developer machine that lacks the part — but under
# CI=true a skip would let a run pass without testing what it claims, so it fails instead. Deselecting with -m is
# still allowed: that is a visible choice on the command line, not a silent skip.
REAL_PART_MARKERS = ("slow", "sshhosts")


def _ci() -> bool:
    return os.environ.get("CI", "").strip().lower() in ("1", "true", "yes")


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    if not (report.skipped and _ci() and hasattr(report, "longrepr")) or hasattr(report, "wasxfail"):
        return
    markers = [m for m in REAL_PART_MARKERS if item.get_closest_marker(m) is not None]
    if not markers:
        return
    reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
    report.outcome = "failed"
    report.longrepr = (f"{item.nodeid} is a real-part test (marked {', '.join(markers)}) and was skipped under "
                       f"CI=true: {reason}. CI must run every real part; fix the environment or deselect it "
                       f"explicitly with -m.")


# Parallel runs (pytest-xdist, as ./dev.sh test runs the suite): a test file is the unit of distribution, so a
# file's module-scoped fixtures (a stack run under the mock runtime, a policy-pack process) start once, and all of
# tests/ansible is one unit: its SSH test hosts (fixed run directory, 127.0.10.x) must exist once per run. The
# scheduler sees node ids only, hence a folder; collection refuses an SSH-host test anywhere else. (xdist's
# `xdist_group` marks are no help here: with pytest 9.2 they no longer reach the scheduler.)
SSH_HOSTS_FOLDER = "tests/ansible/"


@pytest.hookimpl(optionalhook=True)  # known only where xdist is loaded
def pytest_xdist_make_scheduler(config, log):
    if config.getvalue("dist") not in ("load", "loadfile"):  # an explicit other --dist mode is kept
        return None
    from xdist.scheduler import LoadFileScheduling

    # Hand out files in collection order, not largest-first: sorted by test count, the few slow single-test files
    # (the demo, SIGTERM moments, torchrun runs) would all come last and finish alone on one worker.
    config.option.loadscopereorder = False

    class FileScheduling(LoadFileScheduling):
        def _split_scope(self, nodeid: str) -> str:
            path = nodeid.split("::", 1)[0]
            return SSH_HOSTS_FOLDER if path.startswith(SSH_HOSTS_FOLDER) else path

    return FileScheduling(config, log)


def pytest_collection_modifyitems(config, items):
    if not hasattr(config, "workerinput"):  # a serial run: nothing is shared between processes
        return
    stray = [item.nodeid for item in items
             if item.get_closest_marker("sshhosts") is not None and not item.nodeid.startswith(SSH_HOSTS_FOLDER)]
    if stray:
        raise pytest.UsageError(f"SSH-host tests must live under {SSH_HOSTS_FOLDER} (one worker runs them all): "
                                + ", ".join(stray))


# A test (or a library it calls in-process) that leaves the process in another working directory breaks every later
# test of the same worker in ways far from the cause (a tmp directory removed under it). Put it back, and fail the
# test that moved it.
@pytest.fixture(autouse=True)
def _working_directory_is_kept(request):
    before = os.getcwd()
    yield
    try:
        after = os.getcwd()
    except FileNotFoundError:
        after = "<a removed directory>"
    if after != before:
        os.chdir(before)
        pytest.fail(f"{request.node.nodeid} left the working directory at {after} (was {before})", pytrace=False)


# ------------------------------------------------------------------------------------------------ real servers
# Session-scoped so the suite starts each server once; each fixture stops what it started.


@pytest.fixture(scope="session")
def local_ca(tmp_path_factory: pytest.TempPathFactory):
    from finml.local.tls import LocalCA

    return LocalCA(tmp_path_factory.mktemp("ca"))


@pytest.fixture(scope="session")
def postgres(tmp_path_factory: pytest.TempPathFactory, local_ca):
    from finml.local.postgres import PrivatePostgres

    with PrivatePostgres(Path(tmp_path_factory.mktemp("pg")), local_ca) as pg:
        yield pg


@pytest.fixture(scope="session")
def mlflow_server(tmp_path_factory: pytest.TempPathFactory, local_ca, postgres):
    """A real `mlflow server` (basic-auth app, TLS, PostgreSQL store, proxied artifacts) on loopback.

    Yields a `finml.local.mlflow_server.MlflowServer`: `.tracking_uri`, `.ca_bundle`, `.admin` / `.writer` /
    `.reader` credentials and `.env(creds)` for MLflow's standard client environment variables.
    """
    from finml.local.mlflow_server import MlflowServer

    with MlflowServer(Path(tmp_path_factory.mktemp("mlflow")), local_ca, postgres, name="mlflow") as server:
        yield server


# ---- feature store (issue 12): private TLS Redis, and Feast with its SQL registry in `postgres`, seeded with
# synthetic data and served over HTTPS. Self-contained: only needs local_ca and postgres above.

FEATURE_STORE_ROWS = 3_000
#: Who may read which classification in the shared test store: restricted only for the training namespace.
FEATURE_STORE_READERS = {"public": ["finml-training", "finml-serving"],
                         "internal": ["finml-training", "finml-serving"],
                         "confidential": ["finml-training", "finml-serving"],
                         "restricted": ["finml-training"]}


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory, local_ca):
    from finml.local.redis import PrivateRedis

    with PrivateRedis(Path(tmp_path_factory.mktemp("redis")), local_ca) as redis:
        yield redis


@pytest.fixture(scope="session")
def feature_store(tmp_path_factory: pytest.TempPathFactory, local_ca, postgres, redis_server):
    """A seeded, materialized local feature store with `feast serve` running over HTTPS (`.server_url`)."""
    from finml.local.feature_store import LocalFeatureStore

    with LocalFeatureStore(Path(tmp_path_factory.mktemp("feast")), local_ca, postgres, redis_server,
                           site="onprem:fra-dc1") as fs:
        fs.transactions = fs.seed(FEATURE_STORE_ROWS, readers=FEATURE_STORE_READERS)
        fs.serve()
        yield fs
