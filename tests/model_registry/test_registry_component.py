"""ModelRegistry under Pulumi's mock runtime: the whole program (`__main__.py`) for aws-eu-prod, onprem-dc1 and
hybrid-prod, recorded with the workloads harness (outputs = inputs, so policies and names are concrete)."""

from __future__ import annotations

import hashlib
import json
import runpy
import sys
from pathlib import Path

import kubernetes_validate
import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tests" / "workloads"))
from workloads_harness import RecordingMonitor, load_stack, manifest, pod_security_problems  # noqa: E402

from components.naming import site_label_value  # noqa: E402

K8S_VERSION = "1.31"
REGISTRY = "finml:workloads:ModelRegistry"
_RUNS: dict = {}
# Computed outputs the registry reads (outputs are the inputs otherwise, as in the workloads harness).
_COMPUTED = {"random:index/randomPassword:RandomPassword": {"result": "mock-password"},
             "tls:index/privateKey:PrivateKey": {"privateKeyPem": "mock-key-pem"},
             "tls:index/selfSignedCert:SelfSignedCert": {"certPem": "mock-ca-pem"},
             "tls:index/certRequest:CertRequest": {"certRequestPem": "mock-csr-pem"},
             "tls:index/locallySignedCert:LocallySignedCert": {"certPem": "mock-cert-pem"},
             "aws:rds/instance:Instance": {"address": "registry-db.example.internal"},
             "aws:iam/openIdConnectProvider:OpenIdConnectProvider": {}}


def run_program(program):
    import pulumi

    class Mocks(pulumi.runtime.Mocks):
        def new_resource(self, args):
            outputs = dict(args.inputs)
            outputs.update(_COMPUTED.get(args.typ, {}))
            if args.typ == "aws:iam/role:Role":
                outputs["arn"] = f"arn:aws:iam::777788889999:role/{args.name}"
            if args.typ == "aws:kms/key:Key":
                outputs["arn"] = f"arn:aws:kms:eu-central-1:777788889999:key/{args.name}"
            return f"{args.name}-id", outputs

        def call(self, args):
            return {}

    monitor = RecordingMonitor()
    monitor.mocks = Mocks()
    pulumi.runtime.set_mocks(monitor.mocks, project="finml", stack="test", preview=False, monitor=monitor)

    @pulumi.runtime.test
    def _run():
        program()

    _run()
    return monitor, None


def program_run(stack_name: str):
    if stack_name not in _RUNS:
        import pulumi

        stack = load_stack(ROOT / "stacks" / f"Pulumi.{stack_name}.yaml")
        config = {k: (f"<secret {k}>" if k in stack.secret_keys else v if isinstance(v, str) else json.dumps(v))
                  for k, v in stack.raw_config.items()}

        def program():
            pulumi.runtime.set_all_config(config, list(stack.secret_keys))
            runpy.run_path(str(ROOT / "__main__.py"), run_name="__main__")

        _RUNS[stack_name], _ = run_program(program)
    return _RUNS[stack_name]


SECRET_SIG = "4dabf18193072939515e22adb298388d"  # Pulumi's wire marker of a secret value


def secret(value):
    """The plain value of a Pulumi secret; fails if `value` was not registered as a secret."""
    assert isinstance(value, dict) and SECRET_SIG in value, f"not a secret: {str(value)[:80]}"
    return value["value"]


def unwrap(value):
    if isinstance(value, dict):
        if SECRET_SIG in value:
            return unwrap(value["value"])
        return {k: unwrap(v) for k, v in value.items()}
    if isinstance(value, list):
        return [unwrap(v) for v in value]
    return value


def children(monitor, registry_name: str):
    return [r for r in monitor.registered if r.parent and r.parent.endswith(f"{REGISTRY}::{registry_name}")]


def one(records, typ: str, suffix: str = ""):
    found = [r for r in records if r.typ == typ and r.name.endswith(suffix)]
    assert len(found) == 1, f"{typ} *{suffix}: {[r.urn for r in found]}"
    return found[0]


@pytest.fixture(scope="module", params=["aws-eu-prod", "onprem-dc1", "hybrid-prod"])
def stack_run(request):
    return request.param, program_run(request.param)


def registries(monitor):
    return {r.name: r for r in monitor.of_type(REGISTRY)}


def test_every_training_or_serving_site_gets_a_registry(stack_run):
    name, monitor = stack_run
    expected = {"aws-eu-prod": {"model-registry-aws-eu-central-1"},
                "onprem-dc1": {"model-registry-onprem-fra-dc1"},
                "hybrid-prod": {"model-registry-aws-eu-central-1", "model-registry-onprem-fra-dc1"}}[name]
    assert set(registries(monitor)) == expected


