"""FeatureStore: Feast on a site's cluster — feature server, materialization, and (on-prem) its online store and
offline volume; its SQL registry is a database of its own on the site's model-registry database server.

Per site, in the data namespace:
- `feast serve` Deployment over HTTPS (certificate from the site's CA, `workloads.site_ca.SiteCA`, shared with the
  model registry), readiness/liveness probes on /health,
  HPA on CPU, PodDisruptionBudget; callers authenticate with their Kubernetes service-account token (Feast's
  `kubernetes` auth: TokenReview) and Feast permissions in the registry decide by classification.
- materialization CronJob (`concurrencyPolicy: Forbid`, a starting deadline, an active deadline and a backoff limit)
  that applies the site's feature views and runs `materialize-incremental`.
- online store: on AWS an ElastiCache replication group (`FeatureStoreAws`, passed in as `online_store`); otherwise a
  Valkey StatefulSet here with TLS only (`--port 0`), an ACL user with a generated password (`default` off) and its
  data on a PVC labelled with the store's classification.
- registry: Feast's SQL registry in PostgreSQL — database `feast_registry` owned by role `feast` on the model
  registry's database server of the site (RDS on AWS, the registry's PostgreSQL StatefulSet on-prem), created by the
  registry's bootstrap Job (`ModelRegistryArgs.database_clients`), which the server and the job wait for. TLS with
  verify-full: against the site CA on-prem, the AWS RDS CA bundle of the image on AWS.
- offline store: Parquet files — the classification's S3 bucket via IRSA on AWS, otherwise a PVC of the site.
- NetworkPolicies: the training and serving namespaces reach the feature server; only the feature server and the
  materialization job reach the online store, and they reach the registry database (whose own ingress policy, in the
  registry's namespace, admits exactly these pods).

Every feature view the site holds is a `finml:ml:FeatureView` child carrying its classification and data source, so
the plan (and the policy pack) sees residency down to the feature view. Placement is whatever the caller asks for:
the pack, not this component, decides whether a classification may live on this cluster's site.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import pulumi
import pulumi_kubernetes as k8s
import pulumi_random as random
import yaml

from components.naming import CLASSIFICATION_LABEL, SITE_LABEL, child_name, site_label_value
from workloads.cluster_base import DATA_NAMESPACE, NAMESPACE_NAME_LABEL, SERVING_NAMESPACE, TRAINING_NAMESPACE
from workloads.feature_repo.catalog import (
    PROJECT,
    SOURCES_BY_NAME,
    classification_rank,
    feature_views_up_to,
)
from workloads import images
from workloads.model_registry import DatabaseClient, SiteDatabase
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

COMPONENT = "feature-store"
SERVER = "feature-server"
MATERIALIZER = "feature-materializer"
ONLINE = "feature-store"          # the online store keeps the old component's object names
#: Keys of workloads.images.IMAGES: Feast 0.67 with the reference repository (workloads/feature_repo/Dockerfile) and
#: the online store. The Feast registry lives on the model registry's database server (workloads.model_registry).
IMAGE, ONLINE_IMAGE_NAME = "feature-store", "valkey"
DEFAULT_IMAGE = images.unqualified(IMAGE)
ONLINE_IMAGE = images.unqualified(ONLINE_IMAGE_NAME)
VALKEY_UID = 999
FEAST_UID = 10001
SERVER_PORT = 6566
STORE_PORT = 6379
REGISTRY_PORT = 5432
#: RDS CA bundle path inside the feature-store image (workloads/feature_repo/Dockerfile).
RDS_CA_BUNDLE = "/opt/finml/rds-ca-bundle.pem"
REGISTRY_CA = "/tls/registry-ca.crt"
DATA_VOLUME = "data"
OFFLINE_CLAIM = "feature-offline"
OFFLINE_MOUNT = "/data/offline"
TLS_SECRET = "feature-store-tls"
CA_CONFIGMAP = "feature-store-ca"
CREDENTIALS_SECRET = "feature-store-credentials"
CONFIG_MAP = "feature-store-config"
ONLINE_USER = "feast"
REGISTRY_DATABASE = "feast_registry"
REGISTRY_USER = "feast"
DEFAULT_CLIENT_NAMESPACES: tuple[str, ...] = (TRAINING_NAMESPACE, SERVING_NAMESPACE)
FEATURE_VIEW_TYPE = "finml:ml:FeatureView"


@dataclass(frozen=True)
class ExternalOnlineStore:
    """A managed Redis-protocol store (ElastiCache): TLS with public-CA certificates, AUTH token."""
    host: pulumi.Input[str]
    auth_token: pulumi.Input[str]
    port: int = STORE_PORT


@dataclass(frozen=True)
class FeatureStoreArgs:
    site: str
    """Site of the cluster this store runs on (from config; the pack checks it against residency)."""
    classification: str
    """Highest classification of the features it holds: the views up to it are deployed; labels the data."""
    namespace: str = DATA_NAMESPACE
    image: str = DEFAULT_IMAGE
    online_image: str = ONLINE_IMAGE
    online_store: ExternalOnlineStore | None = None
    """None: a Valkey StatefulSet in this namespace."""
    registry_database: SiteDatabase | None = None
    """The Feast SQL registry's database on the site's model-registry database server
    (`ModelRegistry.databases["feast"]`, requested with `registry_database_client()`). Required."""
    site_ca: SiteCA | None = None
    """The site's CA (shared with the model registry); None: the store makes one of its own."""
    offline_uri: pulumi.Input[str] | None = None
    """Where the Parquet sources live (s3://bucket/prefix). None: a PVC of the site mounted at /data/offline."""
    server_role_arn: pulumi.Input[str] | None = None
    materializer_role_arn: pulumi.Input[str] | None = None
    """IRSA roles (AWS) annotated on the service accounts."""
    egress_cidrs: tuple[str, ...] = ()
    """Networks the server and job reach beyond the cluster (managed stores, Kubernetes API), e.g. the VPC CIDR."""
    storage_gib: int = 50
    offline_storage_gib: int = 200
    storage_class: str | None = None
    """None: the cluster's default class (the cluster components make that an encrypted one)."""
    cpu: str = "1"
    memory_gib: int = 4
    server_replicas: int = 2
    server_max_replicas: int = 6
    materialize_schedule: str = "*/15 * * * *"
    client_namespaces: tuple[str, ...] = DEFAULT_CLIENT_NAMESPACES
    """Namespaces whose pods may call the feature server; each also gets an egress allow to it."""
    readers: Mapping[str, Sequence[str]] | None = None
    """Classification → namespaces whose service accounts may read it (Feast permissions). Default: every
    client namespace for every classification the store holds."""
    cert_validity_hours: int = 24 * 90


