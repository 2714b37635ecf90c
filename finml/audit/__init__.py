"""Detective controls: a live, read-only compliance audit of the AWS account behind a stack, drift against the
stack's plan, and the bootstrap of the stack's Pulumi state bucket and secrets key.

- ``aws``: clients (endpoint override, retries with backoff, API-call log), error classification;
- ``collect``: one collector per service, paginated, run per enabled region; a failure is a *gap*, never a crash;
- ``rules``: the pack's rules (same ids) evaluated over what the collectors saw;
- ``drift``: tagged resources missing from the plan, and checked properties that differ from it;
- ``bootstrap``: idempotent state bucket + KMS key;
- ``catalogue``: rule metadata (the pack's own descriptions, severities and fixes, plus the audit-only rules).
"""
