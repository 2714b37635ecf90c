"""A real MLServer (serving venv) serving a model registered in a real MLflow, by alias, over TLS only; adaptive
batching; the prediction audit log; and the load-time gate (fail closed) under the hybrid stack's residency."""

from __future__ import annotations

import json
import re
import socket
import ssl
import subprocess
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor

import pytest
from serving_helpers import (
    AWS, FEATURES, MODEL_NAME, ONPREM, ROOT, SERVING_PYTHON, ModelServer, as_user, infer_body, register_model,
    stack_residency,
)

pytestmark = pytest.mark.skipif(not SERVING_PYTHON.exists(), reason="the serving venv (.venv-serving) is missing")


def _post(server: ModelServer, body: bytes) -> dict:
    req = urllib.request.Request(f"{server.url}/v2/models/{MODEL_NAME}/infer", data=body,
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, context=server.context(), timeout=60) as resp:
        return json.loads(resp.read())


def _metrics(server: ModelServer) -> str:
    with urllib.request.urlopen(f"https://127.0.0.1:{server.metrics_port}/metrics", context=server.context(),
                                timeout=10) as resp:
        return resp.read().decode()


def _metric(text: str, name: str, **labels: str) -> float:
    total = 0.0
    for line in text.splitlines():
        if not line.startswith(name + "{") and not line.startswith(name + " "):
            continue
        if all(f'{k}="{v}"' in line for k, v in labels.items()):
            total += float(line.rsplit(" ", 1)[1])
    return total


ROW = {"amount": 0.9, "merchant_risk": 0.8, "customer_age": 41.0}


def test_serves_the_alias_version_over_https(model_server, restricted_model):
    reply = _post(model_server, infer_body([ROW, {**ROW, "amount": 0.0, "merchant_risk": 0.0}], "req-https-1"))
    assert reply["id"] == "req-https-1"
    assert reply["model_version"] == restricted_model
    assert reply["outputs"][0]["data"] == [1, 0]


def test_concurrent_requests_are_batched(model_server):
    before = _metrics(model_server)
    with ThreadPoolExecutor(max_workers=24) as pool:
        replies = list(pool.map(lambda i: _post(model_server, infer_body([ROW], f"req-batch-{i}")), range(48)))
    assert sorted(r["id"] for r in replies) == sorted(f"req-batch-{i}" for i in range(48))
    after = _metrics(model_server)
    calls = _metric(after, "finml_inference_batch_size_count") - _metric(before, "finml_inference_batch_size_count")
    rows = _metric(after, "finml_inference_batch_size_sum") - _metric(before, "finml_inference_batch_size_sum")
    assert rows == 48, (rows, calls)
    assert calls < 48, f"48 single-row requests reached the model in {calls:g} calls: no batching"
    print(f"\n48 concurrent single-row requests -> {calls:g} model calls (mean batch {rows / calls:.1f})")
    # MLServer's own request metrics count every one of them.
    assert "model_infer_request_success" in after


def test_plain_http_is_refused_on_every_port(model_server):
    with pytest.raises((urllib.error.URLError, ConnectionError, OSError)):
        urllib.request.urlopen(f"http://127.0.0.1:{model_server.http_port}/v2/health/ready", timeout=10).read()
    with pytest.raises((urllib.error.URLError, ConnectionError, OSError)):
        urllib.request.urlopen(f"http://127.0.0.1:{model_server.metrics_port}/metrics", timeout=10).read()


def test_grpc_listener_speaks_tls_with_http2(model_server):
    ctx = model_server.context()
    ctx.set_alpn_protocols(["h2"])
    with socket.create_connection(("127.0.0.1", model_server.grpc_port), timeout=10) as raw:
        with ctx.wrap_socket(raw, server_hostname="127.0.0.1") as tls:
            assert tls.selected_alpn_protocol() == "h2"
            assert tls.version() in ("TLSv1.2", "TLSv1.3")
    # A client that does not trust the site CA is refused the handshake.
    untrusting = ssl.create_default_context()
    with socket.create_connection(("127.0.0.1", model_server.grpc_port), timeout=10) as raw:
        with pytest.raises(ssl.SSLError):
            untrusting.wrap_socket(raw, server_hostname="127.0.0.1")


