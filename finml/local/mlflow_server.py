"""A real MLflow tracking server and model registry for local mode and tests, set up the way the sites run it:
basic-auth app, TLS from the local CA, PostgreSQL backend store (and auth store), proxied artifacts.

    with MlflowServer(Path(tmp), ca, pg) as server:      # databases, certificate, users; stopped on exit
        server.tracking_uri                            # https://127.0.0.1:<port>
        server.ca_bundle                               # CA clients must trust (MLFLOW_TRACKING_SERVER_CERT_PATH)
        server.admin / server.writer / server.reader   # Credentials(username, password)
        server.env(server.writer)                      # the MLflow client environment for that user

Users: `admin` (bootstrap admin, password set from config, never a default), `finml-writer` (training: EDIT on every
experiment and registered model) and `finml-reader` (serving: the server-wide default READ, nothing more). The server
runs as `python -m mlflow server` from the interpreter running this module, on a free loopback port, in its own
process group, and is stopped with the whole group.
"""

from __future__ import annotations

import base64
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
from dataclasses import dataclass
from pathlib import Path

from finml.local.postgres import PrivatePostgres, free_port
from finml.local.files import write_file
from finml.local.tls import LocalCA

START_TIMEOUT_S = 240
AUTH_CACHE_TTL_S = 30
ADMIN_USER = "admin"
WRITER_USER = "finml-writer"
READER_USER = "finml-reader"


class MlflowServerError(RuntimeError):
    """The MLflow server could not be configured or started; the message says why (with the log's tail)."""


@dataclass(frozen=True)
class Credentials:
    username: str
    password: str

    def __repr__(self) -> str:  # never print a password in a test log
        return f"Credentials(username={self.username!r}, password=***)"


