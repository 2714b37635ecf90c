"""finml guardrails policy pack: assembles the rules; every rule lives in finml_rules/<area>.py."""

from pulumi_policy import EnforcementLevel, PolicyPack

from finml_rules import encryption, feature_store, gpu, kubernetes, network, registry, residency

PolicyPack(
    name="finml-guardrails",
    enforcement_level=EnforcementLevel.MANDATORY,
    policies=residency.POLICIES + encryption.POLICIES + network.POLICIES + kubernetes.POLICIES + gpu.POLICIES
    + registry.POLICIES
    + feature_store.POLICIES,
)