def _concat(*parts: pulumi.Input[str]) -> pulumi.Output[str]:
    """Output.concat that tolerates a missing part (mocks return no outputs for provider-computed values)."""
    return pulumi.Output.all(*parts).apply(lambda values: "".join("" if v is None else str(v) for v in values))


def registry_database_client(namespace: str = DATA_NAMESPACE) -> DatabaseClient:
    """What the feature store asks of the site's registry database server: role `feast`, database `feast_registry`,
    reached by the feature server and the materialization job of `namespace`."""
    return DatabaseClient(role=REGISTRY_USER, database=REGISTRY_DATABASE, namespace=namespace,
                          pods=(SERVER, MATERIALIZER))


class FeatureView(pulumi.ComponentResource):
    """One feature view as the plan sees it: name, classification, features and its data source's location."""

    def __init__(self, name: str, props: dict, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__(FEATURE_VIEW_TYPE, name, props, opts)
        # Stack policies see a component's registered outputs: register the props so the pack sees the view.
        self.register_outputs(props)


class FeatureStore(pulumi.ComponentResource):
    """Feature server + materialization + (on-prem) online store, registry database and offline volume."""

    deployment: k8s.apps.v1.Deployment
    cron_job: k8s.batch.v1.CronJob
    stateful_set: k8s.apps.v1.StatefulSet | None
    service: k8s.core.v1.Service
    network_policies: list[k8s.networking.v1.NetworkPolicy]
    feature_views: list[FeatureView]
    endpoint: pulumi.Output[str]
    """https URL of the feature server, e.g. https://feature-server.finml-data.svc.cluster.local:6566."""
    online_endpoint: pulumi.Output[str]
    ca_certificate: pulumi.Output[str]

    def __init__(self, name: str, args: FeatureStoreArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        if args.registry_database is None:
            raise ValueError(f"feature store on {args.site}: its Feast registry lives in the site's model-registry "
                             "database server; pass registry_database (ModelRegistry.databases['feast'])")
        views = feature_views_up_to(args.classification)
        super().__init__("finml:workloads:FeatureStore", name,
                         {"site": args.site, "classification": args.classification}, opts)
        self._name = name
        self._opts = opts
        self._args = args
        self._views = views
        self._held = max((v.classification for v in views), key=classification_rank)
        self._dns = f"{args.namespace}.svc.cluster.local"
        self._db = args.registry_database
        self._random = random.Provider(self._child("random"), opts=pulumi.ResourceOptions(parent=self))
        self._create_tls()
        self._create_credentials()
        self._create_config()
        self._create_service_accounts()
        self.stateful_set = self._create_online_store() if args.online_store is None else None
        self._offline_claim = self._create_offline_volume() if args.offline_uri is None else None
        self.deployment, self.service = self._create_server()
        self.cron_job = self._create_materializer()
        self.network_policies = self._create_network_policies()
        self.feature_views = self._create_feature_views()

        self.endpoint = pulumi.Output.concat("https://", self.service.metadata.name, ".", self._dns, ":",
                                             str(SERVER_PORT))
        self.online_endpoint = (pulumi.Output.from_input(args.online_store.host)
                                if args.online_store is not None
                                else pulumi.Output.concat(ONLINE, ".", self._dns, ":", str(STORE_PORT)))
        self.register_outputs({"site": args.site, "classification": args.classification, "endpoint": self.endpoint,
                               "caCertificate": self.ca_certificate})

    # -- helpers ---------------------------------------------------------------------------------------------------

    def _child(self, *parts: str) -> str:
        return child_name(self._name, *parts)

    def _child_opts(self, depends_on: list | None = None, **extra) -> pulumi.ResourceOptions:
        opts = child_opts(self, self._opts, **extra)
        if depends_on:
            opts.depends_on = [*(opts.depends_on or []), *depends_on]
        return opts

    def _labels(self, component: str, data: bool = False) -> dict[str, str]:
        return workload_labels(component, component, self._args.site, self._held if data else None)

    def _meta(self, name: str, component: str, data: bool = False, namespace: str | None = None,
              annotations: Mapping[str, pulumi.Input[str]] | None = None) -> k8s.meta.v1.ObjectMetaArgs:
        return k8s.meta.v1.ObjectMetaArgs(name=name, namespace=namespace or self._args.namespace,
                                          labels=self._labels(component, data), annotations=annotations)

    # -- TLS: the site CA and the store's server certificate -------------------------------------------------------

    def _create_tls(self) -> None:
        a = self._args
        ca = a.site_ca if a.site_ca is not None else SiteCA(self._child("ca"), a.site,
                                                            opts=pulumi.ResourceOptions(parent=self))
        names = [f"{svc}.{self._dns}" for svc in (SERVER, ONLINE)]
        names += [f"{svc}.{a.namespace}.svc" for svc in (SERVER, ONLINE)]
        key, cert = ca.issue(self._child("server"), names, self, validity_hours=a.cert_validity_hours)
        self.ca_certificate = ca.cert_pem
        data: dict[str, pulumi.Input[str]] = {"tls.crt": cert.cert_pem,
                                              "tls.key": pulumi.Output.secret(key.private_key_pem),
                                              "ca.crt": ca.cert_pem}
        if self._db.verify == "site-ca":
            # The registry database's certificate is from its site CA (the same one where the CA is shared).
            data["registry-ca.crt"] = self._db.ca_certificate
        self.tls_secret = k8s.core.v1.Secret(
            self._child("tls"), metadata=self._meta(TLS_SECRET, COMPONENT), type="kubernetes.io/tls",
            string_data=data, opts=self._child_opts())
        # Clients (training, serving) verify the feature server against the published CA bundle.
        self.ca_bundles = [k8s.core.v1.ConfigMap(
            self._child(ns, "ca"), metadata=self._meta(CA_CONFIGMAP, COMPONENT, namespace=ns),
            data={"ca.crt": ca.cert_pem}, opts=self._child_opts()) for ns in a.client_namespaces]

    # -- credentials and configuration -----------------------------------------------------------------------------

    def _create_credentials(self) -> None:
        a = self._args
        data: dict[str, pulumi.Input[str]] = {}
        if a.online_store is None:
            pw = random.RandomPassword(self._child("online-password"), length=40, special=False,
                                       opts=self._child_opts(provider=self._random))
            self._online_password = pw.result
            data["users.acl"] = _concat(
                "user default off nopass nocommands\n",
                f"user {ONLINE_USER} on >", pw.result, " ~* &* +@all -@dangerous +info +ping\n")
            data["redis-connection"] = _concat(
                f"{ONLINE}.{self._dns}:{STORE_PORT},ssl=true,ssl_ca_certs=/tls/ca.crt,ssl_cert_reqs=required,"
                f"username={ONLINE_USER},password=", pw.result)
        else:
            data["redis-connection"] = _concat(
                a.online_store.host, f":{a.online_store.port},ssl=true,ssl_cert_reqs=required,password=",
                a.online_store.auth_token)
        db = self._db
        root = REGISTRY_CA if db.verify == "site-ca" else RDS_CA_BUNDLE
        data["registry-url"] = _concat(
            f"postgresql+psycopg://{db.user}:", db.password, "@", db.host,
            f":{db.port}/{db.database}?sslmode=verify-full&sslrootcert={root}")
        self.credentials = k8s.core.v1.Secret(
            self._child("credentials"), metadata=self._meta(CREDENTIALS_SECRET, COMPONENT), type="Opaque",
            string_data={k: pulumi.Output.secret(v) for k, v in data.items()}, opts=self._child_opts())

    def _readers(self) -> dict[str, list[str]]:
        a = self._args
        if a.readers is not None:
            return {c: sorted(ns) for c, ns in a.readers.items()}
        return {v.classification: sorted(a.client_namespaces) for v in self._views}

    def _offline_uri(self) -> pulumi.Output[str]:
        return pulumi.Output.from_input(self._args.offline_uri if self._args.offline_uri is not None
                                        else OFFLINE_MOUNT)

    def _create_config(self) -> None:
        a = self._args
        feature_store_yaml = yaml.safe_dump({
            "project": PROJECT, "provider": "local",
            # Feast expands ${VAR} when it loads the file; the values come from the credentials Secret.
            "registry": {"registry_type": "sql", "path": "${FINML_FEAST_REGISTRY_URL}", "cache_ttl_seconds": 60,
                         "sqlalchemy_config_kwargs": {"echo": False, "pool_pre_ping": True}},
            "online_store": {"type": "redis", "connection_string": "${FINML_FEAST_REDIS}"},
            "offline_store": {"type": "file"},
            "entity_key_serialization_version": 3,
            "auth": {"type": "kubernetes"},
        }, sort_keys=False)
        site_json = self._offline_uri().apply(lambda uri: json.dumps({
            "site": a.site, "allowed": a.classification, "offline_uri": uri, "readers": self._readers(),
            "feature_views": [v.name for v in self._views]}, sort_keys=True, indent=2))
        self.config_map = k8s.core.v1.ConfigMap(
            self._child("config"), metadata=self._meta(CONFIG_MAP, COMPONENT),
            data={"feature_store.yaml": feature_store_yaml, "site.json": site_json}, opts=self._child_opts())

    def _create_service_accounts(self) -> None:
        a = self._args

        def sa(name: str, role: pulumi.Input[str] | None) -> k8s.core.v1.ServiceAccount:
            notes = {"eks.amazonaws.com/role-arn": role} if role is not None else None
            return k8s.core.v1.ServiceAccount(self._child(name, "sa"), metadata=self._meta(name, name, annotations=notes),
                                              automount_service_account_token=False, opts=self._child_opts())

        self.server_account = sa(SERVER, a.server_role_arn)
        self.materializer_account = sa(MATERIALIZER, a.materializer_role_arn)
        # Feast's kubernetes auth: TokenReview of callers' tokens, and reading the role bindings of this namespace.
        role = k8s.rbac.v1.Role(
            self._child(SERVER, "role"), metadata=self._meta(SERVER, SERVER),
            rules=[k8s.rbac.v1.PolicyRuleArgs(api_groups=["rbac.authorization.k8s.io"],
                                              resources=["roles", "rolebindings"], verbs=["get", "list"])],
            opts=self._child_opts())
        k8s.rbac.v1.RoleBinding(
            self._child(SERVER, "rolebinding"), metadata=self._meta(SERVER, SERVER),
            role_ref=k8s.rbac.v1.RoleRefArgs(api_group="rbac.authorization.k8s.io", kind="Role", name=SERVER),
            subjects=[k8s.rbac.v1.SubjectArgs(kind="ServiceAccount", name=SERVER, namespace=a.namespace)],
            opts=self._child_opts(depends_on=[role]))
        k8s.rbac.v1.ClusterRoleBinding(
            self._child(SERVER, "auth-delegator"),
            metadata=k8s.meta.v1.ObjectMetaArgs(name=f"{a.namespace}-{SERVER}-auth-delegator",
                                                labels=self._labels(SERVER)),
            role_ref=k8s.rbac.v1.RoleRefArgs(api_group="rbac.authorization.k8s.io", kind="ClusterRole",
                                             name="system:auth-delegator"),
            subjects=[k8s.rbac.v1.SubjectArgs(kind="ServiceAccount", name=SERVER, namespace=a.namespace)],
            opts=self._child_opts())

    def _workload_deps(self) -> list:
        # The registry's bootstrap Job creates the `feast` role and database the server and the job connect to.
        ready = [self._db.ready] if self._db.ready is not None else []
        return [self.config_map, self.credentials, self.tls_secret, *ready]

    # -- pod pieces ------------------------------------------------------------------------------------------------

    def _tls_volume(self) -> k8s.core.v1.VolumeArgs:
        return k8s.core.v1.VolumeArgs(name="tls", secret=k8s.core.v1.SecretVolumeSourceArgs(
            secret_name=TLS_SECRET, default_mode=0o440))

    def _feast_env(self) -> list[k8s.core.v1.EnvVarArgs]:
        def secret(name: str, key: str) -> k8s.core.v1.EnvVarArgs:
            return k8s.core.v1.EnvVarArgs(name=name, value_from=k8s.core.v1.EnvVarSourceArgs(
                secret_key_ref=k8s.core.v1.SecretKeySelectorArgs(name=CREDENTIALS_SECRET, key=key)))

        return [secret("FINML_FEAST_REGISTRY_URL", "registry-url"), secret("FINML_FEAST_REDIS", "redis-connection"),
                k8s.core.v1.EnvVarArgs(name="HOME", value="/tmp"),
                k8s.core.v1.EnvVarArgs(name="FEAST_USAGE", value="False")]

    def _feast_volumes(self, token: bool) -> tuple[list, list]:
        volumes = [self._tls_volume(),
                   k8s.core.v1.VolumeArgs(name="config", config_map=k8s.core.v1.ConfigMapVolumeSourceArgs(
                       name=CONFIG_MAP)),
                   scratch_volume("tmp", "1Gi")]
        mounts = [k8s.core.v1.VolumeMountArgs(name="tls", mount_path="/tls", read_only=True),
                  k8s.core.v1.VolumeMountArgs(name="config", mount_path="/etc/feast", read_only=True),
                  k8s.core.v1.VolumeMountArgs(name="tmp", mount_path="/tmp")]
        if token:
            # Only the feature server talks to the Kubernetes API (TokenReview), with a short-lived projected token.
            volumes.append(k8s.core.v1.VolumeArgs(name="kube-api", projected=k8s.core.v1.ProjectedVolumeSourceArgs(
                default_mode=0o440, sources=[
                    k8s.core.v1.VolumeProjectionArgs(service_account_token=k8s.core.v1.ServiceAccountTokenProjectionArgs(
                        path="token", expiration_seconds=3600)),
                    k8s.core.v1.VolumeProjectionArgs(config_map=k8s.core.v1.ConfigMapProjectionArgs(
                        name="kube-root-ca.crt", items=[k8s.core.v1.KeyToPathArgs(key="ca.crt", path="ca.crt")])),
                    k8s.core.v1.VolumeProjectionArgs(downward_api=k8s.core.v1.DownwardAPIProjectionArgs(items=[
                        k8s.core.v1.DownwardAPIVolumeFileArgs(path="namespace", field_ref=k8s.core.v1.ObjectFieldSelectorArgs(
                            field_path="metadata.namespace"))])),
                ])))
            mounts.append(k8s.core.v1.VolumeMountArgs(name="kube-api", read_only=True,
                                                      mount_path="/var/run/secrets/kubernetes.io/serviceaccount"))
        if self._offline_claim is not None:
            volumes.append(k8s.core.v1.VolumeArgs(
                name="offline", persistent_volume_claim=k8s.core.v1.PersistentVolumeClaimVolumeSourceArgs(
                    claim_name=OFFLINE_CLAIM, read_only=token)))
            mounts.append(k8s.core.v1.VolumeMountArgs(name="offline", mount_path=OFFLINE_MOUNT, read_only=token))
        return volumes, mounts

    def _pod_spec(self, component: str, containers: list, volumes: list, uid: int,
                  account: str | None = None, **extra) -> k8s.core.v1.PodSpecArgs:
        return k8s.core.v1.PodSpecArgs(
            node_selector=site_node_selector(self._args.site),
            security_context=restricted_pod_security_context(uid),
            service_account_name=account, automount_service_account_token=False, enable_service_links=False,
            containers=containers, volumes=volumes, **extra)

    # -- online store (on-prem) ------------------------------------------------------------------------------------

    def _create_online_store(self) -> k8s.apps.v1.StatefulSet:
        a = self._args
        k8s.core.v1.Service(
            self._child("service"), metadata=self._meta(ONLINE, ONLINE),
            spec=k8s.core.v1.ServiceSpecArgs(type="ClusterIP", selector=selector_labels(ONLINE, ONLINE),
                                             ports=[k8s.core.v1.ServicePortArgs(name="redis-tls", port=STORE_PORT,
                                                                                target_port="redis-tls",
                                                                                protocol="TCP")]),
            opts=self._child_opts())
        maxmemory_mib = a.memory_gib * 1024 * 3 // 4
        container = k8s.core.v1.ContainerArgs(
            name="valkey", image=a.online_image, image_pull_policy="IfNotPresent", command=["valkey-server"],
            # TLS only: the plain port is off; clients authenticate with the ACL user, `default` is disabled.
            args=["--port", "0", "--tls-port", str(STORE_PORT), "--tls-cert-file", "/tls/tls.crt",
                  "--tls-key-file", "/tls/tls.key", "--tls-ca-cert-file", "/tls/ca.crt", "--tls-auth-clients", "no",
                  "--tls-protocols", "TLSv1.2 TLSv1.3", "--aclfile", "/acl/users.acl", "--dir", f"/{DATA_VOLUME}",
                  "--appendonly", "yes", "--maxmemory", f"{maxmemory_mib}mb", "--maxmemory-policy", "noeviction"],
            ports=[k8s.core.v1.ContainerPortArgs(name="redis-tls", container_port=STORE_PORT, protocol="TCP")],
            resources=guaranteed_resources(a.cpu, f"{a.memory_gib}Gi"),
            security_context=restricted_container_security_context(VALKEY_UID),
            readiness_probe=k8s.core.v1.ProbeArgs(tcp_socket=k8s.core.v1.TCPSocketActionArgs(port="redis-tls"),
                                                  period_seconds=10),
            liveness_probe=k8s.core.v1.ProbeArgs(tcp_socket=k8s.core.v1.TCPSocketActionArgs(port="redis-tls"),
                                                 initial_delay_seconds=30, period_seconds=20, failure_threshold=3),
            volume_mounts=[k8s.core.v1.VolumeMountArgs(name=DATA_VOLUME, mount_path=f"/{DATA_VOLUME}"),
                           k8s.core.v1.VolumeMountArgs(name="tls", mount_path="/tls", read_only=True),
                           k8s.core.v1.VolumeMountArgs(name="acl", mount_path="/acl", read_only=True),
                           k8s.core.v1.VolumeMountArgs(name="tmp", mount_path="/tmp")])
        volumes = [self._tls_volume(),
                   k8s.core.v1.VolumeArgs(name="acl", secret=k8s.core.v1.SecretVolumeSourceArgs(
                       secret_name=CREDENTIALS_SECRET, default_mode=0o440,
                       items=[k8s.core.v1.KeyToPathArgs(key="users.acl", path="users.acl")])),
                   scratch_volume("tmp", "64Mi")]
        return self._stateful_set("statefulset", ONLINE, container, volumes, VALKEY_UID, a.storage_gib)

    def _stateful_set(self, suffix: str, component: str, container, volumes, uid: int,
                      storage_gib: int) -> k8s.apps.v1.StatefulSet:
        a = self._args
        pvc_labels = {CLASSIFICATION_LABEL: self._held, SITE_LABEL: site_label_value(a.site),
                      "app.kubernetes.io/part-of": "finml"}
        labels = self._labels(component, data=True)
        return k8s.apps.v1.StatefulSet(
            self._child(suffix), metadata=self._meta(component, component, data=True),
            spec=k8s.apps.v1.StatefulSetSpecArgs(
                replicas=1, service_name=component,
                selector=k8s.meta.v1.LabelSelectorArgs(match_labels=selector_labels(component, component)),
                # Deleting the store must never delete its data volume with it.
                persistent_volume_claim_retention_policy=(
                    k8s.apps.v1.StatefulSetPersistentVolumeClaimRetentionPolicyArgs(
                        when_deleted="Retain", when_scaled="Retain")),
                template=k8s.core.v1.PodTemplateSpecArgs(
                    metadata=k8s.meta.v1.ObjectMetaArgs(labels=labels),
                    spec=self._pod_spec(component, [container], volumes, uid)),
                volume_claim_templates=[k8s.core.v1.PersistentVolumeClaimArgs(
                    metadata=k8s.meta.v1.ObjectMetaArgs(name=DATA_VOLUME, labels=dict(sorted(pvc_labels.items()))),
                    spec=k8s.core.v1.PersistentVolumeClaimSpecArgs(
                        access_modes=["ReadWriteOnce"], storage_class_name=a.storage_class,
                        resources=k8s.core.v1.VolumeResourceRequirementsArgs(
                            requests={"storage": f"{storage_gib}Gi"})))],
            ),
            opts=self._child_opts())

    def _create_offline_volume(self) -> k8s.core.v1.PersistentVolumeClaim:
        a = self._args
        labels = {CLASSIFICATION_LABEL: self._held, SITE_LABEL: site_label_value(a.site),
                  "app.kubernetes.io/part-of": "finml"}
        return k8s.core.v1.PersistentVolumeClaim(
            self._child("offline"),
            metadata=k8s.meta.v1.ObjectMetaArgs(name=OFFLINE_CLAIM, namespace=a.namespace,
                                                labels=dict(sorted(labels.items()))),
            spec=k8s.core.v1.PersistentVolumeClaimSpecArgs(
                access_modes=["ReadWriteOnce"], storage_class_name=a.storage_class,
                resources=k8s.core.v1.VolumeResourceRequirementsArgs(
                    requests={"storage": f"{a.offline_storage_gib}Gi"})),
            opts=self._child_opts())

    # -- feature server --------------------------------------------------------------------------------------------

    def _create_server(self) -> tuple[k8s.apps.v1.Deployment, k8s.core.v1.Service]:
        a = self._args
        volumes, mounts = self._feast_volumes(token=True)
        health = k8s.core.v1.HTTPGetActionArgs(path="/health", port="https", scheme="HTTPS")
        container = k8s.core.v1.ContainerArgs(
            name="feast", image=a.image, image_pull_policy="IfNotPresent",
            command=["feast", "--chdir", "/etc/feast", "serve", "--host", "0.0.0.0", "--port", str(SERVER_PORT),
                     "--key", "/tls/tls.key", "--cert", "/tls/tls.crt", "--no-access-log", "--workers", "2",
                     "--registry_ttl_sec", "60"],
            env=self._feast_env(), ports=[k8s.core.v1.ContainerPortArgs(name="https", container_port=SERVER_PORT,
                                                                         protocol="TCP")],
            resources=guaranteed_resources(a.cpu, f"{a.memory_gib}Gi"),
            security_context=restricted_container_security_context(FEAST_UID),
            startup_probe=k8s.core.v1.ProbeArgs(http_get=health, period_seconds=5, failure_threshold=36),
            readiness_probe=k8s.core.v1.ProbeArgs(http_get=health, period_seconds=10, timeout_seconds=3),
            liveness_probe=k8s.core.v1.ProbeArgs(http_get=health, period_seconds=20, timeout_seconds=5,
                                                 failure_threshold=3),
            volume_mounts=mounts)
        labels = self._labels(SERVER, data=True)
        deployment = k8s.apps.v1.Deployment(
            self._child("server"), metadata=self._meta(SERVER, SERVER, data=True),
            spec=k8s.apps.v1.DeploymentSpecArgs(
                replicas=a.server_replicas,
                selector=k8s.meta.v1.LabelSelectorArgs(match_labels=selector_labels(SERVER, SERVER)),
                strategy=k8s.apps.v1.DeploymentStrategyArgs(
                    type="RollingUpdate", rolling_update=k8s.apps.v1.RollingUpdateDeploymentArgs(
                        max_unavailable=0, max_surge=1)),
                template=k8s.core.v1.PodTemplateSpecArgs(
                    metadata=k8s.meta.v1.ObjectMetaArgs(labels=labels),
                    spec=self._pod_spec(SERVER, [container], volumes, FEAST_UID, account=SERVER,
                                        topology_spread_constraints=[k8s.core.v1.TopologySpreadConstraintArgs(
                                            max_skew=1, topology_key="kubernetes.io/hostname",
                                            when_unsatisfiable="ScheduleAnyway",
                                            label_selector=k8s.meta.v1.LabelSelectorArgs(
                                                match_labels=selector_labels(SERVER, SERVER)))]))),
            opts=self._child_opts(depends_on=self._workload_deps()))
        service = k8s.core.v1.Service(
            self._child("server-service"), metadata=self._meta(SERVER, SERVER),
            spec=k8s.core.v1.ServiceSpecArgs(type="ClusterIP", selector=selector_labels(SERVER, SERVER),
                                             ports=[k8s.core.v1.ServicePortArgs(name="https", port=SERVER_PORT,
                                                                                target_port="https",
                                                                                protocol="TCP")]),
            opts=self._child_opts())
        k8s.autoscaling.v2.HorizontalPodAutoscaler(
            self._child("server-hpa"), metadata=self._meta(SERVER, SERVER),
            spec=k8s.autoscaling.v2.HorizontalPodAutoscalerSpecArgs(
                scale_target_ref=k8s.autoscaling.v2.CrossVersionObjectReferenceArgs(
                    api_version="apps/v1", kind="Deployment", name=SERVER),
                min_replicas=a.server_replicas, max_replicas=a.server_max_replicas,
                metrics=[k8s.autoscaling.v2.MetricSpecArgs(
                    type="Resource", resource=k8s.autoscaling.v2.ResourceMetricSourceArgs(
                        name="cpu", target=k8s.autoscaling.v2.MetricTargetArgs(type="Utilization",
                                                                               average_utilization=70)))]),
            opts=self._child_opts(depends_on=[deployment]))
        k8s.policy.v1.PodDisruptionBudget(
            self._child("server-pdb"), metadata=self._meta(SERVER, SERVER),
            spec=k8s.policy.v1.PodDisruptionBudgetSpecArgs(
                min_available=1, selector=k8s.meta.v1.LabelSelectorArgs(match_labels=selector_labels(SERVER, SERVER))),
            opts=self._child_opts())
        return deployment, service

    # -- materialization -------------------------------------------------------------------------------------------

    def _create_materializer(self) -> k8s.batch.v1.CronJob:
        a = self._args
        volumes, mounts = self._feast_volumes(token=False)
        container = k8s.core.v1.ContainerArgs(
            name="materialize", image=a.image, image_pull_policy="IfNotPresent",
            command=["python", "-m", "workloads.feature_repo.job", "--repo", "/etc/feast",
                     "--site-config", "/etc/feast/site.json"],
            env=self._feast_env(), resources=guaranteed_resources(a.cpu, f"{a.memory_gib}Gi"),
            security_context=restricted_container_security_context(FEAST_UID), volume_mounts=mounts)
        labels = self._labels(MATERIALIZER, data=True)
        return k8s.batch.v1.CronJob(
            self._child("materialize"), metadata=self._meta(MATERIALIZER, MATERIALIZER, data=True),
            spec=k8s.batch.v1.CronJobSpecArgs(
                schedule=a.materialize_schedule, time_zone="Etc/UTC", concurrency_policy="Forbid",
                starting_deadline_seconds=300, successful_jobs_history_limit=3, failed_jobs_history_limit=3,
                job_template=k8s.batch.v1.JobTemplateSpecArgs(
                    metadata=k8s.meta.v1.ObjectMetaArgs(labels=labels),
                    spec=k8s.batch.v1.JobSpecArgs(
                        backoff_limit=2, active_deadline_seconds=45 * 60, ttl_seconds_after_finished=24 * 3600,
                        template=k8s.core.v1.PodTemplateSpecArgs(
                            metadata=k8s.meta.v1.ObjectMetaArgs(labels=labels),
                            spec=self._pod_spec(MATERIALIZER, [container], volumes, FEAST_UID,
                                                account=MATERIALIZER, restart_policy="Never"))))),
            opts=self._child_opts(depends_on=self._workload_deps()))

    # -- network reach ---------------------------------------------------------------------------------------------

    def _policy(self, name: str, spec: k8s.networking.v1.NetworkPolicySpecArgs,
                namespace: str | None = None) -> k8s.networking.v1.NetworkPolicy:
        ns = namespace or self._args.namespace
        return k8s.networking.v1.NetworkPolicy(
            self._child(name) if namespace is None else self._child(ns, name),
            metadata=k8s.meta.v1.ObjectMetaArgs(name=name, namespace=ns, labels=self._labels(COMPONENT)),
            spec=spec, opts=self._child_opts())

    def _create_network_policies(self) -> list[k8s.networking.v1.NetworkPolicy]:
        a = self._args
        net = k8s.networking.v1

        def ports(*numbers: int) -> list:
            return [net.NetworkPolicyPortArgs(protocol="TCP", port=n) for n in numbers]

        def pods(*components: str) -> list:
            return [net.NetworkPolicyPeerArgs(pod_selector=k8s.meta.v1.LabelSelectorArgs(
                match_expressions=[k8s.meta.v1.LabelSelectorRequirementArgs(
                    key="app.kubernetes.io/name", operator="In", values=list(components))]))]

        def selecting(component: str) -> k8s.meta.v1.LabelSelectorArgs:
            return k8s.meta.v1.LabelSelectorArgs(match_labels=selector_labels(component, component))

        policies = [self._policy(f"{SERVER}-allow-clients", net.NetworkPolicySpecArgs(
            pod_selector=selecting(SERVER), policy_types=["Ingress"],
            ingress=[net.NetworkPolicyIngressRuleArgs(
                from_=[net.NetworkPolicyPeerArgs(namespace_selector=k8s.meta.v1.LabelSelectorArgs(
                    match_expressions=[k8s.meta.v1.LabelSelectorRequirementArgs(
                        key=NAMESPACE_NAME_LABEL, operator="In", values=list(a.client_namespaces))]))],
                ports=ports(SERVER_PORT))]))]
        egress = []
        if a.online_store is None:
            # Only the feature server and the materialization job reach the online store.
            policies.append(self._policy(f"{ONLINE}-allow-feast", net.NetworkPolicySpecArgs(
                pod_selector=selecting(ONLINE), policy_types=["Ingress"],
                ingress=[net.NetworkPolicyIngressRuleArgs(from_=pods(SERVER, MATERIALIZER),
                                                          ports=ports(STORE_PORT))])))
            egress.append(net.NetworkPolicyEgressRuleArgs(
                to=[net.NetworkPolicyPeerArgs(pod_selector=selecting(ONLINE))], ports=ports(STORE_PORT)))
        if self._db.server_pod_labels is not None:
            # The registry's in-cluster database server, in its namespace (its ingress policy admits these pods).
            egress.append(net.NetworkPolicyEgressRuleArgs(
                to=[net.NetworkPolicyPeerArgs(
                    namespace_selector=k8s.meta.v1.LabelSelectorArgs(match_labels={NAMESPACE_NAME_LABEL:
                                                                                   self._db.namespace}),
                    pod_selector=k8s.meta.v1.LabelSelectorArgs(match_labels=dict(self._db.server_pod_labels)))],
                ports=ports(self._db.port)))
        if a.egress_cidrs:
            # Managed online store, the registry's RDS, S3 (gateway endpoint) and the Kubernetes API inside the VPC.
            egress.append(net.NetworkPolicyEgressRuleArgs(
                to=[net.NetworkPolicyPeerArgs(ip_block=net.IPBlockArgs(cidr=c)) for c in a.egress_cidrs],
                ports=ports(STORE_PORT, REGISTRY_PORT, 443)))
        if egress:
            policies.append(self._policy("feast-egress", net.NetworkPolicySpecArgs(
                pod_selector=k8s.meta.v1.LabelSelectorArgs(match_expressions=[k8s.meta.v1.LabelSelectorRequirementArgs(
                    key="app.kubernetes.io/name", operator="In", values=[SERVER, MATERIALIZER])]),
                policy_types=["Egress"], egress=egress)))
        # The client namespaces deny all egress by default; let their pods reach the feature server, and only it.
        for ns in a.client_namespaces:
            policies.append(self._policy(f"allow-{SERVER}-egress", net.NetworkPolicySpecArgs(
                pod_selector=k8s.meta.v1.LabelSelectorArgs(), policy_types=["Egress"],
                egress=[net.NetworkPolicyEgressRuleArgs(
                    to=[net.NetworkPolicyPeerArgs(
                        namespace_selector=k8s.meta.v1.LabelSelectorArgs(match_labels={NAMESPACE_NAME_LABEL:
                                                                                       a.namespace}),
                        pod_selector=selecting(SERVER))],
                    ports=ports(SERVER_PORT))]), namespace=ns))
        return policies

    # -- feature views (plan metadata) -----------------------------------------------------------------------------

    def _create_feature_views(self) -> list[FeatureView]:
        a = self._args
        views = []
        for spec in self._views:
            source = SOURCES_BY_NAME[spec.source]
            if a.offline_uri is None:
                uri = pulumi.Output.from_input(f"pvc://{a.namespace}/{OFFLINE_CLAIM}/{source.file}")
            else:
                uri = pulumi.Output.concat(a.offline_uri, "/", source.file)
            views.append(FeatureView(self._child("view", spec.name), {
                "name": spec.name, "classification": spec.classification, "entity": spec.entity,
                "features": spec.feature_names, "ttlSeconds": int(spec.ttl.total_seconds()),
                "source": {"name": source.name, "classification": source.classification, "uri": uri},
            }, opts=pulumi.ResourceOptions(parent=self)))
        return views

