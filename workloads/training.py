"""TrainingJob: a GPU training Job template for one model, pinned to its site and GPU model.

The Job is created suspended (`spec.suspend: true`), as a template rather than a run:
- a Job starts running the moment it is created, so an unsuspended Job would start a multi-GPU training run on
  every `pulumi up` that creates or replaces it (and Job pod templates are immutable, so any change replaces it);
- a training run needs staged data and a human or pipeline decision (model risk sign-off), not an infrastructure
  deployment; the pipeline starts it with `kubectl patch job <name> -n finml-training -p '{"spec":{"suspend":false}}'`;
- Pulumi would otherwise wait for the Job to complete before finishing the update, so the Job is also annotated
  `pulumi.com/skipAwait: "true"`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pulumi
import pulumi_kubernetes as k8s

from components.naming import child_name
from workloads.cluster_base import TRAINING_NAMESPACE
from workloads.options import child_opts
from workloads.pod import (
    GPU_RESOURCE,
    gpu_tolerations,
    guaranteed_resources,
    restricted_container_security_context,
    restricted_pod_security_context,
    scratch_volume,
    site_node_selector,
    workload_labels,
)

COMPONENT = "training"
DEFAULT_IMAGE = "pytorch/pytorch:2.5.1-cuda12.4-cudnn9-runtime"
TRAINER_UID = 10001
#: Pulumi's Kubernetes provider would otherwise block `pulumi up` until the (suspended) Job completes.
SKIP_AWAIT_ANNOTATION = "pulumi.com/skipAwait"


@dataclass(frozen=True)
class TrainingJobArgs:
    job_name: str
    """Kubernetes name of the Job (the config's training workload name)."""
    site: str
    model: str
    """Name of the model the job produces; labels the pods."""
    classification: str
    """The model's classification (highest classification of its training data)."""
    gpu_profile: Any
    """The GpuProfile of the nodes it runs on: node selector value and taints to tolerate."""
    gpus: int = 1
    namespace: str = TRAINING_NAMESPACE
    image: str = DEFAULT_IMAGE
    command: tuple[str, ...] = ()
    """Empty: the image's entrypoint. The training pipeline sets image and command per run."""
    env: dict[str, str] = field(default_factory=dict)
    cpu_per_gpu: int = 2
    memory_gib_per_gpu: int = 8
    shm_gib_per_gpu: int = 2
    """Size of /dev/shm per GPU; PyTorch data loaders share batches through it. It counts against memory."""
    backoff_limit: int = 1
    suspend: bool = True
    """Created suspended; see the module docstring. False only for a deliberate one-off run."""


class TrainingJob(pulumi.ComponentResource):
    """A batch/v1 Job requesting `gpus` whole GPUs of one GPU profile on one site, suspended by default."""

    job: k8s.batch.v1.Job
    job_name: pulumi.Output[str]

    def __init__(self, name: str, args: TrainingJobArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("finml:workloads:TrainingJob", name, {
            "site": args.site, "model": args.model, "classification": args.classification,
            "gpuProfile": args.gpu_profile.name, "gpus": args.gpus,
        }, opts)
        self._name = name
        self._opts = opts
        self._args = args
        job = self._create_job()

        self.job = job
        self.job_name = job.metadata.name
        self.register_outputs({"jobName": self.job_name})

    def _create_job(self) -> k8s.batch.v1.Job:
        a = self._args
        labels = workload_labels(COMPONENT, a.job_name, a.site, a.classification, a.model)
        container = k8s.core.v1.ContainerArgs(
            name="trainer",
            image=a.image,
            image_pull_policy="IfNotPresent",
            command=list(a.command) or None,
            env=[k8s.core.v1.EnvVarArgs(name=k, value=v) for k, v in sorted(a.env.items())] or None,
            resources=guaranteed_resources(str(a.cpu_per_gpu * a.gpus), f"{a.memory_gib_per_gpu * a.gpus}Gi",
                                           {GPU_RESOURCE: a.gpus}),
            security_context=restricted_container_security_context(TRAINER_UID),
            volume_mounts=[k8s.core.v1.VolumeMountArgs(name="tmp", mount_path="/tmp"),
                           k8s.core.v1.VolumeMountArgs(name="dshm", mount_path="/dev/shm")],
        )
        return k8s.batch.v1.Job(
            child_name(self._name, "job"),
            metadata=k8s.meta.v1.ObjectMetaArgs(
                name=a.job_name, namespace=a.namespace, labels=labels,
                annotations={SKIP_AWAIT_ANNOTATION: "true"},
            ),
            spec=k8s.batch.v1.JobSpecArgs(
                suspend=a.suspend,
                backoff_limit=a.backoff_limit,
                completions=1,
                parallelism=1,
                template=k8s.core.v1.PodTemplateSpecArgs(
                    metadata=k8s.meta.v1.ObjectMetaArgs(labels=labels),
                    spec=k8s.core.v1.PodSpecArgs(
                        restart_policy="Never",
                        node_selector=site_node_selector(a.site, a.gpu_profile.k8s_label_value),
                        tolerations=gpu_tolerations(a.gpu_profile),
                        security_context=restricted_pod_security_context(TRAINER_UID),
                        automount_service_account_token=False,
                        enable_service_links=False,
                        containers=[container],
                        volumes=[scratch_volume("tmp", "10Gi"),
                                 scratch_volume("dshm", f"{a.shm_gib_per_gpu * a.gpus}Gi", memory_backed=True)],
                    ),
                ),
            ),
            opts=child_opts(self, self._opts),
        )
