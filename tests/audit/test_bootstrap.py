"""`finml bootstrap` against its own fresh moto server: created once, unchanged the second time, with the settings a
Pulumi state home needs — and the live audit finds nothing on what it made."""

from __future__ import annotations

import json

import pytest

from finml.audit.moto_seed import ACCOUNT, HOME, ROOT, STACK, MotoServer, run_finml

pytestmark = pytest.mark.slow

BUCKET = f"finml-{STACK}-pulumi-state-{ACCOUNT}"
ALIAS = f"alias/finml-{STACK}-pulumi-secrets"
BOOTSTRAP_POLICY = json.loads((ROOT / "iam" / "finml-bootstrap-policy.json").read_text())


@pytest.fixture(scope="module")
def boot():
    with MotoServer() as server:
        first = run_finml("bootstrap", "--stack", STACK, "--endpoint-url", server.url, "--json")
        second = run_finml("bootstrap", "--stack", STACK, "--endpoint-url", server.url)
        yield server, first, second


def test_first_run_creates_second_changes_nothing(boot):
    _, first, second = boot
    assert first.returncode == 0, first.stderr
    doc = json.loads(first.stdout)
    actions = {c["what"]: c["action"] for c in doc["changes"]}
    assert actions[f"KMS key {ALIAS}"] == "created" and actions[f"bucket {BUCKET}"] == "created"
    assert doc["changed"] > 0 and doc["bucket"] == BUCKET and doc["region"] == HOME
    assert second.returncode == 0, second.stderr
    assert f"bootstrap {STACK}: no change" in second.stdout
    assert all(line.lstrip().startswith(("unchanged", "bootstrap", "pulumi")) for line in second.stdout.splitlines())
    assert f"pulumi login 's3://{BUCKET}?region={HOME}&awssdk=v2'" in second.stdout
    assert f"--secrets-provider 'awskms://{ALIAS}?region={HOME}'" in second.stdout


def test_bucket_and_key_have_the_required_settings(boot):
    server = boot[0]
    s3, kms = server.client("s3", HOME), server.client("kms", HOME)
    assert s3.get_bucket_location(Bucket=BUCKET)["LocationConstraint"] == HOME
    assert s3.get_bucket_versioning(Bucket=BUCKET)["Status"] == "Enabled"
    key_id = next(a["TargetKeyId"] for a in kms.list_aliases()["Aliases"] if a["AliasName"] == ALIAS)
    key = kms.describe_key(KeyId=key_id)["KeyMetadata"]
    assert key["KeyManager"] == "CUSTOMER" and key["KeyState"] == "Enabled"
    assert kms.get_key_rotation_status(KeyId=key_id)["KeyRotationEnabled"] is True
    rule = s3.get_bucket_encryption(Bucket=BUCKET)["ServerSideEncryptionConfiguration"]["Rules"][0]
    assert rule["ApplyServerSideEncryptionByDefault"] == {"SSEAlgorithm": "aws:kms", "KMSMasterKeyID": key["Arn"]}
    assert rule["BucketKeyEnabled"] is True
    assert s3.get_public_access_block(Bucket=BUCKET)["PublicAccessBlockConfiguration"] == {
        "BlockPublicAcls": True, "IgnorePublicAcls": True, "BlockPublicPolicy": True, "RestrictPublicBuckets": True}
    statement = json.loads(s3.get_bucket_policy(Bucket=BUCKET)["Policy"])["Statement"]
    assert {"Sid": "DenyInsecureTransport", "Effect": "Deny", "Principal": "*", "Action": "s3:*",
            "Resource": [f"arn:aws:s3:::{BUCKET}", f"arn:aws:s3:::{BUCKET}/*"],
            "Condition": {"Bool": {"aws:SecureTransport": "false"}}} in statement
    policy = json.loads(kms.get_key_policy(KeyId=key_id, PolicyName="default")["Policy"])
    assert [s["Principal"] for s in policy["Statement"]] == [{"AWS": f"arn:aws:iam::{ACCOUNT}:root"}]
    tags = {t["Key"]: t["Value"] for t in s3.get_bucket_tagging(Bucket=BUCKET)["TagSet"]}
    assert tags["finml:stack"] == STACK and tags["finml:classification"] == "confidential"


def test_the_bootstrap_policy_covers_every_call(boot):
    used = set(json.loads(boot[1].stdout)["iamActionsUsed"])
    allowed = {a for s in BOOTSTRAP_POLICY["Statement"] for a in s["Action"]}
    assert used <= allowed, sorted(used - allowed)


def test_the_audit_finds_nothing_on_the_state_bucket_or_key(boot):
    server = boot[0]
    for region in (HOME, "eu-west-1"):
        server.client("ec2", region).enable_ebs_encryption_by_default()
    proc = run_finml("audit", "--stack", STACK, "--endpoint-url", server.url, "--no-drift", "--format", "json")
    doc = json.loads(proc.stdout)
    assert proc.returncode == 0, doc["stacks"][0]["violations"]
    assert doc["passed"] is True and doc["stacks"][0]["resourcesByType"]["aws:s3/bucket:Bucket"] == 1


def test_region_must_be_a_site_of_the_stack(boot):
    proc = run_finml("bootstrap", "--stack", STACK, "--endpoint-url", boot[0].url, "--region", "us-east-1")
    assert proc.returncode == 2 and "--region: 'us-east-1' is not a region of an AWS site" in proc.stderr


def test_onprem_only_stack_is_bad_input(boot):
    proc = run_finml("bootstrap", "--stack", "onprem-dc1", "--endpoint-url", boot[0].url, stacks=ROOT / "stacks")
    assert proc.returncode == 2 and "has no AWS site" in proc.stderr and "Traceback" not in proc.stderr
