"""One training run as Kubernetes manifests: an Indexed Job of torchrun workers, the headless Service its c10d
rendezvous resolves and a NetworkPolicy opening the run's workers to each other only, ready for `kubectl apply -f -`
(`finml train render`).

A run is submitted, not deployed: the Pulumi program holds only what lasts (namespace, service account, quotas,
PriorityClass, NetworkPolicies, checkpoint volume claims; see workloads/training.py), and each run is rendered from
the same stack file and passes the same policy pack (`finml check-manifests`) before it is applied.

- Pods `<job>-<index>` live in the Service's subdomain, so index 0 is `<job>-0.<service>` for every worker:
  `torchrun --rdzv-backend c10d --rdzv-endpoint <job>-0.<service>:29500 --nnodes W`.
- GPUs from the site's GPU profile: whole GPUs (`nvidia.com/gpu`) or one MIG slice (`nvidia.com/mig-<slice>`).
- Required node affinity on the site label and the GPU profile label, tolerations for exactly the profile's taints.
- Memory-backed /dev/shm (NCCL and data loaders share memory through it), read-only root file system.
- The run's data classification is a label on every object: the policy pack decides where it may run.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from components.naming import CLASSIFICATION_LABEL, MODEL_LABEL, SITE_LABEL, site_label_value
from finml.config import AwsSite, CLASSIFICATIONS, StackConfig, classification_rank, resolve_gpu_profile
from gpu_profiles.schema import PROFILE_LABEL_KEY
from workloads import images
from workloads.cluster_base import TRAINING_NAMESPACE
from workloads.model_registry import CA_BUNDLE_CONFIGMAP as REGISTRY_CA_CONFIGMAP
from workloads.model_registry import CREDENTIALS_SECRET as REGISTRY_CREDENTIALS_SECRET
from workloads.pod import GPU_RESOURCE, PART_OF, mig_resource

COMPONENT = "training"
#: Built from workloads/reference (torch CUDA wheels): key of workloads.images.IMAGES, pulled from the site's registry.
IMAGE = "reference-training"
TRAINER_UID = 10001
RENDEZVOUS_PORT = 29500
RUN_LABEL = "finml.io/run"
PRIORITY_CLASS = "finml-training"
SERVICE_ACCOUNT = "finml-training"
#: Volume claim of a classification's checkpoint storage in the training namespace (Training component).
CHECKPOINT_CLAIM_PREFIX = "finml-checkpoints-"
#: Where the training set (parquet + lineage) and checkpoints are mounted.
DATA_MOUNT = "/data"
CHECKPOINT_MOUNT = "/checkpoints"
#: The model registry component publishes its client environment (MLFLOW_TRACKING_URI, _USERNAME, _PASSWORD,
#: _SERVER_CERT_PATH) as a Secret and its CA as a ConfigMap in the training namespace; runs use both as they are.
CA_MOUNT = "/etc/finml/registry-ca"
CPU_PER_GPU = 4
MEMORY_GIB_PER_GPU = 32
SHM_GIB_PER_GPU = 8
TTL_SECONDS_AFTER_FINISHED = 3 * 24 * 3600
#: Exit code of train.py for bad input (bad training set): retrying cannot help, so the Job fails at once.
BAD_INPUT_EXIT_CODE = 2
#: NCCL settings for pod networking: the pod interface, error handling that aborts hung collectives.
NCCL_ENV = {
    "NCCL_DEBUG": "WARN",
    "NCCL_SOCKET_IFNAME": "eth0",
    "TORCH_NCCL_ASYNC_ERROR_HANDLING": "1",
    "TORCH_NCCL_BLOCKING_WAIT": "0",
}
#: StorageClass the Training component creates on AWS sites: EFS access points on the site's training file system.
EFS_STORAGE_CLASS = "finml-efs"


def shared_storage_class(stack: StackConfig, site: str) -> str:
    """The ReadWriteMany StorageClass of a site's shared file system, where the checkpoint claims live; a site without
    one (AWS with `storage.trainingFilesystem: none`) raises RenderError naming the key to set."""
    site_cfg = stack.platform.sites[site]
    if isinstance(site_cfg, AwsSite):
        if site_cfg.storage.training_filesystem != "efs":
            raise RenderError(f"{stack.source}: {site} has no shared training file system for training sets and "
                              f"checkpoints; set finml:platform.sites.{site}.storage.trainingFilesystem: efs "
                              f"(now {site_cfg.storage.training_filesystem!r}) or train on another site")
        return EFS_STORAGE_CLASS
    return site_cfg.shared_storage_class


_RUN_ID_RE = re.compile(r"^[a-z0-9]([a-z0-9-]{0,18}[a-z0-9])?$")


class RenderError(ValueError):
    """A run that cannot be rendered from this stack; the message names the key and what is allowed."""


@dataclass(frozen=True)
class TrainingRun:
    stack: StackConfig
    site: str
    job: str
    """Name of the training workload in the stack file (`workloads.training[].name`)."""
    run_id: str
    """Short id of this run (DNS label part); names the Job, Service and checkpoint directory."""
    image: str | None = None
    classification: str | None = None
    """The training set's classification (its lineage file); the label is the higher of this and the model's."""
    training_set_path: str = "training-sets/latest"
    """Directory of training_set.parquet + lineage inside the classification's storage."""
    registry_url: str | None = None
    """Overrides the registry Secret's MLFLOW_TRACKING_URI (e.g. another site's registry through a gateway)."""


