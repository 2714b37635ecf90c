"""Shared derivations for the finml guardrails pack.

Everything a rule needs to decide *where* a resource lives and *how sensitive* it is comes from here, so
that every rule derives site and classification the same way:

- property access that never lets an unknown preview value escape (``plain``/``get``/``UNKNOWN``),
- site derivation (AWS: own ``region`` prop, else the explicit provider's; Kubernetes: the cluster
  component in the provider's lineage, never the object's own labels),
- classification order and lookup (AWS tag, Kubernetes label, ML component prop),
- residency policy config access and the violation message format the report parser relies on.

The pack is self-contained: nothing here imports from the repository outside ``policies/``.
"""

from __future__ import annotations

import contextlib
import fnmatch
import functools
import re
from collections import defaultdict
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Iterator, Mapping, Optional, Sequence

from pulumi_policy import PolicyConfigSchema, PolicyResource, ReportViolation
from pulumi_policy import proxy as _proxy
from pulumi_policy.proxy import UnknownValueError

try:  # not-applicable is signalled with this exception; it must pass through the fail-closed guards
    from pulumi_policy.policy import _NotApplicableError as NotApplicable
except ImportError:  # pragma: no cover - older/newer SDK layout
    NotApplicable = type("NotApplicable", (Exception,), {})

# --- vocabulary -----------------------------------------------------------------------------------

CLASSIFICATIONS: tuple[str, ...] = ("public", "internal", "confidential", "restricted")
TAG_CLASSIFICATION = "finml:classification"
LABEL_CLASSIFICATION = "finml.io/classification"
LABEL_SITE = "finml.io/site"


def site_label_value(site: str) -> str:
    """Kubernetes label values cannot hold ':', so nodes of `onprem:fra-dc1` carry `finml.io/site=onprem-fra-dc1`."""
    return site.replace(":", "-")
LABEL_MODEL = "finml.io/model"
DEFAULT_EXEMPT_NAMESPACES: tuple[str, ...] = ("kube-system",)
# tls and random compute values into the Pulumi state only (keys, certificates, passwords as secrets): they place
# nothing anywhere, so there is no site to derive and no residency at stake.
DEFAULT_PROVIDER_PACKAGES: tuple[str, ...] = ("aws", "kubernetes", "command", "tls", "random")
CONFIG_HINT = "generate it with `finml policy config --stack NAME`"

AWS_PROVIDER = "pulumi:providers:aws"
K8S_PROVIDER = "pulumi:providers:kubernetes"
GPU_CLUSTER = "finml:compute:GpuCluster"
ONPREM_CLUSTER = "finml:compute:OnPremCluster"
CLUSTER_TYPES = (GPU_CLUSTER, ONPREM_CLUSTER)
DATASET = "finml:ml:Dataset"
MODEL = "finml:ml:Model"

