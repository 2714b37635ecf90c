"""The compliant hybrid stack passes every rule; this anchors the per-rule violating fixtures."""

from policy_harness import POLICIES, run, run_all
from policy_fixtures import compliant_stack


def test_compliant_hybrid_stack_has_no_violations():
    stack, _ = compliant_stack()
    violations = run_all(stack)
    assert violations == [], "\n".join(f"{v.rule} {v.urn}: {v.message}" for v in violations)


def test_harness_can_fail():
    """Canary: the same stack without its residency config fails the residency rules."""
    stack, handles = compliant_stack()
    violations = run("residency-aws-data-site", stack, config=None)
    assert {v.urn for v in violations} == {r.urn for r in stack.resources if r.resource_type in (
        "aws:s3/bucket:Bucket", "aws:ebs/volume:Volume", "aws:ebs/snapshotCopy:SnapshotCopy",
        "aws:rds/instance:Instance", "aws:elasticache/replicationGroup:ReplicationGroup",
        "aws:efs/fileSystem:FileSystem", "aws:dynamodb/table:Table", "aws:cloudwatch/logGroup:LogGroup")}
    assert all("finml policy config --stack NAME" in v.message for v in violations)
    assert len(POLICIES) >= 25
