"""Resource options for a component's children.

A component's `depends_on` does not reach its children: the engine may create a child as soon as the component is
registered. Workload children must wait for what the component waits for (the namespaces and their default-deny
policies, so no pod ever runs unfenced), so every child gets the component's dependencies explicitly.
"""

from __future__ import annotations

from typing import Any

import pulumi


def child_opts(parent: pulumi.Resource, parent_opts: pulumi.ResourceOptions | None,
               **extra: Any) -> pulumi.ResourceOptions:
    depends_on = parent_opts.depends_on if parent_opts is not None else None
    if depends_on is not None and not isinstance(depends_on, (list, tuple)):
        depends_on = [depends_on]
    return pulumi.ResourceOptions(parent=parent, depends_on=list(depends_on) if depends_on else None, **extra)
