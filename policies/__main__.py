"""finml guardrails policy pack: assembles the rules; every rule lives in finml_rules/<area>.py."""

from pulumi_policy import EnforcementLevel, PolicyPack

from finml_rules import engine
from finml_rules.config import all_policies

POLICIES = all_policies()
engine.install()  # derive each resource once per request instead of once per rule (finml_rules/engine.py)
engine.tune_gc()  # the pack is loaded: keep the cyclic collector off it (finml_rules/engine.py)

PolicyPack(
    name="finml-guardrails",
    enforcement_level=EnforcementLevel.MANDATORY,
    policies=POLICIES,
)
