"""Workload tests: make the repository root and this folder's harness importable however pytest is started."""

import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
for path in (HERE.parents[1], HERE):
    if str(path) not in sys.path:
        sys.path.insert(0, str(path))

import pytest  # noqa: E402 — after the sys.path set-up above

from workloads_harness import STACK_FILES, RecordingMonitor, deployed_stack  # noqa: E402


STACK_NAMES = [p.name.removeprefix("Pulumi.").removesuffix(".yaml") for p in STACK_FILES]


@pytest.fixture(params=STACK_NAMES)
def any_stack(request) -> tuple[str, RecordingMonitor]:
    return request.param, deployed_stack(request.param)


@pytest.fixture
def hybrid() -> RecordingMonitor:
    return deployed_stack("hybrid-prod")
