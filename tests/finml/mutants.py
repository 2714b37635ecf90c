"""Mutation operators over plans: remove encryption, move data to an undeclared region or to a declared site its
classification does not allow, open to the world, weaken a container, unpin an image, lose a log destination or a
site key.

Each mutant changes (or deletes) one resource of a compliant plan and names the rule(s) that claim its subject. The
policy gate must report a mandatory violation *of a claiming rule* on that resource or one it is tied to by lineage
(its dependencies, or resources that depend on it).
"""

from __future__ import annotations

import copy
import fnmatch
from dataclasses import dataclass
from typing import Any, Callable, Iterator

from finml.plan import Plan, PlanResource

DISALLOWED_REGION = "us-east-1"
WORLD = "0.0.0.0/0"
# Node agents (CNI, kube-proxy, the NVIDIA device plugin) legitimately use host networking and host paths; the pack
# exempts their namespace by configuration (exemptNamespaces), so host-namespace mutants there are not applicable.
EXEMPT_NAMESPACES = {"kube-system"}


@dataclass
class Mutant:
    kind: str  # encryption | region | allowed-site | world | container | image | logs | keys
    description: str
    urn: str
    plan: Plan
    related: set[str]
    rules: frozenset[str] = frozenset()  # the rules that claim this mutant's subject


def _tags(res: PlanResource) -> dict[str, Any]:
    tags = res.props.get("tags")
    return tags if isinstance(tags, dict) else {}


def _labels(res: PlanResource) -> dict[str, Any]:
    meta = res.props.get("metadata")
    labels = meta.get("labels") if isinstance(meta, dict) else None
    return labels if isinstance(labels, dict) else {}


def _pod_spec(props: dict[str, Any]) -> dict[str, Any] | None:
    spec = props.get("spec")
    if not isinstance(spec, dict):
        return None
    if "jobTemplate" in spec:
        spec = spec["jobTemplate"].get("spec", {})
    template = spec.get("template")
    if isinstance(template, dict) and isinstance(template.get("spec"), dict):
        return template["spec"]
    return spec if "containers" in spec else None


def _related(plan: Plan, res: PlanResource) -> set[str]:
    out = {res.urn, *res.dependencies}
    for urns in res.property_dependencies.values():
        out.update(urns)
    for other in plan.resources:
        if res.urn in other.dependencies or any(res.urn in v for v in other.property_dependencies.values()):
            out.add(other.urn)
    return out


def _edit(plan: Plan, urn: str, fn: Callable[[dict[str, Any]], None]) -> Plan:
    new = copy.deepcopy(plan)
    fn(next(r for r in new.resources if r.urn == urn).props)
    return new


def _delete(plan: Plan, urn: str) -> Plan:
    new = copy.deepcopy(plan)
    new.resources = [r for r in new.resources if r.urn != urn]
    for r in new.resources:
        r.dependencies = [d for d in r.dependencies if d != urn]
        r.property_dependencies = {k: [u for u in v if u != urn] for k, v in r.property_dependencies.items()}
    return new


# ----------------------------------------------------------------------------------------------- operators


def encryption_mutants(plan: Plan) -> Iterator[Mutant]:
    def remove_sse(props):
        for rule in props.get("rules", []):
            rule["applyServerSideEncryptionByDefault"] = {"sseAlgorithm": "AES256"}
            rule.pop("bucketKeyEnabled", None)

    def lt_plain(props):
        for bdm in props.get("blockDeviceMappings", []):
            bdm.setdefault("ebs", {})["encrypted"] = "false"
            bdm["ebs"].pop("kmsKeyId", None)

    edits: dict[str, tuple[str, Callable, frozenset]] = {
        "aws:kms/key:Key": ("key rotation off", lambda p: p.__setitem__("enableKeyRotation", False),
                            frozenset({"encryption-kms-rotation"})),
        "aws:s3/bucketServerSideEncryptionConfiguration:BucketServerSideEncryptionConfiguration":
            ("SSE-S3 instead of SSE-KMS", remove_sse, frozenset({"encryption-s3-sse-kms-cmk"})),
        "aws:ec2/launchTemplate:LaunchTemplate": ("root volume unencrypted", lt_plain,
                                                  frozenset({"encryption-block-devices-encrypted"})),
        "aws:efs/fileSystem:FileSystem": ("file system unencrypted",
                                          lambda p: (p.__setitem__("encrypted", False), p.pop("kmsKeyId", None)),
                                          frozenset({"encryption-file-systems-at-rest"})),
        "aws:eks/cluster:Cluster": ("no secrets encryption", lambda p: p.pop("encryptionConfig", None),
                                    frozenset({"encryption-eks-secrets"})),
        "aws:ebs/volume:Volume": ("volume unencrypted", lambda p: p.__setitem__("encrypted", False),
                                  frozenset({"encryption-ebs-encrypted"})),
        "aws:ebs/encryptionByDefault:EncryptionByDefault": ("EBS default encryption off",
                                                            lambda p: p.__setitem__("enabled", False),
                                                            frozenset({"encryption-ebs-encrypted"})),
    }
    for res in plan.resources:
        if res.type in edits:
            what, fn, rules = edits[res.type]
            yield Mutant("encryption", f"{what}: {res.name}", res.urn, _edit(plan, res.urn, fn), _related(plan, res),
                         rules)
        if res.type == "aws:s3/bucketServerSideEncryptionConfiguration:BucketServerSideEncryptionConfiguration":
            yield Mutant("encryption", f"SSE configuration deleted: {res.name}", res.urn, _delete(plan, res.urn),
                         _related(plan, res), frozenset({"encryption-s3-sse-kms-cmk"}))


