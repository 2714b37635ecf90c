"""Which regulatory and benchmark controls each rule evidences.

A rule *evidences* a control when a passing rule is a piece of the control's proof for the resources the pack sees
(the plan). No rule alone satisfies a whole control: CIS items are also about resources outside the program, PCI DSS
and NIST controls also ask for process. Mappings are deliberately narrow: a control is listed only where the rule
checks what the control's own text asks for. Where the exact id or title could not be checked against the standard's
text, the control is left out rather than guessed (see the README section "Control mapping" for what was checked
against what).

Pure Python on purpose: the audit tool imports this module (``controls_for``, ``FRAMEWORKS``) without pulumi_policy.
"""

from __future__ import annotations

from typing import Optional

#: framework key -> (display name, version/edition). Keys are what `finml policies list --framework` accepts.
FRAMEWORKS: dict[str, tuple[str, str]] = {
    "cis-aws": ("CIS Amazon Web Services Foundations Benchmark", "v3.0.0"),
    "cis-eks": ("CIS Amazon Elastic Kubernetes Service (EKS) Benchmark", "v1.0.1"),
    "nist-800-53": ("NIST SP 800-53", "Revision 5"),
    "pci-dss": ("PCI DSS", "v4.0"),
    "gdpr": ("GDPR (Regulation (EU) 2016/679), Chapter V transfers", "Art. 44-49"),
}

# Control texts, keyed (framework, id) -> title. Titles are the standards' own (abridged only where marked "...").
_TITLES: dict[tuple[str, str], str] = {
    # CIS AWS Foundations v3.0.0
    ("cis-aws", "2.1.1"): "Ensure S3 Bucket Policy is set to deny HTTP requests",
    ("cis-aws", "2.1.4"): "Ensure that S3 Buckets are configured with 'Block public access (bucket settings)'",
    ("cis-aws", "2.2.1"): "Ensure EBS Volume Encryption is Enabled in all Regions",
    ("cis-aws", "2.3.1"): "Ensure that encryption-at-rest is enabled for RDS Instances",
    ("cis-aws", "2.3.3"): "Ensure that public access is not given to RDS Instance",
    ("cis-aws", "2.4.1"): "Ensure that encryption is enabled for EFS file systems",
    ("cis-aws", "3.6"): "Ensure rotation for customer-created symmetric CMKs is enabled",
    ("cis-aws", "5.2"): "Ensure no security groups allow ingress from 0.0.0.0/0 to remote server administration ports",
    ("cis-aws", "5.3"): "Ensure no security groups allow ingress from ::/0 to remote server administration ports",
    ("cis-aws", "5.6"): "Ensure that EC2 Metadata Service only allows IMDSv2",
    # CIS Amazon EKS Benchmark v1.0.1
    ("cis-eks", "2.1.1"): "Enable audit Logs",
    ("cis-eks", "4.1.6"): "Ensure that Service Account Tokens are only mounted where necessary",
    ("cis-eks", "4.2.1"): "Minimize the admission of privileged containers",
    ("cis-eks", "4.2.2"): "Minimize the admission of containers wishing to share the host process ID namespace",
    ("cis-eks", "4.2.3"): "Minimize the admission of containers wishing to share the host IPC namespace",
    ("cis-eks", "4.2.4"): "Minimize the admission of containers wishing to share the host network namespace",
    ("cis-eks", "4.2.5"): "Minimize the admission of containers with allowPrivilegeEscalation",
    ("cis-eks", "4.2.6"): "Minimize the admission of root containers",
    ("cis-eks", "4.2.7"): "Minimize the admission of containers with the NET_RAW capability",
    ("cis-eks", "4.2.8"): "Minimize the admission of containers with added capabilities",
    ("cis-eks", "4.2.9"): "Minimize the admission of containers with capabilities assigned",
    ("cis-eks", "4.3.2"): "Ensure that all Namespaces have Network Policies defined",
    ("cis-eks", "4.6.2"): "Apply Security Context to Your Pods and Containers",
    ("cis-eks", "5.1.4"): "Minimize Container Registries to only those approved",
    ("cis-eks", "5.3.1"): "Ensure Kubernetes Secrets are encrypted using Customer Master Keys (CMKs) managed in AWS KMS",
    ("cis-eks", "5.4.2"): "Ensure clusters are created with Private Endpoint Enabled and Public Access Disabled",
    ("cis-eks", "5.4.3"): "Ensure clusters are created with Private Nodes",
    # NIST SP 800-53 rev. 5
    ("nist-800-53", "AC-4"): "Information Flow Enforcement",
    ("nist-800-53", "AC-6"): "Least Privilege",
    ("nist-800-53", "AU-9"): "Protection of Audit Information",
    ("nist-800-53", "CM-6"): "Configuration Settings",
    ("nist-800-53", "CM-7"): "Least Functionality",
    ("nist-800-53", "CM-8"): "System Component Inventory",
    ("nist-800-53", "CP-9"): "System Backup",
    ("nist-800-53", "RA-2"): "Security Categorization",
    ("nist-800-53", "SA-9(5)"): "External System Services | Processing, Storage, and Service Location",
    ("nist-800-53", "SC-6"): "Resource Availability",
    ("nist-800-53", "SC-7"): "Boundary Protection",
    ("nist-800-53", "SC-8(1)"): "Transmission Confidentiality and Integrity | Cryptographic Protection",
    ("nist-800-53", "SC-12"): "Cryptographic Key Establishment and Management",
    ("nist-800-53", "SC-28(1)"): "Protection of Information at Rest | Cryptographic Protection",
    ("nist-800-53", "SC-39"): "Process Isolation",
    ("nist-800-53", "SI-7"): "Software, Firmware, and Information Integrity",
    # PCI DSS v4.0 (requirement texts abridged to their opening clause)
    ("pci-dss", "1.3.1"): "Inbound traffic to the CDE is restricted ...",
    ("pci-dss", "1.4.1"): "NSCs are implemented between trusted and untrusted networks",
    ("pci-dss", "1.4.4"): "System components that store cardholder data are not directly accessible from untrusted "
                          "networks",
    ("pci-dss", "2.2.1"): "Configuration standards are developed, implemented, and maintained ...",
    ("pci-dss", "2.2.4"): "Only necessary services, protocols, daemons, and functions are enabled ...",
    ("pci-dss", "2.2.6"): "System security parameters are configured to prevent misuse",
    ("pci-dss", "3.5.1"): "PAN is rendered unreadable anywhere it is stored ...",
    ("pci-dss", "3.6.1"): "Procedures are defined and implemented to protect cryptographic keys used to protect stored "
                          "account data against disclosure and misuse ...",
    ("pci-dss", "3.7.4"): "Key management ... for cryptographic key changes for keys that have reached the end of "
                          "their cryptoperiod ...",
    ("pci-dss", "4.2.1"): "Strong cryptography and security protocols are implemented ... to safeguard PAN during "
                          "transmission over open, public networks ...",
    ("pci-dss", "7.2.2"): "Access is assigned to users, including privileged users, based on ... least privileges "
                          "necessary ...",
    ("pci-dss", "10.3.2"): "Audit log files are protected to prevent modifications by individuals",
    # GDPR Chapter V
    ("gdpr", "Art. 44"): "General principle for transfers",
    ("gdpr", "Art. 46"): "Transfers subject to appropriate safeguards",
}