S3_BUCKET = "aws:s3/bucket:Bucket"
S3_BUCKET_V2 = "aws:s3/bucketV2:BucketV2"  # deprecated alias still shipped by pulumi-aws 7.x
S3_BUCKET_TYPES = (S3_BUCKET, S3_BUCKET_V2)
S3_SSE = "aws:s3/bucketServerSideEncryptionConfiguration:BucketServerSideEncryptionConfiguration"
S3_SSE_V2 = "aws:s3/bucketServerSideEncryptionConfigurationV2:BucketServerSideEncryptionConfigurationV2"
S3_SSE_TYPES = (S3_SSE, S3_SSE_V2)
S3_PAB = "aws:s3/bucketPublicAccessBlock:BucketPublicAccessBlock"
S3_REPLICATION = "aws:s3/bucketReplicationConfig:BucketReplicationConfig"
S3_POLICY = "aws:s3/bucketPolicy:BucketPolicy"
KMS_KEY = "aws:kms/key:Key"
KMS_REPLICA_KEY = "aws:kms/replicaKey:ReplicaKey"
KMS_ALIAS = "aws:kms/alias:Alias"
KMS_KEY_POLICY = "aws:kms/keyPolicy:KeyPolicy"
KEY_TYPES = (KMS_KEY, KMS_REPLICA_KEY, KMS_ALIAS)
EBS_VOLUME = "aws:ebs/volume:Volume"
EBS_SNAPSHOT = "aws:ebs/snapshot:Snapshot"
EBS_SNAPSHOT_COPY = "aws:ebs/snapshotCopy:SnapshotCopy"
EBS_DEFAULT_ENCRYPTION = "aws:ebs/encryptionByDefault:EncryptionByDefault"
LAUNCH_TEMPLATE = "aws:ec2/launchTemplate:LaunchTemplate"
EC2_INSTANCE = "aws:ec2/instance:Instance"
SECURITY_GROUP = "aws:ec2/securityGroup:SecurityGroup"
SG_INGRESS_RULE = "aws:vpc/securityGroupIngressRule:SecurityGroupIngressRule"
SG_RULE = "aws:ec2/securityGroupRule:SecurityGroupRule"
SUBNET = "aws:ec2/subnet:Subnet"
EFS = "aws:efs/fileSystem:FileSystem"
EFS_REPLICATION = "aws:efs/replicationConfiguration:ReplicationConfiguration"
FSX_LUSTRE = "aws:fsx/lustreFileSystem:LustreFileSystem"
RDS_INSTANCE = "aws:rds/instance:Instance"
RDS_CLUSTER = "aws:rds/cluster:Cluster"
ELASTICACHE_RG = "aws:elasticache/replicationGroup:ReplicationGroup"
EKS_CLUSTER = "aws:eks/cluster:Cluster"
BACKUP_PLAN = "aws:backup/plan:Plan"
BACKUP_VAULT = "aws:backup/vault:Vault"
BACKUP_SELECTION = "aws:backup/selection:Selection"
DYNAMODB_TABLE = "aws:dynamodb/table:Table"
DYNAMODB_TABLE_REPLICA = "aws:dynamodb/tableReplica:TableReplica"

AWS_DATA_TYPES = (S3_BUCKET, S3_BUCKET_V2, EBS_VOLUME, EBS_SNAPSHOT_COPY, EFS, FSX_LUSTRE, RDS_INSTANCE, RDS_CLUSTER,
                  ELASTICACHE_RG, DYNAMODB_TABLE)

K8S_NAMESPACE = "kubernetes:core/v1:Namespace"
K8S_PVC = "kubernetes:core/v1:PersistentVolumeClaim"
K8S_PV = "kubernetes:core/v1:PersistentVolume"
K8S_POD = "kubernetes:core/v1:Pod"
K8S_NETWORK_POLICY = "kubernetes:networking.k8s.io/v1:NetworkPolicy"
K8S_CRONJOB = "kubernetes:batch/v1:CronJob"
K8S_POD_TEMPLATE = "kubernetes:core/v1:PodTemplate"

# workload type -> path of its pod template (metadata + spec); () for a Pod, whose own spec is the pod spec.
_TEMPLATE_PATHS: dict[str, tuple[str, ...]] = {}
for _kind in ("apps/v1:Deployment", "apps/v1:StatefulSet", "apps/v1:DaemonSet", "apps/v1:ReplicaSet",
              "batch/v1:Job", "core/v1:ReplicationController"):
    _TEMPLATE_PATHS[f"kubernetes:{_kind}"] = ("spec", "template")
_TEMPLATE_PATHS[K8S_CRONJOB] = ("spec", "jobTemplate", "spec", "template")
_TEMPLATE_PATHS[K8S_POD_TEMPLATE] = ("template",)
_TEMPLATE_PATHS[K8S_POD] = ()
for _type, _path in list(_TEMPLATE_PATHS.items()):  # server-side-apply patches keep the pod spec in the same place
    _TEMPLATE_PATHS[_type + "Patch"] = _path
K8S_POD_TYPES = (K8S_POD, K8S_POD + "Patch")
K8S_WORKLOAD_TYPES = tuple(_TEMPLATE_PATHS)
K8S_DATA_TYPES = (K8S_PVC,) + K8S_WORKLOAD_TYPES
ML_TYPES = (DATASET, MODEL)


