"""Policy-pack tests: put policies/ (the pack, self-contained) and this folder's helpers on sys.path."""

import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
for path in (HERE.parents[1] / "policies", HERE):
    if str(path) not in sys.path:
        sys.path.insert(0, str(path))