REGION_RULES = frozenset({"residency-aws-data-site", "residency-aws-site-declared"})
AWS_DATA_PREFIXES = ("aws:s3/bucket:", "aws:s3/bucketV2:", "aws:ebs/volume:", "aws:ebs/snapshotCopy:",
                     "aws:efs/fileSystem:", "aws:fsx/lustreFileSystem:", "aws:rds/instance:", "aws:rds/cluster:",
                     "aws:rds/clusterInstance:", "aws:elasticache/replicationGroup:", "aws:dynamodb/table:",
                     "aws:cloudwatch/logGroup:")


def region_mutants(plan: Plan) -> Iterator[Mutant]:
    for res in plan.resources:
        if res.type.startswith("aws:") and "finml:classification" in _tags(res):
            yield Mutant("region", f"moved to {DISALLOWED_REGION}: {res.name}", res.urn,
                         _edit(plan, res.urn, lambda p: p.__setitem__("region", DISALLOWED_REGION)),
                         _related(plan, res), REGION_RULES)
        if res.type.startswith("kubernetes:") and "finml.io/classification" in _labels(res):
            spec = _pod_spec(res.props)
            if spec is not None:
                def move(props):
                    _pod_spec(props)["nodeSelector"] = {"finml.io/site": f"aws-{DISALLOWED_REGION}"}
                    _pod_spec(props).pop("affinity", None)
                yield Mutant("region", f"pinned to aws:{DISALLOWED_REGION}: {res.name}", res.urn,
                             _edit(plan, res.urn, move), _related(plan, res),
                             frozenset({"residency-k8s-site-pinning"}))


def _disallowed_declared(residency: dict[str, list[str]], sites: list[str], cls: str) -> list[str]:
    return [s for s in sorted(sites) if not any(fnmatch.fnmatchcase(s, p) for p in residency.get(cls, []))]


def allowed_site_mutants(plan: Plan, residency: dict[str, list[str]], sites: list[str]) -> Iterator[Mutant]:
    """Data moved to a site the stack declares, but that its classification does not allow (e.g. restricted data to
    an AWS region allowed for confidential data): the residency rule for the subject must catch it, not the
    undeclared-site check."""
    for res in plan.resources:
        cls = _tags(res).get("finml:classification")
        if res.type.startswith(AWS_DATA_PREFIXES) and isinstance(cls, str):
            targets = [s for s in _disallowed_declared(residency, sites, cls) if s.startswith("aws:")]
            if targets:
                region = targets[0].split(":", 1)[1]
                yield Mutant("allowed-site", f"{cls} data moved to declared {targets[0]}: {res.name}", res.urn,
                             _edit(plan, res.urn, lambda p, r=region: p.__setitem__("region", r)),
                             _related(plan, res), frozenset({"residency-aws-data-site"}))
        if res.type == "finml:ml:Dataset" and isinstance(res.props.get("classification"), str):
            targets = _disallowed_declared(residency, sites, res.props["classification"])
            if targets:
                def move_dataset(props, site=targets[0]):
                    props["site"] = site
                mutant = _edit(plan, res.urn, move_dataset)
                for r in mutant.resources:  # components register their props as outputs: keep both in step
                    if r.urn == res.urn and isinstance(r.outputs, dict):
                        r.outputs["site"] = targets[0]
                yield Mutant("allowed-site", f"{res.props['classification']} dataset moved to declared "
                                             f"{targets[0]}: {res.name}", res.urn, mutant, _related(plan, res),
                             frozenset({"residency-dataset-site"}))
        label_cls = _labels(res).get("finml.io/classification")
        if res.type.startswith("kubernetes:") and isinstance(label_cls, str) and _pod_spec(res.props) is not None:
            targets = _disallowed_declared(residency, sites, label_cls)
            if targets:
                def pin(props, site=targets[0]):
                    _pod_spec(props)["nodeSelector"] = {"finml.io/site": site.replace(":", "-")}
                    _pod_spec(props).pop("affinity", None)
                yield Mutant("allowed-site", f"{label_cls} workload pinned to declared {targets[0]}: {res.name}",
                             res.urn, _edit(plan, res.urn, pin), _related(plan, res),
                             frozenset({"residency-k8s-site-pinning"}))