_RESIDENCY = [("gdpr", "Art. 44"), ("nist-800-53", "SA-9(5)"), ("nist-800-53", "AC-4")]
_COPIES = _RESIDENCY + [("gdpr", "Art. 46")]
_AT_REST = [("nist-800-53", "SC-28(1)"), ("pci-dss", "3.5.1")]
_IN_TRANSIT = [("nist-800-53", "SC-8(1)"), ("pci-dss", "4.2.1")]
_KEYS = [("nist-800-53", "SC-12"), ("pci-dss", "3.6.1")]
_POD = [("nist-800-53", "CM-7"), ("nist-800-53", "AC-6"), ("pci-dss", "2.2.6"), ("cis-eks", "4.6.2")]
_PRIVATE = [("nist-800-53", "SC-7"), ("pci-dss", "1.4.1"), ("pci-dss", "1.4.4")]

#: rule name -> controls it evidences (framework, id).
_MAPPING: dict[str, list[tuple[str, str]]] = {
    # residency
    "residency-classification-required": [("nist-800-53", "RA-2"), ("nist-800-53", "CM-8")],
    "residency-aws-data-site": _RESIDENCY,
    "residency-aws-site-declared": _RESIDENCY + [("nist-800-53", "CM-8")],
    "residency-provider-allowlist": _RESIDENCY + [("nist-800-53", "CM-8")],
    "residency-cluster-site": _RESIDENCY,
    "residency-k8s-data-site": _RESIDENCY,
    "residency-k8s-site-pinning": _RESIDENCY,
    "residency-s3-replication-destination": _COPIES,
    "residency-replica-destination": _COPIES,
    "residency-backup-copy-destination": _COPIES + [("nist-800-53", "CP-9")],
    "residency-ebs-snapshot-copy": _COPIES,
    "residency-kms-replica-key": _RESIDENCY + _KEYS,
    "residency-kms-key-colocated": _RESIDENCY + _KEYS,
    "residency-model-training-lineage": [("nist-800-53", "RA-2")] + _RESIDENCY,
    "residency-model-serving-site": _RESIDENCY,
    "residency-dataset-site": _RESIDENCY,
    "residency-feature-view": _RESIDENCY,
    "residency-feature-view-source": _RESIDENCY,
    "residency-model-registry-site": _RESIDENCY,
    "residency-model-registry-classified": [("nist-800-53", "RA-2")] + _RESIDENCY,
    "residency-log-destinations": _RESIDENCY + [("nist-800-53", "AU-9"), ("cis-eks", "2.1.1")],
    # encryption
    "encryption-s3-sse-kms-cmk": _AT_REST + _KEYS,
    "encryption-s3-bucket-key": [("nist-800-53", "SC-28(1)")],
    "encryption-s3-tls-only": [("cis-aws", "2.1.1")] + _IN_TRANSIT,
    "encryption-ebs-encrypted": [("cis-aws", "2.2.1")] + _AT_REST,
    "encryption-block-devices-encrypted": [("cis-aws", "2.2.1")] + _AT_REST,
    "encryption-eks-secrets": [("cis-eks", "5.3.1"), ("nist-800-53", "SC-28(1)"), ("nist-800-53", "SC-12")],
    "encryption-file-systems-at-rest": [("cis-aws", "2.4.1")] + _AT_REST,
    "encryption-rds-at-rest": [("cis-aws", "2.3.1")] + _AT_REST,
    "encryption-rds-in-transit": _IN_TRANSIT,
    "encryption-elasticache": _AT_REST + _IN_TRANSIT,
    "encryption-dynamodb-cmk": _AT_REST + _KEYS,
    "encryption-data-store-cmk": _AT_REST + _KEYS + [("nist-800-53", "AU-9"), ("pci-dss", "10.3.2")],
    "encryption-kms-rotation": [("cis-aws", "3.6"), ("pci-dss", "3.7.4"), ("nist-800-53", "SC-12")],
    "encryption-kms-no-wildcard-principal": [("nist-800-53", "AC-6"), ("pci-dss", "3.6.1"), ("pci-dss", "7.2.2")],
    # network
    "network-eks-endpoint-private": [("cis-eks", "5.4.2")] + _PRIVATE,
    "network-sg-no-public-ingress": [("cis-aws", "5.2"), ("cis-aws", "5.3"), ("nist-800-53", "SC-7"),
                                     ("pci-dss", "1.3.1"), ("pci-dss", "1.4.1")],
    "network-subnet-no-public-ip": [("cis-eks", "5.4.3")] + _PRIVATE,
    "network-s3-public-access-block": [("cis-aws", "2.1.4"), ("nist-800-53", "SC-7"), ("pci-dss", "1.4.4")],
    "network-imdsv2-required": [("cis-aws", "5.6"), ("nist-800-53", "CM-6"), ("pci-dss", "2.2.6")],
    "network-imds-hop-limit": [("nist-800-53", "AC-6"), ("nist-800-53", "CM-6"), ("pci-dss", "2.2.6")],
    "network-rds-not-public": [("cis-aws", "2.3.3")] + _PRIVATE,
    "network-eks-node-remote-access": [("nist-800-53", "SC-7"), ("pci-dss", "1.3.1"), ("pci-dss", "1.4.1")],
    # kubernetes
    "k8s-namespace-default-deny": [("cis-eks", "4.3.2"), ("nist-800-53", "SC-7"), ("nist-800-53", "AC-4"),
                                   ("pci-dss", "1.3.1")],
    "k8s-namespace-pod-security-restricted": [("nist-800-53", "CM-6"), ("pci-dss", "2.2.1")],
    "k8s-no-privileged-containers": [("cis-eks", "4.2.1")] + _POD,
    "k8s-no-host-namespaces": [("cis-eks", "4.2.2"), ("cis-eks", "4.2.3"), ("cis-eks", "4.2.4"),
                               ("nist-800-53", "SC-39")] + _POD,
    "k8s-no-hostpath-volumes": [("nist-800-53", "SC-39")] + _POD,
    "k8s-no-host-ports": [("nist-800-53", "SC-7")] + _POD,
    "k8s-no-privilege-escalation": [("cis-eks", "4.2.5")] + _POD,
    "k8s-capabilities-drop-all": [("cis-eks", "4.2.7"), ("cis-eks", "4.2.8"), ("cis-eks", "4.2.9")] + _POD,
    "k8s-run-as-non-root": [("cis-eks", "4.2.6")] + _POD,
    "k8s-seccomp-profile": [("nist-800-53", "SC-39")] + _POD,
    "k8s-resource-limits": [("nist-800-53", "SC-6")],
    "k8s-service-account-token": [("cis-eks", "4.1.6"), ("nist-800-53", "AC-6"), ("pci-dss", "7.2.2")],
    "k8s-deprecated-api-kinds": [("nist-800-53", "CM-6"), ("pci-dss", "2.2.1")],
    # tag-pinned images only from the site's approved registry (CIS EKS 5.1.4); digest or immutable tag: the code
    # that runs is the code that was reviewed (SI-7). PCI DSS 6.3.2 asks for a software inventory, which a pinned
    # reference does not maintain, so it is not claimed.
    "k8s-image-pinned": [("cis-eks", "5.1.4"), ("nist-800-53", "SI-7")],
    # gpu
    "gpu-resource-limits": [("nist-800-53", "SC-6")],
    "gpu-taint-toleration": [],
    "gpu-mig-resource-name": [],
    # waivers
    "policy-waivers-valid": [("nist-800-53", "CM-6"), ("pci-dss", "2.2.1")],
    "policy-waived-findings": [],
}

