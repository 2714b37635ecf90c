"""ModelRegistry: one MLflow tracking server and model registry per site, with TLS, authentication and an audit
bucket.

    MLflow Deployment (2 replicas, PDB, probes, PriorityClass, restricted)  --HTTPS 5000-->  clients
        backend store: AWS RDS PostgreSQL (site CMK, TLS forced, private, backups)  | on-prem PostgreSQL StatefulSet
        artifacts (--serve-artifacts): the classification's S3 bucket under mlflow/<site>/ via IRSA | on-prem a PVC
        audit trail: AWS S3 bucket with Object Lock (compliance) and the site CMK

The site's CA (`workloads.site_ca.SiteCA`, shared with the site's feature store) signs the server (and on-prem
database) certificates; the private keys and every password (pulumi-random) are Pulumi secrets; the CA bundle is
published as a ConfigMap in the client namespaces.
The database server also hosts other workloads' databases (`database_clients`, e.g. the feature store's Feast SQL
registry): per client a role and a database of its own with a generated password, created idempotently by a
bootstrap Job (psql as the server's admin user over TLS); NetworkPolicies admit the client's pods to the server.
The basic-auth app has an admin (password >= 24 characters) plus `finml-writer` (training) and `finml-reader`
(serving), created by a bootstrap Job; their credentials land as Secrets in the training and serving namespaces.
NetworkPolicy admits only the training and serving namespaces and the deploy runners' networks.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import pulumi
import pulumi_aws as aws
import pulumi_kubernetes as k8s
import pulumi_random as random

from components import naming
from components.gpu_cluster import irsa_trust_policy
from components.naming import CLASSIFICATION_LABEL, SITE_LABEL, child_name, site_label_value
from components.storage import secure_bucket
from finml.config import region_of
from workloads.cluster_base import DATA_NAMESPACE, NAMESPACE_NAME_LABEL, SERVING_NAMESPACE, TRAINING_NAMESPACE
from workloads import images
from workloads.options import child_opts
from workloads.site_ca import SiteCA
from workloads.pod import (
    guaranteed_resources,
    restricted_container_security_context,
    restricted_pod_security_context,
    scratch_volume,
    selector_labels,
    site_node_selector,
    workload_labels,
)

TYPE_TOKEN = "finml:workloads:ModelRegistry"
COMPONENT = "model-registry"
DB_COMPONENT = "model-registry-db"
IMAGE, DB_IMAGE = "mlflow", "postgres-17"  # keys of workloads.images.IMAGES
DEFAULT_IMAGE = images.unqualified(IMAGE)
DEFAULT_DB_IMAGE = images.unqualified(DB_IMAGE)
MLFLOW_UID = 10001
POSTGRES_UID = 999
MLFLOW_PORT = 5000
SERVICE_PORT = 443
POSTGRES_PORT = 5432
PRIORITY_CLASS = "finml-model-registry"
PRIORITY_VALUE = 100000
SERVICE_ACCOUNT = "mlflow"
ARTIFACT_PREFIX = "mlflow"
CA_BUNDLE_CONFIGMAP = "model-registry-ca"
CREDENTIALS_SECRET = "model-registry-credentials"
WRITER_USER, READER_USER = "finml-writer", "finml-reader"
RDS_ENGINE_VERSION = "17.6"
RDS_FAMILY = "postgres17"
AUDIT_RETENTION_DAYS = 2555  # seven years, the usual record-keeping horizon for banking records
DB_ADMIN_SECRET = f"{DB_COMPONENT}-credentials"
DB_BOOTSTRAP = f"{DB_COMPONENT}-bootstrap"
ADMIN_DATABASE = "mlflow"
"""The server's first database (and its admin user's name): MLflow's backend store."""
CA_MOUNT = "/ca/ca.crt"


@dataclass(frozen=True)
class DatabaseClient:
    """Another workload with a database of its own on the registry's database server."""

    role: str
    """Login role, owner of the database, e.g. `feast`."""
    database: str
    namespace: str
    """Namespace of the pods that connect."""
    pods: tuple[str, ...]
    """Their `app.kubernetes.io/name` values (the database's ingress NetworkPolicy admits exactly these)."""


@dataclass(frozen=True)
class SiteDatabase:
    """How a client reaches its database on the registry's server (`ModelRegistry.databases[role]`)."""

    host: pulumi.Input[str]
    port: int
    database: str
    user: str
    password: pulumi.Output[str]
    """A Pulumi secret (RandomPassword of the registry component)."""
    verify: str
    """`site-ca`: the server's certificate is from the site CA (on-prem StatefulSet); `rds`: an AWS RDS instance
    (verify against the AWS RDS CA bundle the client's image carries)."""
    namespace: str
    """The registry's namespace (the database's Service and pods on-prem)."""
    server_pod_labels: Mapping[str, str] | None = None
    """Selector labels of the in-cluster database pods (None for RDS: reached through the VPC's data subnets)."""
    ca_certificate: pulumi.Input[str] | None = None
    """PEM of the CA that signed the in-cluster server's certificate (the site CA); None for RDS."""
    ready: pulumi.Resource | None = None
    """The bootstrap Job that creates the role and database: clients depend on it."""


def bootstrap_sql(role: str, database: str, admin_database: str = ADMIN_DATABASE) -> str:
    """psql script creating `role` (login, password from env FINML_DB_PASSWORD) and `database` owned by it.

    Idempotent: run again it only resets the password to the Secret's value. It runs again when the script changes
    (its hash is in the pod template); after rotating a client's password, replace its Job in the same `pulumi up`. `CREATE DATABASE`
    cannot run inside a transaction (so not in a DO block): `\\gexec` runs it only when the database is missing.
    As a non-superuser admin (the RDS master user) the admin must be a member of the role to give it a database.
    The password never reaches the Job's log: `\\gset` swallows the rows that carry it.
    """
    for what, name in (("role", role), ("database", database), ("admin database", admin_database)):
        if not name.replace("_", "").isalnum() or not name[0].isalpha() or name != name.lower():
            raise ValueError(f"database client {what} {name!r}: lower-case letters, digits and _ only")
    return f"""\\set ON_ERROR_STOP on
\\getenv finml_password FINML_DB_PASSWORD
SELECT set_config('finml.password', :'finml_password', false) IS NULL AS finml_unset \\gset
DO $bootstrap$
BEGIN
  IF NOT EXISTS (SELECT FROM pg_catalog.pg_roles WHERE rolname = '{role}') THEN
    EXECUTE format('CREATE ROLE %I LOGIN NOCREATEDB NOCREATEROLE PASSWORD %L',
                   '{role}', current_setting('finml.password'));
  ELSE
    EXECUTE format('ALTER ROLE %I WITH LOGIN NOCREATEDB NOCREATEROLE PASSWORD %L',
                   '{role}', current_setting('finml.password'));
  END IF;
  -- A re-grant is only a notice; on PostgreSQL 16+ it adds the SET option CREATE DATABASE ... OWNER needs.
  IF NOT (SELECT rolsuper FROM pg_catalog.pg_roles WHERE rolname = current_user) THEN
    EXECUTE format('GRANT %I TO %I', '{role}', current_user);
  END IF;
END
$bootstrap$;
SELECT set_config('finml.password', '', false) IS NULL AS finml_unset \\gset
SELECT format('CREATE DATABASE %I OWNER %I', '{database}', '{role}')
 WHERE NOT EXISTS (SELECT FROM pg_catalog.pg_database WHERE datname = '{database}') \\gexec
ALTER DATABASE {database} OWNER TO {role};
REVOKE ALL ON DATABASE {database} FROM PUBLIC;
GRANT CONNECT, TEMPORARY ON DATABASE {database} TO {role};
REVOKE CONNECT, TEMPORARY ON DATABASE {admin_database} FROM PUBLIC;
"""


