"""Training: what lasts of the training platform on one cluster; the runs themselves are submitted, not deployed.

A training run is an Indexed Job of torchrun workers rendered per run by `finml train render` (workloads/
training_job.py) and checked by the same policy pack (`finml check-manifests`) before `kubectl apply`. A Job starts
the moment it is created and its pod template is immutable, so deploying runs from `pulumi up` would start (or
restart) multi-GPU training on unrelated infrastructure changes. What Pulumi deploys is what every run relies on:

- the `finml-training` ServiceAccount the runs use, with no API token mounted; on AWS sites annotated with the IRSA
  role of workloads/training_aws.py (the classification buckets' `training-sets/` and `training/` prefixes and their
  CMKs, nothing else);
- the `finml-training` PriorityClass (below serving, above batch; preempts lower-priority pods only);
- a ResourceQuota on the GPU and MIG resources the site's training workloads may request at once;
- one ReadWriteMany PersistentVolumeClaim `finml-checkpoints-<classification>` per classification the site holds,
  where runs of that classification read their training set and write distributed checkpoints; labelled with the
  classification and site so the pack's residency rules judge it like every data-bearing claim. On AWS sites it
  lives on the site's encrypted EFS file system (Storage component) through the `finml-efs` StorageClass created
  here (the EKS add-on aws-efs-csi-driver of the GpuCluster, which the class waits for; one access point per
  claim, TLS in transit); on-prem on the site's `sharedStorageClass`;
- no NetworkPolicy of its own: each run brings one opening its workers to each other only (rendered with the Job),
  and the feature store and the model registry open their ports to this namespace and add its egress to them
  (FeatureStore, ModelRegistry components), so every flow is declared once, by its owner.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import pulumi
import pulumi_kubernetes as k8s

from components.naming import SITE_LABEL, child_name, site_label_value
from workloads.cluster_base import TRAINING_NAMESPACE
from workloads.options import child_opts
from workloads.pod import GPU_RESOURCE, PART_OF, mig_resource
from components.naming import CLASSIFICATION_LABEL
from workloads.training_job import (CHECKPOINT_CLAIM_PREFIX, COMPONENT, EFS_STORAGE_CLASS, PRIORITY_CLASS,
                                    SERVICE_ACCOUNT)

#: Between serving (which must not be preempted by training) and the default 0 of batch work.
PRIORITY_VALUE = 100_000
QUOTA_NAME = "training-accelerators"
IRSA_ANNOTATION = "eks.amazonaws.com/role-arn"


@dataclass(frozen=True)
class TrainingArgs:
    site: str
    gpu_quota: dict[str, int] = field(default_factory=dict)
    """Extended resource → most units requested at once in the namespace, e.g. {"nvidia.com/gpu": 16,
    "nvidia.com/mig-3g.40gb": 4}; from the site's training workloads (gpus × workers each)."""
    namespace: str = TRAINING_NAMESPACE
    irsa_role_arn: pulumi.Input[str] | None = None
    """IAM role the runs assume through IRSA (AWS sites), e.g. to read the classification's bucket."""
    classifications: tuple[str, ...] = ()
    """Classifications the site holds: one checkpoint claim each."""
    storage_class: str | None = None
    """ReadWriteMany StorageClass of the claims (on AWS: EFS_STORAGE_CLASS, created here from efs_file_system_id)."""
    storage_gib: int = 200
    efs_file_system_id: pulumi.Input[str] | None = None
    """The site's EFS training file system (AWS): the `finml-efs` StorageClass provisions access points on it."""
    storage_depends_on: tuple[pulumi.Resource, ...] = ()
    """What must exist before the StorageClass and claims: the cluster's EFS CSI driver add-on on AWS sites."""

    def __post_init__(self) -> None:
        if self.classifications and self.storage_class is None:
            raise ValueError(f"training on {self.site}: checkpoint claims need a ReadWriteMany storage class")


def gpu_quota_for(jobs) -> dict[str, int]:
    """Quota of each GPU/MIG resource: enough for every training workload of the site to run at once."""
    quota: dict[str, int] = {}
    for job in jobs:
        resource, units = (mig_resource(job.mig_slice), 1) if job.mig_slice else (GPU_RESOURCE, job.gpus)
        quota[resource] = quota.get(resource, 0) + units * job.workers
    return dict(sorted(quota.items()))