class MlflowServer:
    """One server; a context manager. `name` keys its databases, certificate and directory (letters, digits, _)."""

    def __init__(self, base_dir: Path, ca: LocalCA, postgres: PrivatePostgres, *, name: str = "mlflow",
                 workers: int = 1) -> None:
        if not name.replace("_", "").isalnum():
            raise ValueError(f"server name {name!r}: letters, digits and '_' only")
        self.base_dir = Path(base_dir)
        self.ca = ca
        self.postgres = postgres
        self.name = name
        self.workers = workers
        self.host = "127.0.0.1"
        self.port = free_port(self.host)
        self.artifacts_dir = self.base_dir / "artifacts"
        self.log_path = self.base_dir / "mlflow-server.log"
        self.admin = Credentials(ADMIN_USER, secrets.token_urlsafe(18))
        self.writer = Credentials(WRITER_USER, secrets.token_urlsafe(18))
        self.reader = Credentials(READER_USER, secrets.token_urlsafe(18))
        self._proc: subprocess.Popen[bytes] | None = None

    # -------------------------------------------------------------------------------------------- properties

    @property
    def tracking_uri(self) -> str:
        return f"https://{self.host}:{self.port}"

    @property
    def plain_http_uri(self) -> str:
        """The same port spoken to in plain HTTP: must be refused (tests use it to prove TLS is enforced)."""
        return f"http://{self.host}:{self.port}"

    @property
    def ca_bundle(self) -> Path:
        return self.ca.bundle

    @property
    def users(self) -> dict[str, Credentials]:
        return {"admin": self.admin, "writer": self.writer, "reader": self.reader}

    def env(self, creds: Credentials | None, base: dict[str, str] | None = None) -> dict[str, str]:
        """MLflow's standard client environment for `creds` (None: no credentials at all)."""
        env = dict(os.environ if base is None else base)
        for key in ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD", "MLFLOW_TRACKING_TOKEN",
                    "MLFLOW_TRACKING_INSECURE_TLS"):
            env.pop(key, None)
        env.update({"MLFLOW_TRACKING_URI": self.tracking_uri,
                    "MLFLOW_TRACKING_SERVER_CERT_PATH": str(self.ca_bundle),
                    "MLFLOW_DISABLE_TELEMETRY": "true"})
        if creds is not None:
            env["MLFLOW_TRACKING_USERNAME"] = creds.username
            env["MLFLOW_TRACKING_PASSWORD"] = creds.password
        return env

    # -------------------------------------------------------------------------------------------- lifecycle

    def __enter__(self) -> "MlflowServer":
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> None:
        self.base_dir.mkdir(parents=True, exist_ok=True)
        os.chmod(self.base_dir, 0o700)
        self.artifacts_dir.mkdir(exist_ok=True)
        store_pw, auth_pw = secrets.token_urlsafe(18), secrets.token_urlsafe(18)
        store_url = self.postgres.create_database(self.name, owner=self.name, password=store_pw)
        auth_url = self.postgres.create_database(f"{self.name}_auth", owner=f"{self.name}_auth", password=auth_pw)
        store_url = store_url.replace("postgresql://", "postgresql+psycopg://", 1)
        auth_url = auth_url.replace("postgresql://", "postgresql+psycopg://", 1)
        cert, key = self.ca.issue(self.name, directory=self.base_dir)
        auth_ini = self.base_dir / "basic_auth.ini"
        # configparser interpolation: a literal '%' (URL-encoded paths) must be doubled.
        write_file(auth_ini, "\n".join([
            "[mlflow]",
            "default_permission = READ",
            f"database_uri = {auth_url.replace('%', '%%')}",
            f"admin_username = {self.admin.username}",
            f"admin_password = {self.admin.password}",
            "authorization_function = mlflow.server.auth:authenticate_request_basic_auth",
            # Every request re-derives the PBKDF2 password hash otherwise (seconds on a loaded CPU); a short cache
            # keeps the check while bounding how long a changed password stays valid.
            f"auth_cache_ttl_seconds = {AUTH_CACHE_TTL_S}",
            "",
        ]))
        env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
        env.update({
            "MLFLOW_AUTH_CONFIG_PATH": str(auth_ini),
            "MLFLOW_FLASK_SERVER_SECRET_KEY": secrets.token_urlsafe(32),
            "MLFLOW_DISABLE_TELEMETRY": "true",
            # The GenAI job runner (huey consumers, schedulers) is not needed for tracking and the registry.
            "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false",
            "PYTHONUNBUFFERED": "1",
        })
        argv = [sys.executable, "-m", "mlflow", "server",
                "--host", self.host, "--port", str(self.port), "--workers", str(self.workers),
                "--backend-store-uri", store_url,
                "--serve-artifacts", "--artifacts-destination", str(self.artifacts_dir),
                "--app-name", "basic-auth",
                "--uvicorn-opts", f"--ssl-keyfile {key} --ssl-certfile {cert}"]
        log = open(self.log_path, "ab")
        self._proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=self.base_dir,
                                      start_new_session=True)
        log.close()
        try:
            self._wait_ready()
            self._create_users()
        except BaseException:
            self.stop()
            raise

    def _ssl_context(self) -> ssl.SSLContext:
        return ssl.create_default_context(cafile=str(self.ca_bundle))

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + START_TIMEOUT_S
        ctx = self._ssl_context()
        while time.monotonic() < deadline:
            if self._proc is not None and self._proc.poll() is not None:
                raise MlflowServerError(f"mlflow server exited with {self._proc.returncode}; log {self.log_path}:\n"
                                        + self.log_path.read_text(errors="replace")[-3000:])
            try:
                with urllib.request.urlopen(f"{self.tracking_uri}/health", context=ctx, timeout=5) as resp:
                    if resp.status == 200:
                        return
            except (urllib.error.URLError, ConnectionError, TimeoutError, ssl.SSLError, OSError):
                pass
            time.sleep(0.5)
        raise MlflowServerError(f"mlflow server not ready within {START_TIMEOUT_S}s; log {self.log_path}:\n"
                                + self.log_path.read_text(errors="replace")[-3000:])

    def api(self, method: str, path: str, body: dict | None, creds: Credentials | None) -> dict:
        """Call the server's REST API (used for the auth app's user and permission endpoints)."""
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(f"{self.tracking_uri}{path}", data=data, method=method,
                                     headers={"Content-Type": "application/json"})
        if creds is not None:
            token = base64.b64encode(f"{creds.username}:{creds.password}".encode()).decode()
            req.add_header("Authorization", f"Basic {token}")
        try:
            with urllib.request.urlopen(req, context=self._ssl_context(), timeout=30) as resp:
                text = resp.read().decode() or "{}"
        except urllib.error.HTTPError as exc:
            raise MlflowServerError(f"{method} {path}: HTTP {exc.code}: {exc.read().decode(errors='replace')[:500]}"
                                    ) from None
        return json.loads(text)

    def _create_users(self) -> None:
        for creds in (self.writer, self.reader):
            self.api("POST", "/api/2.0/mlflow/users/create",
                     {"username": creds.username, "password": creds.password}, self.admin)
        for resource_type in ("experiment", "registered_model"):
            self.api("POST", "/api/3.0/mlflow/users/permissions/grant",
                     {"username": self.writer.username, "resource_type": resource_type, "resource_id": "*",
                      "permission": "EDIT"}, self.admin)

    def stop(self) -> None:
        proc, self._proc = self._proc, None
        if proc is None or proc.poll() is not None:
            return
        try:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(timeout=30)
        except ProcessLookupError:
            return
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        try:  # uvicorn workers share the group; make sure none outlives the supervisor
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