# --- unknown-safe property access -------------------------------------------------------------------

class _Unknown:
    """Marker for a value the engine could not know during preview.

    Using it as a boolean raises, so sloppy truthiness tests fail (and are reported) instead of passing."""

    _instance: Optional["_Unknown"] = None

    def __new__(cls) -> "_Unknown":
        if cls._instance is None:
            cls._instance = super().__new__(cls)
        return cls._instance

    def __repr__(self) -> str:
        return "<unknown>"

    def __bool__(self) -> bool:
        raise TypeError("an unknown preview value was used as a boolean")


UNKNOWN: Any = _Unknown()
_UNKNOWN_SENTINELS = frozenset((
    _proxy.UNKNOWN_BOOLEAN_VALUE, _proxy.UNKNOWN_NUMBER_VALUE, _proxy.UNKNOWN_STRING_VALUE,
    _proxy.UNKNOWN_ARRAY_VALUE, _proxy.UNKNOWN_ASSET_VALUE, _proxy.UNKNOWN_ARCHIVE_VALUE,
    _proxy.UNKNOWN_OBJECT_VALUE,
))


def is_unknown(value: Any) -> bool:
    return value is UNKNOWN


def plain(value: Any) -> Any:
    """Copy (possibly proxied) props into plain dicts/lists with ``UNKNOWN`` where the engine sent an unknown.

    The runtime wraps props in ``unknown_checking_proxy``, which raises ``UnknownValueError`` on access; an
    escaping error becomes an ADVISORY diagnostic, so rules only ever look at this plain copy."""
    if isinstance(value, str):
        return UNKNOWN if value in _UNKNOWN_SENTINELS else value
    if isinstance(value, Mapping):
        out: dict[Any, Any] = {}
        for key in list(iter(value)):
            try:
                out[key] = plain(value[key])
            except UnknownValueError:
                out[key] = UNKNOWN
        return out
    if isinstance(value, Sequence) and not isinstance(value, (bytes, bytearray)):
        items: list[Any] = []
        for index in range(len(value)):
            try:
                items.append(plain(value[index]))
            except UnknownValueError:
                items.append(UNKNOWN)
        return items
    return value


def get(obj: Any, *path: Any, default: Any = None) -> Any:
    """Walk ``path`` through plain props; ``UNKNOWN`` as soon as any step is unknown, ``default`` if absent."""
    current = obj
    for step in path:
        if current is UNKNOWN:
            return UNKNOWN
        if isinstance(current, Mapping):
            if step not in current or current[step] is None:
                return default
            current = current[step]
        elif isinstance(current, list) and isinstance(step, int):
            if step >= len(current):
                return default
            current = current[step]
        else:
            return default
    return current


def as_list(value: Any) -> Any:
    """A list for list/None values; ``UNKNOWN`` stays ``UNKNOWN``; a single object becomes a one-item list."""
    if value is UNKNOWN:
        return UNKNOWN
    if value is None:
        return []
    if isinstance(value, list):
        return value
    return [value]


def as_bool(value: Any) -> Any:
    """True/False for booleans or "true"/"false" strings (some AWS inputs are strings), else None/UNKNOWN."""
    if value is UNKNOWN:
        return UNKNOWN
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in ("true", "false"):
        return value.lower() == "true"
    return None


# --- message format --------------------------------------------------------------------------------

def violation_message(text: str, site: Optional[str] = None, classification: Optional[str] = None) -> str:
    """``<sentence> [site=<site>; classification=<cls>]``; ``?`` for an unknown part; no suffix if both unknown."""
    if site is None and classification is None:
        return text
    return f"{text} [site={site or '?'}; classification={classification or '?'}]"


def describe(resource: Any) -> str:
    return f"{resource.resource_type} '{resource.name}'"


# --- fail-closed wrappers ----------------------------------------------------------------------------

