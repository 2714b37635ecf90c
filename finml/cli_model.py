"""`finml model …` — the governed model registry: lineage, promotion gate, cross-site copy, audit trail.

Every command talks to an MLflow registry found from the stack (`finml:platform.registry.sites.<site>.trackingUri`)
or given with `--tracking-uri`, with MLflow's standard client environment: MLFLOW_TRACKING_USERNAME,
MLFLOW_TRACKING_PASSWORD and MLFLOW_TRACKING_SERVER_CERT_PATH (the site's CA bundle). The residency rules always come
from the stack file. Exit codes: 0 allowed/ok, 1 refused or audit log broken, 2 bad input, 3 registry unreachable
or the audit record not written (locally, or to the `--audit-bucket` Object Lock copy: the local record is kept).
"""

from __future__ import annotations

import argparse
import contextlib
import getpass
import json
import os
import sys
import tempfile
from pathlib import Path
from typing import Any

from finml.envscope import scoped_environ

EXIT_OK, EXIT_REFUSED, EXIT_BAD_INPUT, EXIT_ENVIRONMENT = 0, 1, 2, 3
DEFAULT_AUDIT_LOG = Path("build") / "model-registry-audit.jsonl"
AUDIT_ENV = "FINML_AUDIT_LOG"
COPY_EXPERIMENT = "finml-cross-site-copies"
# Credentials for the target registry of a copy, when they differ from the source's (MLFLOW_* are the fallback).
TARGET_ENV = {"MLFLOW_TRACKING_USERNAME": "FINML_TARGET_TRACKING_USERNAME",
              "MLFLOW_TRACKING_PASSWORD": "FINML_TARGET_TRACKING_PASSWORD",
              "MLFLOW_TRACKING_SERVER_CERT_PATH": "FINML_TARGET_TRACKING_SERVER_CERT_PATH"}
COPY_TAGS = ("finml.copy.source_site", "finml.copy.source_registry", "finml.copy.source_model",
             "finml.copy.source_version", "finml.copy.source_run_id", "finml.lineage.digest")


class RegistryUnavailable(Exception):
    """The registry could not be reached or refused our credentials (exit 3)."""


def _usage(msg: str):
    from finml.cli import UsageError

    return UsageError(msg)


# ------------------------------------------------------------------------------------------------ plumbing


def _stack(args: argparse.Namespace):
    from finml.cli import _load_stack, _stack_names
    from finml.config import ConfigError

    name = _stack_names(args)[0]
    try:
        return _load_stack(args, name)
    except ConfigError as exc:
        raise _usage(str(exc)) from None


def _check_site(stack, site: str, flag: str) -> None:
    if site not in stack.platform.sites:
        raise _usage(f"{flag}: unknown site {site!r} in {stack.source}; declared sites: "
                     f"{', '.join(sorted(stack.platform.sites))}")


def _registry_uri(stack, site: str, override: str | None, flag: str) -> str:
    if override:
        if not override.startswith(("https://", "http://")):
            raise _usage(f"{flag}: {override!r} is not an http(s) URI")
        return override
    if stack is None:
        raise _usage(f"{flag} or --stack is needed to find the registry")
    registry = stack.platform.registry
    if registry is None or site not in registry.sites:
        hosted = ", ".join(sorted(registry.sites)) if registry else "none"
        raise _usage(f"{stack.source}: finml:platform.registry.sites has no registry for {site!r} "
                     f"(sites with a registry: {hosted}); add one or pass {flag}")
    return registry.tracking_uri(site)


def _as_target():
    """While active, MLflow's standard variables hold the target registry's credentials (copy only)."""
    return scoped_environ({std: os.environ[alt] for std, alt in TARGET_ENV.items() if os.environ.get(alt)},
                          also_restore=TARGET_ENV)


def _client(uri: str):
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "2")
    from mlflow import MlflowClient

    return MlflowClient(tracking_uri=uri, registry_uri=uri)


