"""Training tests: this folder's harness importable; one training set per session from the generator and builder."""

import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
for path in (HERE.parents[1], HERE):
    if str(path) not in sys.path:
        sys.path.insert(0, str(path))

import pytest  # noqa: E402 — after the sys.path set-up above

from training_harness import build_fraud_training_set  # noqa: E402


@pytest.fixture(scope="session")
def fraud_training_set(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_fraud_training_set(tmp_path_factory.mktemp("feature-store"))