@contextlib.contextmanager
def failing_closed(report: ReportViolation, urn: Optional[str], what: str) -> Iterator[None]:
    """Turn anything that stops a rule from deciding about one resource into a violation on that resource."""
    try:
        yield
    except NotApplicable:
        raise
    except UnknownValueError as error:
        report(f"{what}: {error.message}; the rule cannot decide, so it fails closed.", urn)
    except Exception as error:  # pylint: disable=broad-except  # a crashing rule must not pass
        report(f"{what}: the rule could not evaluate it ({type(error).__name__}: {error}); failing closed.", urn)


def fail_closed(validate: Callable[[Any, ReportViolation], None]) -> Callable[[Any, ReportViolation], None]:
    """Backstop for a whole validate function (per-resource guards should catch first)."""

    @functools.wraps(validate)
    def wrapper(args: Any, report: ReportViolation) -> None:
        urn = getattr(args, "urn", None)
        with failing_closed(report, urn, getattr(args, "name", None) and describe(args) or "stack"):
            validate(args, report)

    return wrapper


# --- classification --------------------------------------------------------------------------------

def rank(classification: str) -> int:
    return CLASSIFICATIONS.index(classification)


def max_classification(values: Iterable[Optional[str]]) -> Optional[str]:
    known = [v for v in values if v in CLASSIFICATIONS]
    return max(known, key=rank) if known else None


@dataclass(frozen=True)
class Derived:
    """A derived fact (site or classification): ``value`` when known, else ``reason`` says why not."""

    value: Optional[str]
    reason: Optional[str] = None

    @property
    def known(self) -> bool:
        return self.value is not None


def parse_classification(raw: Any, where: str) -> Derived:
    if raw is None:
        return Derived(None, f"it has no classification ({where})")
    if raw is UNKNOWN:
        return Derived(None, f"its classification ({where}) is unknown during preview")
    if raw not in CLASSIFICATIONS:
        return Derived(None, f"its classification {raw!r} ({where}) is not one of {', '.join(CLASSIFICATIONS)}")
    return Derived(raw)


def k8s_labels(props: Mapping[str, Any]) -> Any:
    return get(props, "metadata", "labels", default={})


def pod_template_labels(resource_type: str, props: Mapping[str, Any]) -> Any:
    path = _TEMPLATE_PATHS.get(resource_type)
    if not path:
        return {}
    return get(props, *path, "metadata", "labels", default={})


def k8s_label_values(resource_type: str, props: Mapping[str, Any], key: str) -> Any:
    """Every value of label ``key`` on the object's metadata and on its pod template (in that order);
    ``UNKNOWN`` when either label map or a value is unknown during preview."""
    values = []
    for labels in (k8s_labels(props), pod_template_labels(resource_type, props)):
        if labels is UNKNOWN:
            return UNKNOWN
        value = get(labels, key)
        if value is UNKNOWN:
            return UNKNOWN
        if value is not None:
            values.append(value)
    return values


def k8s_label(resource_type: str, props: Mapping[str, Any], key: str) -> Any:
    """A label from the object's metadata, falling back to its pod template's labels (presence checks only:
    rules that act on the value use ``k8s_label_values`` so a differing template label is not ignored)."""
    values = k8s_label_values(resource_type, props, key)
    if values is UNKNOWN:
        return UNKNOWN
    return values[0] if values else None


def classification_of(resource_type: str, props: Mapping[str, Any]) -> Derived:
    """Classification as the resource declares it (tag, label or ML component prop)."""
    if resource_type.startswith("aws:"):
        tags = get(props, "tags", default={})
        if tags is UNKNOWN:
            return Derived(None, "its tags are unknown during preview")
        return parse_classification(get(tags, TAG_CLASSIFICATION), f"tag {TAG_CLASSIFICATION}")
    if resource_type.startswith("kubernetes:"):
        # The highest of the object's label and its pod template's label: the pods carry the data.
        where = f"label {LABEL_CLASSIFICATION}"
        values = k8s_label_values(resource_type, props, LABEL_CLASSIFICATION)
        if values is UNKNOWN:
            return parse_classification(UNKNOWN, where)
        if not values:
            return parse_classification(None, where)
        parsed = [parse_classification(v, where) for v in values]
        bad = next((p for p in parsed if not p.known), None)
        return bad or Derived(max_classification(p.value for p in parsed))
    return parse_classification(get(props, "classification"), "prop classification")


