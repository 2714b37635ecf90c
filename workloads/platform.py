"""Wiring of the ML platform from stack config: lineage once per stack, workloads once per cluster (site).

`__main__.py` calls `register_lineage(stack)` once, then `deploy_platform(stack, site, provider, profiles)` for each
site with a Kubernetes cluster, passing that cluster's provider. Nothing here decides residency: workloads are
placed where the config says, and the policy pack judges the result (a misplaced restricted feature store is still
registered, so the pack can see and reject it).
"""

from __future__ import annotations

from typing import Any, TypedDict

import pulumi
import pulumi_kubernetes as k8s

from components.naming import child_name
from finml.config import GpuShare, StackConfig, resolve_gpu_profile
from workloads.cluster_base import ClusterBase, ClusterBaseArgs
from workloads import cluster_base as cluster_base_module
from workloads import feature_store as feature_store_module
from workloads import serving as serving_module
from workloads import training as training_module
from finml import mig_planner
from workloads.feature_store import FeatureStore, FeatureStoreArgs
from workloads.gpu_operator import GpuOperator, GpuOperatorArgs
from workloads.gpu_operator.component import DEVICE_PLUGIN_CONFIG_LABEL, time_slicing_config_name
from workloads.lineage import Dataset, DatasetArgs, Model, ModelArgs, model_classification
from workloads.serving import InferenceService, InferenceServiceArgs
from workloads.training import TrainingJob, TrainingJobArgs


class PlatformDeployment(TypedDict):
    cluster_base: ClusterBase
    feature_store: FeatureStore | None
    training_jobs: dict[str, TrainingJob]
    inference_services: dict[str, InferenceService]
    gpu_operator: GpuOperator | None


def register_lineage(stack: StackConfig, opts: pulumi.ResourceOptions | None = None) -> dict[str, Model]:
    """One Dataset component per dataset and one Model per model of the stack; returns the models by name.

    Call once per stack: lineage is not a Kubernetes object and does not belong to any one cluster.
    """
    platform = stack.platform
    for ds in platform.datasets:
        Dataset(ds.name, DatasetArgs(name=ds.name, classification=ds.classification, site=ds.site), opts=opts)
    # Lineage is carried by names in the props (Model.trainedOn -> Dataset.name): a dependency on a component
    # without children would be expanded to nothing and so would not show in the resource graph.
    return {
        model.name: Model(model.name, ModelArgs(
            name=model.name, trained_on=tuple(model.trained_on),
            classification=model_classification(model, platform.datasets),
        ), opts=opts)
        for model in platform.models
    }


