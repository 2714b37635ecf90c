"""build_aws_site: the wiring of one AWS site, with explicit providers everywhere; plus the harness canaries."""

from __future__ import annotations

import copy

import pulumi
import pulumi_aws as aws
import pytest

from aws_component_harness import ACCOUNT_ID, HYBRID_RAW, ONPREM_CIDRS, providers, run_program, stack_config
from components.aws_site import AwsSiteOutputs, build_aws_site
from gpu_profiles import load_profiles

PROFILES = load_profiles()
SITE = "aws:eu-central-1"


def build(raw, site_id=SITE):
    cfg = stack_config(raw, PROFILES)

    def program():
        return build_aws_site(cfg, site_id, cfg.aws_sites[site_id], providers(), PROFILES, ACCOUNT_ID)

    return run_program(program)


@pytest.fixture(scope="module")
def hybrid():
    return build(HYBRID_RAW)


def _replica_only_raw():
    raw = copy.deepcopy(HYBRID_RAW)
    raw["sites"]["aws:eu-west-1"] = {"kind": "aws", "classifications": ["internal"]}
    raw["residency"]["internal"] = ["onprem:*", "aws:eu-*"]
    return raw


def test_returns_every_component(hybrid):
    _, out = hybrid
    assert isinstance(out, AwsSiteOutputs)
    assert out.network is not None and out.cluster is not None and out.storage is not None
    assert set(out.keys.keys) == {"internal", "confidential"}


def test_every_aws_resource_names_an_explicit_provider_of_its_site(hybrid):
    mocks, _ = hybrid
    replica_region = []
    for r in mocks.resources:
        if r.typ.startswith("finml:") or r.typ.startswith("pulumi:"):
            continue
        assert r.provider is not None, f"{r} uses a default provider"
        if r.typ.startswith("kubernetes:"):
            assert r.provider == "aws-eu-central-1-k8s", f"{r}: not on its cluster's provider"
            continue
        assert r.provider == f"aws-{r.region}", f"{r}: provider {r.provider} vs region {r.region}"
        if r.region != "eu-central-1":
            replica_region.append(r)
    assert replica_region and all(r.region == "eu-west-1" for r in replica_region)
    allowed = {"aws:kms/replicaKey:ReplicaKey", "aws:kms/alias:Alias"} | {
        t for t in (r.typ for r in replica_region) if t.startswith("aws:s3/")}
    assert {r.typ for r in replica_region} <= allowed, "only replicas may live in the replication target"


def test_data_bearing_resources_are_classified(hybrid):
    mocks, _ = hybrid
    for typ in ("aws:s3/bucket:Bucket", "aws:kms/key:Key", "aws:kms/replicaKey:ReplicaKey",
                "aws:efs/fileSystem:FileSystem", "aws:cloudwatch/logGroup:LogGroup"):
        for r in mocks.of_type(typ):
            assert r.inputs["tags"].get("finml:classification"), f"{r} has no classification tag"


def test_vpn_routes_the_onprem_site_networks(hybrid):
    mocks, _ = hybrid
    routes = {r.inputs["destinationCidrBlock"] for r in mocks.of_type("aws:ec2/vpnConnectionRoute:VpnConnectionRoute")}
    assert routes == ONPREM_CIDRS


def test_replica_only_site_has_no_network_or_cluster():
    mocks, out = build(_replica_only_raw(), "aws:eu-west-1")
    assert out.network is None and out.cluster is None
    for typ in ("aws:ec2/vpc:Vpc", "aws:eks/cluster:Cluster", "aws:efs/fileSystem:FileSystem"):
        assert not mocks.of_type(typ), f"replica-only site created {typ}"
    assert mocks.of_type("aws:s3/bucket:Bucket") and mocks.of_type("aws:kms/key:Key")


