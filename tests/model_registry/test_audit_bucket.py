"""The audit trail's copy in an S3 Object Lock bucket (compliance mode, SSE-KMS), against moto in server mode."""

from __future__ import annotations

import datetime as dt
import json

import pytest
from registry_helpers import log_model, run_cli

from finml.audit.moto_seed import HOME, MotoServer, _free_port, aws_env
from finml.model_registry.audit import AuditLog, verify
from finml.model_registry.audit_bucket import DEFAULT_RETENTION_DAYS, AuditBucket, AuditBucketError

pytestmark = pytest.mark.slow
BUCKET = "finml-audit-fra"


@pytest.fixture(scope="module")
def moto():
    with MotoServer(env=aws_env()) as server:
        yield server


@pytest.fixture(scope="module")
def lock_bucket(moto):
    s3 = moto.client("s3")
    s3.create_bucket(Bucket=BUCKET, CreateBucketConfiguration={"LocationConstraint": HOME},
                     ObjectLockEnabledForBucket=True)
    s3.put_object_lock_configuration(Bucket=BUCKET, ObjectLockConfiguration={
        "ObjectLockEnabled": "Enabled", "Rule": {"DefaultRetention": {"Mode": "COMPLIANCE", "Years": 7}}})
    key_id = moto.client("kms").create_key(Description="site CMK")["KeyMetadata"]["Arn"]
    return s3, key_id


@pytest.fixture
def env(monkeypatch, moto):
    for k in [k for k in list(__import__("os").environ) if k.startswith("AWS_")]:
        monkeypatch.delenv(k)
    for k, v in aws_env().items():
        if k.startswith("AWS_"):
            monkeypatch.setenv(k, v)
    return aws_env()


def bucket(moto, prefix, key_id=None, **kw):
    return AuditBucket(BUCKET, prefix, region=HOME, endpoint_url=moto.url, kms_key_id=key_id, **kw)


def fill(path, target, n=3, skip=()):
    log = AuditLog(path)
    records = [log.append({"action": "promote", "decision": "refused", "i": i}) for i in range(n)]
    for r in records:
        if r["seq"] not in skip:
            target.put(r)
    return records


def verify_cli(moto, path, uri, env):
    return run_cli("model", "audit-log", "verify", "--audit-log", str(path), "--audit-bucket", uri,
                   "--audit-bucket-region", HOME, "--endpoint-url", moto.url, env=env, timeout=120)


def test_records_land_locked_encrypted_and_verify(tmp_path, moto, lock_bucket, env):
    s3, key_id = lock_bucket
    target = bucket(moto, "audit/fra", key_id)
    path = tmp_path / "audit.jsonl"
    records = fill(path, target)
    lines = path.read_bytes().splitlines()
    for record, line in zip(records, lines):
        key = f"audit/fra/{record['seq']:012d}-{record['hash']}.json"
        head = s3.head_object(Bucket=BUCKET, Key=key)
        assert head["ObjectLockMode"] == "COMPLIANCE"
        until = head["ObjectLockRetainUntilDate"]
        expected = dt.datetime.now(dt.timezone.utc) + dt.timedelta(days=DEFAULT_RETENTION_DAYS)
        assert abs((until - expected).total_seconds()) < 600
        assert head["ServerSideEncryption"] == "aws:kms" and head["SSEKMSKeyId"] == key_id
        assert s3.get_object(Bucket=BUCKET, Key=key)["Body"].read() == line
    # A record's object is never replaced (If-None-Match: *), even with the same key.
    with pytest.raises(AuditBucketError, match="PreconditionFailed|412"):
        target.put(records[-1])
    proc = verify_cli(moto, path, "s3://finml-audit-fra/audit/fra", env)
    assert proc.returncode == 0, proc.stderr
    assert "3 record(s) stored" in proc.stdout and "Traceback" not in proc.stderr