def test_audit_log_has_one_line_per_row_with_restricted_features_hashed(model_server, restricted_model):
    _post(model_server, infer_body([ROW, {**ROW, "customer_age": 63.0}], "req-audit-1"))
    lines = [json.loads(line) for line in model_server.output().splitlines()
             if line.startswith("{") and '"finml.prediction"' in line and "req-audit-1" in line]
    assert [line["row"] for line in lines] == [0, 1]
    for line in lines:
        assert line["model"] == MODEL_NAME and line["version"] == restricted_model
        assert re.match(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$", line["timestamp"])
        assert line["score"] in (0, 1)
        assert line["features"]["amount"] == 0.9
        assert line["features"]["customer_age"].startswith("hmac-sha256:")
    assert lines[0]["features"]["customer_age"] != lines[1]["features"]["customer_age"]
    assert "41.0" not in json.dumps([line["features"]["customer_age"] for line in lines])
    gate_lines = [json.loads(line) for line in model_server.output().splitlines() if '"finml.load_gate"' in line]
    assert gate_lines[0]["allowed"] is True and gate_lines[0]["classification"] == "restricted"
    assert gate_lines[0]["version"] == restricted_model and gate_lines[0]["site"] == ONPREM


# -- the load gate ----------------------------------------------------------------------------------------------------


def _gate_only(registry, tmp_path, *, name: str, site: str, creds=None, env_extra: dict | None = None
               ) -> subprocess.CompletedProcess:
    residency = tmp_path / "residency.json"
    residency.write_text(json.dumps({"residency": stack_residency()}))
    env = registry.env(registry.reader if creds is None else creds)
    env.update({"PYTHONPATH": str(ROOT)}, **(env_extra or {}))
    return subprocess.run([str(SERVING_PYTHON), "-m", "workloads.model_server.serve", "--gate-only", "--name", name,
                           "--site", site, "--residency-file", str(residency)],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=180)


def test_gate_refuses_a_restricted_model_under_an_aws_site(mlflow_server, restricted_model, tmp_path):
    proc = _gate_only(mlflow_server, tmp_path, name=MODEL_NAME, site=AWS)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    (record,) = [json.loads(line) for line in proc.stdout.splitlines() if "finml.load_gate" in line]
    assert record["allowed"] is False and record["classification"] == "restricted"
    assert record["version"] == restricted_model and record["site"] == AWS
    assert "refused by rule residency.restricted" in proc.stderr


def test_gate_allows_it_on_prem(mlflow_server, restricted_model, tmp_path):
    proc = _gate_only(mlflow_server, tmp_path, name=MODEL_NAME, site=ONPREM)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    (record,) = [json.loads(line) for line in proc.stdout.splitlines() if "finml.load_gate" in line]
    assert record["allowed"] is True and record["version"] == restricted_model


def test_gate_refuses_a_model_without_lineage_everywhere(mlflow_server, tmp_path):
    register_model(mlflow_server, "no-lineage-serving", None)
    proc = _gate_only(mlflow_server, tmp_path, name="no-lineage-serving", site=ONPREM)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "unknown lineage" in proc.stderr


def test_gate_fails_closed_when_the_registry_cannot_be_read(mlflow_server, restricted_model, tmp_path):
    unreachable = _gate_only(mlflow_server, tmp_path, name=MODEL_NAME, site=ONPREM,
                             env_extra={"MLFLOW_TRACKING_URI": mlflow_server.plain_http_uri,
                                        "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0"})
    assert unreachable.returncode == 3, unreachable.stdout + unreachable.stderr
    assert "fail closed" in unreachable.stderr
    no_alias = _gate_only(mlflow_server, tmp_path, name="no-such-model-serving", site=ONPREM)
    assert no_alias.returncode == 3, no_alias.stdout + no_alias.stderr


def test_server_never_opens_a_port_when_refused(mlflow_server, local_ca, restricted_model, tmp_path):
    server = ModelServer(tmp_path / "refused", mlflow_server, local_ca, name=MODEL_NAME, site=AWS,
                         residency=stack_residency())
    try:
        rc = server.proc.wait(timeout=180)
    finally:
        out = server.stop()
    assert rc == 1, out
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", server.http_port), timeout=2).close()


def test_gate_check_in_process_matches(mlflow_server, restricted_model):
    import mlflow

    from workloads.model_server import gate

    with as_user(mlflow_server, mlflow_server.reader):
        client = mlflow.MlflowClient(mlflow_server.tracking_uri)
        allowed = gate.check(client, MODEL_NAME, "champion", ONPREM, stack_residency())
        assert allowed.model_uri == f"models:/{MODEL_NAME}/{restricted_model}"
        with pytest.raises(gate.GateRefused) as info:
            gate.check(client, MODEL_NAME, "champion", AWS, stack_residency())
    assert info.value.exit_code == gate.EXIT_REFUSED
    assert set(FEATURES) >= {"customer_age"}