def world_mutants(plan: Plan) -> Iterator[Mutant]:
    def open_sg(props):
        props.setdefault("ingress", []).append(
            {"cidrBlocks": [WORLD], "fromPort": 22, "toPort": 22, "protocol": "tcp", "description": "mutant"})

    def public_endpoint(props):
        props.setdefault("vpcConfig", {})["endpointPublicAccess"] = True

    def imds_v1(props):
        props.setdefault("metadataOptions", {})["httpTokens"] = "optional"

    def hop_limit_two(props):
        props.setdefault("metadataOptions", {})["httpPutResponseHopLimit"] = 2

    def ssh_without_sources(props):
        props["remoteAccess"] = {"ec2SshKey": "ops"}

    edits: dict[str, list[tuple[str, Callable, str]]] = {
        "aws:ec2/securityGroup:SecurityGroup": [("SSH from the world", open_sg, "network-sg-no-public-ingress")],
        "aws:vpc/securityGroupIngressRule:SecurityGroupIngressRule": [
            ("rule from the world", lambda p: p.__setitem__("cidrIpv4", WORLD), "network-sg-no-public-ingress")],
        "aws:ec2/subnet:Subnet": [("public IPs on launch", lambda p: p.__setitem__("mapPublicIpOnLaunch", True),
                                   "network-subnet-no-public-ip")],
        "aws:eks/cluster:Cluster": [("public API endpoint", public_endpoint, "network-eks-endpoint-private")],
        "aws:s3/bucketPublicAccessBlock:BucketPublicAccessBlock": [
            ("public policies allowed", lambda p: p.__setitem__("blockPublicPolicy", False),
             "network-s3-public-access-block")],
        "aws:ec2/launchTemplate:LaunchTemplate": [("IMDSv1 allowed", imds_v1, "network-imdsv2-required"),
                                                  ("IMDS hop limit 2", hop_limit_two, "network-imds-hop-limit")],
        "aws:eks/nodeGroup:NodeGroup": [("SSH without source security groups", ssh_without_sources,
                                         "network-eks-node-remote-access")],
        "kubernetes:core/v1:Namespace": [("Pod Security privileged", lambda p: p["metadata"]["labels"].__setitem__(
            "pod-security.kubernetes.io/enforce", "privileged"), "k8s-namespace-pod-security-restricted")],
    }
    for res in plan.resources:
        for what, fn, rule in edits.get(res.type, []):
            yield Mutant("world", f"{what}: {res.name}", res.urn, _edit(plan, res.urn, fn), _related(plan, res),
                         frozenset({rule}))
        spec = _pod_spec(res.props) if res.type.startswith("kubernetes:") else None
        namespace = (res.props.get("metadata") or {}).get("namespace")
        if spec is not None and namespace not in EXEMPT_NAMESPACES:
            yield Mutant("world", f"host network: {res.name}", res.urn,
                         _edit(plan, res.urn, lambda p: _pod_spec(p).__setitem__("hostNetwork", True)),
                         _related(plan, res), frozenset({"k8s-no-host-namespaces"}))
        if res.type == "kubernetes:networking.k8s.io/v1:NetworkPolicy":
            spec = res.props.get("spec", {})
            if spec.get("podSelector") == {} and "ingress" not in spec and "egress" not in spec:
                yield Mutant("world", f"default-deny NetworkPolicy deleted: {res.name}", res.urn,
                             _delete(plan, res.urn), _related(plan, res), frozenset({"k8s-namespace-default-deny"}))


