"""Drift: what the account holds under the stack's name versus the stack's latest plan (``finml-plan/1``).

- A live resource tagged ``finml:stack=<stack>`` that the plan does not contain was made outside Pulumi (or left
  behind): ``drift-unmanaged-resource``.
- A planned resource whose live value differs on a checked property (region, classification tag, and per type the
  settings the rules care about) was changed outside Pulumi: ``drift-changed-property``.

Matching uses what the plan knows before ``up``: the physical name where the program fixes it (bucket, log group,
cluster, database and cache identifiers), else the ``Name`` tag, which components set to the logical name. Values
unknown at preview are compared only where "set" is the planned fact (a KMS key id of a log group).
"""

from __future__ import annotations

from typing import Any, Callable, Optional

from finml.audit import catalogue as cat
from finml.audit.collect import (EBS_VOLUME, EKS_CLUSTER, ELASTICACHE_RG, KMS_KEY, LOG_GROUP, RDS_INSTANCE, S3_BUCKET,
                                 SECURITY_GROUP, SUBNET, TAG_CLASSIFICATION, TAG_STACK, VPC, VPC_ENDPOINT, Inventory,
                                 LiveResource)
from finml.audit.rules import Finding
from finml.plan import UNKNOWN_MARKER, Plan, PlanResource

PHYSICAL_NAME_PROP = {S3_BUCKET: "bucket", LOG_GROUP: "name", EKS_CLUSTER: "name", RDS_INSTANCE: "identifier",
                      ELASTICACHE_RG: "replicationGroupId"}
DRIFT_TYPES = (S3_BUCKET, KMS_KEY, EBS_VOLUME, SECURITY_GROUP, SUBNET, VPC, VPC_ENDPOINT, EKS_CLUSTER, RDS_INSTANCE,
               ELASTICACHE_RG, LOG_GROUP)

# type -> [(label, planned value getter, live value getter)]
_Check = tuple[str, Callable[[dict], Any], Callable[[LiveResource], Any]]


def _get(*path: str) -> Callable[[dict], Any]:
    def getter(props: dict) -> Any:
        value: Any = props
        for key in path:
            value = value.get(key) if isinstance(value, dict) else None
        return value
    return getter


CHECKS: dict[str, list[_Check]] = {
    KMS_KEY: [("enableKeyRotation", _get("enableKeyRotation"), lambda r: r.props.get("RotationEnabled")),
              ("multiRegion", _get("multiRegion"), lambda r: r.props.get("MultiRegion"))],
    SUBNET: [("mapPublicIpOnLaunch", _get("mapPublicIpOnLaunch"), lambda r: r.props.get("MapPublicIpOnLaunch")),
             ("cidrBlock", _get("cidrBlock"), lambda r: r.props.get("CidrBlock"))],
    VPC: [("cidrBlock", _get("cidrBlock"), lambda r: r.props.get("CidrBlock"))],
    EKS_CLUSTER: [("vpcConfig.endpointPublicAccess", _get("vpcConfig", "endpointPublicAccess"),
                   lambda r: r.props.get("endpointPublicAccess")),
                  ("version", _get("version"), lambda r: r.props.get("version"))],
    LOG_GROUP: [("retentionInDays", _get("retentionInDays"), lambda r: r.props.get("retentionInDays")),
                ("kmsKeyId", _get("kmsKeyId"), lambda r: r.props.get("kmsKeyId"))],
    RDS_INSTANCE: [("storageEncrypted", _get("storageEncrypted"), lambda r: r.props.get("StorageEncrypted")),
                   ("publiclyAccessible", _get("publiclyAccessible"), lambda r: r.props.get("PubliclyAccessible"))],
    ELASTICACHE_RG: [("atRestEncryptionEnabled", _get("atRestEncryptionEnabled"),
                      lambda r: r.props.get("AtRestEncryptionEnabled")),
                     ("transitEncryptionEnabled", _get("transitEncryptionEnabled"),
                      lambda r: r.props.get("TransitEncryptionEnabled"))],
    EBS_VOLUME: [("encrypted", _get("encrypted"), lambda r: r.props.get("Encrypted"))],
}


def _planned_region(plan_index: dict[str, PlanResource], res: PlanResource) -> Optional[str]:
    region = res.props.get("region")
    if isinstance(region, str):
        return region
    provider = plan_index.get(res.provider or "")
    value = provider.props.get("region") if provider else None
    return value if isinstance(value, str) else None


def drift(inv: Inventory, plan: Plan, stack: str) -> list[Finding]:
    index = plan.by_urn()
    by_physical: dict[tuple[str, str], PlanResource] = {}
    by_name_tag: dict[tuple[str, str], PlanResource] = {}
    for res in plan.resources:
        if res.type not in DRIFT_TYPES:
            continue
        prop = PHYSICAL_NAME_PROP.get(res.type)
        if prop and isinstance(res.props.get(prop), str):
            by_physical[(res.type, res.props[prop])] = res
        tags = res.props.get("tags")
        name = tags.get("Name") if isinstance(tags, dict) else None
        by_name_tag[(res.type, name if isinstance(name, str) else res.name)] = res

    findings: list[Finding] = []

    def report(rule: str, live: LiveResource, message: str) -> None:
        findings.append(Finding(rule, live.arn, live.type, live.name, live.site, live.classification or "unknown",
                                message))

    for live in inv.resources:
        if live.type not in DRIFT_TYPES or live.tags.get(TAG_STACK) != stack:
            continue
        planned = by_physical.get((live.type, live.name)) or by_name_tag.get((live.type, live.tags.get("Name", "")))
        label = f"{live.type.rsplit(':', 1)[-1]} {live.name}"
        if planned is None:
            report(cat.DRIFT_UNMANAGED, live,
                   f"{label} carries {TAG_STACK}={stack} but is not in the stack's plan "
                   f"(Name tag {live.tags.get('Name', '(none)')!r}): created or left outside Pulumi.")
            continue
        changes: list[str] = []
        region = _planned_region(index, planned)
        if region and region != live.region:
            changes.append(f"region: planned {region}, live {live.region}")
        planned_tags = planned.props.get("tags") if isinstance(planned.props.get("tags"), dict) else {}
        planned_cls = planned_tags.get(TAG_CLASSIFICATION)
        if isinstance(planned_cls, str) and planned_cls != live.tags.get(TAG_CLASSIFICATION):
            changes.append(f"tag {TAG_CLASSIFICATION}: planned {planned_cls}, "
                           f"live {live.tags.get(TAG_CLASSIFICATION, '(none)')}")
        for prop, planned_value, live_value in CHECKS.get(live.type, []):
            want, have = planned_value(planned.props), live_value(live)
            if want is None:
                continue
            if want == UNKNOWN_MARKER:  # known to be set, value decided at `up`
                if not have:
                    changes.append(f"{prop}: planned set, live unset")
            elif isinstance(want, (bool, int, float, str)) and want != have:
                changes.append(f"{prop}: planned {want!r}, live {have!r}")
        if changes:
            report(cat.DRIFT_PROPERTY, live, f"{label} ({planned.urn}) differs from the plan: {'; '.join(changes)}.")
    return findings