@dataclass(frozen=True)
class AwsRegistryBackend:
    """What the AWS site provides: its provider, the registry classification's CMK and bucket, the data subnets,
    the node security group and the cluster's OIDC provider (for IRSA)."""

    provider: aws.Provider
    account_id: str
    kms_key_arn: pulumi.Input[str]
    artifact_bucket: pulumi.Input[str]
    data_subnet_ids: pulumi.Input[Sequence[str]]
    data_subnet_cidrs: Sequence[str]
    node_security_group_id: pulumi.Input[str]
    vpc_id: pulumi.Input[str]
    oidc_provider_arn: pulumi.Input[str]
    oidc_issuer_url: pulumi.Input[str]
    extra_tags: Mapping[str, str] = field(default_factory=dict)
    instance_class: str = "db.m7g.large"
    backup_retention_days: int = 14
    rds_ca_path: str | None = None
    """Path of the AWS RDS CA bundle inside the MLflow image; set it to verify the database (verify-full)."""


@dataclass(frozen=True)
class ModelRegistryArgs:
    site: str
    stack: str
    classification: str
    """Highest classification of the models the registry holds: labels/tags its database, artifacts and audit."""
    namespace: str = DATA_NAMESPACE
    image: str = DEFAULT_IMAGE
    db_image: str = DEFAULT_DB_IMAGE
    replicas: int = 2
    client_namespaces: tuple[str, ...] = (TRAINING_NAMESPACE, SERVING_NAMESPACE)
    deploy_runner_cidrs: tuple[str, ...] = ()
    """Networks of the deploy runners (CI promotion gate) allowed to reach the registry."""
    storage_class: str | None = None
    artifacts_gib: int = 200
    db_storage_gib: int = 50
    aws: AwsRegistryBackend | None = None
    site_ca: SiteCA | None = None
    """The site's CA (shared with the feature store); None: the registry makes one of its own."""
    database_clients: tuple[DatabaseClient, ...] = ()
    """Other workloads' databases on this registry's database server (e.g. the Feast SQL registry)."""

    def __post_init__(self) -> None:
        if self.replicas < 2:
            raise ValueError(f"model registry on {self.site}: at least 2 replicas (got {self.replicas})")