def is_data_bearing(resource_type: str) -> bool:
    return resource_type in AWS_DATA_TYPES or resource_type in K8S_DATA_TYPES or resource_type in ML_TYPES


# --- sites -------------------------------------------------------------------------------------------

_SITE_RE = re.compile(r"^(aws:[a-z]{2}(-[a-z]+)+-\d+|onprem:[a-z0-9][a-z0-9-]*)$")


def is_valid_site(site: Any) -> bool:
    return isinstance(site, str) and bool(_SITE_RE.match(site))


def aws_site(props: Mapping[str, Any], provider: Any) -> Derived:
    """``aws:<region>`` from the resource's own ``region`` prop, else its explicit AWS provider's region."""
    region = get(props, "region")
    if region is UNKNOWN:
        return Derived(None, "its `region` is unknown during preview")
    if isinstance(region, str) and region:
        return Derived(f"aws:{region}")
    if provider is None:
        return Derived(None, "it has no explicit AWS provider")
    if provider.resource_type != AWS_PROVIDER:
        return Derived(None, f"its provider '{provider.name}' is a {provider.resource_type}, not an AWS provider")
    provider_region = get(plain(provider.props), "region")
    if provider_region is UNKNOWN:
        return Derived(None, f"the region of its provider '{provider.name}' is unknown during preview")
    if not isinstance(provider_region, str) or not provider_region:
        return Derived(None, f"its provider '{provider.name}' has no region")
    return Derived(f"aws:{provider_region}")


_ARN_REGION_RE = re.compile(r"^arn:aws[a-z-]*:[a-z0-9-]+:([a-z]{2}(?:-[a-z]+)+-\d+):")


def region_site_from_arn(arn: Any) -> Optional[str]:
    """``aws:<region>`` from an ARN that carries a region (KMS, backup vault); None otherwise (S3 ARNs)."""
    if not isinstance(arn, str) or arn is UNKNOWN:
        return None
    match = _ARN_REGION_RE.match(arn)
    return f"aws:{match.group(1)}" if match else None


# --- residency config --------------------------------------------------------------------------------

RESIDENCY_CONFIG_SCHEMA_PROPERTIES: dict[str, dict[str, Any]] = {
    "residency": {
        "type": "object",
        "description": "classification -> allowed site patterns (exact sites or globs such as aws:eu-* or onprem:*)",
        "additionalProperties": {"type": "array", "items": {"type": "string"}},
    },
    "sites": {
        "type": "array",
        "description": "the sites this stack declares (aws:<region> or onprem:<site-id>)",
        "items": {"type": "string"},
    },
}
EXEMPT_NAMESPACES_SCHEMA_PROPERTIES: dict[str, dict[str, Any]] = {
    "exemptNamespaces": {
        "type": "array",
        "description": "namespaces whose system workloads are exempt (kube-system: the NVIDIA device plugin "
                       "needs hostPath)",
        "items": {"type": "string"},
        "default": list(DEFAULT_EXEMPT_NAMESPACES),
    },
}


def residency_schema(with_exempt_namespaces: bool = False) -> PolicyConfigSchema:
    properties = dict(RESIDENCY_CONFIG_SCHEMA_PROPERTIES)
    if with_exempt_namespaces:
        properties.update(EXEMPT_NAMESPACES_SCHEMA_PROPERTIES)
    return PolicyConfigSchema(properties=properties)


def exempt_schema() -> PolicyConfigSchema:
    return PolicyConfigSchema(properties=dict(EXEMPT_NAMESPACES_SCHEMA_PROPERTIES))


@dataclass(frozen=True)
class Residency:
    residency: Mapping[str, tuple[str, ...]]
    sites: tuple[str, ...]

    def allowed(self, site: Optional[str], classification: Optional[str]) -> bool:
        if site is None or classification is None:
            return False
        return any(fnmatch.fnmatchcase(site, pattern) for pattern in self.residency.get(classification, ()))

    def patterns(self, classification: str) -> str:
        return ", ".join(self.residency.get(classification, ())) or "none"

    def declared(self, site: Optional[str]) -> bool:
        return site in self.sites


