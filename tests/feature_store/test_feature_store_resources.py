"""The feature store's AWS and on-prem resources in the real program's plans (mock runtime): encryption,
authentication and network reach."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from finml.plan import load_plan

ROOT = Path(__file__).resolve().parents[2]
RG = "aws:elasticache/replicationGroup:ReplicationGroup"
RDS = "aws:rds/instance:Instance"

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def plan(tmp_path_factory):
    out = tmp_path_factory.mktemp("plans")
    plans = {}
    for name in ("aws-eu-prod", "dev", "hybrid-prod"):
        path = out / f"{name}.json"
        proc = subprocess.run([sys.executable, "-m", "finml.mockrun", str(ROOT / "stacks" / f"Pulumi.{name}.yaml"),
                               str(ROOT / "__main__.py"), str(path)], capture_output=True, text=True, cwd=ROOT,
                              timeout=600)
        assert proc.returncode == 0, proc.stderr[-3000:]
        plans[name] = load_plan(path)
    return plans


def _one(plan, typ, contains="feature-store-"):
    """The feature store's one resource of `typ` (the model registry has an RDS instance of its own beside it)."""
    (found,) = [r for r in plan.resources if r.type == typ and r.name.startswith(contains)]
    return found


def _dep(plan, res, prop):
    index = plan.by_urn()
    return [index[u] for u in res.property_dependencies.get(prop, [])]


def test_elasticache_encrypted_with_the_site_cmk_in_transit_and_authenticated(plan):
    p = plan["aws-eu-prod"]
    rg = _one(p, RG)
    assert rg.props["atRestEncryptionEnabled"] is True and rg.props["transitEncryptionEnabled"] is True
    assert rg.props["transitEncryptionMode"] == "required" and rg.props["engine"] == "valkey"
    assert rg.props["authToken"] == {"secret": True}, "the auth token is a Pulumi secret"
    (token,) = _dep(p, rg, "authToken")
    assert token.type == "random:index/randomPassword:RandomPassword" and token.props["length"] >= 32
    (key,) = _dep(p, rg, "kmsKeyId")
    assert key.type == "aws:kms/key:Key" and key.props["tags"]["finml:classification"] == "confidential"
    assert key.provider == rg.provider, "the CMK is the store's own site's key"
    assert rg.props["tags"]["finml:classification"] == "confidential"


def test_elasticache_multi_az_in_prod_single_node_in_dev(plan):
    prod, dev = _one(plan["aws-eu-prod"], RG), _one(plan["dev"], RG)
    assert (prod.props["multiAzEnabled"], prod.props["automaticFailoverEnabled"], prod.props["numCacheClusters"]) \
        == (True, True, 2)
    assert (dev.props["multiAzEnabled"], dev.props["automaticFailoverEnabled"], dev.props["numCacheClusters"]) \
        == (False, False, 1)


def test_online_store_and_registry_sit_in_data_subnets_reachable_only_from_nodes(plan):
    """The online store, and the model registry's RDS instance that holds the Feast registry: the feature server
    and the materialization job run on the nodes the security groups admit."""
    p = plan["aws-eu-prod"]
    for res, group_prop, sg_prop, port in ((_one(p, RG), "subnetGroupName", "securityGroupIds", 6379),
                                           (_one(p, RDS, "model-registry-"), "dbSubnetGroupName",
                                            "vpcSecurityGroupIds", 5432)):
        (group,) = _dep(p, res, group_prop)
        subnets = _dep(p, group, "subnetIds")
        assert subnets and all("-data-" in s.name for s in subnets), [s.name for s in subnets]
        (sg,) = _dep(p, res, sg_prop)
        assert sg.props["egress"] == []
        (rule,) = sg.props["ingress"]
        assert (rule["fromPort"], rule["toPort"], rule["protocol"]) == (port, port, "tcp")
        assert "cidrBlocks" not in rule and "ipv6CidrBlocks" not in rule
        (node_sg,) = _dep(p, sg, "ingress")
        assert node_sg.name.endswith("-node-sg")


