"""ImageRepositories: the ECR repositories an AWS site's cluster pulls the platform images from.

One private repository per platform image (workloads/images.py) under the site registry's prefix, in the site's
region (the site's explicit provider), with tags IMMUTABLE — a pushed `feature-store:0.67.0` can never be replaced,
which is what lets the pods pin images by tag (the policy pack's `k8s-image-pinned` checks the repositories here) -
scan on push, and encrypted with the site's customer-managed key.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import pulumi
import pulumi_aws as aws

from components import naming

TYPE_TOKEN = "finml:registry:ImageRepositories"
TAG_MUTABILITY = "IMMUTABLE"


@dataclass(frozen=True)
class ImageRepositoriesArgs:
    site: str
    stack: str
    repositories: Sequence[str]
    """Repository names (`<prefix>/<image>`), e.g. finml/feature-store."""
    kms_key_arn: pulumi.Input[str]
    """The site's CMK the repositories are encrypted with."""
    extra_tags: dict[str, str] = field(default_factory=dict)
    force_delete: bool = False
    """Delete repositories that still hold images on `pulumi destroy` (off: images are release evidence)."""


class ImageRepositories(pulumi.ComponentResource):
    """aws.ecr.Repository per platform image: IMMUTABLE tags, scan on push, KMS with the site's CMK."""

    repositories: dict[str, aws.ecr.Repository]
    repository_urls: dict[str, pulumi.Output[str]]

    def __init__(self, name: str, args: ImageRepositoriesArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__(TYPE_TOKEN, name, {"site": args.site}, opts)
        self._name = name
        self._args = args
        self._create_repositories()
        self.repository_urls = {repo: r.repository_url for repo, r in self.repositories.items()}
        self.register_outputs({"repository_urls": self.repository_urls})

    def _create_repositories(self) -> None:
        args = self._args
        if len(set(args.repositories)) != len(args.repositories):
            raise ValueError(f"{args.site}: image repositories listed twice: {sorted(args.repositories)}")
        self.repositories = {}
        for repository in sorted(args.repositories):
            resource_name = naming.child_name(self._name, repository.replace("/", "-"))
            self.repositories[repository] = aws.ecr.Repository(
                resource_name,
                name=repository,
                image_tag_mutability=TAG_MUTABILITY,
                image_scanning_configuration=aws.ecr.RepositoryImageScanningConfigurationArgs(scan_on_push=True),
                encryption_configurations=[aws.ecr.RepositoryEncryptionConfigurationArgs(
                    encryption_type="KMS", kms_key=args.kms_key_arn)],
                force_delete=args.force_delete,
                tags=naming.aws_tags(args.site, args.stack, None, dict(args.extra_tags), name=resource_name),
                opts=pulumi.ResourceOptions(parent=self),
            )