def residency_config(config: Mapping[str, Any]) -> tuple[Optional[Residency], Optional[str]]:
    """The residency config, or why it is unusable (the rule then fails every resource it applies to)."""
    config = plain(config or {})
    residency, sites = config.get("residency"), config.get("sites")
    if not isinstance(residency, Mapping) or not residency or not isinstance(sites, list):
        return None, f"the policy config has no `residency`/`sites` for this rule; {CONFIG_HINT}"
    for classification, patterns in residency.items():
        if classification not in CLASSIFICATIONS:
            return None, (f"the policy config `residency` names unknown classification {classification!r}; "
                          f"{CONFIG_HINT}")
        if not isinstance(patterns, list) or not all(isinstance(p, str) for p in patterns):
            return None, f"the policy config `residency.{classification}` must be a list of site patterns"
    if not all(isinstance(s, str) for s in sites):
        return None, "the policy config `sites` must be a list of sites"
    return Residency({k: tuple(v) for k, v in residency.items()}, tuple(sites)), None


def exempt_namespaces(config: Mapping[str, Any]) -> tuple[str, ...]:
    value = plain(config or {}).get("exemptNamespaces")
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return tuple(value)
    return DEFAULT_EXEMPT_NAMESPACES


# --- Kubernetes helpers ----------------------------------------------------------------------------

def pod_spec(resource_type: str, props: Mapping[str, Any]) -> Any:
    """The pod spec of a workload (None when the type has none, UNKNOWN when it is unknown)."""
    path = _TEMPLATE_PATHS.get(resource_type)
    if path is None:
        return None
    return get(props, *path, "spec")


def containers(spec: Any) -> Any:
    """All containers (init, regular, ephemeral) of a pod spec; UNKNOWN if any list is unknown."""
    if spec is UNKNOWN:
        return UNKNOWN
    found: list[Any] = []
    for key in ("initContainers", "containers", "ephemeralContainers"):
        items = as_list(get(spec, key))
        if items is UNKNOWN:
            return UNKNOWN
        found.extend(items)
    return found


def namespace_name(props: Mapping[str, Any]) -> Any:
    value = get(props, "metadata", "namespace")
    return "default" if value is None else value


# --- stack index -----------------------------------------------------------------------------------