def _aws_registry(monitor):
    return children(monitor, "model-registry-aws-eu-central-1")


@pytest.mark.parametrize("stack_name", ["aws-eu-prod", "hybrid-prod"])
def test_rds_backend_is_encrypted_private_tls_only_and_reachable_from_nodes_only(stack_name):
    monitor = program_run(stack_name)
    recs = _aws_registry(monitor)
    db = one(recs, "aws:rds/instance:Instance").inputs
    assert db["engine"] == "postgres" and db["storageEncrypted"] is True and db["publiclyAccessible"] is False
    assert db["deletionProtection"] is True and db["backupRetentionPeriod"] >= 7 and db["skipFinalSnapshot"] is False
    assert db["kmsKeyId"] == db["performanceInsightsKmsKeyId"]
    key_arns = {r.name: r for r in monitor.of_type("aws:kms/key:Key")}
    assert "aws-eu-central-1-key-confidential" in key_arns
    rds = one(recs, "aws:rds/instance:Instance")
    assert any(d.endswith("::aws-eu-central-1-key-confidential") for d in rds.dependencies), rds.dependencies
    assert db["tags"]["finml:classification"] == "confidential"
    params = one(recs, "aws:rds/parameterGroup:ParameterGroup").inputs
    assert {"name": "rds.force_ssl", "value": "1", "applyMethod": "pending-reboot"} in params["parameters"]
    subnets = one(recs, "aws:rds/subnetGroup:SubnetGroup")
    data_subnets = [r for r in monitor.of_type("aws:ec2/subnet:Subnet") if "-data-" in r.name]
    assert sorted(subnets.inputs["subnetIds"]) == sorted(f"{r.name}-id" for r in data_subnets)
    sg = one(recs, "aws:ec2/securityGroup:SecurityGroup").inputs
    assert sg["egress"] == [] and len(sg["ingress"]) == 1
    (rule,) = sg["ingress"]
    assert rule["fromPort"] == rule["toPort"] == 5432 and "cidrBlocks" not in rule
    node_sg = [r for r in monitor.of_type("aws:ec2/securityGroup:SecurityGroup") if r.name.endswith("-nodes-sg")
               or r.name.endswith("node-sg") or "node" in r.name and "registry" not in r.name]
    assert rule["securityGroups"] and rule["securityGroups"][0] in {f"{r.name}-id" for r in node_sg}
    assert one(recs, "random:index/randomPassword:RandomPassword", "-db-password").inputs["length"] >= 12


