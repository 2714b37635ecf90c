"""Typed stack configuration: the single source every component, the CLI and the policy config read.

A stack file (`stacks/Pulumi.<env>.yaml`) holds one structured key, `finml:platform`, plus `secure:` secrets as
top-level keys. Everything is parsed strictly (unknown keys and wrong types are errors) and cross-checked before
any resource is created, so a bad config is reported as `<file>: <key path>: <problem> — <what is allowed>` and
never as a traceback.
"""

from __future__ import annotations

import datetime
import fnmatch
import ipaddress
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal, Union

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from pydantic.alias_generators import to_camel

# ---------------------------------------------------------------------------------------------------------------
# Constants shared by the program, the CLI and the tests
# ---------------------------------------------------------------------------------------------------------------

CONFIG_NAMESPACE = "finml"
PLATFORM_KEY = "platform"
CLASSIFICATIONS: tuple[str, ...] = ("public", "internal", "confidential", "restricted")
Classification = Literal["public", "internal", "confidential", "restricted"]

DEFAULT_AZ_COUNT = 2
DEFAULT_EKS_VERSION = "1.35"
DEFAULT_SYSTEM_INSTANCE_TYPE = "m7i.xlarge"
DEFAULT_GPU_DISK_GIB = 200
DEFAULT_KUBERNETES_VERSION = "1.35.0"

SITE_RE = re.compile(r"^(aws):([a-z]{2}(-gov)?-[a-z]+-\d)$|^(onprem):([a-z0-9]([a-z0-9-]{0,30}[a-z0-9])?)$")
SITE_PATTERN_RE = re.compile(r"^(aws|onprem):[a-z0-9*?-]+$")
DATA_DISK_RE = re.compile(r"^/dev/[A-Za-z0-9][A-Za-z0-9/_.:-]*$")
SITE_ALLOWED = "'aws:<region>' (e.g. aws:eu-central-1) or 'onprem:<site-id>' (e.g. onprem:fra-dc1)"


def classification_rank(classification: str) -> int:
    return CLASSIFICATIONS.index(classification)


def site_matches(site: str, pattern: str) -> bool:
    """Residency patterns are exact sites or shell globs (`aws:eu-*`, `onprem:*`)."""
    return fnmatch.fnmatchcase(site, pattern)


def _printable(text: str) -> str:
    """One line per problem, whatever the input held: control characters are shown escaped."""
    return "".join(ch if ch.isprintable() else repr(ch)[1:-1] for ch in str(text))


class ConfigError(Exception):
    """A configuration problem, already formatted for a person: file[:line], key path, problem, what is allowed.

    `lines` (optional, parallel to `problems`) holds the 1-based line of each problem's key in the file.
    """

    def __init__(self, source: str, problems: list[tuple[str, str]], lines: list[int | None] | None = None):
        self.source = source
        self.problems = problems
        self.lines = list(lines) if lines is not None else [None] * len(problems)
        out = []
        for (key, msg), line in zip(problems, self.lines):
            where = f"{source}:{line}" if line else source
            out.append(f"{where}: {_printable(key)}: {_printable(msg)}" if key else f"{where}: {_printable(msg)}")
        super().__init__("\n".join(out))


class _Model(BaseModel):
    model_config = ConfigDict(
        extra="forbid", strict=True, frozen=True, alias_generator=to_camel, populate_by_name=True
    )


def _check_cidr(value: str) -> str:
    try:
        net = ipaddress.ip_network(value, strict=True)
    except ValueError as exc:
        raise ValueError(f"{value!r} is not a network CIDR ({exc}); allowed: e.g. 10.20.0.0/16") from None
    if not net.is_private:
        raise ValueError(f"{value!r} is not a private range; allowed: RFC 1918 / RFC 4193 networks")
    return value


Cidr = Annotated[str, Field(description="An IPv4/IPv6 private network in CIDR notation, host bits zero")]


# ---------------------------------------------------------------------------------------------------------------
# Sites
# ---------------------------------------------------------------------------------------------------------------


class GpuNodeGroup(_Model):
    name: str = Field(description="Node group name, unique within the cluster", pattern=r"^[a-z0-9][a-z0-9-]{0,38}$")
    gpu: str = Field(description="GPU profile name (H100-80GB) or shorthand MODEL:MEMORY:COUNT (H100:80GB:8)")
    instance_type: str | None = Field(
        default=None, description="EC2 instance type; must be one of the GPU profile's instance types"
    )
    min_size: int = Field(default=0, ge=0, le=100, description="Autoscaling lower bound")
    max_size: int = Field(default=2, ge=1, le=100, description="Autoscaling upper bound")
    desired_size: int | None = Field(default=None, ge=0, le=100, description="Initial size (default: min size)")
    capacity_type: Literal["ON_DEMAND", "SPOT"] = Field(default="ON_DEMAND", description="EC2 purchase option")
    disk_size_gib: int = Field(default=DEFAULT_GPU_DISK_GIB, ge=50, le=16384, description="Root volume size")

    @model_validator(mode="after")
    def _bounds(self) -> GpuNodeGroup:
        if self.min_size > self.max_size:
            raise ValueError(f"minSize {self.min_size} is greater than maxSize {self.max_size}")
        desired = self.desired_size if self.desired_size is not None else self.min_size
        if not self.min_size <= desired <= self.max_size:
            raise ValueError(f"desiredSize {desired} must lie between minSize and maxSize")
        return self


class SystemNodeGroup(_Model):
    instance_type: str = Field(default=DEFAULT_SYSTEM_INSTANCE_TYPE, description="CPU instance type for add-ons")
    min_size: int = Field(default=2, ge=1, le=20, description="Autoscaling lower bound")
    max_size: int = Field(default=4, ge=1, le=20, description="Autoscaling upper bound")

    @model_validator(mode="after")
    def _bounds(self) -> SystemNodeGroup:
        if self.min_size > self.max_size:
            raise ValueError(f"minSize {self.min_size} is greater than maxSize {self.max_size}")
        return self


class EksConfig(_Model):
    version: str = Field(default=DEFAULT_EKS_VERSION, pattern=r"^1\.\d{2}$", description="Kubernetes minor version")
    system_node_group: SystemNodeGroup = Field(default_factory=SystemNodeGroup, description="CPU node group")
    gpu_node_groups: list[GpuNodeGroup] = Field(default_factory=list, description="One managed node group each")
    admin_role_arns: list[str] = Field(default_factory=list, description="IAM roles given cluster-admin access")
    api_access_cidrs: list[Cidr] = Field(
        default_factory=list,
        description="Private networks (besides the VPC and on-prem management networks of VPN links) that may reach "
                    "the private API endpoint on 443, e.g. the deployment runners' subnet",
    )

    _api_cidrs = field_validator("api_access_cidrs")(lambda v: [_check_cidr(c) for c in v])


class AwsNetworkConfig(_Model):
    vpc_cidr: Cidr = Field(description="VPC CIDR, private")
    az_count: Literal[2, 3] = Field(default=DEFAULT_AZ_COUNT, description="Availability zones (3 in production)")
    egress: Literal["none", "nat"] = Field(
        default="none", description="'none': no internet egress, VPC endpoints only; 'nat': NAT gateway egress"
    )

    @field_validator("vpc_cidr")
    @classmethod
    def _vpc_cidr(cls, value: str) -> str:
        _check_cidr(value)
        net = ipaddress.ip_network(value)
        if net.version != 4 or not 16 <= net.prefixlen <= 22:
            raise ValueError(f"{value!r}: a VPC needs an IPv4 range from /16 to /22 (room for subnets in 3 AZs)")
        return value


class StorageConfig(_Model):
    replicate_to: str | None = Field(
        default=None, description="Site of the replica region for S3 data buckets (must be allowed by residency)"
    )
    training_filesystem: Literal["efs", "none"] = Field(default="efs", description="Shared training file system")


# ---------------------------------------------------------------------------------------------------------------
# Image registries: where each site's clusters pull platform images from (nodes have no internet egress)
# ---------------------------------------------------------------------------------------------------------------