def _first_container(props: dict[str, Any]) -> dict[str, Any]:
    return _pod_spec(props)["containers"][0]


def _context(props: dict[str, Any]) -> dict[str, Any]:
    return _first_container(props).setdefault("securityContext", {})


def container_mutants(plan: Plan) -> Iterator[Mutant]:
    """One weakening per pod template and container-security rule (exempt node-agent namespaces only for the rules
    that still apply to them)."""
    def escalate(p):
        _context(p)["allowPrivilegeEscalation"] = True

    def add_net_raw(p):
        _context(p)["capabilities"] = {"add": ["NET_RAW"]}

    def root(p):
        _context(p)["runAsNonRoot"] = False
        _pod_spec(p).setdefault("securityContext", {})["runAsNonRoot"] = False

    def unconfined(p):
        _context(p)["seccompProfile"] = {"type": "Unconfined"}

    def host_port(p):
        _first_container(p).setdefault("ports", []).append({"containerPort": 9000, "hostPort": 9000})

    def no_cpu_limit(p):
        _first_container(p).get("resources", {}).get("limits", {}).pop("cpu", None)

    def token(p):
        _pod_spec(p)["automountServiceAccountToken"] = True

    def host_pid(p):
        _pod_spec(p)["hostPID"] = True

    everywhere = [("allowPrivilegeEscalation true", escalate, "k8s-no-privilege-escalation"),
                  ("NET_RAW added, nothing dropped", add_net_raw, "k8s-capabilities-drop-all"),
                  ("seccomp Unconfined", unconfined, "k8s-seccomp-profile"),
                  ("no CPU limit", no_cpu_limit, "k8s-resource-limits"),
                  ("service-account token mounted", token, "k8s-service-account-token")]
    not_exempt = [("runs as root", root, "k8s-run-as-non-root"),
                  ("host port", host_port, "k8s-no-host-ports"),
                  ("host PID namespace", host_pid, "k8s-no-host-namespaces")]
    for res in plan.resources:
        spec = _pod_spec(res.props) if res.type.startswith("kubernetes:") else None
        if spec is None or not spec.get("containers"):
            continue
        namespace = (res.props.get("metadata") or {}).get("namespace")
        for what, fn, rule in everywhere + ([] if namespace in EXEMPT_NAMESPACES else not_exempt):
            yield Mutant("container", f"{what}: {res.name}", res.urn, _edit(plan, res.urn, fn), _related(plan, res),
                         frozenset({rule}))
        if res.type in ("kubernetes:apps/v1:Deployment", "kubernetes:apps/v1:StatefulSet",
                        "kubernetes:apps/v1:DaemonSet"):
            old = copy.deepcopy(plan)
            target = next(r for r in old.resources if r.urn == res.urn)
            target.type = res.type.replace("apps/v1:", "apps/v1beta2:")
            yield Mutant("container", f"declared as {target.type}: {res.name}", res.urn, old, _related(plan, res),
                         frozenset({"k8s-deprecated-api-kinds"}))


IMAGE_RULE = frozenset({"k8s-image-pinned"})
#: A registry no site of any stack declares (inside the bank's example domain, never a real public registry).
FOREIGN_REGISTRY = "images.vendor.example"


def _images(props: dict[str, Any]) -> list[dict[str, Any]]:
    spec = _pod_spec(props) or {}
    return [c for key in ("initContainers", "containers") for c in spec.get(key) or [] if isinstance(c, dict)]


