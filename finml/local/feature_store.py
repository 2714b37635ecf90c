"""The feature store on this machine: Feast with its SQL registry in a private PostgreSQL database, the offline store
as Parquet files, the online store in a private TLS-only Redis, and `feast serve` over HTTPS — what tests and the
end-to-end demo use, and the local stand-in for the per-site deployment.

    with LocalFeatureStore(base, ca, postgres, redis, site="onprem:fra-dc1") as fs:
        fs.seed(n_rows=10_000)                      # synthetic data -> offline store, apply, materialize
        fs.store                                    # feast.FeatureStore (in process)
        fs.serve()                                  # `feast serve` subprocess on a free loopback port, TLS
        token = fs.token("finml-training", "trainer")   # a service-account token from the local OIDC issuer
        fs.get_online_features(["card_transactions_1h:card_txn_count_1h"], {"card_id": ["ca000001"]}, token=token)

The server requires authentication: a loopback OIDC issuer over HTTPS (finml/local/oidc.py) publishes the signing
key, `feast serve` runs with Feast's `oidc` auth (signature, expiry, issuer and audience verified) and enforces the
Feast permissions stored in the registry on every request — no token, a bad token or a principal outside a view's
reader list is refused by the server itself.

Secrets never reach a file: the feature_store.yaml written for the server holds `${FINML_FEAST_...}` placeholders
(Feast expands environment variables when it loads the file) and the values travel in the server's environment.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import secrets
import signal
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import yaml

from finml.local.oidc import LocalOidcIssuer
from finml.local.postgres import PrivatePostgres, free_port
from finml.local.redis import PrivateRedis
from finml.local.tls import LocalCA
from workloads.feature_repo.catalog import CLASSIFICATION_ORDER

REGISTRY_DATABASE = "feast_registry"
REGISTRY_OWNER = "feast"
SERVE_TIMEOUT_S = 120
REGISTRY_ENV = "FINML_FEAST_REGISTRY_URL"
ONLINE_ENV = "FINML_FEAST_REDIS"
#: Feast's OIDC parser accepts a token *without verifying it* when its preferred_username equals this variable
#: (intra-server calls); the local server never gets it.
UNVERIFIED_BYPASS_ENV = "INTRA_COMMUNICATION_BASE64"
#: Readers when the caller names none — the cluster's default: both platform namespaces read every classification
#: the site holds. Permissions are always stored: with none in the registry, Feast grants every authenticated caller
#: everything.
DEFAULT_READERS: dict[str, list[str]] = {c: ["finml-training", "finml-serving"] for c in CLASSIFICATION_ORDER}


class FeatureServerError(RuntimeError):
    """`feast serve` did not come up; the message carries its log tail."""


class LocalFeatureStore:
    def __init__(self, base_dir: Path, ca: LocalCA, postgres: PrivatePostgres, redis: PrivateRedis, *,
                 site: str = "onprem:local", allowed: str = "restricted", project: str | None = None,
                 registry_database: str = REGISTRY_DATABASE) -> None:
        from workloads.feature_repo.catalog import PROJECT

        self.base_dir = Path(base_dir)
        self.repo_dir = self.base_dir / "repo"
        self.offline_dir = self.base_dir / "offline"
        self.ca = ca
        self.postgres = postgres
        self.redis = redis
        self.site = site
        self.allowed = allowed
        self.project = project or PROJECT
        self._registry_password = secrets.token_urlsafe(24)
        self.registry_url = postgres.create_database(registry_database, owner=REGISTRY_OWNER,
                                                     password=self._registry_password).replace(
            "postgresql://", "postgresql+psycopg://", 1)
        self.repo_dir.mkdir(parents=True, exist_ok=True)
        self.issuer = LocalOidcIssuer(self.base_dir / "oidc", ca).start()
        self._write_yaml()
        self._store = None
        self._server: subprocess.Popen[bytes] | None = None
        self._server_log = self.base_dir / "feature-server.log"
        self.server_url: str | None = None

    # -------------------------------------------------------------------------------------------- config

    def _config_dict(self, registry: str, online: str) -> dict:
        return {
            "project": self.project,
            "provider": "local",
            "registry": {"registry_type": "sql", "path": registry, "cache_ttl_seconds": 5,
                         "sqlalchemy_config_kwargs": {"echo": False, "pool_pre_ping": True}},
            "online_store": {"type": "redis", "connection_string": online},
            "offline_store": {"type": "file"},
            "entity_key_serialization_version": 3,
            "auth": self.issuer.feast_auth_config(),
        }

    def _write_yaml(self) -> None:
        text = yaml.safe_dump(self._config_dict(f"${{{REGISTRY_ENV}}}", f"${{{ONLINE_ENV}}}"), sort_keys=False)
        (self.repo_dir / "feature_store.yaml").write_text(text)

    def server_env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if k != UNVERIFIED_BYPASS_ENV}
        return {**env, REGISTRY_ENV: self.registry_url, ONLINE_ENV: self.redis.feast_connection_string(),
                "FEAST_USAGE": "False", "FEAST_DISABLE_TELEMETRY": "true"}

    def token(self, namespace: str, service_account: str, *, roles: tuple[str, ...] = (),
              ttl_s: int = 3600) -> str:
        """A bearer token for `namespace`'s service account, as the local OIDC issuer signs it."""
        return self.issuer.service_account_token(namespace, service_account, roles=roles, ttl_s=ttl_s)

    @property
    def store(self):
        if self._store is None:
            from feast import FeatureStore, RepoConfig

            cfg = self._config_dict(self.registry_url, self.redis.feast_connection_string())
            self._store = FeatureStore(config=RepoConfig(repo_path=self.repo_dir, **cfg))
        return self._store

    # -------------------------------------------------------------------------------------------- data

    def apply(self, readers: dict[str, list[str]] | None = None) -> None:
        """Register the repository with its access permissions (`readers`: classification → namespaces;
        default DEFAULT_READERS)."""
        from workloads.feature_repo.definitions import feature_objects

        self.store.apply(feature_objects(site=self.site, offline_uri=str(self.offline_dir), allowed=self.allowed,
                                         readers=DEFAULT_READERS if readers is None else readers))

    def write_offline(self, n_rows: int, *, seed: int = 0, start=None, days: int = 30):
        from workloads.feature_repo.sources import write_offline_store
        from workloads.feature_repo.synthetic import entity_tables, generate_transactions

        tx = generate_transactions(n_rows, seed=seed, start=start, days=days)
        write_offline_store(self.offline_dir, tx, entity_tables(n_rows, seed=seed, start=start))
        return tx

    def materialize(self, start: dt.datetime | None = None, end: dt.datetime | None = None) -> None:
        """Load the latest row per entity in [start, end] into the online store (default: all the data)."""
        start = start or dt.datetime(2000, 1, 1, tzinfo=dt.timezone.utc)
        end = end or dt.datetime.now(dt.timezone.utc)
        self.store.materialize(start_date=start, end_date=end)

    def seed(self, n_rows: int, *, seed: int = 0, readers: dict[str, list[str]] | None = None):
        """Synthetic data into the offline store, apply the repository, materialize; returns the transactions."""
        tx = self.write_offline(n_rows, seed=seed)
        self.apply(readers)
        self.materialize()
        return tx

    # -------------------------------------------------------------------------------------------- server

    def ssl_context(self) -> ssl.SSLContext:
        return ssl.create_default_context(cafile=str(self.ca.bundle))

    def serve(self, port: int | None = None) -> str:
        """Start `feast serve` over HTTPS on a free loopback port; returns its base URL."""
        if self._server is not None:
            return self.server_url
        port = port or free_port()
        cert, key = self.ca.issue("feature-server", directory=self.base_dir / "tls")
        feast = Path(sys.executable).with_name("feast")
        argv = [str(feast), "--chdir", str(self.repo_dir), "serve", "--host", "127.0.0.1", "--port", str(port),
                "--key", str(key), "--cert", str(cert), "--no-access-log", "--registry_ttl_sec", "5"]
        log = open(self._server_log, "ab")
        self._server = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, env=self.server_env(),
                                        cwd=self.repo_dir, start_new_session=True)
        log.close()
        self.server_url = f"https://127.0.0.1:{port}"
        deadline = time.monotonic() + SERVE_TIMEOUT_S
        while time.monotonic() < deadline:
            if self._server.poll() is not None:
                code = self._server.returncode
                self._server = None
                raise FeatureServerError(f"feast serve exited with {code}:\n{self._log_tail()}")
            try:
                with urllib.request.urlopen(f"{self.server_url}/health", context=self.ssl_context(),
                                            timeout=2) as resp:
                    if resp.status == 200:
                        return self.server_url
            except (urllib.error.URLError, ConnectionError, TimeoutError, OSError):
                time.sleep(0.3)
        self.stop_server()
        raise FeatureServerError(f"feast serve not healthy within {SERVE_TIMEOUT_S}s:\n{self._log_tail()}")

    def _log_tail(self) -> str:
        return self._server_log.read_text(errors="replace")[-3000:] if self._server_log.exists() else ""

    def stop_server(self) -> None:
        if self._server is None:
            return
        if self._server.poll() is None:
            try:
                os.killpg(self._server.pid, signal.SIGTERM)
                self._server.wait(timeout=30)
            except ProcessLookupError:
                pass
            except subprocess.TimeoutExpired:
                os.killpg(self._server.pid, signal.SIGKILL)
                self._server.wait()
        self._server = None
        self.server_url = None

    def get_online_features(self, features: list[str] | None, entities: dict[str, list], *, token: str | None,
                            feature_service: str | None = None, timeout: float = 30) -> dict:
        """POST /get-online-features to the running server over verified HTTPS, as the holder of `token` (None:
        no Authorization header). A refusal raises urllib.error.HTTPError (401 unauthenticated, 403 not allowed)."""
        body: dict = {"entities": entities, "full_feature_names": True}
        if feature_service:
            body["feature_service"] = feature_service
        else:
            body["features"] = features
        headers = {"Content-Type": "application/json"}
        if token is not None:
            headers["Authorization"] = f"Bearer {token}"
        req = urllib.request.Request(f"{self.server_url}/get-online-features", data=json.dumps(body).encode(),
                                     headers=headers, method="POST")
        with urllib.request.urlopen(req, context=self.ssl_context(), timeout=timeout) as resp:
            return json.loads(resp.read())

    def close(self) -> None:
        self.stop_server()
        self.issuer.stop()
        if self._store is not None:
            try:
                self._store.registry.teardown = None  # keep the registry's tables; just drop the engine
            except Exception:  # noqa: BLE001
                pass
            self._store = None

    def __enter__(self) -> "LocalFeatureStore":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
