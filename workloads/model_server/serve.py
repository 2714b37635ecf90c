"""The model server's entry point: load gate, then MLServer with its MLflow runtime, over TLS only.

    python -m workloads.model_server.serve --name fraud-scorer --alias champion --site onprem:fra-dc1 \
        --residency-file /etc/finml/residency.json --tls-cert /tls/tls.crt --tls-key /tls/tls.key

1. The gate (workloads/model_server/gate.py) resolves `models:/NAME@ALIAS` against the site's registry
   (MLFLOW_TRACKING_URI, the read-only user in MLFLOW_TRACKING_USERNAME/PASSWORD, the site CA in
   MLFLOW_TRACKING_SERVER_CERT_PATH) and refuses to start unless the site may hold the version's classification.
   Refusals and registry failures exit non-zero before any port is opened (fail closed).
2. It writes MLServer's settings.json and the model's model-settings.json (runtime `FinmlMLflowRuntime`, MLServer's MLflow runtime,
   uri `models:/NAME/VERSION` — the checked version — and adaptive batching `max_batch_size`/`max_batch_time`).
3. It starts MLServer 1.7.1 with TLS on all three listeners. MLServer has no TLS setting of its own: REST and
   metrics are uvicorn servers and take uvicorn's `ssl_certfile`/`ssl_keyfile` through MLServer's (private)
   custom-server settings; the gRPC server is built with `add_insecure_port`, which finml replaces by
   `add_secure_port` with the same certificate. Both are pinned to mlserver==1.7.1 and covered by tests.
4. Two model-load hooks: one below the adaptive batcher records each batch's size (Prometheus histogram
   `finml_inference_batch_size`); one above it writes the prediction audit log (workloads/model_server/audit.py).

Exit codes: 0 server stopped cleanly, 1 refused by the gate, 2 bad input, 3 registry or lineage unreadable.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import json
import os
import sys
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from workloads.model_server import gate as load_gate

DEFAULT_HTTP_PORT, DEFAULT_GRPC_PORT, DEFAULT_METRICS_PORT = 8443, 8444, 9443
BATCH_SIZE_METRIC = "finml_inference_batch_size"


def _env(name: str, default: Any = None) -> Any:
    return os.environ.get(name, default)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="finml-model-server", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--name", default=_env("FINML_MODEL_NAME"), help="registered model name")
    p.add_argument("--alias", default=_env("FINML_MODEL_ALIAS", "champion"), help="registry alias to serve")
    p.add_argument("--site", default=_env("FINML_SITE"), help="this server's site, e.g. onprem:fra-dc1")
    p.add_argument("--residency-file", default=_env("FINML_RESIDENCY_FILE"),
                   help="JSON {classification: [site patterns]} from the stack file")
    p.add_argument("--service-name", default=_env("FINML_SERVICE_NAME"), help="model name in the V2 API")
    p.add_argument("--models-dir", default=_env("FINML_MODELS_DIR", "/models"), help="writable settings directory")
    p.add_argument("--host", default=_env("FINML_HOST", "0.0.0.0"))
    p.add_argument("--http-port", type=int, default=int(_env("FINML_HTTP_PORT", DEFAULT_HTTP_PORT)))
    p.add_argument("--grpc-port", type=int, default=int(_env("FINML_GRPC_PORT", DEFAULT_GRPC_PORT)))
    p.add_argument("--metrics-port", type=int, default=int(_env("FINML_METRICS_PORT", DEFAULT_METRICS_PORT)))
    p.add_argument("--tls-cert", default=_env("FINML_TLS_CERT"), help="server certificate (PEM)")
    p.add_argument("--tls-key", default=_env("FINML_TLS_KEY"), help="server key (PEM)")
    p.add_argument("--max-batch-size", type=int, default=int(_env("FINML_MAX_BATCH_SIZE", 32)))
    p.add_argument("--max-batch-time-ms", type=int, default=int(_env("FINML_MAX_BATCH_TIME_MS", 10)))
    p.add_argument("--parallel-workers", type=int, default=int(_env("FINML_PARALLEL_WORKERS", 1)))
    p.add_argument("--audit-key-file", default=_env("FINML_AUDIT_KEY_FILE"), help="HMAC key for restricted features")
    p.add_argument("--restricted-features", default=_env("FINML_RESTRICTED_FEATURES", ""),
                   help="comma-separated feature names logged only as keyed hashes")
    p.add_argument("--gate-only", action="store_true", help="run the load gate and exit")
    args = p.parse_args(argv)
    missing = [flag for flag, value in (("--name", args.name), ("--site", args.site),
                                        ("--residency-file", args.residency_file)) if not value]
    if not args.gate_only:
        missing += [flag for flag, value in (("--tls-cert", args.tls_cert), ("--tls-key", args.tls_key),
                                             ("--audit-key-file", args.audit_key_file)) if not value]
    if missing:
        p.error(f"missing {', '.join(missing)} (or their FINML_* environment variables); the server never starts "
                f"without a gate, TLS and an audit key")
    return args


def write_settings(args: argparse.Namespace, result: load_gate.GateResult) -> Path:
    """MLServer's settings.json and <model>/model-settings.json for the checked version."""
    root = Path(args.models_dir)
    model_dir = root / (args.service_name or args.name)
    model_dir.mkdir(parents=True, exist_ok=True)
    settings = {
        "host": args.host, "http_port": args.http_port, "grpc_port": args.grpc_port,
        "metrics_port": args.metrics_port, "metrics_dir": str(root / ".metrics"),
        "parallel_workers": args.parallel_workers, "load_models_at_startup": True, "debug": False,
    }
    (root / "settings.json").write_text(json.dumps(settings, indent=2) + "\n")
    model_settings = {
        "name": args.service_name or args.name,
        "implementation": "workloads.model_server.runtime.FinmlMLflowRuntime",
        "parameters": {"uri": result.model_uri, "version": result.version},
        "max_batch_size": args.max_batch_size,
        "max_batch_time": args.max_batch_time_ms / 1000.0,
    }
    (model_dir / "model-settings.json").write_text(json.dumps(model_settings, indent=2) + "\n")
    return root