class StackIndex:
    """Lookups over ``StackValidationArgs.resources``: plain props, lineage, references and derived sites."""

    def __init__(self, resources: Sequence[PolicyResource]) -> None:
        self.resources = list(resources)
        self.by_urn = {r.urn: r for r in self.resources}
        self.children: dict[str, list[PolicyResource]] = defaultdict(list)
        for resource in self.resources:
            if resource.parent is not None:
                self.children[resource.parent.urn].append(resource)
        self._props: dict[str, Any] = {}

    def props(self, resource: Any) -> Any:
        if resource.urn not in self._props:
            self._props[resource.urn] = plain(resource.props)
        return self._props[resource.urn]

    def of_type(self, *types: str) -> list[PolicyResource]:
        return [r for r in self.resources if r.resource_type in types]

    def descendants(self, resource: PolicyResource) -> list[PolicyResource]:
        found, pending = [], list(self.children.get(resource.urn, []))
        while pending:
            child = pending.pop(0)
            found.append(child)
            pending.extend(self.children.get(child.urn, []))
        return found

    @staticmethod
    def refs(resource: PolicyResource, prop: str, types: Sequence[str]) -> list[PolicyResource]:
        """Resources of ``types`` that ``prop`` was computed from (property dependencies; when the engine or
        plan gave none at all, the resource's plain dependencies)."""
        if resource.property_dependencies:
            candidates = resource.property_dependencies.get(prop) or []
        else:
            candidates = resource.dependencies or []
        seen, out = set(), []
        for candidate in candidates:
            if candidate.resource_type in types and candidate.urn not in seen:
                seen.add(candidate.urn)
                out.append(candidate)
        return out

    def classification(self, resource: PolicyResource) -> Derived:
        return classification_of(resource.resource_type, self.props(resource))

    def aws_site(self, resource: Any) -> Derived:
        return aws_site(self.props(resource), resource.provider)

    # Kubernetes lineage: object -> its k8s provider -> the cluster component above that provider.
    def cluster_ancestor(self, resource: Any) -> Optional[PolicyResource]:
        ancestor = resource.parent
        while ancestor is not None and ancestor.resource_type not in CLUSTER_TYPES:
            ancestor = ancestor.parent
        return ancestor

    def kubeconfig_clusters(self, provider: PolicyResource) -> list[PolicyResource]:
        """EKS clusters the provider's ``kubeconfig`` was computed from (property dependency; plain dependencies
        when the plan records none), plus any EKS cluster among its plain dependencies."""
        found = self.refs(provider, "kubeconfig", (EKS_CLUSTER,))
        for dependency in provider.dependencies or []:
            if dependency.resource_type == EKS_CLUSTER and dependency not in found:
                found.append(dependency)
        return found

    def provider_cluster(self, provider: PolicyResource) -> tuple[Optional[PolicyResource], Optional[str]]:
        """The cluster component a Kubernetes provider deploys to: its ancestor cluster component, which must agree
        with the EKS cluster(s) its kubeconfig lineage reaches (a GpuCluster: exactly its own EKS descendant; an
        OnPremCluster: none); without an ancestor, the GpuCluster of the single EKS cluster its kubeconfig comes
        from. Anything else is unknown (fail closed)."""
        ancestor = self.cluster_ancestor(provider)
        reached = self.kubeconfig_clusters(provider)
        shown = ", ".join(f"'{c.name}'" for c in reached)
        if ancestor is None:
            if len(reached) == 1:
                owner = self.cluster_ancestor(reached[0])
                if owner is not None and owner.resource_type == GPU_CLUSTER:
                    return owner, None
                return None, (f"the kubeconfig of its Kubernetes provider '{provider.name}' comes from EKS cluster "
                              f"{shown}, which is not under a {GPU_CLUSTER}")
            if reached:
                return None, (f"the kubeconfig of its Kubernetes provider '{provider.name}' comes from several EKS "
                              f"clusters ({shown})")
            return None, (f"its Kubernetes provider '{provider.name}' has no {GPU_CLUSTER} or {ONPREM_CLUSTER} "
                          "in its lineage")
        if ancestor.resource_type == ONPREM_CLUSTER:
            if reached:
                return None, (f"its Kubernetes provider '{provider.name}' sits under on-prem cluster "
                              f"'{ancestor.name}' but its kubeconfig comes from EKS cluster {shown}")
            return ancestor, None
        own = [d for d in self.descendants(ancestor) if d.resource_type == EKS_CLUSTER]
        if not reached:
            return None, (f"its Kubernetes provider '{provider.name}' sits under GPU cluster '{ancestor.name}' but its "
                          "kubeconfig has no lineage to an EKS cluster, so which cluster it deploys to is unknown")
        if len(own) != 1 or any(c.urn != own[0].urn for c in reached):
            owned = ", ".join(f"'{c.name}'" for c in own) or "none"
            return None, (f"its Kubernetes provider '{provider.name}' sits under GPU cluster '{ancestor.name}' "
                          f"(EKS cluster {owned}) but its kubeconfig comes from EKS cluster {shown}")
        return ancestor, None

    def cluster_of(self, resource: Any) -> tuple[Optional[PolicyResource], Optional[str]]:
        provider = resource.provider
        if provider is None:
            return None, "it has no explicit Kubernetes provider"
        if provider.resource_type != K8S_PROVIDER:
            return None, f"its provider '{provider.name}' is not a Kubernetes provider"
        provider_resource = self.by_urn.get(provider.urn)
        if provider_resource is None:
            return None, f"its Kubernetes provider '{provider.name}' is not in the stack"
        return self.provider_cluster(provider_resource)

    def cluster_site(self, cluster: PolicyResource, residency: Optional[Residency]) -> Derived:
        if cluster.resource_type == ONPREM_CLUSTER:
            site = get(self.props(cluster), "site")
            if site is UNKNOWN:
                return Derived(None, f"the site of on-prem cluster '{cluster.name}' is unknown during preview")
            if not isinstance(site, str) or not site.startswith("onprem:") or not is_valid_site(site):
                return Derived(None, f"on-prem cluster '{cluster.name}' declares site {site!r}, not an onprem: site")
        else:
            clusters = [d for d in self.descendants(cluster) if d.resource_type == EKS_CLUSTER]
            if len(clusters) != 1:
                return Derived(None, f"GPU cluster '{cluster.name}' has {len(clusters)} {EKS_CLUSTER} children, "
                                     "expected exactly one")
            derived = self.aws_site(clusters[0])
            if not derived.known:
                return Derived(None, f"the EKS cluster of '{cluster.name}' has no derivable site: {derived.reason}")
            site = derived.value
        if residency is None:
            return Derived(None, "the policy config declares no `sites`")
        if not residency.declared(site):
            return Derived(None, f"cluster '{cluster.name}' is at {site}, which is not declared in config `sites`")
        return Derived(site)

    def k8s_site(self, resource: Any, residency: Optional[Residency]) -> Derived:
        cluster, reason = self.cluster_of(resource)
        if cluster is None:
            return Derived(None, reason)
        return self.cluster_site(cluster, residency)

    def site(self, resource: Any, residency: Optional[Residency]) -> Derived:
        if resource.resource_type.startswith("kubernetes:"):
            return self.k8s_site(resource, residency)
        if resource.resource_type == DATASET:
            site = get(self.props(resource), "site")
            if site is UNKNOWN:
                return Derived(None, "its site is unknown during preview")
            return Derived(site) if is_valid_site(site) else Derived(None, f"its site {site!r} is not a site")
        return self.aws_site(resource)

    # Kubernetes namespaces, resolved through lineage when the name is an unknown Output.
    def namespace_key(self, resource: PolicyResource) -> Any:
        """(provider urn, namespace identity) for grouping; UNKNOWN if neither name nor lineage decides."""
        provider = resource.provider.urn if resource.provider is not None else None
        props = self.props(resource)
        if resource.resource_type == K8S_NAMESPACE:
            name = get(props, "metadata", "name")
            return (provider, name if isinstance(name, str) and name is not UNKNOWN else f"urn:{resource.urn}")
        name = namespace_name(props)
        if name is not UNKNOWN:
            return (provider, name)
        owners = self.refs(resource, "metadata", (K8S_NAMESPACE,))
        if len(owners) == 1:
            return self.namespace_key(owners[0])
        return UNKNOWN


