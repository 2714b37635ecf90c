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
from finml.config import StackConfig, resolve_gpu_profile
from workloads.cluster_base import ClusterBase, ClusterBaseArgs
from workloads import cluster_base as cluster_base_module
from workloads import feature_store as feature_store_module
from workloads import serving as serving_module
from workloads.feature_store import FeatureStore, FeatureStoreArgs
from workloads.lineage import Dataset, DatasetArgs, Model, ModelArgs, model_classification
from workloads.serving import InferenceService, InferenceServiceArgs
from workloads.training import Training, TrainingArgs, gpu_quota_for


class PlatformDeployment(TypedDict):
    cluster_base: ClusterBase
    feature_store: FeatureStore | None
    training: Training | None
    inference_services: dict[str, InferenceService]


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
    """ClusterBase plus the feature store, training platform and inference services the config places on `site`.

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
    # Training runs are rendered per run (`finml train render`); the cluster keeps what they all rely on.
    site_jobs = [job for job in platform.workloads.training if job.site == site]
    for job in site_jobs:
        resolve_gpu_profile(job.gpu_profile, profiles)
    training_args = TrainingArgs(site=site, gpu_quota=gpu_quota_for(site_jobs)) if site_jobs else None
    serving_args = [
        InferenceServiceArgs(service_name=svc.name, site=site, model=svc.model,
                             classification=model_classes[svc.model],
                             gpu_profile=resolve_gpu_profile(svc.gpu_profile, profiles), mig_slice=svc.mig_slice,
                             image=image(serving_module.DEFAULT_IMAGE))
        for svc in platform.workloads.serving if site in svc.sites
    ]

    site_config = platform.sites[site]
    uses_mig = any(node.mig_layout for node in getattr(site_config, "nodes", []))
    base = ClusterBase(child_name("cluster-base", site),
                       ClusterBaseArgs(site=site, gpu_quota=gpu_quota,
                                       device_plugin_image=image(cluster_base_module.DEVICE_PLUGIN_IMAGE),
                                       mig_strategy="mixed" if uses_mig else "none"),
                       opts=pulumi.ResourceOptions(providers=[k8s_provider]))

    def workload_opts() -> pulumi.ResourceOptions:
        return pulumi.ResourceOptions(providers=[k8s_provider], depends_on=[base])

    feature_store = (FeatureStore(child_name("feature-store", site), store_args, opts=workload_opts())
                     if store_args is not None else None)
    training = (Training(child_name("training", site), training_args, opts=workload_opts())
                if training_args is not None else None)
    inference_services = {a.service_name: InferenceService(child_name(a.service_name, site), a,
                                                           opts=workload_opts())
                          for a in serving_args}

    return PlatformDeployment(cluster_base=base, feature_store=feature_store, training=training,
                              inference_services=inference_services)
