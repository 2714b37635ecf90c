"""The exact catalogue of the finml-guardrails pack: adding, renaming or dropping a rule is a deliberate edit here."""

EXPECTED_POLICIES = frozenset({
    "encryption-block-devices-encrypted", "encryption-data-store-cmk", "encryption-dynamodb-cmk",
    "encryption-ebs-encrypted", "encryption-eks-secrets", "encryption-elasticache",
    "encryption-file-systems-at-rest", "encryption-kms-no-wildcard-principal", "encryption-kms-rotation",
    "encryption-rds-at-rest", "encryption-rds-in-transit", "encryption-s3-bucket-key", "encryption-s3-sse-kms-cmk",
    "encryption-s3-tls-only", "gpu-mig-resource-name", "gpu-resource-limits", "gpu-taint-toleration",
    "k8s-capabilities-drop-all", "k8s-deprecated-api-kinds", "k8s-image-pinned", "k8s-namespace-default-deny",
    "k8s-namespace-pod-security-restricted", "k8s-no-host-namespaces", "k8s-no-host-ports",
    "k8s-no-hostpath-volumes", "k8s-no-privilege-escalation", "k8s-no-privileged-containers", "k8s-resource-limits",
    "k8s-run-as-non-root", "k8s-seccomp-profile", "k8s-service-account-token", "network-eks-endpoint-private",
    "network-eks-node-remote-access", "network-imds-hop-limit", "network-imdsv2-required", "network-rds-not-public",
    "network-s3-public-access-block", "network-sg-no-public-ingress", "network-subnet-no-public-ip",
    "policy-waived-findings", "policy-waivers-valid", "residency-aws-data-site", "residency-aws-site-declared",
    "residency-backup-copy-destination", "residency-classification-required", "residency-cluster-site",
    "residency-dataset-site", "residency-ebs-snapshot-copy", "residency-feature-view",
    "residency-feature-view-source", "residency-k8s-data-site", "residency-k8s-site-pinning",
    "residency-kms-key-colocated", "residency-kms-replica-key", "residency-log-destinations",
    "residency-model-registry-classified", "residency-model-registry-site", "residency-model-serving-site",
    "residency-model-training-lineage", "residency-provider-allowlist", "residency-replica-destination",
    "residency-s3-replication-destination",
})
