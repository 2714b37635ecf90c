"""EncryptionKeys: rotation, deletion window, key policy without wildcard principals, aliases, replica keys."""

from __future__ import annotations

import pulumi
import pytest

from aws_component_harness import ACCOUNT_ID, policy_doc, providers, run_program
from components.encryption import EncryptionKeys, EncryptionKeysArgs, key_policy, pick_classification

SITE = "aws:eu-central-1"


def build(replicate_to: str | None = None, classifications=("internal", "confidential")):
    def program():
        provider_for = providers()
        return EncryptionKeys("keys", EncryptionKeysArgs(
            site=SITE, stack="hybrid-prod", classifications=list(classifications), account_id=ACCOUNT_ID,
            replicate_to=replicate_to, replica_provider=provider_for(replicate_to) if replicate_to else None,
        ), pulumi.ResourceOptions(provider=provider_for(SITE)))

    return run_program(program)[0]


@pytest.fixture(scope="module")
def plain():
    return build()


@pytest.fixture(scope="module")
def replicated():
    return build(replicate_to="aws:eu-west-1")


def _principals(statement) -> list[str]:
    principal = statement["Principal"]
    if principal == "*":
        return ["*"]
    values = []
    for v in principal.values():
        values.extend(v if isinstance(v, list) else [v])
    return values


def assert_policy_safe(policy: str, where: str) -> None:
    doc = policy_doc(policy)
    principals = [p for st in doc["Statement"] for p in _principals(st)]
    assert "*" not in principals, f"{where}: key policy has a wildcard principal"
    assert f"arn:aws:iam::{ACCOUNT_ID}:root" in principals, f"{where}: account root missing"
    for st in doc["Statement"]:
        assert st["Effect"] == "Allow", f"{where}: {st['Sid']}"
        if "Service" in st["Principal"]:
            assert st.get("Condition"), f"{where}: service statement {st['Sid']} is not scoped by a condition"


def test_one_rotating_key_per_classification(plain):
    keys = plain.of_type("aws:kms/key:Key")
    assert sorted(k.inputs["tags"]["finml:classification"] for k in keys) == ["confidential", "internal"]
    for key in keys:
        assert key.inputs["enableKeyRotation"] is True, f"{key} does not rotate"
        assert key.inputs["deletionWindowInDays"] == 30, str(key)
        assert key.inputs["multiRegion"] is False, f"{key} may leave its region"
        assert key.provider == "aws-eu-central-1" and key.region == "eu-central-1", str(key)
        assert_policy_safe(key.inputs["policy"], str(key))
    assert not plain.of_type("aws:kms/replicaKey:ReplicaKey")


def test_aliases(plain):
    names = sorted(a.inputs["name"] for a in plain.of_type("aws:kms/alias:Alias"))
    assert names == ["alias/finml/hybrid-prod/confidential", "alias/finml/hybrid-prod/internal"]


def test_service_statements_are_scoped_to_the_account():
    doc = policy_doc(key_policy(ACCOUNT_ID, "eu-central-1"))
    sids = {st["Sid"]: st for st in doc["Statement"]}
    assert sids["LogDeliveryEncryptsFlowLogs"]["Condition"]["StringEquals"]["aws:SourceAccount"] == ACCOUNT_ID
    via = sids["AccountPrincipalsUseViaRegionalServices"]["Condition"]["StringEquals"]["kms:ViaService"]
    assert "ec2.eu-central-1.amazonaws.com" in via and "eks.eu-central-1.amazonaws.com" in via
    assert all(s.endswith(".eu-central-1.amazonaws.com") for s in via), via


def test_replica_keys_only_in_the_replication_target(replicated):
    primaries = replicated.of_type("aws:kms/key:Key")
    assert all(k.inputs["multiRegion"] is True for k in primaries), "replicated primaries must be multi-Region"
    replicas = replicated.of_type("aws:kms/replicaKey:ReplicaKey")
    assert sorted(r.inputs["tags"]["finml:classification"] for r in replicas) == ["confidential", "internal"]
    for replica in replicas:
        assert replica.provider == "aws-eu-west-1" and replica.region == "eu-west-1", f"{replica} is misplaced"
        assert replica.inputs["tags"]["finml:site"] == "aws:eu-west-1"
        assert replica.inputs["primaryKeyArn"].startswith("arn:aws:kms:eu-central-1:"), str(replica)
        assert_policy_safe(replica.inputs["policy"], str(replica))
    replica_regions = {r.region for r in replicated.resources if not r.typ.startswith("finml:")}
    assert replica_regions == {"eu-central-1", "eu-west-1"}


def test_pick_classification():
    assert pick_classification(["confidential", "internal"], "internal") == "internal"
    assert pick_classification(["restricted", "confidential"], "internal") == "confidential"
    assert pick_classification(["public"], "internal") == "public"


def test_replication_needs_the_target_provider():
    def program():
        return EncryptionKeys("bad", EncryptionKeysArgs(site=SITE, stack="t", classifications=["internal"],
                                                       account_id=ACCOUNT_ID, replicate_to="aws:eu-west-1"))

    with pytest.raises(ValueError, match="replica_provider"):
        run_program(program)


@pytest.fixture
def mocked():
    build()


@pulumi.runtime.test
def _key_arn_outputs():
    keys = EncryptionKeys("out", EncryptionKeysArgs(site=SITE, stack="t", classifications=["restricted"],
                                                   account_id=ACCOUNT_ID),
                          pulumi.ResourceOptions(provider=providers()(SITE)))

    def check(arn):
        assert arn == f"arn:aws:kms:eu-central-1:{ACCOUNT_ID}:key/out-key-restricted", \
            f"finml:encryption:EncryptionKeys::out key_arns[restricted] = {arn}"
        assert set(keys.keys) == {"restricted"}

    return keys.key_arns["restricted"].apply(check)


def test_key_arn_outputs(mocked):
    _key_arn_outputs()
