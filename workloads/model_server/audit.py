"""Prediction audit log: one JSON line per scored row on stdout, for the site's log shipping.

Each line holds the request id, model name and version, a UTC timestamp, the score and the request's features,
where features named restricted appear only as keyed hashes (HMAC-SHA256 with the site's audit key): an auditor
holding the key can check that a given customer's features produced a score, while the log itself never holds a
restricted value. Unrestricted numeric features are logged as they are.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import sys
import time
from typing import Any, Iterable, Mapping, Sequence

AUDIT_EVENT = "finml.prediction"


def keyed_hash(key: bytes, feature: str, value: Any) -> str:
    """HMAC-SHA256 over the feature name and value: the same value under another feature hashes differently."""
    message = f"{feature}\x00{json.dumps(value, sort_keys=True, default=str)}".encode()
    return "hmac-sha256:" + hmac.new(key, message, hashlib.sha256).hexdigest()


def _rows(values: Sequence[Any], count: int) -> list[Any]:
    if count <= 0:
        return []
    width = max(len(values) // count, 1)
    return [values[i * width] if width == 1 else list(values[i * width:(i + 1) * width]) for i in range(count)]


def _batch_rows(payload: Any) -> int:
    for request_input in payload.inputs:
        if request_input.shape:
            return int(request_input.shape[0])
    return 0


def _data(item: Any) -> list[Any]:
    data = item.data
    root = getattr(data, "root", data)
    return list(root) if isinstance(root, (list, tuple)) else [root]


class AuditLog:
    def __init__(self, model: str, version: str, key: bytes, restricted: Iterable[str], stream: Any = None) -> None:
        if not key:
            raise ValueError("the audit log needs a non-empty key for restricted features")
        self.model = model
        self.version = version
        self._key = key
        self.restricted = frozenset(restricted)
        self._stream = stream

    def records(self, payload: Any, response: Any) -> list[dict[str, Any]]:
        rows = _batch_rows(payload)
        features: dict[str, list[Any]] = {i.name: _rows(_data(i), rows) for i in payload.inputs}
        scores = _rows(_data(response.outputs[0]), rows) if response.outputs else [None] * rows
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime()) + f".{int(time.time() * 1000) % 1000:03d}Z"
        out = []
        for row in range(rows):
            row_features = {}
            for name, values in sorted(features.items()):
                value = values[row] if row < len(values) else None
                row_features[name] = keyed_hash(self._key, name, value) if name in self.restricted else value
            out.append({"event": AUDIT_EVENT, "request_id": payload.id, "row": row, "model": self.model,
                        "version": self.version, "timestamp": stamp, "score": scores[row] if row < len(scores) else None,
                        "features": row_features})
        return out

    def write(self, payload: Any, response: Any) -> None:
        stream = self._stream or sys.stdout
        for record in self.records(payload, response):
            stream.write(json.dumps(record, sort_keys=True, default=str) + "\n")
        stream.flush()


def restricted_features(spec: str | None, mapping: Mapping[str, str] | None = None) -> list[str]:
    """Comma-separated feature names (FINML_RESTRICTED_FEATURES)."""
    return [f.strip() for f in (spec or "").split(",") if f.strip()]