def test_registry_database_is_encrypted_private_tls_only_and_protected(plan):
    """The Feast registry is a database on the site's one registry server: no RDS instance of the store's own."""
    for name in ("aws-eu-prod", "dev"):
        assert [r.name for r in plan[name].resources if r.type == RDS] == ["model-registry-aws-eu-central-1-db"]
    p = plan["aws-eu-prod"]
    db = _one(p, RDS, "model-registry-")
    assert db.props["engine"] == "postgres" and db.props["storageEncrypted"] is True
    assert db.props["publiclyAccessible"] is False and db.props["deletionProtection"] is True
    assert db.props["backupRetentionPeriod"] >= 7 and db.props["password"] == {"secret": True}
    (key,) = _dep(p, db, "kmsKeyId")
    assert key.props["tags"]["finml:classification"] == "confidential"
    (params,) = _dep(p, db, "parameterGroupName")
    assert {"name": "rds.force_ssl", "value": "1", "applyMethod": "pending-reboot"} in params.props["parameters"]


def test_irsa_roles_are_scoped_to_their_service_account_and_the_offline_prefix(plan):
    p = plan["aws-eu-prod"]
    roles = {r.name: r for r in p.resources if r.type == "aws:iam/role:Role" and "feature-store" in r.name}
    assert set(roles) == {"feature-store-aws-eu-central-1-aws-server-role",
                          "feature-store-aws-eu-central-1-aws-materializer-role"}
    accounts = {r.props["metadata"]["name"]: r for r in p.resources
                if r.type == "kubernetes:core/v1:ServiceAccount" and "feature" in r.name}
    for name in ("feature-server", "feature-materializer"):
        assert "eks.amazonaws.com/role-arn" in accounts[name].props["metadata"]["annotations"]
    for policy in (r for r in p.resources if r.type == "aws:iam/rolePolicy:RolePolicy" and "feature-store" in r.name):
        doc = policy.props["policy"]
        if isinstance(doc, str):
            statements = json.loads(doc)["Statement"]
            assert {s["Sid"] for s in statements} == {"ListOfflineStore", "ReadOfflineStore", "DecryptViaS3"}
            assert all("*" != s["Resource"] for s in statements)


def test_on_prem_online_store_is_tls_only_with_acl_and_a_persistent_volume(plan):
    p = plan["hybrid-prod"]
    sts = next(r for r in p.resources if r.type == "kubernetes:apps/v1:StatefulSet"
               and r.props["metadata"]["name"] == "feature-store")
    (container,) = sts.props["spec"]["template"]["spec"]["containers"]
    args = container["args"]
    assert args[args.index("--port") + 1] == "0", "the plain port is off"
    assert args[args.index("--tls-port") + 1] == "6379" and "--aclfile" in args
    assert sts.props["spec"]["volumeClaimTemplates"][0]["metadata"]["labels"]["finml.io/classification"] == \
        "restricted"
    creds = next(r for r in p.resources if r.type == "kubernetes:core/v1:Secret"
                 and r.props["metadata"]["name"] == "feature-store-credentials")
    data = creds.props["stringData"]
    assert data == {"secret": True} or all(v == {"secret": True} for v in data.values()), "credentials are secrets"
    assert not [r for r in p.resources if r.type == RG], "no ElastiCache on an on-prem-only feature store"


def test_feature_server_serves_tls_with_probes_hpa_pdb_and_the_job_is_forbid(plan):
    for name in ("aws-eu-prod", "hybrid-prod"):
        p = plan[name]
        dep = next(r for r in p.resources if r.type == "kubernetes:apps/v1:Deployment"
                   and r.props["metadata"]["name"] == "feature-server")
        (c,) = dep.props["spec"]["template"]["spec"]["containers"]
        assert "--cert" in c["command"] and "--key" in c["command"]
        for probe in ("readinessProbe", "livenessProbe", "startupProbe"):
            assert c[probe]["httpGet"]["scheme"] == "HTTPS" and c[probe]["httpGet"]["path"] == "/health"
        kinds = {r.type.rsplit(":", 1)[1] for r in p.resources
                 if r.type.startswith("kubernetes:") and r.props.get("metadata", {}).get("name") == "feature-server"}
        assert {"HorizontalPodAutoscaler", "PodDisruptionBudget", "Service"} <= kinds
        cron = next(r for r in p.resources if r.type == "kubernetes:batch/v1:CronJob")
        spec = cron.props["spec"]
        assert spec["concurrencyPolicy"] == "Forbid" and spec["startingDeadlineSeconds"] > 0
        job = spec["jobTemplate"]["spec"]
        assert job["backoffLimit"] == 2 and job["activeDeadlineSeconds"] > 0
