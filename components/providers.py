"""Explicit providers, one per site: default providers are disabled, so every resource's location is derivable."""

from __future__ import annotations

import pulumi
import pulumi_aws as aws

from components.naming import MANAGED_BY_TAG, STACK_TAG, child_name
from finml.config import StackConfig, region_of


class AwsProviders:
    """`providers("aws:eu-central-1")` → the one `aws.Provider` for that region, pinned to the stack's account."""

    def __init__(self, stack: StackConfig):
        self._stack = stack
        self._providers: dict[str, aws.Provider] = {}

    def __call__(self, site: str) -> aws.Provider:
        if not site.startswith("aws:"):
            raise ValueError(f"{site!r} is not an AWS site")
        if site not in self._providers:
            platform = self._stack.platform
            tags = {STACK_TAG: self._stack.stack, MANAGED_BY_TAG: "finml", **platform.tags}
            self._providers[site] = aws.Provider(
                child_name("aws", region_of(site)),
                region=region_of(site),
                allowed_account_ids=[platform.aws_account_id] if platform.aws_account_id else None,
                default_tags=aws.ProviderDefaultTagsArgs(tags=dict(sorted(tags.items()))),
            )
        return self._providers[site]

    def all(self) -> dict[str, aws.Provider]:
        return dict(self._providers)


def load_stack_from_pulumi() -> StackConfig:
    """The stack config as the engine passes it; bad config stops the run with a message, not a traceback."""
    import json

    from pulumi.runtime.config import _SECRET_KEYS, CONFIG

    from finml.config import CONFIG_NAMESPACE, PLATFORM_KEY, ConfigError, parse_platform
    from gpu_profiles import load_profiles

    name = pulumi.get_stack()
    source = f"stacks/Pulumi.{name}.yaml"
    raw_config = dict(CONFIG.get())
    secret_keys = tuple(sorted(_SECRET_KEYS.get()))
    platform_raw = pulumi.Config(CONFIG_NAMESPACE).get(PLATFORM_KEY)
    if platform_raw is None:
        raise pulumi.RunError(f"{source}: {CONFIG_NAMESPACE}:{PLATFORM_KEY}: required key is missing")
    try:
        platform = parse_platform(json.loads(platform_raw), source, load_profiles())
    except ConfigError as exc:
        raise pulumi.RunError(str(exc)) from None
    except json.JSONDecodeError as exc:
        raise pulumi.RunError(f"{source}: {CONFIG_NAMESPACE}:{PLATFORM_KEY}: not a structured value ({exc})") from None
    parsed = {k: (json.loads(v) if k == f"{CONFIG_NAMESPACE}:{PLATFORM_KEY}" else v) for k, v in raw_config.items()}
    return StackConfig(stack=name, source=source, platform=platform, secret_keys=secret_keys, raw_config=parsed)
