"""Wiring of the ML platform from stack config: lineage once per stack, workloads once per cluster (site).

`__main__.py` calls `register_lineage(stack)` once, then `deploy_platform(stack, site, provider, profiles)` for each
site with a Kubernetes cluster, passing that cluster's provider. Per site it makes the cluster base, the site's CA
(shared by the model registry and the feature store), the model registry, then the feature store, whose Feast
registry is a database on the model registry's database server. Nothing here decides residency: workloads are
placed where the config says, and the policy pack judges the result (a misplaced restricted feature store is still
registered, so the pack can see and reject it).
"""

from __future__ import annotations

import dataclasses
from typing import Any, TypedDict

import pulumi
import pulumi_kubernetes as k8s

from components.naming import child_name
from finml.config import GpuShare, StackConfig, resolve_gpu_profile
from workloads.cluster_base import ClusterBase, ClusterBaseArgs
from workloads import cluster_base as cluster_base_module
from workloads import feature_store as feature_store_module
from workloads import images
from workloads import serving as serving_module
from workloads import training_job as training_job_module
from finml import mig_planner
from workloads.feature_store import ExternalOnlineStore, FeatureStore, FeatureStoreArgs, registry_database_client
from workloads.feature_store_aws import FeatureStoreAws, FeatureStoreAwsArgs
from workloads.gpu_operator import GpuOperator, GpuOperatorArgs
from workloads.gpu_operator.component import DEVICE_PLUGIN_CONFIG_LABEL, time_slicing_config_name
from workloads.lineage import Dataset, DatasetArgs, Model, ModelArgs, model_classification
from workloads.serving import InferenceService, InferenceServiceArgs
from workloads.site_ca import SiteCA
from workloads.training import Training, TrainingArgs, gpu_quota_for
from workloads.training_aws import TrainingAws, TrainingAwsArgs


class PlatformDeployment(TypedDict):
    cluster_base: ClusterBase
    site_ca: SiteCA | None
    """The site's CA, shared by its model registry and feature store (None on a site without a registry)."""
    model_registry: Any
    """workloads.model_registry.ModelRegistry, or None where `finml:platform.registry.sites` omits the site."""
    feature_store: FeatureStore | None
    training: Training | None
    inference_services: dict[str, InferenceService]
    gpu_operator: GpuOperator | None


def feature_store_aws_args(stack: StackConfig, site: str, classification: str, aws_site: Any) -> FeatureStoreAwsArgs:
    """The AWS half of a site's feature store from that site's keys, bucket, network and cluster. A classification
    the site holds no key or bucket for takes the site's highest (the pack judges the placement)."""
    from components.encryption import pick_classification
    from workloads.feature_store import MATERIALIZER, SERVER

    keys, storage, network, cluster = aws_site.keys, aws_site.storage, aws_site.network, aws_site.cluster
    key_class = pick_classification(list(keys.keys), classification)
    bucket_class = pick_classification(list(storage.bucket_names), classification)
    return FeatureStoreAwsArgs(
        site=site, stack=stack.stack, classification=classification, kms_key_arn=keys.key_arns[key_class],
        bucket_name=storage.bucket_names[bucket_class], vpc_id=network.vpc_id,
        data_subnet_ids=network.data_subnet_ids, node_security_group_id=network.node_security_group_id,
        oidc_provider_arn=cluster.oidc_provider.arn, oidc_issuer_url=cluster.oidc_provider.url,
        namespace=cluster_base_module.DATA_NAMESPACE, server_service_account=SERVER,
        materializer_service_account=MATERIALIZER, production=stack.platform.environment.endswith("prod"),
        extra_tags=dict(stack.platform.tags))


