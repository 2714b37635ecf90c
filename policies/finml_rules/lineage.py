"""ML lineage: a model is as sensitive as the data it was trained on, and is served only where that is allowed;
datasets sit on declared, allowed sites."""

from __future__ import annotations

from typing import Any, Optional

from pulumi_policy import ReportViolation, Severity, StackValidationArgs

from .common import (
    AWS_DATA_TYPES, BACKUP_PLAN, BACKUP_SELECTION, BACKUP_VAULT, CLUSTER_TYPES, DATASET, DEFAULT_PROVIDER_PACKAGES,
    DYNAMODB_TABLE, DYNAMODB_TABLE_REPLICA, EBS_SNAPSHOT, EBS_SNAPSHOT_COPY, EBS_VOLUME, EFS, EFS_REPLICATION, EKS_CLUSTER, ELASTICACHE_RG,
    FSX_LUSTRE, K8S_DATA_TYPES, LOG_GROUP, RDS_CLUSTER_INSTANCE, K8S_PROVIDER, K8S_PV, K8S_WORKLOAD_TYPES, KEY_TYPES, KMS_KEY, KMS_REPLICA_KEY,
    LABEL_CLASSIFICATION, LABEL_MODEL, LABEL_SITE, ML_TYPES, MODEL, RDS_CLUSTER, RDS_INSTANCE, S3_BUCKET_TYPES,
    S3_REPLICATION, S3_SSE_TYPES, UNKNOWN, Derived, Residency, StackIndex, as_list, aws_site, classification_of,
    describe, exempt_namespaces, failing_closed, get, k8s_label, k8s_label_values, max_classification, namespace_name,
    plain, pod_spec, region_site_from_arn, require_residency, residency_schema, resource_policy, site_label_value,
    stack_policy, violation_message,
props_of, )
from .residency import _FIX, SCHEMA
from .sites import check_placement, each_resource

# --- ML lineage ---------------------------------------------------------------------------------------------

def _datasets_by_name(index: StackIndex) -> dict[str, Any]:
    return index.memo(("datasets-by-name",), lambda: _index_datasets(index))


def _index_datasets(index: StackIndex) -> dict[str, Any]:
    return {get(index.props(d), "name"): d for d in index.of_type(DATASET)
            if isinstance(get(index.props(d), "name"), str) and get(index.props(d), "name") is not UNKNOWN}


def model_effective_classification(index: StackIndex, model: Any) -> Derived:
    """max(declared, datasets'); unknown if any training dataset is missing or unclassified."""
    datasets = _datasets_by_name(index)
    trained_on = as_list(get(index.props(model), "trainedOn"))
    if trained_on is UNKNOWN or any(n is UNKNOWN for n in trained_on):
        return Derived(None, f"the training datasets of model '{model.name}' are unknown during preview")
    classes = []
    for name in trained_on:
        if name not in datasets:
            return Derived(None, f"model '{model.name}' is trained on dataset {name!r}, which is not in the stack")
        cls = index.classification(datasets[name])
        if not cls.known:
            return Derived(None, f"dataset {name!r}: {cls.reason}")
        classes.append(cls.value)
    declared = index.classification(model)
    return Derived(max_classification(classes + [declared.value]) or None,
                   None if classes or declared.known else f"model '{model.name}' has no classification")


def model_training_lineage(args: StackValidationArgs, report: ReportViolation) -> None:
    index = StackIndex.of(args)

    def check(model: Any, _residency: Residency) -> None:
        effective = model_effective_classification(index, model)
        declared = index.classification(model)
        if not effective.known:
            report(violation_message(f"{describe(model)}: {effective.reason}; failing closed.", None,
                                     declared.value), model.urn)
        elif declared.known and declared.value != effective.value:
            report(violation_message(f"{describe(model)} is declared {declared.value}, below the "
                                     f"{effective.value} data it was trained on.", None, effective.value),
                   model.urn)

    each_resource(args, report, index.of_type(MODEL), check)


def model_serving_site(args: StackValidationArgs, report: ReportViolation) -> None:
    index = StackIndex.of(args)
    serving = [r for r in index.of_type(*K8S_WORKLOAD_TYPES)
               if k8s_label(r.resource_type, index.props(r), LABEL_MODEL) is not None]
    residency = require_residency(args, report, serving)
    if residency is None:
        return
    models = {get(index.props(m), "name"): m for m in index.of_type(MODEL)
              if isinstance(get(index.props(m), "name"), str) and get(index.props(m), "name") is not UNKNOWN}
    for workload in serving:
        with failing_closed(report, workload.urn, describe(workload)):
            names = k8s_label_values(workload.resource_type, index.props(workload), LABEL_MODEL)
            site = index.k8s_site(workload, residency)
            if names is not UNKNOWN and len(set(names)) > 1:
                report(violation_message(f"{describe(workload)}: its metadata label {LABEL_MODEL}={names[0]!r} and "
                                         f"its pod template label {LABEL_MODEL}={names[1]!r} name different models, "
                                         "so which model its pods serve cannot be decided; failing closed.",
                                         site.value), workload.urn)
                continue
            name = UNKNOWN if names is UNKNOWN else names[0]
            if name is UNKNOWN or name not in models:
                shown = "unknown during preview" if name is UNKNOWN else repr(name)
                report(violation_message(f"{describe(workload)} serves model {shown}, which is not a model in the "
                                         "stack, so its classification cannot be derived; failing closed.",
                                         site.value), workload.urn)
                continue
            cls = model_effective_classification(index, models[name])
            if not cls.known:
                report(violation_message(f"{describe(workload)} serves model {name!r}: {cls.reason}; failing closed.",
                                         site.value), workload.urn)
                continue
            check_placement(report, workload.urn, f"{describe(workload)} serving model {name!r}", site, cls.value,
                            residency)


def dataset_site(args: StackValidationArgs, report: ReportViolation) -> None:
    index = StackIndex.of(args)

    def check(dataset: Any, residency: Residency) -> None:
        cls = index.classification(dataset).value
        site = index.site(dataset, residency)
        if site.known and not residency.declared(site.value):
            report(violation_message(f"{describe(dataset)} is at {site.value}, which the stack does not declare "
                                     "in config `sites`.", site.value, cls), dataset.urn)
            return
        check_placement(report, dataset.urn, describe(dataset), site, cls, residency)

    each_resource(args, report, [d for d in index.of_type(DATASET) if index.classification(d).known], check)


POLICIES: list = [
    stack_policy("residency-model-training-lineage",
                 "Ensure a model's classification is not below the classification of the datasets it was trained on.",
                 model_training_lineage, Severity.HIGH,
                 "Declare the model with the highest classification of its training datasets.", SCHEMA),
    stack_policy("residency-model-serving-site",
                 "Ensure models are served only on sites allowed for their effective classification.",
                 model_serving_site, Severity.CRITICAL,
                 "Serve the model only on a cluster whose site is allowed for its training data's classification.",
                 SCHEMA),
    stack_policy("residency-dataset-site",
                 "Ensure every dataset is declared on a site of the stack that is allowed for its classification.",
                 dataset_site, Severity.CRITICAL, _FIX, SCHEMA),
]