def image_mutants(plan: Plan) -> Iterator[Mutant]:
    """Unpin one image per pod template: the moving :latest tag, no tag, no registry (a public default), a foreign
    registry with a tag, the image of another site's registry; and make an ECR repository's tags mutable, which
    unpins every workload pulling from it."""
    def retag(tag):
        def edit(p):
            c = _images(p)[0]
            c["image"] = c["image"].split("@", 1)[0].rsplit(":", 1)[0] + tag
        return edit

    def unregistered(p):
        c = _images(p)[0]
        c["image"] = c["image"].split("/", 1)[1] if "/" in c["image"] else c["image"]

    def foreign(p):
        c = _images(p)[0]
        c["image"] = f"{FOREIGN_REGISTRY}/" + c["image"].split("/", 1)[1]

    hosts = {}
    for res in plan.resources:
        for c in _images(res.props) if res.type.startswith("kubernetes:") else []:
            if isinstance(c.get("image"), str) and "/" in c["image"]:
                hosts.setdefault(res.provider, c["image"].split("/", 1)[0])
    for res in plan.resources:
        if not res.type.startswith("kubernetes:") or res.type.endswith("Patch") or not _images(res.props):
            continue
        image = _images(res.props)[0].get("image")
        if not isinstance(image, str) or "@" in image:
            continue
        edits = [(":latest", retag(":latest")), ("no tag", retag("")), ("no registry", unregistered),
                 (f"registry {FOREIGN_REGISTRY}", foreign)]
        other = next((h for p, h in sorted(hosts.items(), key=str) if p != res.provider
                      and h != image.split("/", 1)[0]), None)
        if other is not None:
            def elsewhere(p, host=other):
                c = _images(p)[0]
                c["image"] = f"{host}/" + c["image"].split("/", 1)[1]
            edits.append((f"another site's registry {other}", elsewhere))
        for what, fn in edits:
            yield Mutant("image", f"image {what}: {res.name}", res.urn, _edit(plan, res.urn, fn),
                         _related(plan, res), IMAGE_RULE)
    for repo in plan.resources:
        if repo.type != "aws:ecr/repository:Repository" or not isinstance(repo.props.get("name"), str):
            continue
        users = {r.urn for r in plan.resources if r.type.startswith("kubernetes:")
                 and any(".dkr.ecr." in str(c.get("image", "")) and f"/{repo.props['name']}:" in str(c.get("image"))
                         for c in _images(r.props))}
        if users:
            yield Mutant("image", f"ECR tags mutable: {repo.name}", repo.urn,
                         _edit(plan, repo.urn, lambda p: p.__setitem__("imageTagMutability", "MUTABLE")),
                         _related(plan, repo) | users, IMAGE_RULE)


def log_mutants(plan: Plan) -> Iterator[Mutant]:
    """Logs are data: lose the control-plane log group (EKS would create its own), or send flow logs to a store
    classified below them."""
    for res in plan.resources:
        if res.type == "aws:cloudwatch/logGroup:LogGroup" and str(res.props.get("name", "")).startswith("/aws/eks/"):
            yield Mutant("logs", f"control-plane log group deleted: {res.name}", res.urn, _delete(plan, res.urn),
                         _related(plan, res), frozenset({"residency-log-destinations"}))
        if res.type == "aws:ec2/flowLog:FlowLog":
            for urn in res.property_dependencies.get("logDestination", []):
                def lower(props):
                    props.setdefault("tags", {})["finml:classification"] = "public"
                yield Mutant("logs", f"flow-log destination declassified: {res.name}", res.urn,
                             _edit(plan, urn, lower), _related(plan, res), frozenset({"residency-log-destinations"}))


def key_mutants(plan: Plan) -> Iterator[Mutant]:
    """A data store left with an AWS-managed key: its key input removed (encryption flags left on)."""
    stores = {"aws:cloudwatch/logGroup:LogGroup": "kmsKeyId", "aws:efs/fileSystem:FileSystem": "kmsKeyId",
              "aws:ebs/volume:Volume": "kmsKeyId", "aws:backup/vault:Vault": "kmsKeyArn"}
    for res in plan.resources:
        prop = stores.get(res.type)
        if prop and prop in res.props:
            def drop(props, prop=prop):
                props.pop(prop, None)
            mutant = _edit(plan, res.urn, drop)
            for r in mutant.resources:
                if r.urn == res.urn:
                    r.property_dependencies.pop(prop, None)
            yield Mutant("keys", f"{prop} removed (AWS-managed key): {res.name}", res.urn, mutant,
                         _related(plan, res), frozenset({"encryption-data-store-cmk"}))


def all_mutants(plan: Plan, residency: dict[str, list[str]] | None = None,
                sites: list[str] | None = None) -> Iterator[Mutant]:
    yield from encryption_mutants(plan)
    yield from region_mutants(plan)
    if residency is not None and sites is not None:
        yield from allowed_site_mutants(plan, residency, sites)
    yield from world_mutants(plan)
    yield from container_mutants(plan)
    yield from image_mutants(plan)
    yield from log_mutants(plan)
    yield from key_mutants(plan)