def _registry_error(exc: BaseException, uri: str) -> Exception:
    """Map an MLflow client error to bad input (no such model/version) or an unreachable/refusing registry."""
    from mlflow.exceptions import MlflowException, RestException

    text = " ".join(str(exc).split())[:400]
    if isinstance(exc, RestException) and exc.error_code in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE"):
        return _usage(f"{uri}: {text}")
    if isinstance(exc, MlflowException) and "RESOURCE_DOES_NOT_EXIST" in text:
        return _usage(f"{uri}: {text}")
    hint = ""
    if "401" in text or "Unauthorized" in text or "credentials" in text.lower():
        hint = " (set MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD)"
    elif "CERTIFICATE_VERIFY_FAILED" in text or "SSL" in text:
        hint = " (set MLFLOW_TRACKING_SERVER_CERT_PATH to the site's CA bundle)"
    return RegistryUnavailable(f"registry {uri}: {text}{hint}")


def _lineage(client, uri: str, name: str, version: str):
    from finml.model_registry.lineage import resolve_lineage

    try:
        return resolve_lineage(client, name, version)
    except Exception as exc:  # noqa: BLE001 — mapped to exit 2 or 3 with one line
        raise _registry_error(exc, uri) from None


def _actor() -> dict[str, str]:
    try:
        os_user = getpass.getuser()
    except Exception:  # noqa: BLE001 — no passwd entry in some containers
        os_user = str(os.getuid())
    return {"registry_user": os.environ.get("MLFLOW_TRACKING_USERNAME", ""), "os_user": os_user,
            "ci_job": os.environ.get("CI_JOB_ID", os.environ.get("GITHUB_RUN_ID", ""))}


def _audit(args: argparse.Namespace, event: dict[str, Any]) -> dict[str, Any]:
    from finml.model_registry.audit import AuditError, AuditLog

    path = Path(args.audit_log or os.environ.get(AUDIT_ENV) or DEFAULT_AUDIT_LOG)
    bucket = _audit_bucket(args)
    try:
        record = AuditLog(path).append({"actor": _actor(), **event})
    except (AuditError, OSError) as exc:
        raise RegistryUnavailable(f"audit log {path}: {exc}") from None
    if bucket is not None:
        from finml.model_registry.audit_bucket import AuditBucketError

        try:
            bucket.put(record)
        except AuditBucketError as exc:
            raise RegistryUnavailable(f"audit record {record['seq']} ({event.get('action')} "
                                      f"{event.get('decision')}) is kept in {path} but NOT in the audit bucket: "
                                      f"{exc}") from None
    return record


def _audit_bucket(args: argparse.Namespace):
    """The Object Lock bucket copy from --audit-bucket / $FINML_AUDIT_BUCKET (None when neither is set)."""
    from finml.model_registry.audit_bucket import (BUCKET_ENV, DEFAULT_RETENTION_DAYS, KMS_ENV, REGION_ENV,
                                                   AuditBucket)

    uri = getattr(args, "audit_bucket", None) or os.environ.get(BUCKET_ENV)
    if not uri:
        return None
    days = getattr(args, "audit_retention_days", None) or DEFAULT_RETENTION_DAYS
    if days < 1:
        raise _usage(f"--audit-retention-days {days}: must be a positive number of days")
    try:
        return AuditBucket.from_uri(
            uri, region=getattr(args, "audit_bucket_region", None) or os.environ.get(REGION_ENV),
            endpoint_url=getattr(args, "endpoint_url", None), retention_days=days,
            kms_key_id=getattr(args, "audit_kms_key_id", None) or os.environ.get(KMS_ENV))
    except ValueError as exc:
        raise _usage(f"--audit-bucket / ${BUCKET_ENV}: {exc}") from None


def _decision_event(action: str, decision, lineage, **extra: Any) -> dict[str, Any]:
    return {"action": action, "decision": "allowed" if decision.allowed else "refused", "rule": decision.rule,
            "classification": decision.classification, "dataset": decision.dataset, "site": decision.site,
            "model": lineage.name, "version": lineage.version, "lineage_digest": lineage.digest,
            "message": decision.message, **extra}


def _refuse(decision) -> int:
    print(f"finml: {decision.message}", file=sys.stderr)
    return EXIT_REFUSED


# ------------------------------------------------------------------------------------------------ commands