class Training(pulumi.ComponentResource):
    """ServiceAccount, PriorityClass and accelerator quota for training runs on one cluster."""

    service_account: k8s.core.v1.ServiceAccount
    priority_class: k8s.scheduling.v1.PriorityClass
    quota: k8s.core.v1.ResourceQuota | None
    storage_class: k8s.storage.v1.StorageClass | None
    checkpoint_claims: dict[str, k8s.core.v1.PersistentVolumeClaim]

    def __init__(self, name: str, args: TrainingArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("finml:workloads:Training", name, {"site": args.site, "gpuQuota": dict(args.gpu_quota)},
                         opts)
        self._name = name
        self._args = args
        self._opts = opts
        self._labels = {"app.kubernetes.io/name": COMPONENT, "app.kubernetes.io/part-of": PART_OF,
                        "app.kubernetes.io/managed-by": "pulumi", SITE_LABEL: site_label_value(args.site)}

        self.service_account = self._create_service_account()
        self.priority_class = self._create_priority_class()
        self.quota = self._create_quota()
        self.storage_class = self._create_efs_storage_class()
        self.checkpoint_claims = {c: self._create_checkpoint_claim(c) for c in args.classifications}
        self.register_outputs({"serviceAccount": self.service_account.metadata.name,
                               "priorityClass": self.priority_class.metadata.name,
                               "checkpointClaims": {c: pvc.metadata.name for c, pvc in self.checkpoint_claims.items()}})

    def _meta(self, name: str, namespaced: bool = True, **extra) -> k8s.meta.v1.ObjectMetaArgs:
        return k8s.meta.v1.ObjectMetaArgs(name=name, namespace=self._args.namespace if namespaced else None,
                                          labels=dict(sorted(self._labels.items())), **extra)

    def _create_service_account(self) -> k8s.core.v1.ServiceAccount:
        annotations = {IRSA_ANNOTATION: self._args.irsa_role_arn} if self._args.irsa_role_arn is not None else None
        return k8s.core.v1.ServiceAccount(
            child_name(self._name, "service-account"),
            metadata=self._meta(SERVICE_ACCOUNT, annotations=annotations),
            automount_service_account_token=False,
            opts=child_opts(self, self._opts),
        )

    def _create_priority_class(self) -> k8s.scheduling.v1.PriorityClass:
        return k8s.scheduling.v1.PriorityClass(
            child_name(self._name, "priority-class"),
            metadata=self._meta(PRIORITY_CLASS, namespaced=False),
            value=PRIORITY_VALUE,
            global_default=False,
            preemption_policy="PreemptLowerPriority",
            description="finml training runs: below model serving, above default batch work",
            opts=child_opts(self, self._opts),
        )

    def _create_quota(self) -> k8s.core.v1.ResourceQuota | None:
        if not self._args.gpu_quota:
            return None
        return k8s.core.v1.ResourceQuota(
            child_name(self._name, QUOTA_NAME),
            metadata=self._meta(QUOTA_NAME),
            spec=k8s.core.v1.ResourceQuotaSpecArgs(
                hard={f"requests.{resource}": str(units) for resource, units in self._args.gpu_quota.items()}),
            opts=child_opts(self, self._opts),
        )

    def _create_efs_storage_class(self) -> k8s.storage.v1.StorageClass | None:
        """Dynamic EFS access points (one per claim, its own directory and POSIX identity) on the site's encrypted
        training file system, mounted over TLS. Needs the EFS CSI driver (EKS add-on aws-efs-csi-driver)."""
        a = self._args
        if a.efs_file_system_id is None:
            return None
        if a.storage_class != EFS_STORAGE_CLASS:
            raise ValueError(f"training on {a.site}: an EFS file system is served by {EFS_STORAGE_CLASS!r}, "
                             f"not {a.storage_class!r}")
        return k8s.storage.v1.StorageClass(
            child_name(self._name, "efs-storage-class"),
            metadata=self._meta(EFS_STORAGE_CLASS, namespaced=False),
            provisioner="efs.csi.aws.com",
            parameters=pulumi.Output.from_input(a.efs_file_system_id).apply(lambda fs_id: {
                "provisioningMode": "efs-ap", "fileSystemId": fs_id, "directoryPerms": "700",
                "basePath": "/finml-training", "subPathPattern": "${.PVC.namespace}/${.PVC.name}",
                "ensureUniqueDirectory": "false"}),
            mount_options=["tls"],
            reclaim_policy="Retain",
            volume_binding_mode="Immediate",
            opts=pulumi.ResourceOptions.merge(child_opts(self, self._opts),
                                              pulumi.ResourceOptions(depends_on=list(a.storage_depends_on))),
        )

    def _create_checkpoint_claim(self, classification: str) -> k8s.core.v1.PersistentVolumeClaim:
        a = self._args
        labels = {**self._labels, CLASSIFICATION_LABEL: classification}
        depends = [self.storage_class] if self.storage_class is not None else list(a.storage_depends_on)
        return k8s.core.v1.PersistentVolumeClaim(
            child_name(self._name, "checkpoints", classification),
            metadata=k8s.meta.v1.ObjectMetaArgs(name=f"{CHECKPOINT_CLAIM_PREFIX}{classification}",
                                                namespace=a.namespace, labels=dict(sorted(labels.items()))),
            spec=k8s.core.v1.PersistentVolumeClaimSpecArgs(
                access_modes=["ReadWriteMany"], storage_class_name=a.storage_class,
                resources=k8s.core.v1.VolumeResourceRequirementsArgs(requests={"storage": f"{a.storage_gib}Gi"})),
            opts=pulumi.ResourceOptions.merge(child_opts(self, self._opts), pulumi.ResourceOptions(depends_on=depends)),
        )
