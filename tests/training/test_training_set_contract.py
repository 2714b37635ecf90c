"""train.py reads exactly the finml-training-set/1 files and refuses anything that disagrees with its lineage."""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pandas as pd
import pytest

from workloads.reference.data import TrainingSetError, load_training_set, time_split


def write_set(directory, n_rows=400, **lineage_changes):
    rows = n_rows
    rng = np.random.default_rng(0)
    frame = pd.DataFrame({
        "card_id": [f"c{i % 40}" for i in range(rows)],
        "event_timestamp": pd.date_range("2026-01-01", periods=rows, freq="h", tz="UTC"),
        "is_fraud": (np.arange(rows) % 25 == 0).astype("int64"),
        "amount": rng.lognormal(3, 1, rows), "card_present": rng.integers(0, 2, rows),
    })
    directory.mkdir(parents=True, exist_ok=True)
    frame.to_parquet(directory / "training_set.parquet")
    lineage = {"format": "finml-training-set/1", "site": "onprem:fra-dc1",
               "feature_views": [{"name": "transactions", "classification": "confidential",
                                  "features": ["is_fraud", "amount", "card_present"]}],
               "classification": "confidential", "rows": rows,
               "sha256": hashlib.sha256((directory / "training_set.parquet").read_bytes()).hexdigest()}
    lineage.update(lineage_changes)
    (directory / "training_set.lineage.json").write_text(json.dumps(lineage))
    return directory


def test_the_label_listed_in_its_source_view_is_never_a_feature(tmp_path):
    ts = load_training_set(write_set(tmp_path / "ok"))
    assert ts.lineage.features == ["amount", "card_present"]
    split = time_split(ts)
    assert split.x_train.shape[1] == 2 and len(split.y_holdout) == 80
    assert split.cutoff <= pd.Timestamp(ts.frame["event_timestamp"].max())  # the hold-out is the latest slice


@pytest.mark.parametrize(("changes", "message"), [
    ({"format": "other/1"}, "format: expected 'finml-training-set/1'"),
    ({"rows": 7}, "400 rows, lineage says 7"),
    ({"sha256": "0" * 64}, "SHA-256 differs"),
    ({"classification": "internal"}, "classification: 'internal' is not the highest of its feature views"),
    ({"feature_views": [{"name": "v", "classification": "secret", "features": ["amount"]}]},
     "feature_views[0].classification: 'secret'; allowed: public, internal, confidential, restricted"),
    ({"feature_views": [{"name": "v", "classification": "confidential", "features": ["nope"]}]},
     "columns missing: nope"),
])
def test_a_set_that_disagrees_with_its_lineage_is_refused_naming_the_file(tmp_path, changes, message):
    directory = write_set(tmp_path / "bad", **changes)
    with pytest.raises(TrainingSetError) as info:
        load_training_set(directory)
    assert message in str(info.value) and str(directory) in str(info.value)


def test_a_missing_lineage_file_is_named(tmp_path):
    directory = write_set(tmp_path / "x")
    (directory / "training_set.lineage.json").unlink()
    with pytest.raises(TrainingSetError, match="training_set.lineage.json: missing"):
        load_training_set(directory)