def cmd_lineage(args: argparse.Namespace) -> int:
    stack = _stack(args) if args.stack else None
    if stack is not None:
        _check_site(stack, args.site, "--site")
    uri = _registry_uri(stack, args.site, args.tracking_uri, "--tracking-uri")
    lineage = _lineage(_client(uri), uri, args.name, args.version)
    if args.json:
        print(json.dumps({**lineage.record(), "digest": lineage.digest}, indent=2))
        return EXIT_OK
    print(f"model {lineage.name} version {lineage.version}  ({uri})")
    print(f"  -> logged model {lineage.logged_model_id or '(none)'}")
    print(f"  -> source run   {lineage.source_run_id or '(none)'}")
    for ds in lineage.datasets:
        print(f"  -> dataset {ds.name} digest {ds.digest}: {ds.classification} at {ds.site}"
              + (f"  [{ds.problem}]" if ds.problem else ""))
    if not lineage.datasets:
        print("  -> (no dataset inputs)")
    print(f"classification: {lineage.classification}" + ("  (unknown: treated as above restricted — "
                                                         "allowed nowhere)" if lineage.unknown else ""))
    for problem in lineage.problems:
        print(f"  problem: {problem}")
    print(f"lineage digest: {lineage.digest}")
    return EXIT_OK


def cmd_promote(args: argparse.Namespace) -> int:
    from finml.model_registry.gate import Threshold, metrics_decision, residency_decision

    stack = _stack(args)
    _audit_bucket(args)  # a bad --audit-bucket is refused before the registry is touched
    _check_site(stack, args.site, "--site")
    uri = _registry_uri(stack, args.site, args.tracking_uri, "--tracking-uri")
    client = _client(uri)
    lineage = _lineage(client, uri, args.name, args.version)
    residency = {k: list(v) for k, v in stack.platform.residency.items()}
    decision = residency_decision(lineage, args.site, residency)
    if decision.allowed:
        thresholds = [Threshold(t.metric, t.min, t.max)
                      for t in (stack.platform.registry.promotion.metrics if stack.platform.registry else [])]
        metrics: dict[str, float] = {}
        if thresholds:
            try:
                metrics = dict(client.get_run(lineage.source_run_id).data.metrics)
            except Exception as exc:  # noqa: BLE001
                raise _registry_error(exc, uri) from None
        metric_gate = metrics_decision(lineage, args.site, metrics, thresholds)
        if not metric_gate.allowed:
            decision = metric_gate
    extra = {"alias": args.alias, "registry": uri, "stack": stack.stack}
    if not decision.allowed:
        _audit(args, _decision_event("promote", decision, lineage, **extra))
        return _refuse(decision)
    try:
        client.set_registered_model_alias(args.name, args.alias, lineage.version)
        client.set_model_version_tag(args.name, lineage.version, "finml.lineage.digest", lineage.digest)
    except Exception as exc:  # noqa: BLE001
        raise _registry_error(exc, uri) from None
    record = _audit(args, _decision_event("promote", decision, lineage, **extra))
    print(f"promoted {args.name} version {lineage.version} to @{args.alias} on {args.site}: {decision.message}; "
          f"audit record {record['seq']}")
    return EXIT_OK


def cmd_copy(args: argparse.Namespace) -> int:
    from finml.model_registry.gate import residency_decision

    stack = _stack(args)
    _audit_bucket(args)
    _check_site(stack, args.from_site, "--from")
    _check_site(stack, args.to_site, "--to")
    if args.from_site == args.to_site:
        raise _usage("--from and --to name the same site; a copy moves a model between sites")
    src_uri = _registry_uri(stack, args.from_site, args.from_uri, "--from-uri")
    dst_uri = _registry_uri(stack, args.to_site, args.to_uri, "--to-uri")
    src = _client(src_uri)
    lineage = _lineage(src, src_uri, args.name, args.version)
    residency = {k: list(v) for k, v in stack.platform.residency.items()}
    decision = residency_decision(lineage, args.to_site, residency)
    target_name = args.target_name or args.name
    extra = {"from_site": args.from_site, "to_site": args.to_site, "source_registry": src_uri,
             "target_registry": dst_uri, "target_model": target_name, "stack": stack.stack}
    if not decision.allowed:
        # Nothing was read from or written to the target: a refused copy leaves it untouched.
        _audit(args, _decision_event("copy", decision, lineage, **extra))
        return _refuse(decision)
    new_version = _copy_allowed(src, src_uri, dst_uri, args, lineage, target_name)
    record = _audit(args, _decision_event("copy", decision, lineage, target_version=new_version, **extra))
    print(f"copied {args.name} version {lineage.version} ({args.from_site}) to {target_name} version {new_version} "
          f"({args.to_site}): {decision.message}; audit record {record['seq']}")
    return EXIT_OK