def training_aws_wiring(stack: StackConfig, site: str, aws_site: Any, aws_provider: Any) -> dict[str, Any]:
    """The training service account's IRSA role on an EKS site (the site's classification buckets and keys, see
    workloads/training_aws.py) and the EFS CSI add-on the checkpoint StorageClass waits for: TrainingArgs fields."""
    keys, storage, cluster = aws_site.keys, aws_site.storage, aws_site.cluster
    classifications = [c for c in stack.platform.sites[site].classifications if c in storage.bucket_names]
    role = TrainingAws(child_name("training", site, "aws"), TrainingAwsArgs(
        site=site, stack=stack.stack, oidc_provider_arn=cluster.oidc_provider.arn,
        oidc_issuer_url=cluster.oidc_provider.url,
        buckets={c: storage.bucket_names[c] for c in classifications},
        key_arns={c: keys.key_arns[c] for c in classifications}, extra_tags=dict(stack.platform.tags)),
        opts=pulumi.ResourceOptions(provider=aws_provider))
    addon = getattr(cluster, "efs_csi_addon", None)
    return {"irsa_role_arn": role.role_arn, "storage_depends_on": (addon,) if addon is not None else ()}


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
                    gpu_quota: int | None = None, aws_site: Any = None,
                    aws_provider: Any = None, gpu_plan: Any = None) -> PlatformDeployment:
    """ClusterBase plus the feature store, training platform and inference services the config places on `site`.

    Every Kubernetes object gets `k8s_provider` (the site's cluster) and waits for the ClusterBase namespaces and
    policies. Workloads carry their model's name and classification (props and labels); `gpu_quota` caps the
    whole GPUs requested per training/serving namespace. `aws_site` (components.aws_site.AwsSiteOutputs) and
    `aws_provider`: the site's AWS infrastructure, so the feature store uses ElastiCache and S3 there and the model
    registry RDS (without them every store is in-cluster, as on-prem: the mode the workload tests use).
    `gpu_plan` (finml.mig_planner.SitePlan): the site's plan from `mig_planner.plan_gpus`, the same object the site's
    EKS node groups took their `nvidia.com/mig.config` labels from (`__main__.py` plans each site once); planned
    here only when a caller deploys the platform alone.
    """
    platform = stack.platform
    if site not in platform.sites:
        raise ValueError(f"{stack.source}: unknown site {site!r}; declared sites: {', '.join(sorted(platform.sites))}")
    model_classes = {m.name: model_classification(m, platform.datasets) for m in platform.models}

    registry = stack.image_registry(site)

    def image(name: str) -> str:
        # Nodes have no internet egress: every cluster pulls from its own site's registry (workloads/images.py).
        return images.image_ref(registry, name)

    # Build (and so validate) every workload's arguments before the first resource is registered.
    store = platform.workloads.feature_store
    store_args = None
    store_aws = None
    if store is not None and store.site == site:
        if platform.registry is None or site not in platform.registry.sites:
            # finml.config refuses this first; the guard holds for stacks built without it.
            raise ValueError(f"{stack.source}: finml:platform.workloads.featureStore.site: {site} has no model "
                             f"registry, whose database server holds the Feast registry; add {site} to "
                             f"finml:platform.registry.sites")
        store_args = FeatureStoreArgs(site=site, classification=store.classification,
                                      image=image(feature_store_module.IMAGE),
                                      online_image=image(feature_store_module.ONLINE_IMAGE_NAME))
        if aws_site is not None and aws_site.cluster is not None and aws_site.network is not None:
            store_aws = feature_store_aws_args(stack, site, store.classification, aws_site)
    # Training runs are rendered per run (`finml train render`); the cluster keeps what they all rely on.
    site_jobs = [job for job in platform.workloads.training if job.site == site]
    for job in site_jobs:
        resolve_gpu_profile(job.gpu_profile, profiles)
    training_args = None
    if site_jobs:
        try:
            storage_class = training_job_module.shared_storage_class(stack, site)
        except training_job_module.RenderError as exc:
            raise ValueError(str(exc)) from None
        efs_id = (aws_site.storage.file_system_id
                  if aws_site is not None and getattr(aws_site, "storage", None) is not None else None)
        training_args = TrainingArgs(site=site, gpu_quota=gpu_quota_for(site_jobs),
                                     classifications=tuple(platform.sites[site].classifications),
                                     storage_class=storage_class,
                                     storage_gib=max(job.storage_gib for job in site_jobs),
                                     efs_file_system_id=efs_id)
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
                             image=image(serving_module.IMAGE))
        for svc in platform.workloads.serving if site in svc.sites
    ]

    # The MIG layout planner decides every GPU's geometry for the served models; a demand that does not fit stops
    # the program before any resource is registered, naming the demand.
    if gpu_plan is None:
        gpu_plan = mig_planner.plan_gpus(stack, site, profiles)
    operator_args = _gpu_operator_args(stack, site, gpu_plan, profiles, registry)

    base = ClusterBase(child_name("cluster-base", site),
                       ClusterBaseArgs(site=site, gpu_quota=gpu_quota),
                       opts=pulumi.ResourceOptions(providers=[k8s_provider]))
    gpu_operator = (GpuOperator(child_name("gpu-operator", site), operator_args,
                                opts=pulumi.ResourceOptions(providers=[k8s_provider]))
                    if operator_args is not None else None)

    def workload_opts() -> pulumi.ResourceOptions:
        return pulumi.ResourceOptions(providers=[k8s_provider], depends_on=[base])

    has_registry = platform.registry is not None and site in platform.registry.sites
    site_ca = SiteCA(child_name("site-ca", site), site) if has_registry else None
    model_registry = deploy_model_registry(
        stack, site, k8s_provider, base, aws_site=aws_site, aws_provider=aws_provider, site_ca=site_ca,
        database_clients=(registry_database_client(),) if store_args is not None else ())
    feature_store = None
    if store_args is not None:
        store_args = dataclasses.replace(store_args, site_ca=site_ca,
                                         registry_database=model_registry.databases["feast"])
        if store_aws is not None:
            infra = FeatureStoreAws(child_name("feature-store", site, "aws"), store_aws,
                                    opts=pulumi.ResourceOptions(provider=aws_provider))
            store_args = dataclasses.replace(
                store_args, online_store=ExternalOnlineStore(host=infra.online_host, auth_token=infra.auth_token),
                offline_uri=infra.offline_uri,
                server_role_arn=infra.server_role_arn, materializer_role_arn=infra.materializer_role_arn,
                egress_cidrs=(stack.aws_sites[site].network.vpc_cidr,))
        feature_store = FeatureStore(child_name("feature-store", site), store_args, opts=workload_opts())
    if training_args is not None and aws_site is not None and aws_site.cluster is not None:
        training_args = dataclasses.replace(training_args, **training_aws_wiring(stack, site, aws_site, aws_provider))
    training = (Training(child_name("training", site), training_args, opts=workload_opts())
                if training_args is not None else None)
    inference_services = {a.service_name: InferenceService(child_name(a.service_name, site), a,
                                                           opts=workload_opts())
                          for a in serving_args}

    return PlatformDeployment(cluster_base=base, site_ca=site_ca, model_registry=model_registry,
                              feature_store=feature_store, training=training,
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
                           image_registry=f"{registry.host}/{registry.prefix}")


