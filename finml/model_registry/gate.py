"""The residency gate: may a model version with this lineage live (be promoted, copied, served) at this site?

    decision = residency_decision(lineage, "aws:eu-central-1", stack.platform.residency)
    if not decision.allowed:
        print(decision.message)    # names the rule, the classification, the dataset that caused it and the site

`residency` is the stack file's map classification -> allowed site patterns (exact sites or globs such as
`onprem:*`). It is always read from the project's stack file by the caller, never from the registry or the model.
Unknown lineage is allowed nowhere (it ranks above restricted). Also `metrics_decision()` for promotion thresholds.

Imports only the standard library (plus `lineage`), so the serving image's load-time check can use it.
"""

from __future__ import annotations

import fnmatch
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from finml.model_registry.lineage import UNKNOWN, Lineage

RULE_RESIDENCY = "residency"
RULE_LINEAGE = "lineage-required"
RULE_METRICS = "promotion-metrics"


@dataclass(frozen=True)
class Decision:
    allowed: bool
    rule: str                     # "residency", "lineage-required" or "promotion-metrics"
    classification: str
    dataset: str | None           # the dataset input that caused the decision ("name@digest"), when there is one
    site: str
    message: str
    allowed_sites: tuple[str, ...] = ()   # the residency patterns of the classification, for the message and audit

    def as_dict(self) -> dict[str, Any]:
        return {"allowed": self.allowed, "rule": self.rule, "classification": self.classification,
                "dataset": self.dataset, "site": self.site, "message": self.message,
                "allowed_sites": list(self.allowed_sites)}


def site_allowed(site: str, patterns: Sequence[str]) -> bool:
    return any(fnmatch.fnmatchcase(site, p) for p in patterns)


def residency_decision(lineage: Lineage, site: str, residency: Mapping[str, Sequence[str]]) -> Decision:
    """Allow only if the lineage classification's residency patterns match `site`; fail closed otherwise."""
    offending = lineage.offending_dataset
    label = f"{offending.name}@{offending.digest}" if offending else None
    subject = f"{lineage.name} version {lineage.version}"
    if lineage.classification == UNKNOWN:
        why = "; ".join(lineage.problems) or "no lineage"
        return Decision(False, RULE_LINEAGE, UNKNOWN, label, site,
                        f"refused by rule {RULE_LINEAGE}: {subject} has unknown lineage ({why}); unknown is treated "
                        f"as above restricted and is allowed on no site, including {site}")
    patterns = tuple(residency.get(lineage.classification, ()))
    where = (f"dataset {offending.name!r} (digest {offending.digest}, at {offending.site})" if offending
             else "its datasets")
    if site_allowed(site, patterns):
        return Decision(True, RULE_RESIDENCY, lineage.classification, label, site,
                        f"allowed by rule {RULE_RESIDENCY}.{lineage.classification} "
                        f"[{', '.join(patterns)}]: {subject} is {lineage.classification} (from {where}) and may "
                        f"live on {site}", patterns)
    allowed = ", ".join(patterns) if patterns else "no site"
    return Decision(False, RULE_RESIDENCY, lineage.classification, label, site,
                    f"refused by rule {RULE_RESIDENCY}.{lineage.classification} [{allowed}]: {subject} is "
                    f"{lineage.classification} because of {where}; {lineage.classification} data may not go to "
                    f"{site}", patterns)


@dataclass(frozen=True)
class Threshold:
    metric: str
    min: float | None = None
    max: float | None = None


def metrics_decision(lineage: Lineage, site: str, metrics: Mapping[str, float],
                     thresholds: Sequence[Threshold]) -> Decision:
    """Every threshold's metric must be present, finite and within bounds; a missing metric refuses."""
    subject = f"{lineage.name} version {lineage.version}"
    for t in thresholds:
        value = metrics.get(t.metric)
        bound = " and ".join(b for b in ((f">= {t.min}" if t.min is not None else ""),
                                         (f"<= {t.max}" if t.max is not None else "")) if b)
        if value is None or not math.isfinite(value):
            problem = "is not logged on the source run" if value is None else f"is {value}"
        elif t.min is not None and value < t.min or t.max is not None and value > t.max:
            problem = f"is {value:g}"
        else:
            continue
        return Decision(False, f"{RULE_METRICS}.{t.metric}", lineage.classification, None, site,
                        f"refused by rule {RULE_METRICS}.{t.metric}: {subject}: metric {t.metric!r} {problem}; "
                        f"required {bound}")
    names = ", ".join(t.metric for t in thresholds) or "none configured"
    return Decision(True, RULE_METRICS, lineage.classification, None, site,
                    f"metrics meet the promotion thresholds ({names})")
