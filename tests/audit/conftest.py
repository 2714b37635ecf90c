"""A moto server (server mode, 127.0.0.1, free port) seeded once per session."""

from __future__ import annotations

import pytest

from finml.audit.moto_seed import MotoServer, seed_account


@pytest.fixture(scope="session")
def moto():
    with MotoServer() as server:
        yield server


@pytest.fixture(scope="session")
def seeded(moto):
    return seed_account(moto)
