"""A fixture stack with planted violations fails the gate with exactly the rules that cover them — nothing else."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
FIXTURES = ROOT / "tests" / "fixtures"

EXPECTED_RULES = {
    # confidential (and internal) buckets replicating to us-east-1
    "residency-s3-replication-destination", "residency-aws-data-site", "residency-kms-replica-key",
    "residency-aws-site-declared",
    # the restricted feature store on AWS (its pods, its ElastiCache and RDS, its restricted view and its source)
    "residency-k8s-data-site", "residency-k8s-site-pinning", "residency-feature-view", "residency-feature-view-source",
    # a security group open to the world
    "network-sg-no-public-ingress",
    # a namespace without a default deny
    "k8s-namespace-default-deny",
    # a KMS key in another region than its data
    "residency-kms-key-colocated",
}


def test_seeded_stack_fails_with_exactly_the_seeded_rules(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "finml.cli", "--stacks-dir", str(FIXTURES / "stacks"), "preview", "--stack", "seeded",
         "--program", str(FIXTURES / "programs" / "seeded.py"), "--out", str(tmp_path)],
        capture_output=True, text=True, cwd=ROOT, timeout=600)
    assert proc.returncode == 1, proc.stderr
    report = json.loads((tmp_path / "seeded" / "policy.json").read_text())
    violations = report["stacks"][0]["violations"]
    assert all(v["enforcement"] == "mandatory" for v in violations)
    assert {v["policy"] for v in violations} == EXPECTED_RULES
    found = {(v["policy"], v["resource_name"]) for v in violations}
    assert {
        ("residency-s3-replication-destination", "aws-eu-central-1-replication-confidential"),
        ("residency-aws-data-site", "aws-eu-central-1-replica-confidential"),
        ("residency-kms-replica-key", "aws-eu-central-1-replica-key-confidential"),
        ("residency-k8s-data-site", "feature-store-aws-eu-central-1-server"),
        ("residency-aws-data-site", "feature-store-aws-eu-central-1-aws-online"),
        ("residency-feature-view", "feature-store-aws-eu-central-1-view-customer-profile"),
        ("residency-feature-view-source", "feature-store-aws-eu-central-1-view-customer-profile"),
        ("network-sg-no-public-ingress", "seeded-open-sg"),
        ("k8s-namespace-default-deny", "seeded-namespace"),
        ("residency-kms-key-colocated", "seeded-volume"),
    } <= found
    # Nothing outside the seeds is flagged: every violation sits on a seeded resource or the us-east-1 copies.
    for v in violations:
        assert (v["resource_name"].startswith(("seeded-", "aws-eu-central-1-replica", "feature-store-"))
                or v["site"] == "aws:us-east-1"), v
    by_name = {(v["policy"], v["resource_name"]): v for v in violations}
    repl = by_name[("residency-s3-replication-destination", "aws-eu-central-1-replication-confidential")]
    assert repl["classification"] == "confidential" and "us-east-1" in repl["message"]
    store = by_name[("residency-k8s-data-site", "feature-store-aws-eu-central-1-server")]
    assert store["site"] == "aws:eu-central-1" and store["classification"] == "restricted"
    # The SARIF and JUnit reports carry the same verdict for CI.
    sarif = json.loads((tmp_path / "seeded" / "policy.sarif").read_text())
    assert {r["ruleId"] for r in sarif["runs"][0]["results"]} == EXPECTED_RULES
    assert all(r["level"] == "error" for r in sarif["runs"][0]["results"])
    junit = (tmp_path / "seeded" / "policy.junit.xml").read_text()
    assert f'failures="{len(EXPECTED_RULES)}"' in junit