def test_dev_stack_without_vpn_or_replication():
    raw = copy.deepcopy(HYBRID_RAW)
    raw["vpn"] = []
    site = raw["sites"][SITE]
    site["network"]["azCount"] = 2
    del site["storage"]["replicateTo"]
    mocks, _ = build(raw)
    assert not mocks.of_type("aws:ec2/vpnGateway:VpnGateway")
    assert not mocks.of_type("aws:kms/replicaKey:ReplicaKey")
    assert all(k.inputs["multiRegion"] is False for k in mocks.of_type("aws:kms/key:Key"))
    assert len(mocks.of_type("aws:ec2/subnet:Subnet")) == 4


# -- canaries: the harness can fail --------------------------------------------------------------------------------


def test_preview_registers_what_update_registers(hybrid):
    """The engine's dry run leaves ids and computed attributes unknown; the site must still register every
    resource, with the same inputs wherever they do not depend on an unknown."""
    update_mocks, _ = hybrid
    cfg = stack_config(HYBRID_RAW, PROFILES)
    preview_mocks, out = run_program(
        lambda: build_aws_site(cfg, SITE, cfg.aws_sites[SITE], providers(), PROFILES, ACCOUNT_ID), preview=True)
    assert isinstance(out, AwsSiteOutputs)
    assert sorted(map(str, preview_mocks.resources)) == sorted(map(str, update_mocks.resources))
    (vpc_preview,) = preview_mocks.of_type("aws:ec2/vpc:Vpc")
    (vpc_update,) = update_mocks.of_type("aws:ec2/vpc:Vpc")
    assert vpc_preview.inputs == vpc_update.inputs
    from pulumi.output import Unknown

    subnet = preview_mocks.of_type("aws:ec2/subnet:Subnet")[0]
    assert isinstance(subnet.inputs["vpcId"], Unknown), "at preview a VPC id is unknown; nothing may invent one"
    assert subnet.inputs["mapPublicIpOnLaunch"] is False  # known inputs stay known


def test_canary_a_real_assertion_of_this_suite_fails_on_a_public_subnet(tmp_path):
    """Run a test written like this suite's (the harness, an Output-free registration check) in a separate pytest
    against a leaky subnet: the run must be red, with the message naming the resource."""
    (tmp_path / "test_leaky.py").write_text(
        "import pulumi, pulumi_aws as aws\n"
        "from aws_component_harness import providers, run_program\n"
        "def test_no_public_subnet():\n"
        "    def program():\n"
        "        aws.ec2.Subnet('leaky', vpc_id='vpc-1', cidr_block='10.0.0.0/24', map_public_ip_on_launch=True,\n"
        "                       opts=pulumi.ResourceOptions(provider=providers()('aws:eu-central-1')))\n"
        "    mocks, _ = run_program(program)\n"
        "    for subnet in mocks.of_type('aws:ec2/subnet:Subnet'):\n"
        "        assert subnet.inputs.get('mapPublicIpOnLaunch') is not True, f'{subnet} maps public IPs'\n")
    proc = _pytest(tmp_path)
    assert proc.returncode == 1, proc.stdout
    assert "aws:ec2/subnet:Subnet::leaky maps public IPs" in proc.stdout


def test_canary_a_failing_output_check_fails_the_run(tmp_path):
    """An assertion inside `apply` is only seen with @pulumi.runtime.test; without it the same test passes silently
    — which is why every Output check here carries it."""
    body = ("import pulumi\n"
            "from aws_component_harness import run_program\n"
            "{decorator}\n"
            "def test_output():\n"
            "    run_program(lambda: None)\n"
            "    def check(v): assert v == 'expected', 'canary: got ' + v\n"
            "    return pulumi.Output.from_input('actual').apply(check)\n")
    (tmp_path / "test_with.py").write_text(body.format(decorator="@pulumi.runtime.test"))
    proc = _pytest(tmp_path / "test_with.py")
    assert proc.returncode == 1 and "canary: got actual" in proc.stdout, proc.stdout


def _pytest(target):
    import subprocess
    import sys
    from pathlib import Path

    here = Path(__file__).resolve().parent
    return subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-W", "ignore",
                           "--rootdir", str(target if target.is_dir() else target.parent), str(target)],
                          capture_output=True, text=True, timeout=300,
                          env={**__import__("os").environ, "PYTHONPATH": f"{here}:{here.parents[1]}"})
