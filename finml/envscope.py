"""Environment variables set for the length of a `with` block, then put back exactly as they were."""

from __future__ import annotations

import contextlib
import os
from typing import Iterable, Iterator, Mapping


@contextlib.contextmanager
def scoped_environ(updates: Mapping[str, str], also_restore: Iterable[str] = ()) -> Iterator[None]:
    """Set `updates` in os.environ while active; on exit every key in `updates` and `also_restore` gets its old
    value back, or is removed if it had none (also when the block raises)."""
    keys = set(updates) | set(also_restore)
    saved = {k: os.environ.get(k) for k in keys}
    os.environ.update(updates)
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