#: Residency rules whose findings about restricted (or unknown-classification) data a waiver can never exempt.
NEVER_WAIVABLE_PREFIX = "residency-"


def framework_key(name: str) -> Optional[str]:
    """The framework key for a name or alias (cis-aws, CIS_AWS, pci, pci-dss, nist, gdpr ...); None if unknown."""
    wanted = name.strip().lower().replace("_", "-").replace(" ", "-")
    aliases = {"pci": "pci-dss", "pcidss": "pci-dss", "nist": "nist-800-53", "nist-sp-800-53": "nist-800-53",
               "cis-aws-foundations": "cis-aws", "cis-amazon-eks": "cis-eks"}
    wanted = aliases.get(wanted, wanted)
    return wanted if wanted in FRAMEWORKS else None


def controls_for(rule_name: str) -> list[dict[str, str]]:
    """The controls a rule evidences: ``[{"framework", "id", "title"}]``, framework as its key (e.g. ``pci-dss``);
    empty for a rule that evidences none (or an unknown rule)."""
    return [{"framework": fw, "id": cid, "title": _TITLES[(fw, cid)]} for fw, cid in _MAPPING.get(rule_name, [])]


def mapped_rules() -> list[str]:
    return list(_MAPPING)


def framework_label(key: str) -> str:
    name, version = FRAMEWORKS[key]
    return f"{name} {version}"


