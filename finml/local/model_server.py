"""A local model server for tests and the demo: `python -m workloads.model_server.serve` from the serving venv
(`.venv-serving`, MLServer 1.7.1) on 127.0.0.1 with free ports, a certificate from the run's LocalCA, an audit key,
and the registry's read-only user — the container's entry point, run as a process."""

from __future__ import annotations

import json
import os
import secrets
import ssl
import subprocess
import time
import urllib.request
from pathlib import Path

from finml.local.postgres import free_port as _free_port

ROOT = Path(__file__).resolve().parents[2]
SERVING_PYTHON = Path(os.environ.get("FINML_SERVING_PYTHON", str(ROOT / ".venv-serving" / "bin" / "python")))
if not SERVING_PYTHON.exists():
    SERVING_PYTHON = Path("/work/main/.venv-serving/bin/python")


def free_port() -> int:
    return _free_port("127.0.0.1")


class LocalModelServer:
    """One `workloads.model_server.serve` process (the serving venv) on loopback; `.stop()` ends it and returns its
    output. `registry` is a `finml.local.mlflow_server.MlflowServer`; the server uses its read-only user."""

    def __init__(self, base: Path, registry, ca, *, name: str, site: str, residency: dict, batch_size: int = 16,
                 batch_time_ms: int = 20, workers: int = 0,
                 restricted: tuple[str, ...] = ()) -> None:
        self.base = base
        self.name = name
        base.mkdir(parents=True, exist_ok=True)
        self.cert, self.key = ca.issue(f"mlserver{secrets.token_hex(3)}")
        self.restricted = tuple(restricted)
        self.ca_bundle = ca.bundle
        self.http_port, self.grpc_port, self.metrics_port = free_port(), free_port(), free_port()
        (base / "residency.json").write_text(json.dumps({"residency": residency}))
        (base / "audit.key").write_text(secrets.token_hex(32))
        self.log_path = base / "server.log"
        self.argv = [str(SERVING_PYTHON), "-m", "workloads.model_server.serve", "--name", name, "--site", site,
                     "--residency-file", str(base / "residency.json"), "--models-dir", str(base / "models"),
                     "--host", "127.0.0.1", "--http-port", str(self.http_port), "--grpc-port", str(self.grpc_port),
                     "--metrics-port", str(self.metrics_port), "--tls-cert", str(self.cert),
                     "--tls-key", str(self.key), "--max-batch-size", str(batch_size),
                     "--max-batch-time-ms", str(batch_time_ms), "--parallel-workers", str(workers),
                     "--audit-key-file", str(base / "audit.key"), "--restricted-features", ",".join(self.restricted)]
        env = registry.env(registry.reader)
        env["PYTHONPATH"] = str(ROOT)
        self._log = open(self.log_path, "wb")
        self.proc = subprocess.Popen(self.argv, cwd=ROOT, env=env, stdout=self._log, stderr=subprocess.STDOUT)

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.http_port}"

    def context(self) -> ssl.SSLContext:
        return ssl.create_default_context(cafile=str(self.ca_bundle))

    def wait_ready(self, timeout: float = 240) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"model server exited {self.proc.returncode}:\n{self.output()[-4000:]}")
            try:
                with urllib.request.urlopen(f"{self.url}/v2/models/{self.name}/ready", context=self.context(),
                                            timeout=5) as resp:
                    if resp.status == 200:
                        return
            except OSError:
                pass
            time.sleep(1)
        raise AssertionError(f"model server not ready after {timeout}s:\n{self.output()[-4000:]}")

    def output(self) -> str:
        self._log.flush()
        return self.log_path.read_text(errors="replace")

    def stop(self) -> str:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        self._log.close()
        return self.log_path.read_text(errors="replace")
