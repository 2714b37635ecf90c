"""The governed model registry: lineage computed from a run's dataset inputs, the residency gate, the audit trail.

`lineage` and `gate` import with only mlflow, pydantic and PyYAML installed, so the serving image's load-time check
uses the very same code as `finml model promote` and `finml model copy`.
"""