def rules_for_framework(key: str) -> dict[str, list[dict[str, str]]]:
    """rule name -> its controls in framework ``key`` (only rules with at least one)."""
    out = {}
    for rule in _MAPPING:
        found = [c for c in controls_for(rule) if c["framework"] == key]
        if found:
            out[rule] = found
    return out


def control_ids(rule_name: str) -> list[str]:
    """Compact ``framework:id`` strings, e.g. ``pci-dss:3.5.1`` (for SARIF tags and JSON findings)."""
    return [f"{c['framework']}:{c['id']}" for c in controls_for(rule_name)]


def coverage_matrix_markdown(rule_names: Optional[list[str]] = None) -> str:
    """The README's coverage matrix (rule x framework, cells: control ids), in pack order when given."""
    rules = rule_names or mapped_rules()
    head = "| rule | " + " | ".join(f"{k} {FRAMEWORKS[k][1]}" for k in FRAMEWORKS) + " |"
    lines = [head, "|---|" + "---|" * len(FRAMEWORKS)]
    for rule in rules:
        cells = []
        for key in FRAMEWORKS:
            ids = [c["id"] for c in controls_for(rule) if c["framework"] == key]
            cells.append(", ".join(ids) or "")
        lines.append(f"| `{rule}` | " + " | ".join(cells) + " |")
    return "\n".join(lines)
