"""The training set as the feature store writes it, and the time-based split training and the baseline share.

Contract (`finml-training-set/1`): `<dir>/training_set.parquet` with `card_id`, `event_timestamp` (UTC), the label
`is_fraud` and numeric feature columns; `<dir>/training_set.lineage.json` naming the site, the feature views (name,
classification, features), the highest classification, the row count and the parquet's SHA-256. Training refuses a
set whose digest or row count does not match its lineage: the lineage it logs must describe the data it used.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

FORMAT = "finml-training-set/1"
PARQUET_NAME = "training_set.parquet"
LINEAGE_NAME = "training_set.lineage.json"
ENTITY_KEY = "card_id"
TIMESTAMP = "event_timestamp"
LABEL = "is_fraud"
CLASSIFICATIONS = ("public", "internal", "confidential", "restricted")
NOT_FEATURES = frozenset({ENTITY_KEY, TIMESTAMP, LABEL})


class TrainingSetError(ValueError):
    """The training-set files are missing, malformed or disagree with each other; the message names the file."""


@dataclass(frozen=True)
class FeatureView:
    name: str
    classification: str
    features: tuple[str, ...]

    @property
    def feature_columns(self) -> list[str]:
        return [f for f in self.features if f not in NOT_FEATURES]


@dataclass(frozen=True)
class Lineage:
    site: str
    feature_views: tuple[FeatureView, ...]
    classification: str
    rows: int
    sha256: str
    raw: dict[str, Any]

    @property
    def features(self) -> list[str]:
        """Feature columns in a stable order: view by view, as the lineage lists them, without repeats."""
        seen: dict[str, None] = {}
        for view in self.feature_views:
            for feature in view.features:
                if feature not in NOT_FEATURES:  # the label's source view lists the label among its columns
                    seen.setdefault(feature, None)
        return list(seen)


@dataclass(frozen=True)
class TrainingSet:
    directory: Path
    frame: pd.DataFrame
    lineage: Lineage

    @property
    def parquet_path(self) -> Path:
        return self.directory / PARQUET_NAME


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _parse_lineage(path: Path) -> Lineage:
    try:
        raw = json.loads(path.read_text())
    except FileNotFoundError:
        raise TrainingSetError(f"{path}: missing; the training-set builder writes it next to {PARQUET_NAME}") from None
    except json.JSONDecodeError as exc:
        raise TrainingSetError(f"{path}: not JSON ({exc})") from None
    if not isinstance(raw, dict) or raw.get("format") != FORMAT:
        raise TrainingSetError(f"{path}: format: expected {FORMAT!r}, got {raw.get('format') if isinstance(raw, dict) else raw!r}")
    problems = []
    views = []
    for i, view in enumerate(raw.get("feature_views") or []):
        if not isinstance(view, dict) or not isinstance(view.get("name"), str) or not view.get("features"):
            problems.append(f"feature_views[{i}]: needs name and a non-empty features list")
            continue
        if view.get("classification") not in CLASSIFICATIONS:
            problems.append(f"feature_views[{i}].classification: {view.get('classification')!r}; "
                            f"allowed: {', '.join(CLASSIFICATIONS)}")
            continue
        views.append(FeatureView(view["name"], view["classification"], tuple(view["features"])))
    if not views and not problems:
        problems.append("feature_views: at least one feature view is required")
    if raw.get("classification") not in CLASSIFICATIONS:
        problems.append(f"classification: {raw.get('classification')!r}; allowed: {', '.join(CLASSIFICATIONS)}")
    elif views and raw["classification"] != max((v.classification for v in views), key=CLASSIFICATIONS.index):
        problems.append(f"classification: {raw['classification']!r} is not the highest of its feature views")
    for key, kind in (("site", str), ("rows", int), ("sha256", str)):
        if not isinstance(raw.get(key), kind):
            problems.append(f"{key}: required ({kind.__name__})")
    if problems:
        raise TrainingSetError(f"{path}: " + "; ".join(problems))
    return Lineage(site=raw["site"], feature_views=tuple(views), classification=raw["classification"],
                   rows=raw["rows"], sha256=raw["sha256"], raw=raw)


def load_training_set(directory: str | Path, *, verify_digest: bool = True) -> TrainingSet:
    directory = Path(directory)
    lineage = _parse_lineage(directory / LINEAGE_NAME)
    parquet = directory / PARQUET_NAME
    if not parquet.exists():
        raise TrainingSetError(f"{parquet}: missing")
    if verify_digest and sha256_of(parquet) != lineage.sha256:
        raise TrainingSetError(f"{parquet}: SHA-256 differs from {LINEAGE_NAME}; the lineage does not describe "
                               "this file (rebuild the training set)")
    frame = pd.read_parquet(parquet)
    missing = [c for c in (ENTITY_KEY, TIMESTAMP, LABEL, *lineage.features) if c not in frame.columns]
    if missing:
        raise TrainingSetError(f"{parquet}: columns missing: {', '.join(missing)}")
    if len(frame) != lineage.rows:
        raise TrainingSetError(f"{parquet}: {len(frame)} rows, lineage says {lineage.rows}")
    return TrainingSet(directory=directory, frame=frame, lineage=lineage)


@dataclass(frozen=True)
class Split:
    """Arrays for training and the time-based hold-out: model inputs (signed log1p, then standardised with the
    training part's moments) and the raw values (for the baseline and the logged model's input example)."""

    features: list[str]
    x_train: np.ndarray
    y_train: np.ndarray
    x_holdout: np.ndarray
    y_holdout: np.ndarray
    mean: np.ndarray
    std: np.ndarray
    cutoff: pd.Timestamp
    raw_train: np.ndarray
    raw_holdout: np.ndarray


def signed_log1p(x: np.ndarray) -> np.ndarray:
    """Compresses heavy tails (amounts, counts) so no feature dominates a standardised input; monotone, so the
    trees of the baseline, which get raw values, would split identically. FraudScorer applies the same map."""
    return np.sign(x) * np.log1p(np.abs(x))


def time_split(ts: TrainingSet, holdout_fraction: float = 0.2) -> Split:
    """Everything at or after the (1 - holdout_fraction) quantile of event time is held out.

    A random split would leak the future into training (a card's later transactions beside its earlier ones); a bank
    scores tomorrow's transactions with a model trained on yesterday's, so the hold-out is the latest slice.
    """
    if not 0.0 < holdout_fraction < 1.0:
        raise TrainingSetError(f"holdout fraction {holdout_fraction}; allowed: strictly between 0 and 1")
    frame = ts.frame
    times = pd.to_datetime(frame[TIMESTAMP], utc=True)
    cutoff = times.quantile(1.0 - holdout_fraction)
    holdout = (times >= cutoff).to_numpy()
    features = ts.lineage.features
    x = frame[features].to_numpy(dtype=np.float64)
    x = np.nan_to_num(x, nan=0.0, posinf=0.0, neginf=0.0)
    y = frame[LABEL].to_numpy().astype(np.float32)
    order = np.argsort(times.to_numpy(), kind="stable")  # a stable row order, whatever the parquet's order
    x, y, holdout = x[order], y[order], holdout[order]
    x_train, x_hold = x[~holdout], x[holdout]
    y_train, y_hold = y[~holdout], y[holdout]
    if len(y_train) == 0 or len(y_hold) == 0 or y_train.sum() == 0 or y_hold.sum() == 0:
        raise TrainingSetError(f"{ts.parquet_path}: the time split leaves a part without rows or without fraud "
                               f"(train {len(y_train)} rows/{int(y_train.sum())} fraud, hold-out {len(y_hold)}/"
                               f"{int(y_hold.sum())}); use more rows or another hold-out fraction")
    t_train, t_hold = signed_log1p(x_train), signed_log1p(x_hold)
    mean = t_train.mean(axis=0)
    std = t_train.std(axis=0)
    std[std < 1e-9] = 1.0
    return Split(features=features,
                 x_train=((t_train - mean) / std).astype(np.float32), y_train=y_train,
                 x_holdout=((t_hold - mean) / std).astype(np.float32), y_holdout=y_hold,
                 mean=mean.astype(np.float32), std=std.astype(np.float32), cutoff=cutoff,
                 raw_train=x_train.astype(np.float32), raw_holdout=x_hold.astype(np.float32))