DEFAULT_IMAGE_PREFIX = "finml"
_REGISTRY_HOST_RE = re.compile(r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?(\.[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)+"
                               r"(:[1-9][0-9]{0,4})?$")
_REPOSITORY_PREFIX_RE = re.compile(r"^[a-z0-9]+([._-][a-z0-9]+)*(/[a-z0-9]+([._-][a-z0-9]+)*)*$")
REGISTRY_HOST_ALLOWED = "a DNS name with at least one dot and an optional port, e.g. registry.fra-dc1.example.internal"
ECR_HOST_FORMAT = "<account>.dkr.ecr.<region>.amazonaws.com"


def ecr_registry_host(account_id: str | None, region: str) -> str:
    return f"{account_id}.dkr.ecr.{region}.amazonaws.com"


def _check_registry_host(value: str) -> str:
    if not _REGISTRY_HOST_RE.match(value):
        raise ValueError(f"{value!r} is not a registry host; allowed: {REGISTRY_HOST_ALLOWED} (no scheme, no path)")
    return value


def _check_repository_prefix(value: str) -> str:
    if not _REPOSITORY_PREFIX_RE.match(value):
        raise ValueError(f"{value!r} is not a repository path prefix; allowed: lower-case path segments of letters, "
                         f"digits and single . _ - separators, joined by '/', e.g. finml or ml-platform/finml")
    return value


class OnPremImageRegistry(_Model):
    host: str = Field(description="host[:port] of the data centre's own registry (e.g. Harbor), inside the bank's "
                                  "domain, e.g. registry.fra-dc1.example.internal")
    immutable_tags: bool = Field(
        description="The registry refuses to overwrite or delete a pushed tag under `prefix` (e.g. a Harbor tag "
                    "immutability rule for the project). The stack declares it and the policy pack trusts the "
                    "declaration; it must be true, because the platform's images are pinned by tag")
    prefix: str = Field(default=DEFAULT_IMAGE_PREFIX,
                        description="Repository path prefix inside the registry (a Harbor project), default finml")

    _host = field_validator("host")(lambda v: _check_registry_host(v))
    _prefix = field_validator("prefix")(lambda v: _check_repository_prefix(v))

    @field_validator("immutable_tags")
    @classmethod
    def _immutable(cls, value: bool) -> bool:
        if value is not True:
            raise ValueError("false: the platform's images are pinned by tag, so the site's registry must enforce "
                             "immutable tags; allowed: true (configure a tag immutability rule for the prefix first)")
        return value


class AwsImageRegistry(_Model):
    host: str | None = Field(
        default=None,
        description=f"The site's ECR registry, {ECR_HOST_FORMAT} of the stack's awsAccountId and this site's "
                    "region; default: derived. Any other host is an error")
    prefix: str = Field(default=DEFAULT_IMAGE_PREFIX,
                        description="ECR repository namespace of the platform's images, default finml")

    _host = field_validator("host")(lambda v: v if v is None else _check_registry_host(v))
    _prefix = field_validator("prefix")(lambda v: _check_repository_prefix(v))


@dataclass(frozen=True)
class SiteImageRegistry:
    """One site's resolved image registry: images are ``<host>/<prefix>/<repository>:<tag>``."""

    host: str
    prefix: str
    kind: Literal["ecr", "declared"]
    """ecr: the site's ECR (immutability is proven by the stack's repositories); declared: the on-prem registry
    whose tag immutability the stack declares."""
    immutable_tags: bool

    def to_pack(self) -> dict[str, Any]:
        return {"host": self.host, "prefix": self.prefix, "kind": self.kind, "immutableTags": self.immutable_tags}


class AwsSite(_Model):
    kind: Literal["aws"] = Field(description="Site kind")
    classifications: list[Classification] = Field(
        description="Data classifications stored at this site (one CMK and one data bucket each)", min_length=1
    )
    network: AwsNetworkConfig | None = Field(default=None, description="VPC; omit for a replica-only site")
    eks: EksConfig | None = Field(default=None, description="EKS GPU cluster; needs a network")
    storage: StorageConfig = Field(default_factory=StorageConfig, description="Data storage options")
    image_registry: AwsImageRegistry = Field(
        default_factory=AwsImageRegistry,
        description="The site's image registry: the stack account's ECR in this region, where the program creates "
                    "one IMMUTABLE repository per platform image under `prefix`",
    )

    @model_validator(mode="after")
    def _eks_needs_network(self) -> AwsSite:
        if self.eks is not None and self.network is None:
            raise ValueError("eks needs a network on the same site")
        return self


class OnPremNetwork(_Model):
    node_cidr: Cidr = Field(description="Node (host) network")
    pod_cidr: Cidr = Field(description="Kubernetes pod network")
    service_cidr: Cidr = Field(description="Kubernetes service network")
    storage_cidr: Cidr = Field(description="Storage network (NFS/object store)")
    management_cidr: Cidr = Field(description="Management / bastion network")

    _cidr = field_validator("node_cidr", "pod_cidr", "service_cidr", "storage_cidr", "management_cidr")(_check_cidr)


class OnPremNode(_Model):
    name: str = Field(description="Host name", pattern=r"^[a-z0-9][a-z0-9-]{0,62}$")
    address: str = Field(description="Management IPv4 address, inside the site's nodeCidr")
    gpu_profile: str = Field(description="GPU profile name (H100-80GB) or shorthand (H100:80GB:8)")
    gpu_count: int = Field(default=8, ge=1, le=8, description="GPUs in this node (at most 8 per bare-metal node)")
    mig_layout: dict[str, int] | None = Field(
        default=None, description="MIG slices per GPU, e.g. {'1g.10gb': 7}; omit to leave MIG off"
    )
    data_disks: list[str] = Field(default_factory=list, description="Block devices to encrypt with LUKS2")

    @field_validator("data_disks")
    @classmethod
    def _data_disks(cls, disks: list[str]) -> list[str]:
        for disk in disks:
            if not DATA_DISK_RE.match(disk) or "/../" in disk + "/":
                raise ValueError(f"data disk {disk!r} is not a block device path; allowed: absolute /dev/... paths "
                                 f"such as /dev/nvme1n1 or /dev/disk/by-id/...")
        for i, disk in enumerate(disks):
            for other in disks[i + 1:]:
                if other == disk:
                    raise ValueError(f"data disk {disk} is listed twice; each device may appear once")
                for whole, part in ((disk, other), (other, disk)):
                    if part.startswith(whole) and re.fullmatch(r"p?\d+", part[len(whole):]):
                        raise ValueError(f"data disks {whole} and {part} overlap ({part} is a partition of {whole}); "
                                         f"list whole disks or partitions, not both")
        return disks

    @field_validator("address")
    @classmethod
    def _address(cls, value: str) -> str:
        try:
            ipaddress.IPv4Address(value)
        except ValueError:
            raise ValueError(f"{value!r} is not an IPv4 address") from None
        return value


class OnPremKubernetes(_Model):
    api_endpoint: str = Field(description="host:port of the cluster API (join endpoint)", pattern=r"^[A-Za-z0-9.-]+:\d+$")
    version: str = Field(default=DEFAULT_KUBERNETES_VERSION, pattern=r"^1\.\d{2}\.\d+$",
                         description="Kubernetes version pinned to the patch release, e.g. 1.35.0")
    kubeconfig_secret: str = Field(
        description="Name of the `secure:` stack config key (under finml:) holding the cluster's kubeconfig"
    )


class PackageSource(_Model):
    url: str = Field(description="APT repository URL (the bank's mirror for air-gapped sites)", pattern=r"^https?://\S+$")
    suites: list[str] = Field(min_length=1, description="APT suites, e.g. ['/'] for flat NVIDIA repos")
    components: list[str] = Field(default_factory=list, description="APT components")
    key: str = Field(description="URL or node-local path of the repository's signing key")

    @field_validator("url")
    @classmethod
    def _url(cls, value: str) -> str:
        from urllib.parse import urlsplit

        try:
            host = urlsplit(value).hostname
        except ValueError:
            host = None
        if not host:
            raise ValueError(f"{value!r} has no host; allowed: http(s)://<host>/<path> of an APT repository")
        return value

    @field_validator("suites", "components")
    @classmethod
    def _words(cls, values: list[str]) -> list[str]:
        for value in values:
            if not value.strip() or any(ch.isspace() for ch in value):
                raise ValueError(f"{value!r} is not an APT suite/component; allowed: one word each, e.g. 'stable'")
        return values

    @field_validator("key")
    @classmethod
    def _key(cls, value: str) -> str:
        if not re.fullmatch(r"(https?://\S+|/\S+)", value):
            raise ValueError(f"{value!r} is not a key location; allowed: an http(s) URL or an absolute node path")
        return value


DEFAULT_TRAINING_STORAGE_GIB = 200
DEFAULT_SHARED_STORAGE_CLASS = "nfs-client"


class OnPremSite(_Model):
    kind: Literal["onprem"] = Field(description="Site kind")
    datacentre: str = Field(description="Human name of the data centre")
    classifications: list[Classification] = Field(description="Data classifications stored here", min_length=1)
    network: OnPremNetwork = Field(description="Site networks")
    kubernetes: OnPremKubernetes = Field(description="Cluster endpoint and credentials")
    nvidia_driver_branch: str | None = Field(default=None, pattern=r"^\d{3}$", description="Override driver branch")
    nodes: list[OnPremNode] = Field(min_length=1, description="Bare-metal GPU nodes")
    run_ansible: bool = Field(default=True, description="Run ansible-playbook from `pulumi up`")
    node_secrets: str | None = Field(
        default=None,
        description="Name of the `secure:` stack config key (under finml:) holding YAML with the nodes' secrets: "
                    "disk_encryption_key, kubernetes_node_join_token, kubernetes_node_ca_cert_hashes",
    )
    package_sources: dict[Literal["nvidia_cuda", "nvidia_container_toolkit", "kubernetes"], PackageSource] = Field(
        default_factory=dict, description="APT sources for NVIDIA and Kubernetes packages (point at your mirrors)"
    )
    image_registry: OnPremImageRegistry = Field(
        description="The data centre's own image registry (host, immutableTags: true, prefix); the cluster pulls "
                    "every platform image from it by name, so no containerd mirror redirect is needed")
    shared_storage_class: str = Field(
        default=DEFAULT_SHARED_STORAGE_CLASS, pattern=r"^[a-z0-9]([a-z0-9.-]{0,251}[a-z0-9])?$",
        description="ReadWriteMany StorageClass of the site's shared file system (NFS or similar), where training "
                    "sets and distributed checkpoints live",
    )


Site = Annotated[Union[AwsSite, OnPremSite], Field(discriminator="kind")]


class VpnLink(_Model):
    aws_site: str = Field(description="AWS site terminating the VPN")
    onprem_site: str = Field(description="On-prem site at the other end")
    customer_gateway_ip: str = Field(description="Public IPv4 of the on-prem VPN appliance")
    bgp_asn: int = Field(default=65010, ge=64512, le=65534, description="On-prem private BGP ASN")

    @field_validator("customer_gateway_ip")
    @classmethod
    def _ip(cls, value: str) -> str:
        try:
            ipaddress.IPv4Address(value)
        except ValueError:
            raise ValueError(f"{value!r} is not an IPv4 address") from None
        return value


# ---------------------------------------------------------------------------------------------------------------
# Data and workloads
# ---------------------------------------------------------------------------------------------------------------


class Dataset(_Model):
    name: str = Field(description="Dataset name", pattern=r"^[a-z0-9][a-z0-9-]{0,62}$")
    classification: Classification = Field(description="Data classification")
    site: str = Field(description="Site holding the dataset")
    synthetic: bool = Field(default=False, description="Synthetic (generated) data")


class Model(_Model):
    name: str = Field(description="Registered model name", pattern=r"^[a-z0-9][a-z0-9-]{0,62}$")
    trained_on: list[str] = Field(min_length=1, description="Dataset names the model is trained on")


class FeatureStore(_Model):
    site: str = Field(description="Site running the feature store")
    classification: Classification = Field(description="Highest classification of features served")


class TrainingWorkload(_Model):
    name: str = Field(description="Training job name", pattern=r"^[a-z0-9][a-z0-9-]{0,62}$")
    site: str = Field(description="Site running the job")
    model: str = Field(description="Model the job produces")
    gpu_profile: str = Field(description="GPU profile the job runs on")
    gpus: int = Field(default=1, ge=1, le=64, description="GPUs requested (per worker pod)")
    workers: int = Field(default=1, ge=1, le=64, description="Worker pods of a run (Indexed Job parallelism); "
                                                             "torchrun --nnodes")
    procs_per_worker: int | None = Field(default=None, ge=1, le=64,
                                         description="torchrun --nproc-per-node (default: gpus)")
    mode: Literal["ddp", "fsdp2"] = Field(default="ddp", description="ddp (data-parallel) or fsdp2 (fully sharded)")
    epochs: int = Field(default=10, ge=1, le=10000, description="Training epochs of a run")
    mig_slice: str | None = Field(default=None, description="Train on one MIG slice per worker, e.g. 3g.40gb "
                                                            "(needs gpus: 1: a CUDA process sees one MIG device)")
    feature_views: list[str] = Field(default_factory=list,
                                     description="Feature views of the run's training set (empty: the model's)")
    max_restarts: int = Field(default=3, ge=0, le=100, description="torchrun --max-restarts per worker")
    storage_gib: int = Field(default=DEFAULT_TRAINING_STORAGE_GIB, ge=1, le=65536,
                             description="Size of the shared (ReadWriteMany) training-set and checkpoint claim of "
                                         "each classification at the site; the largest of the site's jobs wins")


DEFAULT_SERVING_ALIAS = "champion"
DEFAULT_SERVING_REPLICAS = 2
DEFAULT_MAX_BATCH_SIZE = 32
DEFAULT_MAX_BATCH_TIME_MS = 10
MAX_TIME_SLICE_REPLICAS = 16
GPU_SHARE_ALLOWED = ("'mig:<profile>' (e.g. mig:1g.18gb), 'mig' with gpuMemoryGib (the planner picks the slice), "
                     f"'time-sliced:<2..{MAX_TIME_SLICE_REPLICAS}>', 'gpu' (one whole GPU) or 'cpu'")
_GPU_SHARE_RE = re.compile(r"^(?:mig(?::(?P<mig>[1-7]g\.[0-9]+gb(?:\+me)?))?|time-sliced:(?P<ts>[0-9]+)|gpu|cpu)$")


@dataclass(frozen=True)
class GpuShare:
    """How one replica of a served model uses a GPU: a MIG slice, a time-sliced GPU share, a whole GPU or none."""

    kind: Literal["mig", "time-sliced", "gpu", "cpu"]
    mig_profile: str | None = None
    """The MIG profile for kind mig; None: the planner picks the smallest slice holding gpuMemoryGib."""
    time_slices: int | None = None
    """For kind time-sliced: how many replicas share one physical GPU (the device plugin's replicas)."""

    @classmethod
    def parse(cls, text: str) -> GpuShare:
        match = _GPU_SHARE_RE.match(text)
        if not match:
            raise ValueError(f"{text!r} is not a GPU share; allowed: {GPU_SHARE_ALLOWED}")
        if text.startswith("mig"):
            return cls("mig", mig_profile=match.group("mig"))
        if text.startswith("time-sliced:"):
            n = int(match.group("ts"))
            if not 2 <= n <= MAX_TIME_SLICE_REPLICAS:
                raise ValueError(f"{text!r}: time-sliced needs 2..{MAX_TIME_SLICE_REPLICAS} replicas per GPU")
            return cls("time-sliced", time_slices=n)
        return cls(text)  # type: ignore[arg-type]

    def __str__(self) -> str:
        if self.kind == "mig":
            return f"mig:{self.mig_profile}" if self.mig_profile else "mig"
        if self.kind == "time-sliced":
            return f"time-sliced:{self.time_slices}"
        return self.kind


class ServingWorkload(_Model):
    name: str = Field(description="Inference service name", pattern=r"^[a-z0-9][a-z0-9-]{0,62}$")
    model: str = Field(description="Model served")
    sites: list[str] = Field(min_length=1, description="Sites serving it")
    gpu_profile: str | None = Field(default=None, description="GPU profile the service runs on (not for share cpu)")
    mig_slice: str | None = Field(default=None, description="MIG slice for GPU sharing, e.g. 1g.10gb (shorthand for share mig:<slice>)")
    registered_model: str | None = Field(
        default=None, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$",
        description="Registry name of the model (models:/NAME@ALIAS); default: the model's name")
    alias: str = Field(default=DEFAULT_SERVING_ALIAS, pattern=r"^[a-z][a-z0-9_-]{0,62}$",
                       description="Registry alias the server loads (models:/NAME@ALIAS)")
    replicas: int = Field(default=DEFAULT_SERVING_REPLICAS, ge=1, le=64, description="Replicas per site (HPA minimum)")
    max_replicas: int | None = Field(default=None, ge=1, le=128, description="HPA maximum (default: 2 x replicas)")
    share: str | None = Field(default=None, description=f"GPU share per replica: {GPU_SHARE_ALLOWED}; default: "
                                                      "mig:<migSlice> if migSlice is set, else gpu")
    gpu_memory_gib: int | None = Field(default=None, ge=1, le=1024,
                                       description="GPU memory one replica needs (share 'mig': the planner picks the slice)")
    max_batch_size: int = Field(default=DEFAULT_MAX_BATCH_SIZE, ge=1, le=4096,
                                description="MLServer adaptive batching: most requests in one batch (1 turns it off)")
    max_batch_time_ms: int = Field(default=DEFAULT_MAX_BATCH_TIME_MS, ge=0, le=10_000,
                                   description="MLServer adaptive batching: longest wait for a batch to fill, ms")
    hashed_features: list[str] = Field(default_factory=list,
                                       description="Features the prediction audit log records only as keyed hashes "
                                                   "(every restricted feature)")
    client_namespaces: list[str] = Field(default_factory=list,
                                         description="Kubernetes namespaces allowed to call the service")

    @property
    def gpu_share(self) -> GpuShare:
        """The parsed share (validated by the config cross-checks)."""
        if self.share is not None:
            return GpuShare.parse(self.share)
        return GpuShare("mig", mig_profile=self.mig_slice) if self.mig_slice else GpuShare("gpu")

    @property
    def registry_name(self) -> str:
        return self.registered_model or self.model


class Workloads(_Model):
    feature_store: FeatureStore | None = Field(default=None, description="Feature store placement")
    training: list[TrainingWorkload] = Field(default_factory=list, description="Training jobs")
    serving: list[ServingWorkload] = Field(default_factory=list, description="Inference services")


class Waiver(_Model):
    """An expiring exception: rule ``rule`` does not fail for ``resources``; enforced by the pack, which reports the
    waived findings separately and refuses waivers of restricted-data residency findings."""

    rule: str = Field(min_length=1, description="Rule id to waive (see `finml policies list`)")
    resources: list[str] = Field(min_length=1, description="URNs or URN globs (fnmatch) the waiver covers")
    reason: str = Field(min_length=1, description="Why the finding is accepted for now")
    ticket: str = Field(pattern=r"^[A-Za-z][A-Za-z0-9_]*-\d+$", description="Tracking ticket, e.g. SEC-1234")
    approver: str = Field(min_length=1, description="Who approved the exception")
    expires: datetime.date = Field(strict=False, description="Last day the waiver applies (YYYY-MM-DD)")

    def to_pack(self) -> dict[str, Any]:
        return {"rule": self.rule, "resources": list(self.resources), "reason": self.reason, "ticket": self.ticket,
                "approver": self.approver, "expires": self.expires.isoformat()}


DEFAULT_REGISTRY_NAMESPACE = "finml-registry"


class RegistrySite(_Model):
    classification: Classification = Field(
        description="Highest classification of the models this site's registry holds (its database, artifacts and "
                    "audit bucket are data-bearing at this classification)"
    )
    tracking_uri: str | None = Field(
        default=None, pattern=r"^https://[A-Za-z0-9.-]+(:\d+)?(/\S*)?$",
        description="HTTPS URI clients use for this registry; default: the in-cluster service "
                    f"https://mlflow.{DEFAULT_REGISTRY_NAMESPACE}.svc.cluster.local",
    )


class PromotionThreshold(_Model):
    metric: str = Field(description="Metric logged on the source run, e.g. final_holdout_pr_auc",
                        pattern=r"^[A-Za-z0-9_./ -]{1,250}$")
    min: float | None = Field(default=None, strict=False, description="Lowest allowed value (inclusive)")
    max: float | None = Field(default=None, strict=False, description="Highest allowed value (inclusive)")

    @model_validator(mode="after")
    def _bound(self) -> PromotionThreshold:
        if self.min is None and self.max is None:
            raise ValueError(f"threshold for {self.metric!r} needs min, max or both")
        if self.min is not None and self.max is not None and self.min > self.max:
            raise ValueError(f"threshold for {self.metric!r}: min {self.min} is greater than max {self.max}")
        return self


class PromotionConfig(_Model):
    metrics: list[PromotionThreshold] = Field(
        default_factory=list, description="Every metric must be logged on the version's source run and in bounds"
    )


class RegistryConfig(_Model):
    sites: dict[str, RegistrySite] = Field(
        min_length=1, description="Sites hosting an MLflow tracking server and model registry, keyed by site id; "
                                  "every site that trains or serves needs one"
    )
    promotion: PromotionConfig = Field(default_factory=PromotionConfig, description="Promotion gate thresholds")

    def tracking_uri(self, site: str) -> str:
        entry = self.sites[site]
        return entry.tracking_uri or f"https://mlflow.{DEFAULT_REGISTRY_NAMESPACE}.svc.cluster.local"


class Platform(_Model):
    environment: str = Field(description="Environment name", pattern=r"^[a-z0-9][a-z0-9-]{0,30}$")
    description: str = Field(default="", description="What this environment is for")
    max_classification: Classification = Field(description="Highest classification this stack may hold")
    synthetic_data_only: bool = Field(default=False, description="Only synthetic datasets allowed")
    residency: dict[Classification, list[str]] = Field(
        description="Classification → allowed site patterns (exact sites or globs like aws:eu-*, onprem:*)"
    )
    sites: dict[str, Site] = Field(min_length=1, description="Sites of this stack, keyed by site id")
    vpn: list[VpnLink] = Field(default_factory=list, description="Site-to-site IPsec links")
    datasets: list[Dataset] = Field(default_factory=list, description="Datasets and where they live")
    models: list[Model] = Field(default_factory=list, description="Models and their training data")
    workloads: Workloads = Field(default_factory=Workloads, description="ML platform workloads")
    registry: RegistryConfig | None = Field(
        default=None, description="Model registries (MLflow) per site and the promotion gate's thresholds"
    )
    aws_account_id: str | None = Field(
        default=None, pattern=r"^\d{12}$", description="AWS account of the stack's AWS sites (key policies name it)"
    )
    tags: dict[str, str] = Field(default_factory=dict, description="Extra tags on every AWS resource")
    create_autoscaling_service_linked_role: bool = Field(
        default=False,
        description="Create AWSServiceRoleForAutoScaling first (a fresh account lacks it, and KMS rejects key policies "
                    "naming a role that does not exist); leave false where the account already has it",
    )
    waivers: list[Waiver] = Field(
        default_factory=list,
        description="Expiring policy waivers (rule, resources, reason, ticket, approver, expires); never for "
                    "restricted-data residency findings",
    )

    @field_validator("sites")
    @classmethod
    def _site_ids(cls, sites: dict[str, Any]) -> dict[str, Any]:
        for site_id, site in sites.items():
            match = SITE_RE.match(site_id)
            if not match:
                raise ValueError(f"site id {site_id!r} is not valid; allowed: {SITE_ALLOWED}")
            if site_id.split(":", 1)[0] != site.kind:
                raise ValueError(f"site {site_id!r} has kind {site.kind!r}; its prefix must match its kind")
        return sites

    @field_validator("residency")
    @classmethod
    def _patterns(cls, residency: dict[str, list[str]]) -> dict[str, list[str]]:
        for classification, patterns in residency.items():
            for pattern in patterns:
                if not SITE_PATTERN_RE.match(pattern):
                    raise ValueError(
                        f"{classification}: pattern {pattern!r} is not valid; allowed: {SITE_ALLOWED} or a glob"
                    )
        return residency


# ---------------------------------------------------------------------------------------------------------------
# The parsed stack
# ---------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class StackConfig:
    """A validated stack: its name, source file, platform model and which config keys are secrets."""

    stack: str
    source: str
    platform: Platform
    secret_keys: tuple[str, ...]
    raw_config: dict[str, Any]

    @property
    def aws_sites(self) -> dict[str, AwsSite]:
        return {k: v for k, v in self.platform.sites.items() if isinstance(v, AwsSite)}

    @property
    def onprem_sites(self) -> dict[str, OnPremSite]:
        return {k: v for k, v in self.platform.sites.items() if isinstance(v, OnPremSite)}

    def image_registry(self, site_id: str) -> SiteImageRegistry:
        """Where a site's clusters pull platform images from (see :func:`site_image_registries`)."""
        return site_image_registries(self.platform)[site_id]

    def allowed_sites(self, classification: str) -> list[str]:
        patterns = self.platform.residency.get(classification, [])
        return [s for s in self.platform.sites if any(site_matches(s, p) for p in patterns)]

    def non_secret_config(self) -> dict[str, Any]:
        """The non-secret config as the Pulumi CLI hands it on: JSON values, YAML dates as ISO strings."""
        plain = {k: v for k, v in self.raw_config.items() if k not in self.secret_keys}
        return json.loads(json.dumps(plain, default=yaml_scalar_to_json))


def yaml_scalar_to_json(value: Any) -> str:
    """`json.dumps` default for YAML scalars JSON lacks: dates become ISO strings, as the Pulumi CLI passes them."""
    if isinstance(value, (datetime.date, datetime.datetime)):
        return value.isoformat()
    raise TypeError(f"config value of type {type(value).__name__} is not JSON serialisable")


def region_of(site: str) -> str:
    return site.split(":", 1)[1]


def site_image_registries(platform: Platform) -> dict[str, SiteImageRegistry]:
    """Every site's image registry: AWS sites the stack account's ECR in their region, on-prem sites the registry
    they declare. The program composes images from it (workloads/images.py) and the policy pack's
    k8s-image-pinned rule gets the same table (`finml policy config`)."""
    out: dict[str, SiteImageRegistry] = {}
    for site_id, site in platform.sites.items():
        registry = site.image_registry
        if isinstance(site, AwsSite):
            host = registry.host or ecr_registry_host(platform.aws_account_id, region_of(site_id))
            out[site_id] = SiteImageRegistry(host, registry.prefix, "ecr", True)
        else:
            out[site_id] = SiteImageRegistry(registry.host, registry.prefix, "declared", registry.immutable_tags)
    return out


def _format_loc(loc: tuple[Any, ...]) -> str:
    out = f"{CONFIG_NAMESPACE}:{PLATFORM_KEY}"
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else f".{part}"
    return out


def _pydantic_problems(exc: ValidationError) -> list[tuple[str, str]]:
    problems = []
    for err in exc.errors(include_url=False):
        msg = err["msg"].removeprefix("Value error, ")
        if err["type"] == "extra_forbidden":
            msg = "unknown key; check the spelling against the README's configuration reference"
        elif err["type"] == "missing":
            msg = "required key is missing"
        elif err["type"] == "literal_error":
            msg = f"invalid value {err.get('input')!r}; {msg}"
        elif err["type"].endswith("_type"):
            msg = f"{msg} (got {type(err.get('input')).__name__} {err.get('input')!r})"
        problems.append((_format_loc(_strip_union_tags(err["loc"])), msg))
    return problems


def _strip_union_tags(loc: tuple[Any, ...]) -> tuple[Any, ...]:
    out: list[Any] = []
    for i, part in enumerate(loc):
        if part in ("aws", "onprem") and i >= 2 and loc[i - 2] == "sites":
            continue  # discriminator tag inserted by pydantic after the site key
        out.append(part)
    return tuple(out)


def _cross_checks(platform: Platform, profiles: dict[str, Any] | None) -> list[tuple[str, str]]:
    """Every check that spans fields, in one place, before any resource is created."""
    p = f"{CONFIG_NAMESPACE}:{PLATFORM_KEY}"
    problems: list[tuple[str, str]] = []
    sites = platform.sites

    # Residency rules name declared sites; every classification in use has a rule and an allowed site.
    for classification, patterns in platform.residency.items():
        for i, pattern in enumerate(patterns):
            if not any(ch in pattern for ch in "*?") and pattern not in sites:
                problems.append((
                    f"{p}.residency.{classification}[{i}]",
                    f"names unknown site {pattern!r}; declared sites: {', '.join(sorted(sites))}",
                ))

    def check_classification(key: str, classification: str) -> None:
        if classification_rank(classification) > classification_rank(platform.max_classification):
            problems.append((key, f"classification {classification!r} exceeds this stack's maxClassification "
                                  f"{platform.max_classification!r}"))
            return
        allowed = [s for s in sites if any(site_matches(s, pat) for pat in platform.residency.get(classification, []))]
        if not allowed:
            problems.append((key, f"classification {classification!r} has no allowed site in this stack; add a "
                                  f"residency rule for it naming one of: {', '.join(sorted(sites))}"))

    def check_site_ref(key: str, site: str) -> None:
        if site not in sites:
            problems.append((key, f"unknown site {site!r}; declared sites: {', '.join(sorted(sites))}"))

    for site_id, site in sites.items():
        for i, classification in enumerate(site.classifications):
            check_classification(f"{p}.sites.{site_id}.classifications[{i}]", classification)
        if isinstance(site, AwsSite) and site.storage.replicate_to is not None:
            target = site.storage.replicate_to
            if not SITE_RE.match(target) or not target.startswith("aws:"):
                problems.append((f"{p}.sites.{site_id}.storage.replicateTo",
                                 f"{target!r} is not an AWS site; allowed: aws:<region>"))
            elif target == site_id:
                problems.append((f"{p}.sites.{site_id}.storage.replicateTo", "cannot replicate a site to itself"))

    datasets = {d.name: d for d in platform.datasets}
    for i, ds in enumerate(platform.datasets):
        check_site_ref(f"{p}.datasets[{i}].site", ds.site)
        check_classification(f"{p}.datasets[{i}].classification", ds.classification)
        if platform.synthetic_data_only and not ds.synthetic:
            problems.append((f"{p}.datasets[{i}].synthetic", "this stack allows synthetic data only; set "
                                                             "synthetic: true or move the dataset to another stack"))
    if len(datasets) != len(platform.datasets):
        problems.append((f"{p}.datasets", "dataset names must be unique"))

    models = {m.name: m for m in platform.models}
    if len(models) != len(platform.models):
        problems.append((f"{p}.models", "model names must be unique"))
    for i, model in enumerate(platform.models):
        for j, name in enumerate(model.trained_on):
            if name not in datasets:
                problems.append((f"{p}.models[{i}].trainedOn[{j}]",
                                 f"unknown dataset {name!r}; declared: {', '.join(sorted(datasets)) or 'none'}"))

    wl = platform.workloads
    if wl.feature_store is not None:
        check_site_ref(f"{p}.workloads.featureStore.site", wl.feature_store.site)
        check_classification(f"{p}.workloads.featureStore.classification", wl.feature_store.classification)
        # The Feast SQL registry is a database on the site's model-registry database server.
        fs_site = wl.feature_store.site
        registry_sites = platform.registry.sites if platform.registry is not None else {}
        if fs_site in sites and fs_site not in registry_sites:
            problems.append((f"{p}.workloads.featureStore.site",
                             f"{fs_site} has no model registry, whose database server holds the feature store's "
                             f"Feast registry; add {fs_site} to {p}.registry.sites"))
    for i, job in enumerate(wl.training):
        check_site_ref(f"{p}.workloads.training[{i}].site", job.site)
        if job.model not in models:
            problems.append((f"{p}.workloads.training[{i}].model", f"unknown model {job.model!r}"))
        site_cfg = sites.get(job.site)
        if isinstance(site_cfg, AwsSite) and site_cfg.storage.training_filesystem != "efs":
            problems.append((f"{p}.workloads.training[{i}].site",
                             f"{job.site} has no shared training file system (sites.{job.site}.storage."
                             f"trainingFilesystem is {site_cfg.storage.training_filesystem!r}); set it to 'efs' or "
                             f"train on another site"))
        if job.mig_slice is not None and job.gpus != 1:
            problems.append((f"{p}.workloads.training[{i}].gpus", f"{job.gpus} with migSlice {job.mig_slice!r}; "
                             "allowed: 1 (a CUDA process sees a single MIG device; use more workers instead)"))
    for what, names in (("training", [j.name for j in wl.training]), ("serving", [w.name for w in wl.serving])):
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            problems.append((f"{p}.workloads.{what}", f"names must be unique; repeated: {', '.join(dupes)}"))
    for i, svc in enumerate(wl.serving):
        if len(set(svc.sites)) != len(svc.sites):
            problems.append((f"{p}.workloads.serving[{i}].sites", "each site may appear once"))
        for j, site in enumerate(svc.sites):
            check_site_ref(f"{p}.workloads.serving[{i}].sites[{j}]", site)
        if svc.model not in models:
            problems.append((f"{p}.workloads.serving[{i}].model", f"unknown model {svc.model!r}"))

    if platform.registry is not None:
        for site_id, entry in platform.registry.sites.items():
            key = f"{p}.registry.sites.{site_id}"
            if site_id not in sites:
                check_site_ref(key, site_id)
                continue
            check_classification(f"{key}.classification", entry.classification)
            if not any(site_matches(site_id, pat) for pat in platform.residency.get(entry.classification, [])):
                problems.append((f"{key}.classification",
                                 f"{entry.classification!r} models may not live on {site_id} by this stack's "
                                 f"residency rules; allowed: "
                                 f"{', '.join(platform.residency.get(entry.classification, [])) or 'no site'}"))
            elif entry.classification not in sites[site_id].classifications:
                problems.append((f"{key}.classification",
                                 f"{site_id} does not store {entry.classification!r} data (its classifications: "
                                 f"{', '.join(sites[site_id].classifications)}); add it there first"))
        used = sorted({j.site for j in wl.training} | {s for svc in wl.serving for s in svc.sites})
        for site_id in used:
            if site_id in sites and site_id not in platform.registry.sites:
                problems.append((f"{p}.registry.sites", f"{site_id} trains or serves models but has no registry; "
                                                        f"add {site_id} with its classification"))
        metric_names = [t.metric for t in platform.registry.promotion.metrics]
        if len(set(metric_names)) != len(metric_names):
            problems.append((f"{p}.registry.promotion.metrics", "each metric may appear once"))

    for i, link in enumerate(platform.vpn):
        if not isinstance(sites.get(link.aws_site), AwsSite) or sites[link.aws_site].network is None:
            problems.append((f"{p}.vpn[{i}].awsSite", f"{link.aws_site!r} is not an AWS site with a network"))
        onprem = sites.get(link.onprem_site)
        if not isinstance(onprem, OnPremSite):
            problems.append((f"{p}.vpn[{i}].onpremSite", f"{link.onprem_site!r} is not a declared on-prem site"))
        elif any(ipaddress.ip_network(c).version != 4 for c in onprem.network.model_dump().values()):
            problems.append((f"{p}.vpn[{i}].onpremSite", f"{link.onprem_site!r} has IPv6 networks; the site-to-site "
                                                         f"VPN routes IPv4 only"))

    for site_id, site in sites.items():
        if isinstance(site, AwsSite) and site.image_registry.host is not None and platform.aws_account_id:
            expected = ecr_registry_host(platform.aws_account_id, region_of(site_id))
            if site.image_registry.host != expected:
                problems.append((f"{p}.sites.{site_id}.imageRegistry.host",
                                 f"{site.image_registry.host!r} is not this site's ECR registry; allowed: {expected} "
                                 f"({ECR_HOST_FORMAT} of awsAccountId and the site's region), or omit it"))
    if platform.aws_account_id is None and any(isinstance(s, AwsSite) for s in sites.values()):
        problems.append((f"{p}.awsAccountId", "required when the stack has an AWS site: 12 digits"))

    problems.extend(_cidr_checks(platform))
    if profiles is not None:
        problems.extend(_gpu_checks(platform, profiles))
    return problems


def _cidr_checks(platform: Platform) -> list[tuple[str, str]]:
    p = f"{CONFIG_NAMESPACE}:{PLATFORM_KEY}"
    named: list[tuple[str, ipaddress._BaseNetwork]] = []
    for site_id, site in platform.sites.items():
        if isinstance(site, AwsSite) and site.network is not None:
            named.append((f"{p}.sites.{site_id}.network.vpcCidr", ipaddress.ip_network(site.network.vpc_cidr)))
        elif isinstance(site, OnPremSite):
            for field in ("node_cidr", "pod_cidr", "service_cidr", "storage_cidr", "management_cidr"):
                named.append((f"{p}.sites.{site_id}.network.{to_camel(field)}",
                              ipaddress.ip_network(getattr(site.network, field))))
    problems = []
    for i, (key_a, net_a) in enumerate(named):
        for key_b, net_b in named[i + 1:]:
            if net_a.version == net_b.version and net_a.overlaps(net_b):
                problems.append((key_b, f"{net_b} overlaps {net_a} ({key_a}); every network of a stack must be "
                                        f"disjoint so site-to-site routing stays unambiguous"))
    for site_id, site in platform.sites.items():
        if isinstance(site, OnPremSite):
            node_net = ipaddress.ip_network(site.network.node_cidr)
            names, addrs = set(), set()
            for i, node in enumerate(site.nodes):
                key = f"{p}.sites.{site_id}.nodes[{i}]"
                if ipaddress.ip_address(node.address) not in node_net:
                    problems.append((f"{key}.address", f"{node.address} is outside nodeCidr {node_net}"))
                if node.name in names:
                    problems.append((f"{key}.name", f"duplicate node name {node.name!r}"))
                if node.address in addrs:
                    problems.append((f"{key}.address", f"duplicate node address {node.address}"))
                names.add(node.name)
                addrs.add(node.address)
    return problems


def resolve_gpu_profile(ref: str, profiles: dict[str, Any]) -> Any:
    """A profile by exact name or shorthand; raises ValueError naming the allowed profiles."""
    if ref in profiles:
        return profiles[ref]
    from gpu_profiles import parse_gpu_shorthand  # local import: gpu_profiles loads YAML files

    try:
        return parse_gpu_shorthand(ref).resolve(profiles)
    except Exception:  # noqa: BLE001 — any parse failure is reported as an unknown profile below
        raise ValueError(f"unknown GPU profile {ref!r}; allowed: {', '.join(sorted(profiles))} "
                         f"or shorthand MODEL:MEMORY:COUNT such as H100:80GB:8") from None


def _gpu_checks(platform: Platform, profiles: dict[str, Any]) -> list[tuple[str, str]]:
    p = f"{CONFIG_NAMESPACE}:{PLATFORM_KEY}"
    problems: list[tuple[str, str]] = []
    for site_id, site in platform.sites.items():
        if isinstance(site, AwsSite) and site.eks is not None:
            seen = set()
            for i, group in enumerate(site.eks.gpu_node_groups):
                key = f"{p}.sites.{site_id}.eks.gpuNodeGroups[{i}]"
                if group.name in seen:
                    problems.append((f"{key}.name", f"duplicate node group name {group.name!r}"))
                seen.add(group.name)
                try:
                    profile = resolve_gpu_profile(group.gpu, profiles)
                except ValueError as exc:
                    problems.append((f"{key}.gpu", str(exc)))
                    continue
                types = [t.type for t in profile.aws_instance_types]
                if not types:
                    problems.append((f"{key}.gpu", f"profile {profile.name} has no AWS instance types"))
                elif group.instance_type is not None and group.instance_type not in types:
                    problems.append((f"{key}.instanceType", f"{group.instance_type!r} does not carry a "
                                     f"{profile.name}; allowed: {', '.join(types)}"))
        if isinstance(site, OnPremSite):
            for i, node in enumerate(site.nodes):
                key = f"{p}.sites.{site_id}.nodes[{i}]"
                try:
                    profile = resolve_gpu_profile(node.gpu_profile, profiles)
                except ValueError as exc:
                    problems.append((f"{key}.gpuProfile", str(exc)))
                    continue
                if node.mig_layout:
                    if not profile.mig.supported:
                        problems.append((f"{key}.migLayout", f"{profile.name} does not support MIG"))
                        continue
                    slices = {m.name: m for m in profile.mig.profiles}
                    for slice_name, count in node.mig_layout.items():
                        if slice_name not in slices:
                            problems.append((f"{key}.migLayout.{slice_name}", f"unknown MIG profile for "
                                             f"{profile.name}; allowed: {', '.join(slices)}"))
                        elif not 1 <= count <= slices[slice_name].count_per_gpu:
                            problems.append((f"{key}.migLayout.{slice_name}", f"count {count} not in "
                                             f"1..{slices[slice_name].count_per_gpu}"))
    workload_profiles = [(f"{p}.workloads.training[{i}].gpuProfile", w.gpu_profile)
                         for i, w in enumerate(platform.workloads.training)]
    workload_profiles += [(f"{p}.workloads.serving[{i}].gpuProfile", w.gpu_profile)
                          for i, w in enumerate(platform.workloads.serving) if w.gpu_profile is not None]
    for key, ref in workload_profiles:
        try:
            resolve_gpu_profile(ref, profiles)
        except ValueError as exc:
            problems.append((key, str(exc)))
    problems += _serving_share_checks(platform, profiles)
    for i, job in enumerate(platform.workloads.training):
        if job.mig_slice is None:
            continue
        try:
            profile = resolve_gpu_profile(job.gpu_profile, profiles)
        except ValueError:
            continue  # already reported above
        slices = [m.name for m in profile.mig.profiles]
        if job.mig_slice not in slices:
            allowed = ", ".join(slices) if slices else f"none ({profile.name} has no MIG)"
            problems.append((f"{p}.workloads.training[{i}].migSlice",
                             f"{job.mig_slice!r} is not a MIG slice of {profile.name}; allowed: {allowed}"))
    for i, svc in enumerate(platform.workloads.serving):
        if svc.mig_slice is None or svc.gpu_profile is None:
            continue
        try:
            profile = resolve_gpu_profile(svc.gpu_profile, profiles)
        except ValueError:
            continue  # already reported above
        slices = [m.name for m in profile.mig.profiles]
        if svc.mig_slice not in slices:
            allowed = ", ".join(slices) if slices else f"none ({profile.name} has no MIG)"
            problems.append((f"{p}.workloads.serving[{i}].migSlice",
                             f"{svc.mig_slice!r} is not a MIG slice of {profile.name}; allowed: {allowed}"))
    return problems


def _serving_share_checks(platform: Platform, profiles: dict[str, Any]) -> list[tuple[str, str]]:
    """GPU shares of served models: syntax, a GPU profile where a GPU is used, MIG slices the profile has, and one
    time-slicing factor per (site, GPU profile) because the device plugin's sharing config is per node."""
    p = f"{CONFIG_NAMESPACE}:{PLATFORM_KEY}"
    problems: list[tuple[str, str]] = []
    time_slicing: dict[tuple[str, str], tuple[int, str]] = {}
    for i, svc in enumerate(platform.workloads.serving):
        key = f"{p}.workloads.serving[{i}]"
        if svc.share is not None and svc.mig_slice is not None:
            problems.append((f"{key}.migSlice", "set either share or migSlice, not both; allowed: share: mig:<slice>"))
            continue
        try:
            share = svc.gpu_share
        except ValueError as exc:
            problems.append((f"{key}.share", str(exc)))
            continue
        if svc.max_replicas is not None and svc.max_replicas < svc.replicas:
            problems.append((f"{key}.maxReplicas", f"{svc.max_replicas} is below replicas {svc.replicas}"))
        if share.kind == "cpu":
            if svc.gpu_profile is not None:
                problems.append((f"{key}.gpuProfile", "share cpu uses no GPU; allowed: omit gpuProfile"))
            continue
        if svc.gpu_profile is None:
            problems.append((f"{key}.gpuProfile", f"required key is missing for share {share}"))
            continue
        try:
            profile = resolve_gpu_profile(svc.gpu_profile, profiles)
        except ValueError:
            continue  # reported with the other GPU profile references
        if share.kind == "mig":
            if not profile.mig.supported:
                problems.append((f"{key}.share", f"{profile.name} has no MIG; allowed: time-sliced:<n>, gpu or cpu"))
                continue
            slices = {m.name: m for m in profile.mig.profiles}
            if share.mig_profile is not None and share.mig_profile not in slices:
                problems.append((f"{key}.share", f"{share.mig_profile!r} is not a MIG slice of {profile.name}; "
                                                 f"allowed: {', '.join(slices)}"))
            if share.mig_profile is None:
                if svc.gpu_memory_gib is None:
                    problems.append((f"{key}.gpuMemoryGib", "required with share 'mig' (or name the slice: mig:<profile>)"))
                elif svc.gpu_memory_gib > profile.memory_gib:
                    problems.append((f"{key}.gpuMemoryGib", f"{svc.gpu_memory_gib} exceeds {profile.name}'s "
                                                            f"{profile.memory_gib} GB"))
            elif svc.gpu_memory_gib is not None and svc.gpu_memory_gib > slices[share.mig_profile].memory_gib:
                problems.append((f"{key}.gpuMemoryGib", f"{svc.gpu_memory_gib} GB does not fit {share.mig_profile}"))
        if share.kind == "time-sliced":
            for site in svc.sites:
                seen = time_slicing.setdefault((site, profile.name), (share.time_slices, svc.name))
                if seen[0] != share.time_slices:
                    problems.append((f"{key}.share", f"time-sliced:{share.time_slices} on {site} {profile.name} "
                                     f"conflicts with time-sliced:{seen[0]} of serving {seen[1]!r}; the sharing "
                                     f"config is per node: use one factor per site and GPU profile"))
    return problems


def parse_platform(raw: Any, source: str, profiles: dict[str, Any] | None = None) -> Platform:
    """Validate one `finml:platform` value; raises ConfigError with every problem found."""
    if not isinstance(raw, dict):
        raise ConfigError(source, [(f"{CONFIG_NAMESPACE}:{PLATFORM_KEY}",
                                    f"must be a mapping (got {type(raw).__name__})")])
    try:
        platform = Platform.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(source, _pydantic_problems(exc)) from None
    problems = _cross_checks(platform, profiles)
    if problems:
        raise ConfigError(source, problems)
    return platform


def stack_file(stack: str, stacks_dir: Path) -> Path:
    return stacks_dir / f"Pulumi.{stack}.yaml"


STACK_FILE_KEYS = ("config", "encryptionsalt", "secretsprovider", "encryptedkey", "environment")
MAX_STACK_FILE_BYTES = 1024 * 1024


def _key_index(lines: Any) -> dict[str, int]:
    """Problem key strings (as `_format_loc` writes them) → line, for every value under `config`."""
    index: dict[str, int] = {}
    for path, line in lines.lines.items():
        if len(path) < 2 or path[0] != "config":
            continue
        text = str(path[1])
        for part in path[2:]:
            text += f"[{part}]" if isinstance(part, int) else f".{part}"
        index[text] = line
    return index


def _lines_for(problems: list[tuple[str, str]], index: dict[str, int], default: int | None) -> list[int | None]:
    out: list[int | None] = []
    for key, _ in problems:
        best, best_len = default, -1
        for known, line in index.items():
            if len(known) > best_len and (key == known or (key.startswith(known) and key[len(known)] in ".[")):
                best, best_len = line, len(known)
        out.append(best)
    return out


def referenced_secret_keys(platform_raw: Any) -> set[str]:
    """`finml:<name>` for every value of a key ending in `Secret`/`Secrets` anywhere in finml:platform: the
    convention by which a platform field names a `secure:` stack config key."""
    found: set[str] = set()
    todo = [platform_raw]
    while todo:
        node = todo.pop()
        if isinstance(node, dict):
            for key, value in node.items():
                if isinstance(key, str) and key.endswith(("Secret", "Secrets", "_secret", "_secrets")) \
                        and isinstance(value, str):
                    found.add(f"{CONFIG_NAMESPACE}:{value}")
                else:
                    todo.append(value)
        elif isinstance(node, list):
            todo.extend(node)
    return found


def load_stack_file(path: Path, profiles: dict[str, Any] | None = None) -> StackConfig:
    """Read a Pulumi stack file and validate it: the one validation `finml config check` and `finml preview` share.

    Bounded reading (size, depth, aliases, encoding, duplicate keys), the stack-file shape, unknown keys in the
    `finml:` namespace, the typed platform model, cross-field checks, GPU profiles and secret references. Every
    problem names the file, the line and the key path.
    """
    from finml.safeload import InputError, load_yaml

    source = str(path)
    stack = path.name.removeprefix("Pulumi.").removesuffix(".yaml")
    try:
        doc, lines = load_yaml(path, "a Pulumi stack file (a mapping with a 'config' key)", dict,
                               MAX_STACK_FILE_BYTES)
    except InputError as exc:
        raise ConfigError(source, [("", exc.problem)], [exc.line]) from None
    index = _key_index(lines)
    problems: list[tuple[str, str]] = []
    problem_lines: list[int | None] = []

    def fail() -> ConfigError:
        return ConfigError(source, problems, problem_lines)

    for key in doc:
        if key not in STACK_FILE_KEYS:
            problems.append((str(key), f"unknown top-level key; allowed: {', '.join(STACK_FILE_KEYS)}"))
            problem_lines.append(lines.line_of((key,)))
    if not isinstance(doc.get("config"), dict):
        problems.append(("config", "a stack file needs a top-level 'config' mapping"))
        problem_lines.append(lines.line_of(("config",)))
        raise fail()
    config: dict[str, Any] = doc["config"]
    secret_keys = []
    for key, value in config.items():
        if not isinstance(key, str) or ":" not in key:
            problems.append((str(key), "config keys are namespaced, e.g. finml:platform"))
            problem_lines.append(lines.line_of(("config", key)))
        elif isinstance(value, dict) and set(value) == {"secure"}:
            if not isinstance(value["secure"], str) or not value["secure"].strip():
                problems.append((key, "a `secure:` value must be a non-empty ciphertext string"))
                problem_lines.append(lines.line_of(("config", key)))
            secret_keys.append(key)
    platform_key = f"{CONFIG_NAMESPACE}:{PLATFORM_KEY}"
    known = {platform_key} | referenced_secret_keys(config.get(platform_key))
    for key in config:
        if isinstance(key, str) and key.startswith(f"{CONFIG_NAMESPACE}:") and key not in known:
            import difflib

            close = difflib.get_close_matches(key, sorted(known), n=1)
            hint = f" (did you mean {close[0]}?)" if close else ""
            problems.append((key, f"unknown key in the {CONFIG_NAMESPACE}: namespace{hint}; allowed: {platform_key} "
                                  f"and the `secure:` keys that {platform_key} names ("
                                  f"{', '.join(sorted(known - {platform_key})) or 'none'})"))
            problem_lines.append(lines.line_of(("config", key)))
    if platform_key not in config:
        problems.append((platform_key, "required key is missing"))
        problem_lines.append(lines.line_of(("config",)))
    if problems:
        raise fail()
    if profiles is None:
        profiles = _default_profiles()
    try:
        platform = parse_platform(config[platform_key], source, profiles)
    except ConfigError as exc:
        raise ConfigError(source, exc.problems, _lines_for(exc.problems, index, lines.line_of(("config",)))) \
            from None
    for site_id, site in platform.sites.items():
        if not isinstance(site, OnPremSite):
            continue
        refs = [("kubernetes.kubeconfigSecret", site.kubernetes.kubeconfig_secret, "a kubeconfig", "kubeconfig")]
        if site.node_secrets is not None:
            refs.append(("nodeSecrets", site.node_secrets, "node secrets", "node-secrets.yaml"))
        for where, name, what, example in refs:
            key = f"{CONFIG_NAMESPACE}:{name}"
            if key not in config:
                problems.append((f"{platform_key}.sites.{site_id}.{where}",
                                 f"names {key!r}, which is not in the stack file; set it with "
                                 f"`pulumi config set --secret {key} < {example}`"))
            elif key not in secret_keys:
                problems.append((key, f"holds {what} and must be a `secure:` value, never plaintext"))
    disabled = config.get("pulumi:disable-default-providers")
    if not (isinstance(disabled, list) and "*" in disabled):
        problems.append(("pulumi:disable-default-providers",
                         "must be [\"*\"] so every resource names its site's provider explicitly"))
    if problems:
        raise ConfigError(source, problems, _lines_for(problems, index, lines.line_of(("config",))))
    return StackConfig(stack=stack, source=source, platform=platform, secret_keys=tuple(sorted(secret_keys)),
                       raw_config=config)


def _default_profiles(directory: Path | None = None) -> dict[str, Any]:
    from gpu_profiles import ProfileError, load_profiles

    try:
        return load_profiles(directory)
    except ProfileError as exc:
        raise ConfigError(str(directory or "gpu_profiles/"), [("", str(exc))]) from None


def load_profiles_for(directory: Path | None) -> dict[str, Any]:
    """GPU profiles from a project's directory; a bad profile file is a ConfigError naming it."""
    return _default_profiles(directory)


def list_stacks(stacks_dir: Path) -> list[str]:
    return sorted(p.name.removeprefix("Pulumi.").removesuffix(".yaml") for p in stacks_dir.glob("Pulumi.*.yaml"))


def cross_stack_problems(stacks: list[StackConfig]) -> list[tuple[str, str]]:
    """Things no single stack can see: two stacks must not manage the same on-prem cluster or the same machines.

    Returns (source, message) pairs; empty when the stacks are independent.
    """
    owners: dict[tuple[str, str], str] = {}
    problems: list[tuple[str, str]] = []
    for stack in stacks:
        for site_id, site in stack.onprem_sites.items():
            claims = [("Kubernetes API endpoint", site.kubernetes.api_endpoint)]
            claims += [("node address", n.address) for n in site.nodes]
            claims += [("node name", n.name) for n in site.nodes]
            for kind, value in claims:
                key = (kind, value)
                if key in owners and owners[key] != stack.stack:
                    problems.append((stack.source, f"finml:platform.sites.{site_id}: {kind} {value} is already "
                                                   f"managed by stack {owners[key]!r}; one stack must own each "
                                                   f"on-prem cluster and machine"))
                owners.setdefault(key, stack.stack)
    return problems