# --- policy construction -----------------------------------------------------------------------------

def resource_policy(name: str, description: str, validate: Callable[..., None], severity: Any, remediation: str,
                    config_schema: Optional[PolicyConfigSchema] = None) -> Any:
    from pulumi_policy import EnforcementLevel, ResourceValidationPolicy
    return ResourceValidationPolicy(name=name, description=description, validate=fail_closed(validate),
                                    enforcement_level=EnforcementLevel.MANDATORY, severity=severity,
                                    remediation_steps=remediation, config_schema=config_schema)


def stack_policy(name: str, description: str, validate: Callable[..., None], severity: Any, remediation: str,
                 config_schema: Optional[PolicyConfigSchema] = None) -> Any:
    from pulumi_policy import EnforcementLevel, StackValidationPolicy
    return StackValidationPolicy(name=name, description=description, validate=fail_closed(validate),
                                 enforcement_level=EnforcementLevel.MANDATORY, severity=severity,
                                 remediation_steps=remediation, config_schema=config_schema)


def require_residency(args: Any, report: ReportViolation, applicable: Iterable[Any]) -> Optional[Residency]:
    """The residency config; when missing or invalid, every applicable resource fails with the reason."""
    residency, problem = residency_config(args.get_config())
    if residency is None:
        for resource in applicable:
            report(f"{describe(resource)} cannot be checked: {problem}.", resource.urn)
    return residency
