"""Logs are data: EKS control-plane logs and VPC flow logs hold identities and addresses.

Their destinations are data stores like any other: they must be resources of this stack (so the residency and CMK
rules see them), at the site of what they log, and classified at least as high as the log they receive. A
control-plane log group the stack does not declare is created by EKS itself: without a customer-managed key,
without retention, and invisible to the pack.
"""

from __future__ import annotations

from typing import Any, Optional

from pulumi_policy import ReportViolation, Severity, StackValidationArgs

from .common import (
    EKS_CLUSTER, FLOW_LOG, LOG_GROUP, S3_BUCKET_TYPES, UNKNOWN, StackIndex, as_list, describe, failing_closed, get,
    rank, region_site_from_arn, require_residency, residency_schema, stack_policy, violation_message,
)


def _control_plane_log_group(index: StackIndex, cluster: Any) -> tuple[Optional[Any], Optional[str]]:
    name = get(index.props(cluster), "name")
    groups = index.of_type(LOG_GROUP)
    if isinstance(name, str) and name is not UNKNOWN:
        wanted = f"/aws/eks/{name}/cluster"
        found = [g for g in groups if get(index.props(g), "name") == wanted]
        if found:
            return found[0], None
        return None, (f"enables control-plane logs but the stack declares no log group {wanted}: EKS would create "
                      "it itself, without a customer-managed key or retention, outside the policy gate")
    depended = [d for d in (cluster.dependencies or []) if d.resource_type == LOG_GROUP]
    if len(depended) == 1:
        return depended[0], None
    return None, ("enables control-plane logs but its name is unknown during preview and it depends on no single "
                  "log group, so where its logs go cannot be derived (failing closed)")


def _flow_log_destinations(index: StackIndex, flow: Any) -> tuple[list[Any], Optional[str]]:
    props = index.props(flow)
    kind = get(props, "logDestinationType", default="cloud-watch-logs")
    destination = get(props, "logDestination")
    if kind is UNKNOWN:
        return [], "its logDestinationType is unknown during preview (failing closed)"
    if kind not in ("s3", "cloud-watch-logs"):
        return [], f"its destination type {kind!r} is not a store this pack can place (failing closed)"
    types = S3_BUCKET_TYPES if kind == "s3" else (LOG_GROUP,)
    found = index.refs(flow, "logDestination", types)
    if found:
        return found, None
    if isinstance(destination, str) and destination is not UNKNOWN:
        if kind == "s3" and ":s3:::" in destination:
            name = destination.split(":::", 1)[1].split("/", 1)[0]
            found = [b for b in index.of_type(*S3_BUCKET_TYPES) if get(index.props(b), "bucket") == name]
        elif kind == "cloud-watch-logs":
            found = [g for g in index.of_type(LOG_GROUP) if get(index.props(g), "arn") == destination]
        if found:
            return found, None
        where = region_site_from_arn(destination)
        return [], (f"its destination {destination} is not a store of this stack"
                    + (f" (at {where})" if where else "") + ", so its key and residency cannot be checked "
                    "(failing closed)")
    return [], "its destination is unknown during preview and resolves to no store of this stack (failing closed)"


def log_destinations(args: StackValidationArgs, report: ReportViolation) -> None:
    index = StackIndex.of(args)
    clusters = [c for c in index.of_type(EKS_CLUSTER)
                if as_list(get(index.props(c), "enabledClusterLogTypes")) not in ([],)]
    flows = index.of_type(FLOW_LOG)
    residency = require_residency(args, report, clusters + flows)
    if residency is None:
        return
    for cluster in clusters:
        with failing_closed(report, cluster.urn, describe(cluster)):
            site = index.aws_site(cluster)
            group, problem = _control_plane_log_group(index, cluster)
            if problem:
                report(violation_message(f"{describe(cluster)} {problem}.", site.value), cluster.urn)
                continue
            group_site = index.aws_site(group)
            if not group_site.known or group_site.value != site.value:
                report(violation_message(f"{describe(cluster)} sends its control-plane logs to {describe(group)} at "
                                         f"{group_site.value or '?'}, not at the cluster's site.", site.value,
                                         index.classification(group).value), cluster.urn)
    for flow in flows:
        with failing_closed(report, flow.urn, describe(flow)):
            site, cls = index.aws_site(flow), index.classification(flow)
            if not cls.known:
                report(violation_message(f"{describe(flow)} records addresses but {cls.reason}; classify it "
                                         "(tag finml:classification) so its destination can be checked.",
                                         site.value), flow.urn)
                continue
            destinations, problem = _flow_log_destinations(index, flow)
            if problem:
                report(violation_message(f"{describe(flow)}: {problem}.", site.value, cls.value), flow.urn)
                continue
            for store in destinations:
                store_site, store_cls = index.aws_site(store), index.classification(store)
                if not store_site.known or store_site.value != site.value:
                    report(violation_message(f"{describe(flow)} writes to {describe(store)} at "
                                             f"{store_site.value or '?'}, not at the site of the network it logs.",
                                             site.value, cls.value), flow.urn)
                elif not residency.allowed(store_site.value, cls.value):
                    report(violation_message(f"{describe(flow)} writes {cls.value} flow logs to {describe(store)} at "
                                             f"{store_site.value}, which is not allowed for {cls.value} data.",
                                             store_site.value, cls.value), flow.urn)
                if not store_cls.known or rank(store_cls.value) < rank(cls.value):
                    report(violation_message(f"{describe(flow)} writes {cls.value} flow logs to {describe(store)}, "
                                             f"classified {store_cls.value or 'not at all'}; the store must be "
                                             "classified at least as high as the logs it holds.", site.value,
                                             cls.value), flow.urn)


POLICIES: list = [
    stack_policy("residency-log-destinations",
                 "Ensure EKS control-plane logs and VPC flow logs go to stores of this stack at the site they log, "
                 "classified at least as high as the logs.",
                 log_destinations, Severity.HIGH,
                 "Declare the /aws/eks/<cluster>/cluster log group (with the site's key) before the cluster, and "
                 "point flow logs at a classified bucket or log group of the same site.", residency_schema()),
]
