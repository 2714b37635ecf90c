"""The one place child resource names, tags and labels are made, so every component names things the same way."""

from __future__ import annotations

import re

# Kubernetes label values cannot hold ':'; `onprem:fra-dc1` is labelled `onprem-fra-dc1`. One definition, shared with
# the Ansible inventory, so cloud and on-prem nodes carry the same encoding the policy pack pins to.
from finml.inventory import site_label_value  # noqa: F401 — re-exported

CLASSIFICATION_TAG = "finml:classification"
SITE_TAG = "finml:site"
STACK_TAG = "finml:stack"
MANAGED_BY_TAG = "finml:managed-by"

CLASSIFICATION_LABEL = "finml.io/classification"
SITE_LABEL = "finml.io/site"
MODEL_LABEL = "finml.io/model"


def slug(text: str) -> str:
    """A DNS-label-safe slug: `aws:eu-central-1` -> `aws-eu-central-1`."""
    return re.sub(r"[^a-z0-9-]+", "-", text.lower()).strip("-")


def child_name(parent: str, *parts: str) -> str:
    """Name of a child resource: the parent's name and the parts, slugged and joined by '-'."""
    return "-".join([parent, *(slug(p) for p in parts if p)])




def aws_tags(site: str, stack: str, classification: str | None = None, extra: dict[str, str] | None = None,
             name: str | None = None) -> dict[str, str]:
    # Extra tags first: finml's own keys always win, so a stack's free-form tags cannot relabel a resource.
    tags = dict(extra or {})
    tags.update({SITE_TAG: site, STACK_TAG: stack, MANAGED_BY_TAG: "finml"})
    if classification is not None:
        tags[CLASSIFICATION_TAG] = classification
    if name is not None:
        tags["Name"] = name
    return dict(sorted(tags.items()))


def bucket_name(stack: str, resource_name: str, account_id: str) -> str:
    """A physical S3 bucket name known before `up` (so bucket policies and replication rules are known at preview).

    Globally unique by account id, at most 63 characters; over-long names keep a hash of the full name.
    """
    import hashlib

    base = slug(f"finml-{stack}-{resource_name.removeprefix('aws-')}")
    name = f"{base}-{account_id}"
    if len(name) > 63:
        digest = hashlib.sha256(name.encode()).hexdigest()[:8]
        name = f"{base[: 63 - len(account_id) - len(digest) - 2].rstrip('-')}-{digest}-{account_id}"
    return name