def registry_backend_for(stack: StackConfig, site: str, aws_site: Any, aws_provider: Any) -> Any:
    """The AWS side of a site's model registry from the site's components (None for on-prem sites)."""
    from components.network import plan_subnets
    from workloads.model_registry import AwsRegistryBackend

    if aws_site is None:
        return None
    classification = stack.platform.registry.sites[site].classification
    network, cluster = aws_site.network, aws_site.cluster
    site_config = stack.platform.sites[site]
    return AwsRegistryBackend(
        provider=aws_provider, account_id=stack.platform.aws_account_id,
        kms_key_arn=aws_site.keys.key_arns[classification],
        artifact_bucket=aws_site.storage.data_buckets[classification].bucket,
        data_subnet_ids=network.data_subnet_ids,
        data_subnet_cidrs=tuple(plan_subnets(site_config.network.vpc_cidr, site_config.network.az_count)["data"]),
        node_security_group_id=network.node_security_group_id, vpc_id=network.vpc_id,
        oidc_provider_arn=cluster.oidc_provider_arn, oidc_issuer_url=cluster.oidc_provider.url,
        extra_tags=dict(stack.platform.tags))


def deploy_runner_cidrs(stack: StackConfig, site: str) -> tuple[str, ...]:
    """Networks the deploy runners (and the CI promotion gate) reach the site's cluster from."""
    from finml.config import AwsSite

    site_config = stack.platform.sites[site]
    if isinstance(site_config, AwsSite):
        vpn = [stack.platform.sites[link.onprem_site].network.management_cidr
               for link in stack.platform.vpn if link.aws_site == site]
        return tuple(dict.fromkeys([*(site_config.eks.api_access_cidrs if site_config.eks else []), *vpn]))
    return (site_config.network.management_cidr,)


def deploy_model_registry(stack: StackConfig, site: str, k8s_provider: k8s.Provider, cluster_base: ClusterBase, *,
                          aws_site: Any = None, aws_provider: Any = None, site_ca: SiteCA | None = None,
                          database_clients: tuple = ()) -> Any:
    """The site's MLflow registry when `finml:platform.registry.sites` names the site; None otherwise.

    `aws_site` (components.aws_site.AwsSiteOutputs) and `aws_provider`: on AWS sites the registry's database,
    artifact prefix, IRSA role and audit bucket live in the site's account and region; without them (a caller
    deploying the platform alone) it runs in-cluster, as on-prem. `site_ca`: the site's CA; `database_clients`
    (workloads.model_registry.DatabaseClient): other workloads' databases on the registry's database server.
    """
    from finml.config import AwsSite
    from workloads import model_registry as registry_module
    from workloads.model_registry import ModelRegistry, ModelRegistryArgs

    registry = stack.platform.registry
    if registry is None or site not in registry.sites:
        return None
    if isinstance(stack.platform.sites[site], AwsSite) and aws_site is not None and aws_site.cluster is None:
        raise ValueError(f"{stack.source}: the model registry on {site} needs the site's AWS components "
                         f"(network, keys, storage, EKS cluster)")
    image_registry = stack.image_registry(site)

    def image(name: str) -> str:
        return images.image_ref(image_registry, name)

    args = ModelRegistryArgs(
        site=site, stack=stack.stack, classification=registry.sites[site].classification,
        image=image(registry_module.IMAGE), db_image=image(registry_module.DB_IMAGE),
        deploy_runner_cidrs=deploy_runner_cidrs(stack, site),
        aws=registry_backend_for(stack, site, aws_site, aws_provider), site_ca=site_ca,
        database_clients=tuple(database_clients))
    return ModelRegistry(child_name("model-registry", site), args,
                         opts=pulumi.ResourceOptions(providers=[k8s_provider], depends_on=[cluster_base]))
