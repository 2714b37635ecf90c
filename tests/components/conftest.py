"""Component tests: put this folder's helpers (aws_component_harness) on sys.path (pytest runs --import-mode=importlib)."""

import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))