@pytest.mark.parametrize("stack_name", ["aws-eu-prod", "hybrid-prod"])
def test_artifacts_under_a_prefix_through_an_irsa_role_scoped_to_it(stack_name):
    monitor = program_run(stack_name)
    recs = _aws_registry(monitor)
    bucket = next(r for r in monitor.of_type("aws:s3/bucket:Bucket") if r.name == "aws-eu-central-1-data-confidential")
    name = bucket.inputs["bucket"]
    policy = json.loads(one(recs, "aws:iam/rolePolicy:RolePolicy").inputs["policy"])
    by_sid = {s["Sid"]: s for s in policy["Statement"]}
    assert by_sid["ArtifactObjects"]["Resource"] == f"arn:aws:s3:::{name}/mlflow/aws-eu-central-1/*"
    assert by_sid["ArtifactListing"]["Condition"]["StringLike"]["s3:prefix"][0] == "mlflow/aws-eu-central-1/*"
    assert all("*" not in s["Resource"].split(":::")[-1].split("/")[0] for s in policy["Statement"]
               if s["Resource"].startswith("arn:aws:s3"))
    trust = json.loads(one(recs, "aws:iam/role:Role").inputs["assumeRolePolicy"])
    (cond,) = [v for v in trust["Statement"][0]["Condition"]["StringEquals"].items() if v[0].endswith(":sub")]
    assert cond[1] == "system:serviceaccount:finml-data:mlflow"
    sa = one(recs, "kubernetes:core/v1:ServiceAccount").inputs
    assert sa["metadata"]["annotations"]["eks.amazonaws.com/role-arn"]
    deployment = one(recs, "kubernetes:apps/v1:Deployment").inputs
    env = {e["name"]: e.get("value") for e in deployment["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env["ARTIFACTS_DESTINATION"] == f"s3://{name}/mlflow/aws-eu-central-1"


@pytest.mark.parametrize("stack_name", ["aws-eu-prod", "hybrid-prod"])
def test_audit_bucket_has_compliance_object_lock_and_the_site_cmk(stack_name):
    monitor = program_run(stack_name)
    recs = _aws_registry(monitor)
    bucket = one(recs, "aws:s3/bucket:Bucket", "-audit").inputs
    assert bucket["objectLockEnabled"] is True and bucket["tags"]["finml:classification"] == "confidential"
    lock = one(recs, "aws:s3/bucketObjectLockConfiguration:BucketObjectLockConfiguration").inputs
    assert lock["rule"]["defaultRetention"]["mode"] == "COMPLIANCE" and lock["rule"]["defaultRetention"]["days"] > 0
    sse = one(recs, "aws:s3/bucketServerSideEncryptionConfiguration:BucketServerSideEncryptionConfiguration",
              "-audit-sse").inputs
    rule = sse["rules"][0]["applyServerSideEncryptionByDefault"]
    assert rule["sseAlgorithm"] == "aws:kms" and rule["kmsMasterKeyId"]


@pytest.mark.parametrize("stack_name", ["onprem-dc1", "hybrid-prod"])
def test_onprem_postgres_statefulset_with_tls_secret_and_pvc_artifacts(stack_name):
    monitor = program_run(stack_name)
    recs = children(monitor, "model-registry-onprem-fra-dc1")
    assert not [r for r in recs if r.typ.startswith("aws:")]
    sts = one(recs, "kubernetes:apps/v1:StatefulSet").inputs
    container = sts["spec"]["template"]["spec"]["containers"][0]
    assert "ssl=on" in container["args"] and "ssl_cert_file=/tls/tls.crt" in container["args"]
    assert container["envFrom"][0]["secretRef"]["name"] == "model-registry-db-credentials"
    (claim,) = sts["spec"]["volumeClaimTemplates"]
    assert claim["metadata"]["labels"]["finml.io/classification"] == "restricted"
    secrets = {r.inputs["metadata"]["name"]: r for r in recs if r.typ == "kubernetes:core/v1:Secret"}
    assert secrets["model-registry-db-tls"].inputs["type"] == "kubernetes.io/tls"
    pvc = one(recs, "kubernetes:core/v1:PersistentVolumeClaim").inputs
    assert pvc["spec"]["accessModes"] == ["ReadWriteMany"] and pvc["metadata"]["labels"][
        "finml.io/classification"] == "restricted"
    server = secret(secrets["model-registry-server"].inputs["stringData"])
    assert "sslmode=verify-full" in server["backend-store-uri"]
    assert "default_permission = READ" in server["basic_auth.ini"]
    assert secret(secrets["model-registry-db-tls"].inputs["stringData"])["tls.key"]


def test_server_deployment_tls_auth_replicas_pdb_probes_priority(stack_run):
    _, monitor = stack_run
    for name in registries(monitor):
        recs = children(monitor, name)
        dep = one(recs, "kubernetes:apps/v1:Deployment").inputs
        assert dep["spec"]["replicas"] == 2
        pod = dep["spec"]["template"]["spec"]
        (c,) = pod["containers"]
        args = c["args"]
        assert args[args.index("--app-name") + 1] == "basic-auth" and "--serve-artifacts" in args
        assert "--ssl-keyfile /tls/tls.key --ssl-certfile /tls/tls.crt" == args[args.index("--uvicorn-opts") + 1]
        for probe in ("readinessProbe", "livenessProbe", "startupProbe"):
            assert c[probe]["httpGet"]["scheme"] == "HTTPS" and c[probe]["httpGet"]["path"] == "/health"
        assert pod["priorityClassName"] == "finml-model-registry"
        assert one(recs, "kubernetes:scheduling.k8s.io/v1:PriorityClass").inputs["value"] > 0
        pdb = one(recs, "kubernetes:policy/v1:PodDisruptionBudget").inputs
        assert pdb["spec"]["minAvailable"] == 1
        site = dep["metadata"]["labels"]["finml.io/site"]
        problems = []
        for r in recs:
            if r.typ in ("kubernetes:apps/v1:Deployment", "kubernetes:apps/v1:StatefulSet", "kubernetes:batch/v1:Job"):
                problems += pod_security_problems(r.urn, r.inputs["spec"]["template"], site)
        assert problems == []


def _site_ca(monitor, site_slug: str):
    (ca,) = [r for r in monitor.of_type("tls:index/selfSignedCert:SelfSignedCert")
             if r.parent and r.parent.endswith(f"finml:workloads:SiteCA::site-ca-{site_slug}")]
    return ca


def test_per_site_ca_keys_are_secrets_and_the_bundle_is_published(stack_run):
    _, monitor = stack_run
    for name in registries(monitor):
        recs = children(monitor, name)
        ca = _site_ca(monitor, name.removeprefix("model-registry-"))
        assert ca.inputs["isCaCertificate"] is True and "cert_signing" in ca.inputs["allowedUses"]
        # The registry's certificates are signed by the site's one CA, not by a CA of its own.
        assert not [r for r in recs if r.typ == "tls:index/selfSignedCert:SelfSignedCert"]
        for cert in (r for r in recs if r.typ == "tls:index/locallySignedCert:LocallySignedCert"):
            assert ca.urn in cert.dependencies, cert
        for key in (r for r in recs if r.typ == "tls:index/privateKey:PrivateKey"):
            assert key.inputs["algorithm"] == "ECDSA"
        admin = one(recs, "random:index/randomPassword:RandomPassword", "-admin-password").inputs
        assert admin["length"] >= 12
        bundles = [r for r in recs if r.typ == "kubernetes:core/v1:ConfigMap"]
        assert {b.inputs["metadata"]["namespace"] for b in bundles} == {"finml-data", "finml-training",
                                                                        "finml-serving"}
        creds = {r.inputs["metadata"]["namespace"]: secret(r.inputs["stringData"])["MLFLOW_TRACKING_USERNAME"]
                 for r in recs if r.typ == "kubernetes:core/v1:Secret"
                 and r.inputs["metadata"]["name"] == "model-registry-credentials"}
        assert creds == {"finml-training": "finml-writer", "finml-serving": "finml-reader"}


def test_network_policy_admits_only_training_serving_and_deploy_runners(stack_run):
    name, monitor = stack_run
    for reg in registries(monitor):
        recs = children(monitor, reg)
        ingress = next(r.inputs for r in recs if r.typ == "kubernetes:networking.k8s.io/v1:NetworkPolicy"
                       and r.inputs["metadata"]["name"] == "model-registry-ingress")
        (rule,) = ingress["spec"]["ingress"]
        assert rule["ports"] == [{"port": 5000, "protocol": "TCP"}]
        namespaces = [p["namespaceSelector"]["matchExpressions"][0]["values"] for p in rule["from"]
                      if "namespaceSelector" in p]
        assert namespaces == [["finml-training", "finml-serving"]]
        blocks = [p["ipBlock"]["cidr"] for p in rule["from"] if "ipBlock" in p]
        from workloads.platform import deploy_runner_cidrs

        stack = load_stack(ROOT / "stacks" / f"Pulumi.{name}.yaml")
        site = next(s for s in stack.platform.registry.sites if reg.endswith(s.replace(":", "-")))
        assert blocks == list(deploy_runner_cidrs(stack, site)), f"{reg}: deploy-runner networks {blocks}"
        others = [p for p in rule["from"] if "ipBlock" not in p and "namespaceSelector" not in p]
        assert [p["podSelector"]["matchLabels"]["app.kubernetes.io/name"] for p in others] == [
            "model-registry-bootstrap"]


def test_registry_manifests_validate_strictly(stack_run):
    _, monitor = stack_run
    errors = []
    for reg in registries(monitor):
        for record in children(monitor, reg):
            if not record.is_k8s:
                continue
            try:
                kubernetes_validate.validate(unwrap(manifest(record)), K8S_VERSION, strict=True)
            except kubernetes_validate.ValidationError as exc:
                errors.append(f"{record}: {exc.message} at {list(exc.path)}")
    assert errors == []


def test_registry_objects_pinned_to_their_site(stack_run):
    _, monitor = stack_run
    for reg, record in registries(monitor).items():
        site = reg.removeprefix("model-registry-").replace("aws-", "aws:", 1).replace("onprem-", "onprem:", 1)
        dep = one(children(monitor, reg), "kubernetes:apps/v1:Deployment").inputs
        assert dep["spec"]["template"]["spec"]["nodeSelector"]["finml.io/site"] == site_label_value(site)


# -- the feature store's Feast registry on the registry's database server ----------------------------------------------


def _store_children(monitor, site_slug: str):
    return [r for r in monitor.registered
            if r.parent and r.parent.endswith(f"finml:workloads:FeatureStore::feature-store-{site_slug}")]


@pytest.mark.parametrize("stack_name, site_slug, host, root", [
    ("aws-eu-prod", "aws-eu-central-1", "registry-db.example.internal", "/opt/finml/rds-ca-bundle.pem"),
    ("onprem-dc1", "onprem-fra-dc1", "model-registry-db.finml-data.svc.cluster.local", "/tls/registry-ca.crt"),
])
def test_feast_registry_is_its_own_database_on_the_registry_server(stack_name, site_slug, host, root):
    from workloads.model_registry import bootstrap_sql

    monitor = program_run(stack_name)
    recs = children(monitor, f"model-registry-{site_slug}")
    store = _store_children(monitor, site_slug)
    # No database server of the feature store's own, anywhere.
    assert not [r for r in monitor.registered if r.typ == "aws:rds/instance:Instance" and "feature" in r.name]
    assert not [r for r in store if r.typ == "kubernetes:apps/v1:StatefulSet"
                and r.inputs["metadata"]["name"] != "feature-store"]
    creds = next(r for r in store if r.typ == "kubernetes:core/v1:Secret"
                 and r.inputs["metadata"]["name"] == "feature-store-credentials")
    url = unwrap(creds.inputs["stringData"])["registry-url"]
    assert url == (f"postgresql+psycopg://feast:mock-password@{host}:5432/feast_registry"
                   f"?sslmode=verify-full&sslrootcert={root}")
    feast_password = one(recs, "random:index/randomPassword:RandomPassword", "-db-feast-password")
    assert feast_password.inputs["length"] >= 32 and feast_password.inputs["special"] is False
    assert feast_password.urn in creds.dependencies, "the feature store's URL carries the feast role's password"
    script = one(recs, "kubernetes:core/v1:ConfigMap", "-db-feast-bootstrap-sql").inputs
    assert script["data"]["bootstrap.sql"] == bootstrap_sql("feast", "feast_registry")
    job = one(recs, "kubernetes:batch/v1:Job", "-db-feast-bootstrap")
    # The script's hash is in the (immutable) pod template: a changed script replaces the Job, so it runs again.
    annotations = job.inputs["spec"]["template"]["metadata"]["annotations"]
    assert annotations["finml.io/bootstrap-sql-sha256"] == hashlib.sha256(
        script["data"]["bootstrap.sql"].encode()).hexdigest()
    pod = job.inputs["spec"]["template"]["spec"]
    (c,) = pod["containers"]
    assert c["command"] == ["psql", "--no-psqlrc", "--quiet", "--file", "/sql/bootstrap.sql"]
    env = {e["name"]: e.get("value") or e["valueFrom"]["secretKeyRef"] for e in c["env"]}
    assert env["PGHOST"] == host and env["PGDATABASE"] == "mlflow"
    assert env["PGUSER"] == {"name": "model-registry-db-credentials", "key": "POSTGRES_USER"}
    assert env["PGPASSWORD"] == {"name": "model-registry-db-credentials", "key": "POSTGRES_PASSWORD"}
    assert env["FINML_DB_PASSWORD"] == {"name": "model-registry-db-feast-credentials", "key": "password"}
    if stack_name == "onprem-dc1":
        assert (env["PGSSLMODE"], env["PGSSLROOTCERT"]) == ("verify-full", "/ca/ca.crt")
        tls_secret = next(r for r in store if r.typ == "kubernetes:core/v1:Secret"
                          and r.inputs["metadata"]["name"] == "feature-store-tls")
        assert "registry-ca.crt" in unwrap(tls_secret.inputs["stringData"])
    else:
        assert env["PGSSLMODE"] == "require" and "PGSSLROOTCERT" not in env
    assert pod["automountServiceAccountToken"] is False and pod["restartPolicy"] == "OnFailure"
    assert pod_security_problems(job.urn, job.inputs["spec"]["template"], site_label_value(
        site_slug.replace("aws-", "aws:", 1).replace("onprem-", "onprem:", 1))) == []
    # The feature server and the materialization job start only after the role and database exist.
    for kind in ("kubernetes:apps/v1:Deployment", "kubernetes:batch/v1:CronJob"):
        workload = one(store, kind)
        assert job.urn in workload.dependencies, workload


def test_feature_store_and_registry_share_the_site_ca(stack_run):
    _, monitor = stack_run
    for store in monitor.of_type("finml:workloads:FeatureStore"):
        site_slug = store.name.removeprefix("feature-store-")
        ca = _site_ca(monitor, site_slug)
        certs = [r for r in _store_children(monitor, site_slug)
                 if r.typ == "tls:index/locallySignedCert:LocallySignedCert"]
        assert certs and all(ca.urn in c.dependencies for c in certs), certs
        assert not [r for r in _store_children(monitor, site_slug)
                    if r.typ == "tls:index/selfSignedCert:SelfSignedCert"]