def _job_config(stack: StackConfig, name: str):
    jobs = {j.name: j for j in stack.platform.workloads.training}
    if name not in jobs:
        raise RenderError(f"{stack.source}: --job {name!r} is not a training workload; allowed: "
                          f"{', '.join(sorted(jobs)) or 'none declared'}")
    return jobs[name]


def _model_classification(stack: StackConfig, model: str) -> str:
    from workloads.lineage import model_classification

    models = {m.name: m for m in stack.platform.models}
    return model_classification(models[model], stack.platform.datasets)


def run_classification(stack: StackConfig, job_name: str, lineage_classification: str | None) -> str:
    """The higher of the model's configured lineage and the training set's own: a label may not understate data."""
    job = _job_config(stack, job_name)
    configured = _model_classification(stack, job.model)
    if lineage_classification is None:
        return configured
    if lineage_classification not in CLASSIFICATIONS:
        raise RenderError(f"classification {lineage_classification!r}; allowed: {', '.join(CLASSIFICATIONS)}")
    return max(configured, lineage_classification, key=classification_rank)


def render_training_run(run: TrainingRun, profiles: dict[str, Any]) -> list[dict[str, Any]]:
    """The Service, the run's peer NetworkPolicy and the Indexed Job, as plain manifests (camelCase, as `kubectl`
    reads them)."""
    stack, site = run.stack, run.site
    if site not in stack.platform.sites:
        raise RenderError(f"{stack.source}: --site {site!r}; allowed: {', '.join(sorted(stack.platform.sites))}")
    if not _RUN_ID_RE.match(run.run_id):
        raise RenderError(f"--run-id {run.run_id!r}; allowed: 1-20 of [a-z0-9-], alphanumeric at both ends")
    job = _job_config(stack, run.job)
    profile = resolve_gpu_profile(job.gpu_profile, profiles)
    classification = run_classification(stack, run.job, run.classification)
    shared_storage_class(stack, site)  # the checkpoint claim must be one that can bind
    name = f"{job.name}-{run.run_id}"
    if len(name) > 52:  # pod hostnames `<name>-<index>` and the Service name stay within DNS label limits
        raise RenderError(f"job {job.name!r} with run id {run.run_id!r} gives {name!r} ({len(name)} characters); "
                          f"allowed: at most 52 — use a shorter --run-id")
    service = name
    image = run.image or images.site_image(stack, site, IMAGE)
    procs = job.procs_per_worker or (1 if job.mig_slice else job.gpus)

    labels = {
        "app.kubernetes.io/name": COMPONENT, "app.kubernetes.io/instance": job.name,
        "app.kubernetes.io/part-of": PART_OF, "app.kubernetes.io/managed-by": "finml-train-render",
        SITE_LABEL: site_label_value(site), CLASSIFICATION_LABEL: classification, MODEL_LABEL: job.model,
        RUN_LABEL: run.run_id,
    }
    labels = dict(sorted(labels.items()))
    selector = {"app.kubernetes.io/name": COMPONENT, RUN_LABEL: run.run_id, "app.kubernetes.io/instance": job.name}

    if job.mig_slice:
        gpu_resource, gpu_count = mig_resource(job.mig_slice), 1
    else:
        gpu_resource, gpu_count = GPU_RESOURCE, job.gpus
    amount = {"cpu": str(CPU_PER_GPU * job.gpus), "memory": f"{MEMORY_GIB_PER_GPU * job.gpus}Gi",
              gpu_resource: str(gpu_count)}

    checkpoint_dir = f"{CHECKPOINT_MOUNT}/{job.name}/{run.run_id}"
    torchrun = [
        "torchrun", f"--nnodes={job.workers}", f"--nproc-per-node={procs}",
        "--rdzv-backend=c10d", f"--rdzv-endpoint={name}-0.{service}:{RENDEZVOUS_PORT}", f"--rdzv-id={name}",
        f"--max-restarts={job.max_restarts}",
        "-m", "workloads.reference.train",
        f"--mode={job.mode}", f"--epochs={job.epochs}",
        f"--training-set={DATA_MOUNT}/{run.training_set_path}", f"--checkpoint-dir={checkpoint_dir}",
        f"--model-name={job.model}", f"--experiment={job.model}", f"--run-name={name}",
    ]
    env = [
        *([{"name": "MLFLOW_TRACKING_URI", "value": run.registry_url}] if run.registry_url else []),
        {"name": "MLFLOW_TRACKING_SERVER_CERT_PATH", "value": f"{CA_MOUNT}/ca.crt"},
        {"name": "MLFLOW_DISABLE_TELEMETRY", "value": "true"},
        {"name": "HOME", "value": "/tmp"},
        *({"name": k, "value": v} for k, v in sorted(NCCL_ENV.items())),
    ]
    if job.mig_slice:  # MIG slices have no peer-to-peer or NVLink path: NCCL goes through sockets/shared memory
        env.append({"name": "NCCL_P2P_DISABLE", "value": "1"})
    tolerations = [
        {"key": t.key, "operator": "Equal", "value": t.value, "effect": t.effect} if t.value
        else {"key": t.key, "operator": "Exists", "effect": t.effect}
        for t in profile.kubernetes.taints
    ]
    pod_spec = {
        "restartPolicy": "Never",
        "subdomain": service,
        "serviceAccountName": SERVICE_ACCOUNT,
        "automountServiceAccountToken": False,
        "enableServiceLinks": False,
        "priorityClassName": PRIORITY_CLASS,
        "affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [{
            "matchExpressions": [
                {"key": SITE_LABEL, "operator": "In", "values": [site_label_value(site)]},
                {"key": PROFILE_LABEL_KEY, "operator": "In", "values": [profile.k8s_label_value]},
            ]}]}}},
        "tolerations": tolerations,
        "securityContext": {"runAsNonRoot": True, "runAsUser": TRAINER_UID, "runAsGroup": TRAINER_UID,
                            "fsGroup": TRAINER_UID, "fsGroupChangePolicy": "OnRootMismatch",
                            "seccompProfile": {"type": "RuntimeDefault"}},
        "containers": [{
            "name": "trainer",
            "image": image,
            "imagePullPolicy": "IfNotPresent",
            "command": torchrun,
            "envFrom": [{"secretRef": {"name": REGISTRY_CREDENTIALS_SECRET}}],
            "env": env,
            "ports": [{"name": "c10d", "containerPort": RENDEZVOUS_PORT, "protocol": "TCP"}],
            "resources": {"requests": dict(amount), "limits": dict(amount)},
            "securityContext": {"runAsNonRoot": True, "runAsUser": TRAINER_UID, "privileged": False,
                                "allowPrivilegeEscalation": False, "readOnlyRootFilesystem": True,
                                "capabilities": {"drop": ["ALL"]}, "seccompProfile": {"type": "RuntimeDefault"}},
            "volumeMounts": [
                {"name": "tmp", "mountPath": "/tmp"},
                {"name": "dshm", "mountPath": "/dev/shm"},
                {"name": "storage", "mountPath": DATA_MOUNT, "subPath": "data", "readOnly": True},
                {"name": "storage", "mountPath": CHECKPOINT_MOUNT, "subPath": "checkpoints"},
                {"name": "registry-ca", "mountPath": CA_MOUNT, "readOnly": True},
            ],
        }],
        "volumes": [
            {"name": "tmp", "emptyDir": {"sizeLimit": "20Gi"}},
            {"name": "dshm", "emptyDir": {"medium": "Memory", "sizeLimit": f"{SHM_GIB_PER_GPU * job.gpus}Gi"}},
            {"name": "storage", "persistentVolumeClaim": {"claimName": f"{CHECKPOINT_CLAIM_PREFIX}{classification}"}},
            {"name": "registry-ca", "configMap": {"name": REGISTRY_CA_CONFIGMAP}},
        ],
    }
    service_manifest = {
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": service, "namespace": TRAINING_NAMESPACE, "labels": labels},
        "spec": {
            "clusterIP": "None",
            # Workers resolve index 0 before any pod is Ready (training pods have no readiness probe).
            "publishNotReadyAddresses": True,
            "selector": selector,
            "ports": [{"name": "c10d", "port": RENDEZVOUS_PORT, "targetPort": RENDEZVOUS_PORT, "protocol": "TCP"}],
        },
    }
    job_manifest = {
        "apiVersion": "batch/v1", "kind": "Job",
        "metadata": {"name": name, "namespace": TRAINING_NAMESPACE, "labels": labels},
        "spec": {
            "completionMode": "Indexed",
            "completions": job.workers,
            "parallelism": job.workers,
            # Process failures are torchrun's to restart (--max-restarts, from the last checkpoint); a lost pod
            # is replaced once per worker before the run is given up.
            "backoffLimit": job.workers,
            "podFailurePolicy": {"rules": [{"action": "FailJob", "onExitCodes": {
                "containerName": "trainer", "operator": "In", "values": [BAD_INPUT_EXIT_CODE]}}]},
            "ttlSecondsAfterFinished": TTL_SECONDS_AFTER_FINISHED,
            "template": {"metadata": {"labels": labels}, "spec": pod_spec},
        },
    }
    peers = [{"podSelector": {"matchLabels": selector}}]
    network_policy = {
        "apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
        "metadata": {"name": f"{name}-peers", "namespace": TRAINING_NAMESPACE, "labels": labels},
        # Workers of this run only (rendezvous, then NCCL/gloo on ports chosen at run time): pods of another run,
        # perhaps on data of another classification, can neither reach nor be reached by them.
        "spec": {"podSelector": {"matchLabels": selector}, "policyTypes": ["Ingress", "Egress"],
                 "ingress": [{"from": peers}], "egress": [{"to": peers}]},
    }
    return [service_manifest, network_policy, job_manifest]
