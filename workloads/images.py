"""Every container image the platform deploys, in one place, and how a site's clusters name it.

An image is ``<site registry host>/<prefix>/<repository>:<tag>``: the site's registry comes from the stack config
(`sites.<id>.imageRegistry`, resolved by ``finml.config.site_image_registries``) - the account's ECR in the site's
region on AWS, the data centre's own registry on-prem - so every pod template pulls from its own site and nothing
relies on a containerd mirror silently redirecting a public name. Tags stay fixed because the registry refuses to
overwrite them: ECR repositories are created IMMUTABLE by the program (components/image_repositories.py), on-prem
registries declare `immutableTags: true`. The policy pack's `k8s-image-pinned` rule checks exactly this form (or a
digest) on every container.

Where a digest is known it is pinned as well (``name:tag@sha256:...``), which any registry honours.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

#: MLflow server and client version (the registry image and the training/serving clients agree on it).
MLFLOW_VERSION = "3.17.2"
_DIGEST_RE = re.compile(r"^sha256:[0-9a-f]{64}$")
_TAG_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$")


@dataclass(frozen=True)
class Image:
    """One platform image: its repository under the site registry's prefix, its tag, optionally its digest."""

    repository: str
    tag: str
    digest: str | None = None
    source: str = ""
    """Where the image is built or mirrored from (for the people who fill the registry)."""

    def __post_init__(self) -> None:
        if not _TAG_RE.match(self.tag) or self.tag == "latest":
            raise ValueError(f"image {self.repository}: tag {self.tag!r} is not a fixed tag")
        if self.digest is not None and not _DIGEST_RE.match(self.digest):
            raise ValueError(f"image {self.repository}: digest {self.digest!r} is not sha256:<64 hex>")


IMAGES: dict[str, Image] = {
    "feature-store": Image("feature-store", "0.67.0", source="workloads/feature_repo (Feast 0.67 server)"),
    "valkey": Image("valkey", "8.0", source="mirror of the upstream valkey 8.0 image"),
    "postgres-17": Image("postgres", "17.6", source="mirror of the upstream postgres 17.6 image"),
    "mlflow": Image("mlflow", f"v{MLFLOW_VERSION}", source=f"mirror of the upstream MLflow v{MLFLOW_VERSION} image"),
    "model-server": Image("model-server", "0.1.0", source="workloads/model_server (MLServer + MLflow runtime)"),
    "reference-training": Image("reference-training", "0.1.0", source="workloads/reference (torch CUDA wheels)"),
}


def repository_path(registry: Any, name: str) -> str:
    """``<prefix>/<repository>`` of image ``name`` in a site registry (the ECR repository name on AWS)."""
    return f"{registry.prefix}/{IMAGES[name].repository}"


def repositories(registry: Any) -> list[str]:
    """Every repository path the platform pulls from a site registry, sorted, each once."""
    return sorted({repository_path(registry, name) for name in IMAGES})


def image_ref(registry: Any, name: str) -> str:
    """The full reference of image ``name`` at a site: ``host/prefix/repository:tag[@digest]``.

    ``registry``: the site's ``finml.config.SiteImageRegistry`` (``StackConfig.image_registry(site)``)."""
    if name not in IMAGES:
        raise KeyError(f"unknown platform image {name!r}; known: {', '.join(sorted(IMAGES))}")
    image = IMAGES[name]
    ref = f"{registry.host}/{repository_path(registry, name)}:{image.tag}"
    return f"{ref}@{image.digest}" if image.digest else ref


def site_image(stack: Any, site: str, name: str) -> str:
    """Image ``name`` as the clusters of ``site`` in ``stack`` (a ``finml.config.StackConfig``) pull it."""
    return image_ref(stack.image_registry(site), name)


def unqualified(name: str) -> str:
    """``repository:tag`` with no registry: the component default for tests that build a component alone; never what
    the program deploys (`deploy_platform` always passes the site's image)."""
    return f"{IMAGES[name].repository}:{IMAGES[name].tag}"
