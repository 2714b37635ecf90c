"""An offline-only Feast store (file registry, SQLite online store) for point-in-time tests: no servers needed."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest


def offline_feature_store(directory: Path, transactions: pd.DataFrame, entities: dict[str, pd.DataFrame],
                          *, site: str = "onprem:fra-dc1", allowed: str = "restricted"):
    from feast import FeatureStore, RepoConfig
    from feast.repo_config import RegistryConfig

    from workloads.feature_repo.catalog import PROJECT
    from workloads.feature_repo.definitions import feature_objects
    from workloads.feature_repo.sources import write_offline_store

    write_offline_store(directory / "offline", transactions, entities)
    config = RepoConfig(project=PROJECT, provider="local", repo_path=str(directory),
                        registry=RegistryConfig(path=str(directory / "registry.db")),
                        online_store={"type": "sqlite", "path": str(directory / "online.db")},
                        offline_store={"type": "file"}, entity_key_serialization_version=3)
    store = FeatureStore(config=config)
    store.apply(feature_objects(site=site, offline_uri=str(directory / "offline"), allowed=allowed))
    return store


@pytest.fixture
def make_offline_store(tmp_path: Path):
    return lambda tx, ents, **kw: offline_feature_store(tmp_path, tx, ents, **kw)