def _copy_allowed(src, src_uri: str, dst_uri: str, args: argparse.Namespace, lineage, target_name: str) -> str:
    """Download the version's artifacts, then at the target: a run carrying the same dataset inputs (so the copy's
    lineage is computed exactly as the source's), the artifacts, and a model version tagged with its source."""
    import mlflow

    try:
        source_run = src.get_run(lineage.source_run_id)
        with tempfile.TemporaryDirectory(prefix="finml-copy-") as tmp:
            local = mlflow.artifacts.download_artifacts(artifact_uri=f"models:/{args.name}/{lineage.version}",
                                                        dst_path=tmp, tracking_uri=src_uri)
            return _write_target(dst_uri, args, lineage, target_name, source_run, Path(local), src_uri)
    except Exception as exc:  # noqa: BLE001
        if isinstance(exc, RegistryUnavailable) or type(exc).__name__ == "UsageError":
            raise
        raise _registry_error(exc, src_uri) from None


def _write_target(dst_uri, args, lineage, target_name, source_run, local: Path, src_uri: str) -> str:
    from mlflow.entities import Metric

    from finml.model_registry.lineage import resolve_lineage

    tags = {"finml.copy.source_site": args.from_site, "finml.copy.source_registry": src_uri,
            "finml.copy.source_model": args.name, "finml.copy.source_version": lineage.version,
            "finml.copy.source_run_id": lineage.source_run_id or "", "finml.lineage.digest": lineage.digest}
    with _as_target():
        dst = _client(dst_uri)
        run_id = None
        try:
            exp = dst.get_experiment_by_name(COPY_EXPERIMENT)
            exp_id = exp.experiment_id if exp else dst.create_experiment(COPY_EXPERIMENT)
            run = dst.create_run(exp_id, tags=tags, run_name=f"copy-{args.name}-v{lineage.version}")
            run_id = run.info.run_id
            inputs = list(source_run.inputs.dataset_inputs)
            for start in range(0, len(inputs), 100):
                dst.log_inputs(run_id, datasets=inputs[start:start + 100])
            metrics = [Metric(k, v, 0, 0) for k, v in source_run.data.metrics.items()]
            if metrics:
                dst.log_batch(run_id, metrics=metrics)
            dst.log_artifacts(run_id, str(local), artifact_path="model")
            dst.set_terminated(run_id)
            try:
                dst.get_registered_model(target_name)
            except Exception:  # noqa: BLE001 — first copy of this model at the target
                dst.create_registered_model(target_name, tags={"finml.copy.source_registry": src_uri})
            artifact_uri = dst.get_run(run_id).info.artifact_uri
            mv = dst.create_model_version(target_name, f"{artifact_uri}/model", run_id=run_id, tags=tags)
            copied = resolve_lineage(dst, target_name, mv.version)
            if copied.digest != lineage.digest:
                raise RegistryUnavailable(f"registry {dst_uri}: copied lineage digest {copied.digest} differs from "
                                          f"the source's {lineage.digest}")
            return str(mv.version)
        except Exception as exc:  # noqa: BLE001
            if run_id is not None:
                with contextlib.suppress(Exception):
                    dst.delete_run(run_id)
            if isinstance(exc, RegistryUnavailable):
                raise
            raise _registry_error(exc, dst_uri) from None


def cmd_audit_verify(args: argparse.Namespace) -> int:
    from finml.model_registry.audit import verify

    path = Path(args.audit_log or os.environ.get(AUDIT_ENV) or DEFAULT_AUDIT_LOG)
    if not path.exists():
        raise _usage(f"{path}: audit log not found (pass --audit-log PATH or set {AUDIT_ENV})")
    bucket = _audit_bucket(args)
    result = verify(path, expect_head=args.expect_head)
    print(result.message(path), file=sys.stdout if result.ok else sys.stderr)
    if not result.ok:
        return EXIT_REFUSED
    if bucket is not None:
        from finml.model_registry.audit_bucket import AuditBucketError

        try:
            ok, message = bucket.verify(path)
        except AuditBucketError as exc:
            raise RegistryUnavailable(str(exc)) from None
        print(message, file=sys.stdout if ok else sys.stderr)
        return EXIT_OK if ok else EXIT_REFUSED
    return EXIT_OK


# ------------------------------------------------------------------------------------------------ parser


