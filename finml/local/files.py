"""Writing the local servers' files: keys, passwords, tokens and configs."""

from __future__ import annotations

import os
from pathlib import Path


def write_file(path: Path, data: bytes | str, mode: int = 0o600) -> None:
    """Write `data` to `path` with `mode` from the first byte (a secret is never readable by others, not even while
    written), through a temporary file beside it and a rename: a reader sees the old file or the new one."""
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "wb") as fh:
        fh.write(data.encode() if isinstance(data, str) else data)
    os.chmod(tmp, mode)  # the umask may have narrowed a wider mode (certificates: 0644)
    os.replace(tmp, path)
