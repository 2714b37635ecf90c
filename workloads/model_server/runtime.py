"""MLServer's MLflow runtime with one fix finml needs: models whose pyfunc returns a DataFrame with non-string
column names (the PyTorch flavour returns columns 0..n-1) make MLServer 1.7.1's pandas codec fail building the
response (`ResponseOutput.name` must be a string). Column names are turned into strings; nothing else changes."""

from __future__ import annotations

from typing import Any

from mlserver_mlflow import MLflowRuntime


class FinmlMLflowRuntime(MLflowRuntime):
    def encode_response(self, payload: Any, default_codec: Any = None) -> Any:
        try:
            import pandas as pd
        except ImportError:  # pragma: no cover — mlflow depends on pandas
            pd = None
        if pd is not None and isinstance(payload, pd.DataFrame) and not all(isinstance(c, str) for c in payload.columns):
            payload = payload.rename(columns={c: str(c) for c in payload.columns})
        return super().encode_response(payload, default_codec=default_codec)
