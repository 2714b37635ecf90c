"""finml guardrail rules, one module per area; each module exports ``POLICIES``."""