class ModelRegistry(pulumi.ComponentResource):
    """MLflow server + backend store + artifact store + CA + credentials + audit bucket for one site."""

    tracking_uri: str
    ca_bundle: pulumi.Output[str]
    deployment: k8s.apps.v1.Deployment
    database: aws.rds.Instance | k8s.apps.v1.StatefulSet
    audit_bucket: aws.s3.Bucket | None
    databases: dict[str, SiteDatabase]
    """Client role -> its database on the server (`ModelRegistryArgs.database_clients`)."""

    def __init__(self, name: str, args: ModelRegistryArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__(TYPE_TOKEN, name, {"site": args.site, "classification": args.classification,
                                            "namespace": args.namespace}, opts)
        self._name = name
        self._args = args
        self._opts = opts
        self._labels = workload_labels(COMPONENT, COMPONENT, args.site, args.classification)
        self._plain_labels = workload_labels(COMPONENT, COMPONENT, args.site)
        self._db_labels = workload_labels(DB_COMPONENT, DB_COMPONENT, args.site, args.classification)
        self.service_host = f"{COMPONENT}.{args.namespace}.svc.cluster.local"
        self.tracking_uri = f"https://{self.service_host}"

        self._create_local_providers()
        self._create_ca()
        self._create_passwords()
        if args.aws is not None:
            self._create_rds()
            self._create_aws_artifacts_and_audit()
        else:
            self._create_onprem_database()
            self._create_artifact_volume()
        self._create_secrets_and_bundle()
        self._create_priority_class()
        self._create_service()
        self._create_deployment()
        self._create_bootstrap_job()
        self._create_client_databases()
        self._create_network_policies()

        self.ca_bundle = self._ca.cert_pem
        self.register_outputs({"trackingUri": self.tracking_uri, "caBundle": self.ca_bundle,
                               "site": args.site, "classification": args.classification})

    # ------------------------------------------------------------------------------------------------ helpers

    def _k8s(self, depends_on: list[pulumi.Resource] | None = None, **extra: Any) -> pulumi.ResourceOptions:
        """Children wait for what the component waits for (ClusterBase), plus `depends_on` (built by _deps)."""
        if depends_on is None:
            return child_opts(self, self._opts, **extra)
        return pulumi.ResourceOptions(parent=self, depends_on=depends_on, **extra)

    def _aws(self, **extra: Any) -> pulumi.ResourceOptions:
        return pulumi.ResourceOptions(parent=self, provider=self._args.aws.provider, **extra)

    def _meta(self, name: str, labels: Mapping[str, str] | None = None, namespace: str | None = None,
              ) -> k8s.meta.v1.ObjectMetaArgs:
        return k8s.meta.v1.ObjectMetaArgs(name=name, namespace=namespace or self._args.namespace,
                                          labels=dict(labels if labels is not None else self._plain_labels))

    def _tags(self, name: str, classification: str | None = None) -> dict[str, str]:
        a = self._args
        return naming.aws_tags(a.site, a.stack, classification, dict(a.aws.extra_tags), name=name)

    # ------------------------------------------------------------------------------------------------ CA, secrets

    def _create_local_providers(self) -> None:
        # Default providers are disabled stack-wide; this one runs locally and places nothing anywhere.
        self._random = random.Provider(child_name(self._name, "random"), opts=pulumi.ResourceOptions(parent=self))

    def _create_ca(self) -> None:
        a = self._args
        self._ca = a.site_ca if a.site_ca is not None else SiteCA(
            child_name(self._name, "ca"), a.site, opts=pulumi.ResourceOptions(parent=self))
        self._server_key, self._server_cert = self._ca.issue(
            child_name(self._name, "server"), [self.service_host, COMPONENT, f"{COMPONENT}.{a.namespace}.svc"], self)
        if a.aws is None:
            db_host = f"{DB_COMPONENT}.{a.namespace}.svc.cluster.local"
            self._db_key, self._db_cert = self._ca.issue(
                child_name(self._name, "db"), [db_host, DB_COMPONENT, f"{DB_COMPONENT}.{a.namespace}.svc"], self)

    def _password(self, what: str, length: int = 32) -> random.RandomPassword:
        # URL- and ini-safe: the passwords go into a database URI and the auth app's ini file.
        return random.RandomPassword(child_name(self._name, what, "password"), length=length, special=False,
                                     min_lower=2, min_upper=2, min_numeric=2,
                                     opts=pulumi.ResourceOptions(parent=self, provider=self._random))

    def _create_passwords(self) -> None:
        self._admin_password = self._password("admin")
        self._writer_password = self._password("writer")
        self._reader_password = self._password("reader")
        self._db_password = self._password("db")
        self._flask_secret = self._password("flask-secret", 48)

    # ------------------------------------------------------------------------------------------------ AWS

    def _create_rds(self) -> None:
        a, b = self._args, self._args.aws
        db_name = child_name(self._name, "db")
        self._param_group = aws.rds.ParameterGroup(
            child_name(db_name, "params"), family=RDS_FAMILY,
            description="finml model registry: TLS only",
            parameters=[aws.rds.ParameterGroupParameterArgs(name="rds.force_ssl", value="1",
                                                            apply_method="pending-reboot"),
                        aws.rds.ParameterGroupParameterArgs(name="ssl_min_protocol_version", value="TLSv1.2",
                                                            apply_method="pending-reboot")],
            tags=self._tags(child_name(db_name, "params")), opts=self._aws())
        self._subnet_group = aws.rds.SubnetGroup(
            child_name(db_name, "subnets"), subnet_ids=b.data_subnet_ids,
            description="finml model registry database: data subnets only",
            tags=self._tags(child_name(db_name, "subnets")), opts=self._aws())
        sg_name = child_name(db_name, "sg")
        self._db_security_group = aws.ec2.SecurityGroup(
            sg_name, description="Model registry database: PostgreSQL from the cluster nodes only", vpc_id=b.vpc_id,
            ingress=[aws.ec2.SecurityGroupIngressArgs(protocol="tcp", from_port=POSTGRES_PORT, to_port=POSTGRES_PORT,
                                                      security_groups=[b.node_security_group_id],
                                                      description="PostgreSQL from the node security group")],
            egress=[], tags=self._tags(sg_name), opts=self._aws())
        self.database = aws.rds.Instance(
            db_name,
            engine="postgres", engine_version=RDS_ENGINE_VERSION, instance_class=b.instance_class,
            allocated_storage=a.db_storage_gib, max_allocated_storage=a.db_storage_gib * 4, storage_type="gp3",
            storage_encrypted=True, kms_key_id=b.kms_key_arn,
            db_name="mlflow", username="mlflow", password=self._db_password.result,
            db_subnet_group_name=self._subnet_group.name, vpc_security_group_ids=[self._db_security_group.id],
            parameter_group_name=self._param_group.name,
            publicly_accessible=False, multi_az=True, deletion_protection=True,
            backup_retention_period=b.backup_retention_days, copy_tags_to_snapshot=True,
            skip_final_snapshot=False, final_snapshot_identifier=naming.slug(f"{db_name}-final"),
            auto_minor_version_upgrade=True, performance_insights_enabled=True,
            performance_insights_kms_key_id=b.kms_key_arn,
            tags=self._tags(db_name, a.classification), opts=self._aws())
        self._db_host = self.database.address

    def _create_aws_artifacts_and_audit(self) -> None:
        a, b = self._args, self._args.aws
        prefix = f"{ARTIFACT_PREFIX}/{naming.slug(a.site)}"
        self.artifact_uri = pulumi.Output.concat("s3://", b.artifact_bucket, "/", prefix)
        audit_name = child_name(self._name, "audit")
        audit = secure_bucket(audit_name, parent=self, site=a.site, stack=a.stack, account_id=b.account_id,
                              classification=a.classification, kms_key_arn=b.kms_key_arn,
                              extra_tags=b.extra_tags, provider=b.provider, object_lock_enabled=True)
        self.audit_bucket = audit.bucket
        self._audit_lock = aws.s3.BucketObjectLockConfiguration(
            child_name(audit_name, "object-lock"), bucket=audit.bucket.id, object_lock_enabled="Enabled",
            rule=aws.s3.BucketObjectLockConfigurationRuleArgs(
                default_retention=aws.s3.BucketObjectLockConfigurationRuleDefaultRetentionArgs(
                    mode="COMPLIANCE", days=AUDIT_RETENTION_DAYS)),
            opts=self._aws(depends_on=[audit.versioning]))
        audit_bucket_name = naming.bucket_name(a.stack, audit_name, b.account_id)
        self.audit_bucket_name = audit_bucket_name

        role_name = child_name(self._name, "irsa")
        namespace = a.namespace

        self.role = aws.iam.Role(
            role_name, description=f"MLflow artifacts under {prefix}/ ({namespace}/{SERVICE_ACCOUNT}, IRSA)",
            assume_role_policy=pulumi.Output.all(b.oidc_provider_arn, b.oidc_issuer_url).apply(
                lambda v: irsa_trust_policy(v[0], v[1], namespace, SERVICE_ACCOUNT)),
            tags=self._tags(role_name), opts=self._aws())

        def access(values: list[Any]) -> str:
            bucket, key_arn = values
            return json.dumps({"Version": "2012-10-17", "Statement": [
                {"Sid": "ArtifactObjects", "Effect": "Allow",
                 "Action": ["s3:GetObject", "s3:PutObject", "s3:DeleteObject", "s3:AbortMultipartUpload"],
                 "Resource": f"arn:aws:s3:::{bucket}/{prefix}/*"},
                {"Sid": "ArtifactListing", "Effect": "Allow", "Action": "s3:ListBucket",
                 "Resource": f"arn:aws:s3:::{bucket}",
                 "Condition": {"StringLike": {"s3:prefix": [f"{prefix}/*", prefix]}}},
                {"Sid": "AuditAppendOnly", "Effect": "Allow", "Action": "s3:PutObject",
                 "Resource": f"arn:aws:s3:::{audit_bucket_name}/audit/*"},
                {"Sid": "SiteKey", "Effect": "Allow", "Action": ["kms:Decrypt", "kms:GenerateDataKey"],
                 "Resource": key_arn},
            ]}, sort_keys=True)

        self.role_policy = aws.iam.RolePolicy(
            child_name(role_name, "artifacts"), role=self.role.id,
            policy=pulumi.Output.all(b.artifact_bucket, b.kms_key_arn).apply(access), opts=self._aws())

    # ------------------------------------------------------------------------------------------------ on-prem

    def _create_onprem_database(self) -> None:
        a = self._args
        self._db_host = f"{DB_COMPONENT}.{a.namespace}.svc.cluster.local"
        self._db_tls = k8s.core.v1.Secret(
            child_name(self._name, "db-tls"), metadata=self._meta(f"{DB_COMPONENT}-tls"), type="kubernetes.io/tls",
            string_data={"tls.crt": self._db_cert.cert_pem, "tls.key": self._db_key.private_key_pem,
                         "ca.crt": self._ca.cert_pem},
            opts=self._k8s(additional_secret_outputs=["stringData"]))
        self._db_secret = k8s.core.v1.Secret(
            child_name(self._name, "db-credentials"), metadata=self._meta(f"{DB_COMPONENT}-credentials"),
            type="Opaque", string_data={"POSTGRES_USER": "mlflow", "POSTGRES_DB": "mlflow",
                                        "POSTGRES_PASSWORD": self._db_password.result},
            opts=self._k8s(additional_secret_outputs=["stringData"]))
        self._db_service = k8s.core.v1.Service(
            child_name(self._name, "db-service"), metadata=self._meta(DB_COMPONENT, self._db_plain_labels()),
            spec=k8s.core.v1.ServiceSpecArgs(
                type="ClusterIP", selector=selector_labels(DB_COMPONENT, DB_COMPONENT),
                ports=[k8s.core.v1.ServicePortArgs(name="postgres", port=POSTGRES_PORT, target_port="postgres",
                                                   protocol="TCP")]),
            opts=self._k8s())
        container = k8s.core.v1.ContainerArgs(
            name="postgres", image=a.db_image, image_pull_policy="IfNotPresent",
            args=["-c", "ssl=on", "-c", "ssl_cert_file=/tls/tls.crt", "-c", "ssl_key_file=/tls/tls.key",
                  "-c", "ssl_min_protocol_version=TLSv1.2", "-c", "password_encryption=scram-sha-256",
                  "-c", "listen_addresses=*"],
            env=[k8s.core.v1.EnvVarArgs(name="PGDATA", value="/var/lib/postgresql/data/pgdata"),
                 # Refuse plain TCP: hostssl only (the image writes pg_hba from this on first start).
                 k8s.core.v1.EnvVarArgs(name="POSTGRES_HOST_AUTH_METHOD", value="scram-sha-256"),
                 k8s.core.v1.EnvVarArgs(name="POSTGRES_INITDB_ARGS", value="--auth-host=scram-sha-256")],
            env_from=[k8s.core.v1.EnvFromSourceArgs(secret_ref=k8s.core.v1.SecretEnvSourceArgs(
                name=f"{DB_COMPONENT}-credentials"))],
            ports=[k8s.core.v1.ContainerPortArgs(name="postgres", container_port=POSTGRES_PORT, protocol="TCP")],
            resources=guaranteed_resources("1", "2Gi"),
            security_context=restricted_container_security_context(POSTGRES_UID),
            readiness_probe=k8s.core.v1.ProbeArgs(
                exec_=k8s.core.v1.ExecActionArgs(command=["pg_isready", "-h", "127.0.0.1", "-U", "mlflow"]),
                period_seconds=10),
            liveness_probe=k8s.core.v1.ProbeArgs(
                tcp_socket=k8s.core.v1.TCPSocketActionArgs(port="postgres"), initial_delay_seconds=30,
                period_seconds=20),
            volume_mounts=[k8s.core.v1.VolumeMountArgs(name="data", mount_path="/var/lib/postgresql/data"),
                           k8s.core.v1.VolumeMountArgs(name="tls", mount_path="/tls", read_only=True),
                           k8s.core.v1.VolumeMountArgs(name="run", mount_path="/var/run/postgresql"),
                           k8s.core.v1.VolumeMountArgs(name="tmp", mount_path="/tmp")],
        )
        pvc_labels = {CLASSIFICATION_LABEL: a.classification, SITE_LABEL: site_label_value(a.site),
                      "app.kubernetes.io/part-of": "finml"}
        self.database = k8s.apps.v1.StatefulSet(
            child_name(self._name, "db"), metadata=self._meta(DB_COMPONENT, self._db_labels),
            spec=k8s.apps.v1.StatefulSetSpecArgs(
                replicas=1, service_name=DB_COMPONENT,
                selector=k8s.meta.v1.LabelSelectorArgs(match_labels=selector_labels(DB_COMPONENT, DB_COMPONENT)),
                persistent_volume_claim_retention_policy=(
                    k8s.apps.v1.StatefulSetPersistentVolumeClaimRetentionPolicyArgs(
                        when_deleted="Retain", when_scaled="Retain")),
                template=k8s.core.v1.PodTemplateSpecArgs(
                    metadata=k8s.meta.v1.ObjectMetaArgs(labels=self._db_labels),
                    spec=k8s.core.v1.PodSpecArgs(
                        node_selector=site_node_selector(a.site),
                        priority_class_name=PRIORITY_CLASS,
                        security_context=restricted_pod_security_context(POSTGRES_UID),
                        automount_service_account_token=False, enable_service_links=False,
                        containers=[container],
                        volumes=[k8s.core.v1.VolumeArgs(name="tls", secret=k8s.core.v1.SecretVolumeSourceArgs(
                                     secret_name=f"{DB_COMPONENT}-tls", default_mode=0o440)),
                                 scratch_volume("run", "16Mi"), scratch_volume("tmp", "256Mi")],
                    ),
                ),
                volume_claim_templates=[k8s.core.v1.PersistentVolumeClaimArgs(
                    metadata=k8s.meta.v1.ObjectMetaArgs(name="data", labels=dict(sorted(pvc_labels.items()))),
                    spec=k8s.core.v1.PersistentVolumeClaimSpecArgs(
                        access_modes=["ReadWriteOnce"], storage_class_name=a.storage_class,
                        resources=k8s.core.v1.VolumeResourceRequirementsArgs(
                            requests={"storage": f"{a.db_storage_gib}Gi"})),
                )],
            ),
            opts=self._k8s(depends_on=self._deps(self._db_tls, self._db_secret)))

    def _db_plain_labels(self) -> dict[str, str]:
        return workload_labels(DB_COMPONENT, DB_COMPONENT, self._args.site)

    def _deps(self, *resources: pulumi.Resource) -> list[pulumi.Resource]:
        base = self._opts.depends_on if self._opts is not None and self._opts.depends_on else []
        base = list(base) if isinstance(base, (list, tuple)) else [base]
        return [*base, *resources]

    def _create_artifact_volume(self) -> None:
        a = self._args
        labels = {CLASSIFICATION_LABEL: a.classification, SITE_LABEL: site_label_value(a.site),
                  "app.kubernetes.io/part-of": "finml"}
        self.artifact_uri = "/artifacts"
        self.audit_bucket = None
        # Two replicas share one artifact store: ReadWriteMany on the site's (NFS/CephFS) storage class.
        self._artifacts_pvc = k8s.core.v1.PersistentVolumeClaim(
            child_name(self._name, "artifacts"),
            metadata=self._meta(f"{COMPONENT}-artifacts", dict(sorted(labels.items()))),
            spec=k8s.core.v1.PersistentVolumeClaimSpecArgs(
                access_modes=["ReadWriteMany"], storage_class_name=a.storage_class,
                resources=k8s.core.v1.VolumeResourceRequirementsArgs(requests={"storage": f"{a.artifacts_gib}Gi"})),
            opts=self._k8s())

    # ------------------------------------------------------------------------------------------------ server

    def _create_secrets_and_bundle(self) -> None:
        a = self._args
        # On-prem the database's certificate is verified against the site CA. On AWS the parameter group forces
        # TLS; verifying the RDS certificate needs the AWS RDS CA bundle mirrored into the image (rds_ca_path).
        tls_params = (f"sslmode=verify-full&sslrootcert={a.aws.rds_ca_path}" if a.aws is not None and a.aws.rds_ca_path
                      else "sslmode=require" if a.aws is not None else "sslmode=verify-full&sslrootcert=/ca/ca.crt")
        db_uri = pulumi.Output.concat("postgresql://mlflow:", self._db_password.result, "@", self._db_host, ":",
                                      str(POSTGRES_PORT), "/mlflow?", tls_params)
        auth_ini = pulumi.Output.concat(
            "[mlflow]\ndefault_permission = READ\n", "database_uri = ", db_uri, "\n",
            "admin_username = admin\n", "admin_password = ", self._admin_password.result, "\n",
            "authorization_function = mlflow.server.auth:authenticate_request_basic_auth\n",
            # Without it every request re-derives the PBKDF2 hash; 30 s bounds how long a rotated password lingers.
            "auth_cache_ttl_seconds = 30\n")
        self._server_secret = k8s.core.v1.Secret(
            child_name(self._name, "server"), metadata=self._meta(f"{COMPONENT}-server"), type="Opaque",
            string_data={"basic_auth.ini": auth_ini, "backend-store-uri": db_uri,
                         "flask-secret-key": self._flask_secret.result,
                         "admin-password": self._admin_password.result,
                         "writer-password": self._writer_password.result,
                         "reader-password": self._reader_password.result},
            opts=self._k8s(additional_secret_outputs=["stringData"]))
        self._tls_secret = k8s.core.v1.Secret(
            child_name(self._name, "tls-secret"), metadata=self._meta(f"{COMPONENT}-tls"), type="kubernetes.io/tls",
            string_data={"tls.crt": self._server_cert.cert_pem, "tls.key": self._server_key.private_key_pem},
            opts=self._k8s(additional_secret_outputs=["stringData"]))
        self._ca_configmaps = [k8s.core.v1.ConfigMap(
            child_name(self._name, "ca-bundle", ns), metadata=self._meta(CA_BUNDLE_CONFIGMAP, namespace=ns),
            data={"ca.crt": self._ca.cert_pem}, opts=self._k8s())
            for ns in (a.namespace, *a.client_namespaces)]
        # Clients read these with MLflow's standard variables (MLFLOW_TRACKING_USERNAME/PASSWORD/SERVER_CERT_PATH).
        users = {TRAINING_NAMESPACE: (WRITER_USER, self._writer_password),
                 SERVING_NAMESPACE: (READER_USER, self._reader_password)}
        self._client_secrets = [k8s.core.v1.Secret(
            child_name(self._name, "credentials", ns), metadata=self._meta(CREDENTIALS_SECRET, namespace=ns),
            type="Opaque",
            string_data={"MLFLOW_TRACKING_URI": self.tracking_uri, "MLFLOW_TRACKING_USERNAME": users[ns][0],
                         "MLFLOW_TRACKING_PASSWORD": users[ns][1].result,
                         "MLFLOW_TRACKING_SERVER_CERT_PATH": "/etc/finml/registry-ca/ca.crt"},
            opts=self._k8s(additional_secret_outputs=["stringData"]))
            for ns in a.client_namespaces if ns in users]

    def _create_priority_class(self) -> None:
        self._priority = k8s.scheduling.v1.PriorityClass(
            child_name(self._name, "priority"),
            metadata=k8s.meta.v1.ObjectMetaArgs(name=PRIORITY_CLASS, labels=self._plain_labels),
            value=PRIORITY_VALUE, global_default=False, preemption_policy="PreemptLowerPriority",
            description="finml model registry: the promotion gate and serving depend on it",
            opts=self._k8s())

    def _create_service(self) -> None:
        self._service_account = k8s.core.v1.ServiceAccount(
            child_name(self._name, "service-account"),
            metadata=k8s.meta.v1.ObjectMetaArgs(
                name=SERVICE_ACCOUNT, namespace=self._args.namespace, labels=self._plain_labels,
                annotations={"eks.amazonaws.com/role-arn": self.role.arn} if self._args.aws is not None else None),
            automount_service_account_token=False, opts=self._k8s())
        self.service = k8s.core.v1.Service(
            child_name(self._name, "service"), metadata=self._meta(COMPONENT),
            spec=k8s.core.v1.ServiceSpecArgs(
                type="ClusterIP", selector=selector_labels(COMPONENT, COMPONENT),
                ports=[k8s.core.v1.ServicePortArgs(name="https", port=SERVICE_PORT, target_port="https",
                                                   protocol="TCP")]),
            opts=self._k8s())

    def _create_deployment(self) -> None:
        a = self._args
        args = ["server", "--host", "0.0.0.0", "--port", str(MLFLOW_PORT), "--workers", "2",
                "--backend-store-uri", "$(BACKEND_STORE_URI)",
                "--serve-artifacts", "--artifacts-destination", "$(ARTIFACTS_DESTINATION)",
                "--app-name", "basic-auth",
                "--allowed-hosts", f"{self.service_host},{COMPONENT}.{a.namespace}.svc,{COMPONENT}",
                "--uvicorn-opts", "--ssl-keyfile /tls/tls.key --ssl-certfile /tls/tls.crt"]
        secret_env = [("BACKEND_STORE_URI", "backend-store-uri"), ("MLFLOW_FLASK_SERVER_SECRET_KEY",
                                                                   "flask-secret-key")]
        env = [k8s.core.v1.EnvVarArgs(name=n, value_from=k8s.core.v1.EnvVarSourceArgs(
                   secret_key_ref=k8s.core.v1.SecretKeySelectorArgs(name=f"{COMPONENT}-server", key=k)))
               for n, k in secret_env]
        env += [k8s.core.v1.EnvVarArgs(name="ARTIFACTS_DESTINATION", value=self.artifact_uri),
                k8s.core.v1.EnvVarArgs(name="MLFLOW_AUTH_CONFIG_PATH", value="/auth/basic_auth.ini"),
                k8s.core.v1.EnvVarArgs(name="MLFLOW_DISABLE_TELEMETRY", value="true"),
                k8s.core.v1.EnvVarArgs(name="MLFLOW_SERVER_ENABLE_JOB_EXECUTION", value="false"),
                k8s.core.v1.EnvVarArgs(name="HOME", value="/tmp")]
        if a.aws is not None:
            env.append(k8s.core.v1.EnvVarArgs(name="AWS_REGION", value=region_of(a.site)))
        mounts = [k8s.core.v1.VolumeMountArgs(name="tls", mount_path="/tls", read_only=True),
                  k8s.core.v1.VolumeMountArgs(name="auth", mount_path="/auth", read_only=True),
                  k8s.core.v1.VolumeMountArgs(name="ca", mount_path="/ca", read_only=True),
                  k8s.core.v1.VolumeMountArgs(name="tmp", mount_path="/tmp")]
        volumes = [
            k8s.core.v1.VolumeArgs(name="tls", secret=k8s.core.v1.SecretVolumeSourceArgs(
                secret_name=f"{COMPONENT}-tls", default_mode=0o440)),
            k8s.core.v1.VolumeArgs(name="auth", secret=k8s.core.v1.SecretVolumeSourceArgs(
                secret_name=f"{COMPONENT}-server", default_mode=0o440,
                items=[k8s.core.v1.KeyToPathArgs(key="basic_auth.ini", path="basic_auth.ini")])),
            k8s.core.v1.VolumeArgs(name="ca", config_map=k8s.core.v1.ConfigMapVolumeSourceArgs(
                name=CA_BUNDLE_CONFIGMAP)),
            scratch_volume("tmp", "1Gi"),
        ]
        if a.aws is None:
            mounts.append(k8s.core.v1.VolumeMountArgs(name="artifacts", mount_path="/artifacts"))
            volumes.append(k8s.core.v1.VolumeArgs(
                name="artifacts", persistent_volume_claim=k8s.core.v1.PersistentVolumeClaimVolumeSourceArgs(
                    claim_name=f"{COMPONENT}-artifacts")))
        probe = k8s.core.v1.HTTPGetActionArgs(path="/health", port="https", scheme="HTTPS")
        container = k8s.core.v1.ContainerArgs(
            name="mlflow", image=a.image, image_pull_policy="IfNotPresent", command=["mlflow"], args=args, env=env,
            ports=[k8s.core.v1.ContainerPortArgs(name="https", container_port=MLFLOW_PORT, protocol="TCP")],
            resources=guaranteed_resources("1", "2Gi"),
            security_context=restricted_container_security_context(MLFLOW_UID),
            startup_probe=k8s.core.v1.ProbeArgs(http_get=probe, period_seconds=5, failure_threshold=60),
            readiness_probe=k8s.core.v1.ProbeArgs(http_get=probe, period_seconds=10, timeout_seconds=5),
            liveness_probe=k8s.core.v1.ProbeArgs(http_get=probe, period_seconds=20, timeout_seconds=5,
                                                 failure_threshold=3),
            volume_mounts=mounts)
        depends = [self._server_secret, self._tls_secret, *self._ca_configmaps, self._priority]
        if a.aws is None:
            depends += [self._artifacts_pvc, self.database]
        else:
            depends += [self.database, self.role_policy]
        self.deployment = k8s.apps.v1.Deployment(
            child_name(self._name, "deployment"), metadata=self._meta(COMPONENT, self._labels),
            spec=k8s.apps.v1.DeploymentSpecArgs(
                replicas=a.replicas,
                selector=k8s.meta.v1.LabelSelectorArgs(match_labels=selector_labels(COMPONENT, COMPONENT)),
                strategy=k8s.apps.v1.DeploymentStrategyArgs(
                    type="RollingUpdate", rolling_update=k8s.apps.v1.RollingUpdateDeploymentArgs(
                        max_unavailable=0, max_surge=1)),
                template=k8s.core.v1.PodTemplateSpecArgs(
                    metadata=k8s.meta.v1.ObjectMetaArgs(labels=self._labels),
                    spec=k8s.core.v1.PodSpecArgs(
                        node_selector=site_node_selector(a.site), priority_class_name=PRIORITY_CLASS,
                        service_account_name=SERVICE_ACCOUNT,
                        # IRSA needs the projected web-identity token; on-prem nothing needs the API.
                        automount_service_account_token=False, enable_service_links=False,
                        security_context=restricted_pod_security_context(MLFLOW_UID),
                        topology_spread_constraints=[k8s.core.v1.TopologySpreadConstraintArgs(
                            max_skew=1, topology_key="kubernetes.io/hostname", when_unsatisfiable="DoNotSchedule",
                            label_selector=k8s.meta.v1.LabelSelectorArgs(
                                match_labels=selector_labels(COMPONENT, COMPONENT)))],
                        containers=[container], volumes=volumes)),
            ),
            opts=self._k8s(depends_on=self._deps(*depends)))
        self.pdb = k8s.policy.v1.PodDisruptionBudget(
            child_name(self._name, "pdb"), metadata=self._meta(COMPONENT),
            spec=k8s.policy.v1.PodDisruptionBudgetSpecArgs(
                min_available=1,
                selector=k8s.meta.v1.LabelSelectorArgs(match_labels=selector_labels(COMPONENT, COMPONENT))),
            opts=self._k8s())

    def _create_bootstrap_job(self) -> None:
        """Creates the writer and reader users (the auth app only bootstraps the admin) and grants the writer EDIT."""
        a = self._args
        script = (
            "import base64,json,os,ssl,urllib.request,urllib.error\n"
            f"base='https://{self.service_host}'\n"
            "ctx=ssl.create_default_context(cafile='/ca/ca.crt')\n"
            "tok=base64.b64encode(('admin:'+os.environ['ADMIN_PASSWORD']).encode()).decode()\n"
            "def call(path,body):\n"
            "    req=urllib.request.Request(base+path,json.dumps(body).encode(),method='POST',headers={"
            "'Authorization':'Basic '+tok,'Content-Type':'application/json'})\n"
            "    try: urllib.request.urlopen(req,context=ctx,timeout=30)\n"
            "    except urllib.error.HTTPError as e:\n"
            "        if e.code!=400: raise\n"  # already exists: idempotent
            f"call('/api/2.0/mlflow/users/create',{{'username':'{WRITER_USER}','password':os.environ['WRITER_PASSWORD']}})\n"
            f"call('/api/2.0/mlflow/users/create',{{'username':'{READER_USER}','password':os.environ['READER_PASSWORD']}})\n"
            "for t in ('experiment','registered_model'):\n"
            f"    call('/api/3.0/mlflow/users/permissions/grant',{{'username':'{WRITER_USER}','resource_type':t,"
            "'resource_id':'*','permission':'EDIT'})\n")
        env = [k8s.core.v1.EnvVarArgs(name=n, value_from=k8s.core.v1.EnvVarSourceArgs(
                   secret_key_ref=k8s.core.v1.SecretKeySelectorArgs(name=f"{COMPONENT}-server", key=k)))
               for n, k in (("ADMIN_PASSWORD", "admin-password"), ("WRITER_PASSWORD", "writer-password"),
                            ("READER_PASSWORD", "reader-password"))]
        # It handles the registry's credentials: labelled with the registry's classification like the server.
        labels = workload_labels(f"{COMPONENT}-bootstrap", f"{COMPONENT}-bootstrap", a.site, a.classification)
        self.bootstrap_job = k8s.batch.v1.Job(
            child_name(self._name, "bootstrap-users"), metadata=self._meta(f"{COMPONENT}-bootstrap-users", labels),
            spec=k8s.batch.v1.JobSpecArgs(
                backoff_limit=10, ttl_seconds_after_finished=3600,
                template=k8s.core.v1.PodTemplateSpecArgs(
                    metadata=k8s.meta.v1.ObjectMetaArgs(labels=labels),
                    spec=k8s.core.v1.PodSpecArgs(
                        restart_policy="OnFailure", node_selector=site_node_selector(a.site),
                        automount_service_account_token=False, enable_service_links=False,
                        security_context=restricted_pod_security_context(MLFLOW_UID),
                        containers=[k8s.core.v1.ContainerArgs(
                            name="bootstrap", image=a.image, image_pull_policy="IfNotPresent",
                            command=["python", "-c", script], env=env,
                            resources=guaranteed_resources("100m", "256Mi"),
                            security_context=restricted_container_security_context(MLFLOW_UID),
                            volume_mounts=[k8s.core.v1.VolumeMountArgs(name="ca", mount_path="/ca",
                                                                       read_only=True)])],
                        volumes=[k8s.core.v1.VolumeArgs(name="ca", config_map=k8s.core.v1.ConfigMapVolumeSourceArgs(
                            name=CA_BUNDLE_CONFIGMAP))]))),
            opts=self._k8s(depends_on=self._deps(self.deployment)))

    # ------------------------------------------------------------------------------------------------ client databases

    def _admin_secret(self) -> k8s.core.v1.Secret:
        """The server's admin credentials for the bootstrap Jobs: on-prem the StatefulSet's own Secret; on AWS the
        RDS master user's, made here (nothing else in the cluster needs it)."""
        if self._args.aws is None:
            return self._db_secret
        return k8s.core.v1.Secret(
            child_name(self._name, "db-credentials"), metadata=self._meta(DB_ADMIN_SECRET), type="Opaque",
            string_data={"POSTGRES_USER": "mlflow", "POSTGRES_DB": ADMIN_DATABASE,
                         "POSTGRES_PASSWORD": self._db_password.result},
            opts=self._k8s(additional_secret_outputs=["stringData"]))

    def _create_client_databases(self) -> None:
        a = self._args
        self.databases = {}
        self._bootstrap_jobs = []
        if not a.database_clients:
            return
        admin = self._admin_secret()
        core = k8s.core.v1
        for client in a.database_clients:
            what = f"{DB_BOOTSTRAP}-{client.role}"
            # It holds the server's admin credentials: labelled with the registry's classification.
            labels = workload_labels(DB_BOOTSTRAP, what, a.site, a.classification)
            password = self._password(f"db-{client.role}", 40)
            secret = core.Secret(
                child_name(self._name, "db", client.role, "credentials"),
                metadata=self._meta(f"{DB_COMPONENT}-{client.role}-credentials"), type="Opaque",
                string_data={"password": password.result},
                opts=self._k8s(additional_secret_outputs=["stringData"]))
            sql = bootstrap_sql(client.role, client.database)
            script = core.ConfigMap(
                child_name(self._name, "db", client.role, "bootstrap-sql"), metadata=self._meta(what),
                data={"bootstrap.sql": sql}, opts=self._k8s())

            def from_secret(name: str, secret_name: str, key: str) -> core.EnvVarArgs:
                return core.EnvVarArgs(name=name, value_from=core.EnvVarSourceArgs(
                    secret_key_ref=core.SecretKeySelectorArgs(name=secret_name, key=key)))

            # On-prem the server's certificate is verified against the site CA; the postgres image carries no AWS
            # RDS CA bundle, so against RDS TLS is required (rds.force_ssl) but not verified, as for MLflow itself.
            tls_env = ([core.EnvVarArgs(name="PGSSLMODE", value="require")] if a.aws is not None else
                       [core.EnvVarArgs(name="PGSSLMODE", value="verify-full"),
                        core.EnvVarArgs(name="PGSSLROOTCERT", value=CA_MOUNT)])
            env = [core.EnvVarArgs(name="PGHOST", value=self._db_host),
                   core.EnvVarArgs(name="PGPORT", value=str(POSTGRES_PORT)),
                   core.EnvVarArgs(name="PGDATABASE", value=ADMIN_DATABASE),
                   core.EnvVarArgs(name="PGCONNECT_TIMEOUT", value="10"),
                   core.EnvVarArgs(name="PGAPPNAME", value=what),
                   from_secret("PGUSER", DB_ADMIN_SECRET, "POSTGRES_USER"),
                   from_secret("PGPASSWORD", DB_ADMIN_SECRET, "POSTGRES_PASSWORD"),
                   from_secret("FINML_DB_PASSWORD", f"{DB_COMPONENT}-{client.role}-credentials", "password"),
                   *tls_env, core.EnvVarArgs(name="HOME", value="/tmp")]
            job = k8s.batch.v1.Job(
                child_name(self._name, "db", client.role, "bootstrap"), metadata=self._meta(what, labels),
                spec=k8s.batch.v1.JobSpecArgs(
                    backoff_limit=10, active_deadline_seconds=900, ttl_seconds_after_finished=3600,
                    template=core.PodTemplateSpecArgs(
                        # A changed script changes the pod template, so the provider replaces the Job and it runs
                        # again (a Job's template is immutable); the ConfigMap alone would not.
                        metadata=k8s.meta.v1.ObjectMetaArgs(labels=labels, annotations={
                            "finml.io/bootstrap-sql-sha256": hashlib.sha256(sql.encode()).hexdigest()}),
                        spec=core.PodSpecArgs(
                            restart_policy="OnFailure", node_selector=site_node_selector(a.site),
                            automount_service_account_token=False, enable_service_links=False,
                            security_context=restricted_pod_security_context(POSTGRES_UID),
                            containers=[core.ContainerArgs(
                                name="psql", image=a.db_image, image_pull_policy="IfNotPresent",
                                command=["psql", "--no-psqlrc", "--quiet", "--file", "/sql/bootstrap.sql"],
                                env=env, resources=guaranteed_resources("100m", "128Mi"),
                                security_context=restricted_container_security_context(POSTGRES_UID),
                                volume_mounts=[core.VolumeMountArgs(name="ca", mount_path="/ca", read_only=True),
                                               core.VolumeMountArgs(name="sql", mount_path="/sql", read_only=True),
                                               core.VolumeMountArgs(name="tmp", mount_path="/tmp")])],
                            volumes=[core.VolumeArgs(name="ca", config_map=core.ConfigMapVolumeSourceArgs(
                                         name=CA_BUNDLE_CONFIGMAP)),
                                     core.VolumeArgs(name="sql", config_map=core.ConfigMapVolumeSourceArgs(
                                         name=what)),
                                     scratch_volume("tmp", "16Mi")]))),
                opts=self._k8s(depends_on=self._deps(self.database, admin, secret, script, *self._ca_configmaps)))
            self._bootstrap_jobs.append(job)
            self.databases[client.role] = SiteDatabase(
                host=self._db_host, port=POSTGRES_PORT, database=client.database, user=client.role,
                password=pulumi.Output.secret(password.result), verify="rds" if a.aws is not None else "site-ca",
                namespace=a.namespace,
                server_pod_labels=None if a.aws is not None else selector_labels(DB_COMPONENT, DB_COMPONENT),
                ca_certificate=None if a.aws is not None else self._ca.cert_pem, ready=job)

    # ------------------------------------------------------------------------------------------------ network

    def _np(self, name: str, namespace: str, spec: k8s.networking.v1.NetworkPolicySpecArgs
            ) -> k8s.networking.v1.NetworkPolicy:
        return k8s.networking.v1.NetworkPolicy(
            child_name(self._name, name), metadata=self._meta(f"{COMPONENT}-{name}", namespace=namespace),
            spec=spec, opts=self._k8s())

    def _create_network_policies(self) -> None:
        a = self._args
        np = k8s.networking.v1
        server_pods = k8s.meta.v1.LabelSelectorArgs(match_labels=selector_labels(COMPONENT, COMPONENT))
        https = [np.NetworkPolicyPortArgs(protocol="TCP", port=MLFLOW_PORT)]
        peers = [np.NetworkPolicyPeerArgs(namespace_selector=k8s.meta.v1.LabelSelectorArgs(match_expressions=[
            k8s.meta.v1.LabelSelectorRequirementArgs(key=NAMESPACE_NAME_LABEL, operator="In",
                                                     values=list(a.client_namespaces))]))]
        # The bootstrap Job runs next to the server.
        peers.append(np.NetworkPolicyPeerArgs(pod_selector=k8s.meta.v1.LabelSelectorArgs(
            match_labels=selector_labels(f"{COMPONENT}-bootstrap", f"{COMPONENT}-bootstrap"))))
        peers += [np.NetworkPolicyPeerArgs(ip_block=np.IPBlockArgs(cidr=c)) for c in a.deploy_runner_cidrs]
        policies = [self._np("ingress", a.namespace, np.NetworkPolicySpecArgs(
            pod_selector=server_pods, policy_types=["Ingress"],
            ingress=[np.NetworkPolicyIngressRuleArgs(from_=peers, ports=https)]))]
        bootstrap_pods = k8s.meta.v1.LabelSelectorArgs(match_labels={"app.kubernetes.io/name": DB_BOOTSTRAP})
        if a.aws is not None:
            db_peers_out = [np.NetworkPolicyPeerArgs(ip_block=np.IPBlockArgs(cidr=c)) for c in a.aws.data_subnet_cidrs]
        else:
            db_peers_out = [np.NetworkPolicyPeerArgs(pod_selector=k8s.meta.v1.LabelSelectorArgs(
                match_labels=selector_labels(DB_COMPONENT, DB_COMPONENT)))]
        if a.aws is not None:
            # RDS in the data subnets; S3 and STS through the VPC's interface/gateway endpoints on 443.
            egress = [np.NetworkPolicyEgressRuleArgs(
                          to=[np.NetworkPolicyPeerArgs(ip_block=np.IPBlockArgs(cidr=c)) for c in
                              a.aws.data_subnet_cidrs],
                          ports=[np.NetworkPolicyPortArgs(protocol="TCP", port=POSTGRES_PORT)]),
                      np.NetworkPolicyEgressRuleArgs(ports=[np.NetworkPolicyPortArgs(protocol="TCP", port=443)])]
        else:
            db_pods = k8s.meta.v1.LabelSelectorArgs(match_labels=selector_labels(DB_COMPONENT, DB_COMPONENT))
            egress = [np.NetworkPolicyEgressRuleArgs(to=[np.NetworkPolicyPeerArgs(pod_selector=db_pods)],
                                                     ports=[np.NetworkPolicyPortArgs(protocol="TCP",
                                                                                     port=POSTGRES_PORT)])]
            db_peers = [np.NetworkPolicyPeerArgs(pod_selector=server_pods)]
            if a.database_clients:
                db_peers.append(np.NetworkPolicyPeerArgs(pod_selector=bootstrap_pods))
            # Each client's pods, in their own namespace (the feature server and the materialization job).
            db_peers += [np.NetworkPolicyPeerArgs(
                namespace_selector=k8s.meta.v1.LabelSelectorArgs(match_labels={NAMESPACE_NAME_LABEL: c.namespace}),
                pod_selector=k8s.meta.v1.LabelSelectorArgs(match_expressions=[
                    k8s.meta.v1.LabelSelectorRequirementArgs(key="app.kubernetes.io/name", operator="In",
                                                             values=sorted(c.pods))]))
                for c in a.database_clients]
            policies.append(self._np("db-ingress", a.namespace, np.NetworkPolicySpecArgs(
                pod_selector=db_pods, policy_types=["Ingress"],
                ingress=[np.NetworkPolicyIngressRuleArgs(
                    from_=db_peers, ports=[np.NetworkPolicyPortArgs(protocol="TCP", port=POSTGRES_PORT)])])))
        policies.append(self._np("egress", a.namespace, np.NetworkPolicySpecArgs(
            pod_selector=server_pods, policy_types=["Egress"], egress=egress)))
        policies.append(self._np("bootstrap-egress", a.namespace, np.NetworkPolicySpecArgs(
            pod_selector=k8s.meta.v1.LabelSelectorArgs(
                match_labels=selector_labels(f"{COMPONENT}-bootstrap", f"{COMPONENT}-bootstrap")),
            policy_types=["Egress"],
            egress=[np.NetworkPolicyEgressRuleArgs(to=[np.NetworkPolicyPeerArgs(pod_selector=server_pods)],
                                                   ports=https)])))
        if a.database_clients:
            # The database bootstrap Jobs reach only the database server.
            policies.append(self._np("db-bootstrap-egress", a.namespace, np.NetworkPolicySpecArgs(
                pod_selector=bootstrap_pods, policy_types=["Egress"],
                egress=[np.NetworkPolicyEgressRuleArgs(
                    to=db_peers_out, ports=[np.NetworkPolicyPortArgs(protocol="TCP", port=POSTGRES_PORT)])])))
        for ns in a.client_namespaces:
            policies.append(self._np(f"{ns}-egress", ns, np.NetworkPolicySpecArgs(
                pod_selector=k8s.meta.v1.LabelSelectorArgs(), policy_types=["Egress"],
                egress=[np.NetworkPolicyEgressRuleArgs(
                    to=[np.NetworkPolicyPeerArgs(
                        namespace_selector=k8s.meta.v1.LabelSelectorArgs(
                            match_labels={NAMESPACE_NAME_LABEL: a.namespace}),
                        pod_selector=server_pods)],
                    ports=https)])))
        self.network_policies = policies
