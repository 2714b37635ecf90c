"""Session-scoped real servers shared by the ML platform's tests: one local CA and one private PostgreSQL."""

from __future__ import annotations

from pathlib import Path

import pytest

from finml.local.postgres import PrivatePostgres
from finml.local.tls import LocalCA


@pytest.fixture(scope="session")
def local_ca(tmp_path_factory: pytest.TempPathFactory) -> LocalCA:
    return LocalCA(tmp_path_factory.mktemp("ca"))


@pytest.fixture(scope="session")
def postgres(tmp_path_factory: pytest.TempPathFactory, local_ca: LocalCA):
    with PrivatePostgres(Path(tmp_path_factory.mktemp("pg")), local_ca) as pg:
        yield pg