def test_verify_names_a_record_missing_from_the_bucket(tmp_path, moto, lock_bucket, env):
    path = tmp_path / "audit.jsonl"
    fill(path, bucket(moto, "audit/gap"), n=4, skip={2})
    proc = verify_cli(moto, path, "s3://finml-audit-fra/audit/gap", env)
    assert proc.returncode == 1
    assert "record seq 2" in proc.stderr and "missing from the bucket" in proc.stderr, proc.stderr
    assert "Traceback" not in proc.stderr


def test_verify_catches_tail_removal_without_expect_head(tmp_path, moto, lock_bucket, env):
    path = tmp_path / "audit.jsonl"
    records = fill(path, bucket(moto, "audit/tail"), n=3)
    path.write_bytes(b"".join(line + b"\n" for line in path.read_bytes().splitlines()[:-1]))
    assert verify(path).ok  # the local chain alone cannot tell
    proc = verify_cli(moto, path, "s3://finml-audit-fra/audit/tail", env)
    assert proc.returncode == 1
    assert f"{records[-1]['seq']:012d}-{records[-1]['hash']}" in proc.stderr, proc.stderr
    assert "removed from the end" in proc.stderr


def test_verify_names_a_locally_edited_record(tmp_path, moto, lock_bucket, env):
    path = tmp_path / "audit.jsonl"
    fill(path, bucket(moto, "audit/edit"), n=2)
    lines = path.read_bytes().splitlines()
    record = json.loads(lines[0])
    # Re-serialised with other whitespace: the same content and hash, different bytes than were locked.
    lines[0] = json.dumps(record, sort_keys=True).encode()
    path.write_bytes(b"".join(line + b"\n" for line in lines))
    proc = verify_cli(moto, path, "s3://finml-audit-fra/audit/edit", env)
    assert proc.returncode == 1 and "record seq 1" in proc.stderr and "differs" in proc.stderr, proc.stderr


def test_bad_bucket_uri_is_bad_input(tmp_path, env, moto):
    path = tmp_path / "audit.jsonl"
    AuditLog(path).append({"action": "x"})
    proc = verify_cli(moto, path, "finml-audit-fra/audit", env)
    assert proc.returncode == 2 and "s3://BUCKET/PREFIX" in proc.stderr and "Traceback" not in proc.stderr


# ------------------------------------------------------------------ one real promotion (a refusal) through the CLI

TXNS = ("card-transactions", "confidential", "aws:eu-central-1")
KYC = ("customer-kyc", "restricted", "onprem:fra-dc1")


def promote(registry, version, path, endpoint, uri="s3://finml-audit-fra/audit/cli"):
    env = aws_env()
    env.update({k: v for k, v in registry.env(registry.writer).items() if not k.startswith("AWS_")})
    env["FINML_AUDIT_BUCKET"] = uri
    env["AWS_ENDPOINT_URL"] = endpoint  # boto3 honours it natively
    return run_cli("model", "promote", "--stack", "hybrid-prod", "--site", "aws:eu-central-1", "--tracking-uri",
                   registry.tracking_uri, "--audit-log", str(path), "--audit-bucket-region", HOME, "--alias",
                   "champion", "fraud-audit-bucket", version, env=env)


def test_promotion_refusal_is_uploaded_and_unreachable_bucket_exits_3(tmp_path, registry, moto, lock_bucket):
    s3, _ = lock_bucket
    version = log_model(registry, "fraud-audit-bucket", [TXNS, KYC], metrics={"final_holdout_pr_auc": 0.93})
    path = tmp_path / "audit.jsonl"
    proc = promote(registry, version, path, moto.url)
    assert proc.returncode == 1 and "residency.restricted" in proc.stderr, proc.stderr
    record = AuditLog(path).records()[-1]
    key = f"audit/cli/{record['seq']:012d}-{record['hash']}.json"
    assert s3.get_object(Bucket=BUCKET, Key=key)["Body"].read() == path.read_bytes().rstrip(b"\n")

    proc = promote(registry, version, path, f"http://127.0.0.1:{_free_port()}")
    assert proc.returncode == 3, proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert "audit record 2" in lines[0] and "kept in" in lines[0] and "NOT in the audit bucket" in lines[0]
    assert verify(path).ok and AuditLog(path).records()[-1]["seq"] == 2