def _grpc_server_class(credentials: Any) -> type:
    import mlserver.grpc.server as grpc_server_module
    from mlserver.grpc import GRPCServer

    class TlsGRPCServer(GRPCServer):
        """MLServer's gRPC server with its only listener made a TLS one."""

        def _create_server(self):  # noqa: ANN202 — MLServer's signature
            real_aio = grpc_server_module.aio

            def secure_server(*a: Any, **kw: Any) -> Any:
                server = real_aio.server(*a, **kw)
                server.add_insecure_port = lambda address: server.add_secure_port(address, credentials)
                return server

            grpc_server_module.aio = SimpleNamespace(server=secure_server)
            try:
                return super()._create_server()
            finally:
                grpc_server_module.aio = real_aio

    return TlsGRPCServer


def build_server(settings: Any, args: argparse.Namespace, result: load_gate.GateResult) -> Any:
    import grpc
    from mlserver import MLServer
    from mlserver.batching import load_batching

    from workloads.model_server.audit import AuditLog, restricted_features

    cert, key = Path(args.tls_cert).read_bytes(), Path(args.tls_key).read_bytes()
    tls = {"ssl_certfile": args.tls_cert, "ssl_keyfile": args.tls_key}
    settings._custom_rest_server_settings = dict(tls)
    settings._custom_metrics_server_settings = dict(tls)
    credentials = grpc.ssl_server_credentials([(key, cert)])
    audit = AuditLog(result.name, result.version, Path(args.audit_key_file).read_bytes().strip(),
                     restricted_features(args.restricted_features))
    grpc_class = _grpc_server_class(credentials)

    async def record_batch_size(model: Any) -> Any:
        from prometheus_client import REGISTRY, Histogram

        histogram = REGISTRY._names_to_collectors.get(BATCH_SIZE_METRIC) or Histogram(  # noqa: SLF001
            BATCH_SIZE_METRIC, "Rows per predict call the runtime receives (after adaptive batching)",
            ["model"], buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256))
        inner = model.predict

        @functools.wraps(inner)  # keeps __wrapped__ -> the bound method, which MLServer's batcher looks up
        async def predict(payload: Any) -> Any:
            histogram.labels(model=model.name).observe(max(int(payload.inputs[0].shape[0]), 1)
                                                       if payload.inputs and payload.inputs[0].shape else 1)
            return await inner(payload)

        model.predict = predict
        return model

    async def write_audit(model: Any) -> Any:
        inner = model.predict

        @functools.wraps(inner)
        async def predict(payload: Any) -> Any:
            response = await inner(payload)
            audit.write(payload, response)
            return response

        model.predict = predict
        return model

    class FinmlMLServer(MLServer):
        def _create_model_registry(self):  # noqa: ANN202
            registry = super()._create_model_registry()
            hooks = registry._on_model_load  # noqa: SLF001 — the hook list MLServer passes to every model
            hooks.insert(hooks.index(load_batching), record_batch_size)
            hooks.append(write_audit)
            return registry

        def _create_servers(self):  # noqa: ANN202
            super()._create_servers()
            self._grpc_server = grpc_class(self._settings, self._data_plane, self._model_repository_handlers)

    return FinmlMLServer(settings)


def gate(args: argparse.Namespace) -> load_gate.GateResult:
    from mlflow.tracking import MlflowClient

    residency = load_gate.load_residency(args.residency_file)
    client = MlflowClient(tracking_uri=os.environ.get("MLFLOW_TRACKING_URI"))
    return load_gate.check(client, args.name, args.alias, args.site, residency)


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    args = parse_args(argv)
    try:
        result = gate(args)
    except load_gate.GateRefused as exc:
        load_gate.emit(exc.record)
        print(f"finml-model-server: refused: {exc}", file=sys.stderr)
        return exc.exit_code
    load_gate.emit(result.record())
    if args.gate_only:
        return load_gate.EXIT_ALLOWED
    from mlserver.cli.serve import load_settings

    root = write_settings(args, result)

    async def run() -> None:
        settings, models_settings = await load_settings(str(root))
        server = build_server(settings, args, result)
        await server.start(models_settings)

    asyncio.run(run())
    return 0


if __name__ == "__main__":
    sys.exit(main())
