"""What the audit does when AWS says no or slows down: a denied service is a finding per region (never a crash or a
silent pass), the read-only policy in iam/ is enough for everything else, throttling is retried with backoff, and
long listings are paginated."""

from __future__ import annotations

import json

import botocore.awsrequest
import pytest

from finml.audit.aws import AwsContext
from finml.audit.collect import LOG_GROUP, collect, enabled_regions
from finml.audit.moto_seed import ACCOUNT, HOME, ROOT, STACK, MotoServer, aws_env, run_finml

pytestmark = pytest.mark.slow

AUDIT_POLICY = json.loads((ROOT / "iam" / "finml-audit-policy.json").read_text())


def test_denied_service_is_a_finding_and_the_policy_grants_the_rest():
    # moto cannot verify EKS request signatures once IAM is enforced (SignatureDoesNotMatch on every call), so EKS
    # goes to a second, open server; the EKS actions of the policy are checked by the action-list test.
    with MotoServer() as server, MotoServer() as eks_server:
        for region in (HOME, "eu-west-1"):
            server.client("ec2", region).enable_ebs_encryption_by_default()
        iam = server.client("iam", "us-east-1")
        iam.create_user(UserName="auditor")
        policy = {"Version": "2012-10-17", "Statement": AUDIT_POLICY["Statement"] + [
            {"Sid": "NoCaches", "Effect": "Deny", "Action": "elasticache:*", "Resource": "*"}]}
        iam.put_user_policy(UserName="auditor", PolicyName="finml-audit", PolicyDocument=json.dumps(policy))
        key = iam.create_access_key(UserName="auditor")["AccessKey"]
        server.enforce_iam()
        env = aws_env(AWS_ACCESS_KEY_ID=key["AccessKeyId"], AWS_SECRET_ACCESS_KEY=key["SecretAccessKey"])
        env.pop("AWS_SESSION_TOKEN")
        env["AWS_ENDPOINT_URL_EKS"] = eks_server.url
        proc = run_finml("audit", "--stack", STACK, "--endpoint-url", server.url, "--no-drift", "--format", "json",
                         env=env)
    assert "Traceback" not in proc.stderr, proc.stderr
    assert proc.returncode == 1, proc.stderr
    doc = json.loads(proc.stdout)["stacks"][0]
    rules = {v["policy"] for v in doc["violations"]}
    assert rules == {"audit-coverage"}, [v["message"] for v in doc["violations"]]
    assert all(v["message"].startswith("could not audit elasticache in ") for v in doc["violations"]), "\n".join(\
        sorted({v["message"][:400] for v in doc["violations"] if "elasticache" not in v["message"]}))
    assert {v["site"] for v in doc["violations"]} == {f"aws:{r}" for r in doc["regions"]}
    assert all(v["message"].startswith("could not audit elasticache in ") and "AccessDenied" in v["message"]
               for v in doc["violations"]), doc["violations"][0]["message"]


def test_throttling_is_retried_with_backoff(monkeypatch):
    for k, v in aws_env().items():
        monkeypatch.setenv(k, v)
    ctx = AwsContext(endpoint_url="http://127.0.0.1:9", max_attempts=4)
    client = ctx.client("ec2", HOME)
    calls = []

    def throttle_twice(request, **_):
        calls.append(request.url)
        if len(calls) <= 2:
            body = (b'<?xml version="1.0"?><Response><Errors><Error><Code>RequestLimitExceeded</Code>'
                    b'<Message>Request limit exceeded.</Message></Error></Errors></Response>')
            return botocore.awsrequest.AWSResponse(request.url, 503, {}, _Raw(body))
        body = (b'<?xml version="1.0"?><DescribeRegionsResponse><regionInfo><item><regionName>eu-central-1'
                b'</regionName><optInStatus>opt-in-not-required</optInStatus></item></regionInfo>'
                b'</DescribeRegionsResponse>')
        return botocore.awsrequest.AWSResponse(request.url, 200, {}, _Raw(body))

    client.meta.events.register("before-send", throttle_twice)
    assert enabled_regions(ctx, HOME) == [HOME]
    assert len(calls) == 3


class _Raw:
    def __init__(self, body: bytes):
        self._body = body

    def stream(self, **_):
        yield self._body

    def read(self, *_):
        body, self._body = self._body, b""
        return body


def test_long_listings_are_paginated(monkeypatch):
    with MotoServer() as server:
        logs = server.client("logs", HOME)
        for i in range(120):  # the API's page is 50 log groups
            logs.create_log_group(logGroupName=f"/finml/page/{i:03d}")
        for k, v in aws_env().items():
            monkeypatch.setenv(k, v)
        ctx = AwsContext(endpoint_url=server.url)
        inv = collect(ctx, ACCOUNT, [HOME], {HOME})
    assert len(inv.of_type(LOG_GROUP)) == 120
    assert not inv.gaps
    assert ("logs", "DescribeLogGroups") in ctx.api_calls