def deploy_platform(stack: StackConfig, site: str, k8s_provider: k8s.Provider, profiles: dict[str, Any], *,
                    gpu_quota: int | None = None) -> PlatformDeployment:
    """ClusterBase plus the feature store, training jobs and inference services the config places on `site`.

    Every Kubernetes object gets `k8s_provider` (the site's cluster) and waits for the ClusterBase namespaces and
    policies. Workloads carry their model's name and classification (props and labels); `gpu_quota` caps the
    whole GPUs requested per training/serving namespace.
    """
    platform = stack.platform
    if site not in platform.sites:
        raise ValueError(f"{stack.source}: unknown site {site!r}; declared sites: {', '.join(sorted(platform.sites))}")
    model_classes = {m.name: model_classification(m, platform.datasets) for m in platform.models}

    registry = stack.image_registry(site)

    def image(default: str) -> str:
        # Nodes have no internet egress: AWS clusters pull from the site's mirror registry.
        return f"{registry}/{default}" if registry else default

    # Build (and so validate) every workload's arguments before the first resource is registered.
    store = platform.workloads.feature_store
    store_args = (FeatureStoreArgs(site=site, classification=store.classification,
                                   image=image(feature_store_module.DEFAULT_IMAGE))
                  if store is not None and store.site == site else None)
    training_args = [
        TrainingJobArgs(job_name=job.name, site=site, model=job.model, classification=model_classes[job.model],
                        gpu_profile=resolve_gpu_profile(job.gpu_profile, profiles), gpus=job.gpus,
                        image=image(training_module.DEFAULT_IMAGE))
        for job in platform.workloads.training if job.site == site
    ]
    serving_args = [
        InferenceServiceArgs(service_name=svc.name, site=site, model=svc.model,
                             classification=model_classes[svc.model],
                             gpu_profile=(resolve_gpu_profile(svc.gpu_profile, profiles)
                                          if svc.gpu_profile is not None else None),
                             share=_resolved_share(svc, profiles), registry_name=svc.registry_name,
                             alias=svc.alias,
                             residency={k: list(v) for k, v in platform.residency.items()},
                             replicas=svc.replicas, max_replicas=svc.max_replicas,
                             max_batch_size=svc.max_batch_size, max_batch_time_ms=svc.max_batch_time_ms,
                             restricted_features=tuple(svc.hashed_features),
                             client_namespaces=tuple(svc.client_namespaces),
                             image=image(serving_module.DEFAULT_IMAGE))
        for svc in platform.workloads.serving if site in svc.sites
    ]

    # The MIG layout planner decides every GPU's geometry for the served models; a demand that does not fit stops
    # the program before any resource is registered, naming the demand.
    try:
        gpu_plan = mig_planner.plan_stack_site(stack, site, profiles)
    except mig_planner.PlanError as exc:
        raise ValueError(f"{stack.source}: {exc}") from None
    operator_args = _gpu_operator_args(stack, site, gpu_plan, profiles, registry)

    base = ClusterBase(child_name("cluster-base", site),
                       ClusterBaseArgs(site=site, gpu_quota=gpu_quota),
                       opts=pulumi.ResourceOptions(providers=[k8s_provider]))
    gpu_operator = (GpuOperator(child_name("gpu-operator", site), operator_args,
                                opts=pulumi.ResourceOptions(providers=[k8s_provider]))
                    if operator_args is not None else None)

    def workload_opts() -> pulumi.ResourceOptions:
        return pulumi.ResourceOptions(providers=[k8s_provider], depends_on=[base])

    feature_store = (FeatureStore(child_name("feature-store", site), store_args, opts=workload_opts())
                     if store_args is not None else None)
    training_jobs = {a.job_name: TrainingJob(child_name(a.job_name, site), a, opts=workload_opts())
                     for a in training_args}
    inference_services = {a.service_name: InferenceService(child_name(a.service_name, site), a,
                                                           opts=workload_opts())
                          for a in serving_args}

    return PlatformDeployment(cluster_base=base, feature_store=feature_store, training_jobs=training_jobs,
                              inference_services=inference_services, gpu_operator=gpu_operator)


def _resolved_share(svc: Any, profiles: dict[str, Any]) -> GpuShare:
    """A share of 'mig' with a memory need becomes the slice the planner picks for it (the smallest that fits)."""
    share = svc.gpu_share
    if share.kind == "mig" and share.mig_profile is None:
        gpu = resolve_gpu_profile(svc.gpu_profile, profiles)
        return GpuShare("mig", mig_profile=mig_planner.smallest_slice(gpu, svc.gpu_memory_gib or 1))
    return share


def _gpu_operator_args(stack: StackConfig, site: str, gpu_plan: Any, profiles: dict[str, Any],
                       registry: str | None) -> GpuOperatorArgs | None:
    """The operator's configuration for a site with GPU nodes; None for a cluster without any."""
    site_config = stack.platform.sites[site]
    pools = mig_planner.pools_for(stack, site, profiles)
    if not pools:
        return None
    node_labels: dict[str, dict[str, str]] = {}
    if getattr(site_config, "kind", None) == "onprem":
        labels = gpu_plan.node_labels()
        for pool in pools:
            node = dict(labels.get(pool.name, {}))
            if pool.gpu_profile in gpu_plan.time_slicing:
                node[DEVICE_PLUGIN_CONFIG_LABEL] = time_slicing_config_name(
                    profiles[pool.gpu_profile].k8s_label_value, gpu_plan.time_slicing[pool.gpu_profile])
            if node:
                node_labels[pool.name] = node
    return GpuOperatorArgs(site=site, site_kind=site_config.kind, mig_parted_config=gpu_plan.mig_parted_config(),
                           time_slicing=dict(gpu_plan.time_slicing), profiles=profiles, node_labels=node_labels,
                           image_registry=registry)
