"""finml — one Pulumi program for every environment: load the stack's config, wire components per site, export.

Run by the Pulumi engine (`pulumi preview|up --stack <env>`) or offline under the mock runtime (`finml preview`).
"""

import pulumi

from components.aws_site import account_prerequisites, build_aws_site
from components.naming import child_name, slug
from components.onprem_cluster import OnPremCluster, OnPremClusterArgs
from components.providers import AwsProviders, load_stack_from_pulumi
from finml import mig_planner
from finml.onprem import inventory_for_stack
from gpu_profiles import load_profiles
from workloads.platform import deploy_platform, register_lineage

stack = load_stack_from_pulumi()
platform = stack.platform
profiles = load_profiles()
aws_providers = AwsProviders(stack)
clusters = {}
aws_outputs = {}

# One MIG layout plan per site with a cluster, before any resource: a demand that cannot fit stops the program here,
# and the same plan gives the EKS node groups their nvidia.com/mig.config labels and the GPU Operator its ConfigMap.
cluster_sites = [*(s for s, cfg in stack.aws_sites.items() if cfg.eks is not None and cfg.network is not None),
                 *stack.onprem_sites]
gpu_plans = {site_id: mig_planner.plan_gpus(stack, site_id, profiles) for site_id in cluster_sites}

prerequisites = account_prerequisites(stack, aws_providers)
for site_id, site in stack.aws_sites.items():
    outputs = build_aws_site(stack, site_id, site, aws_providers, profiles, platform.aws_account_id, prerequisites,
                             gpu_plan=gpu_plans.get(site_id))
    aws_outputs[site_id] = outputs
    if outputs.cluster is not None:
        clusters[site_id] = outputs.cluster
    pulumi.export(f"{slug(site_id)}-vpc-id", outputs.network.vpc_id if outputs.network else None)

inventory = inventory_for_stack(stack) if stack.onprem_sites else ""
for site_id, site in stack.onprem_sites.items():
    clusters[site_id] = OnPremCluster(
        child_name("onprem", site_id.split(":", 1)[1]),
        OnPremClusterArgs(
            site=site_id,
            inventory_yaml=inventory,
            playbook="ansible/playbooks/site.yml",
            ansible_dir="ansible",
            kubeconfig=pulumi.Config("finml").require_secret(site.kubernetes.kubeconfig_secret),
            run_ansible=site.run_ansible,
            secret_vars=pulumi.Config("finml").require_secret(site.node_secrets) if site.node_secrets else None,
        ),
    )

lineage = register_lineage(stack)
for site_id, cluster in sorted(clusters.items()):
    # The site's model registry comes first inside: the feature store's Feast registry is a database on its server.
    deployment = deploy_platform(stack, site_id, cluster.k8s_provider, profiles, aws_site=aws_outputs.get(site_id),
                                 aws_provider=aws_providers(site_id) if site_id in aws_outputs else None,
                                 gpu_plan=gpu_plans[site_id])
    registry = deployment["model_registry"]
    if registry is not None:
        pulumi.export(f"{slug(site_id)}-registry-uri", registry.tracking_uri)
        pulumi.export(f"{slug(site_id)}-registry-ca-bundle", registry.ca_bundle)

pulumi.export("sites", sorted(platform.sites))
pulumi.export("environment", platform.environment)