def register(sub) -> None:
    model = sub.add_parser("model", help="governed model registry: lineage, promotion gate, cross-site copy, audit")
    msub = model.add_subparsers(dest="model_command", required=True)

    def common(p: argparse.ArgumentParser, stack_required: bool = True, audited: bool = True) -> None:
        p.add_argument("--stack", required=stack_required, help="stack name (stacks/Pulumi.<stack>.yaml): residency "
                                                                "rules and registries")
        p.add_argument("--audit-log", help=f"hash-chained audit log (default: ${AUDIT_ENV} or {DEFAULT_AUDIT_LOG})")
        if audited:
            bucket_options(p)

    def bucket_options(p: argparse.ArgumentParser, write: bool = True) -> None:
        p.add_argument("--audit-bucket", help="S3 Object Lock copy of the log, s3://BUCKET/PREFIX (default: "
                                              "$FINML_AUDIT_BUCKET; none when unset)")
        p.add_argument("--audit-bucket-region", help="the bucket's region (default: $FINML_AUDIT_BUCKET_REGION or "
                                                     "the AWS SDK's)")
        p.add_argument("--endpoint-url", help="S3 endpoint override (default: $AWS_ENDPOINT_URL or AWS's)")
        if write:
            p.add_argument("--audit-retention-days", type=int, help="compliance retention of each uploaded record "
                                                                    "(default: 7 years)")
            p.add_argument("--audit-kms-key-id", help="CMK for SSE-KMS (default: $FINML_AUDIT_KMS_KEY_ID or the "
                                                      "bucket's default key)")

    p = msub.add_parser("lineage", help="print a model version's lineage chain and computed classification")
    common(p, stack_required=False, audited=False)
    p.add_argument("--site", required=True, help="site whose registry holds the model")
    p.add_argument("--tracking-uri", help="registry URI (default: the site's registry from the stack)")
    p.add_argument("--json", action="store_true", help="print the lineage record as JSON")
    p.add_argument("name")
    p.add_argument("version")
    p.set_defaults(func=_guarded(cmd_lineage), all=False)

    p = msub.add_parser("promote", help="set an alias if the lineage may live on the site and metrics pass")
    common(p)
    p.add_argument("--site", required=True, help="site whose registry holds the model")
    p.add_argument("--alias", required=True, help="alias to set, e.g. champion")
    p.add_argument("--tracking-uri", help="registry URI (default: the site's registry from the stack)")
    p.add_argument("name")
    p.add_argument("version")
    p.set_defaults(func=_guarded(cmd_promote), all=False)

    p = msub.add_parser("copy", help="copy a model version to another site's registry if its lineage may go there")
    common(p)
    p.add_argument("--from", dest="from_site", required=True, help="source site")
    p.add_argument("--to", dest="to_site", required=True, help="target site")
    p.add_argument("--from-uri", help="source registry URI (default: from the stack)")
    p.add_argument("--to-uri", help="target registry URI (default: from the stack); credentials from "
                                    "FINML_TARGET_TRACKING_* when they differ from MLFLOW_TRACKING_*")
    p.add_argument("--target-name", help="registered model name at the target (default: the same)")
    p.add_argument("name")
    p.add_argument("version")
    p.set_defaults(func=_guarded(cmd_copy), all=False)

    audit = msub.add_parser("audit-log", help="the registry audit trail")
    asub = audit.add_subparsers(dest="audit_command", required=True)
    p = asub.add_parser("verify", help="check the hash chain; names the first edited, removed or reordered record")
    p.add_argument("--audit-log", help=f"audit log (default: ${AUDIT_ENV} or {DEFAULT_AUDIT_LOG})")
    p.add_argument("--expect-head", help="hash the last record must have (catches removal from the end)")
    bucket_options(p, write=False)
    p.set_defaults(func=_guarded(cmd_audit_verify))


def _guarded(func):
    """Registry or audit-log trouble is the environment's (exit 3), reported as one line."""

    def run(args: argparse.Namespace) -> int:
        from finml.cli import UsageError  # under `python -m finml.cli` this is not __main__'s class: catch it here

        try:
            return func(args)
        except UsageError as exc:
            print(f"finml: {exc}", file=sys.stderr)
            return EXIT_BAD_INPUT
        except RegistryUnavailable as exc:
            print(f"finml: {exc}", file=sys.stderr)
            return EXIT_ENVIRONMENT

    run.__doc__ = func.__doc__
    return run
