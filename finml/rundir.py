"""Atomic runs: one stack's plan and reports are written into a fresh directory beside their final place and swapped
in only when all of them are complete, so a report never sits beside another run's plan.

The swap is one `renameat2(RENAME_EXCHANGE)` where the kernel and file system offer it (two renames otherwise, the
old directory kept until the new one is in place), with SIGINT/SIGTERM held for its duration. Files that existed
before keep their modes. The output directory itself may be a symlink (written through: the link stays, the
directory it points to is replaced); a symlink *inside* a stack's output directory is refused, because the run
replaces that directory as a whole.
"""

from __future__ import annotations

import ctypes
import errno
import os
import shutil
import tempfile
from pathlib import Path

from finml.procs import deferred_signals

_AT_FDCWD = -100
_RENAME_EXCHANGE = 2


class OutputError(Exception):
    """An output location that cannot be used; one line naming the path and what is needed (exit 2)."""


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _exchange(a: Path, b: Path) -> bool:
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        renameat2 = libc.renameat2
    except (OSError, AttributeError):
        return False
    renameat2.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    if renameat2(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE) == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.EINVAL, errno.ENOSYS, errno.ENOTSUP):
        return False
    raise OSError(err, os.strerror(err), str(b))


def prepare_out_dir(out: Path) -> Path:
    """The directory outputs go to, created if missing; OutputError when it cannot be one."""
    shown = str(out)
    if out.exists() and not out.is_dir():
        raise OutputError(f"--out {shown}: exists and is not a directory; allowed: a directory (created if missing)")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputError(f"--out {shown}: cannot create the output directory: {exc.strerror}") from None
    if not os.access(out, os.W_OK | os.X_OK):
        raise OutputError(f"--out {shown}: the output directory is not writable")
    return out


class StagedDir:
    """Outputs of one stack: written under `.path(name)`, made visible by `commit()`, or dropped by `discard()`."""

    def __init__(self, final: Path):
        if final.is_symlink():
            final = Path(os.path.realpath(final))
        self.final = final
        if final.exists():
            if not final.is_dir():
                raise OutputError(f"{final}: exists and is not a directory; finml writes a stack's plan and "
                                  f"reports into a directory of that name")
            links = sorted(p.name for p in final.iterdir() if p.is_symlink())
            if links:
                raise OutputError(f"{final / links[0]}: is a symlink; a run replaces {final} as a whole and does "
                                  f"not follow links inside it (remove the link, or point --out elsewhere)")
        try:
            final.parent.mkdir(parents=True, exist_ok=True)
            self.stage = Path(tempfile.mkdtemp(prefix=f".{final.name}.finml-run-", dir=final.parent))
            mode = (final.stat().st_mode & 0o7777) if final.is_dir() else (0o777 & ~_umask())
            os.chmod(self.stage, mode)
        except OSError as exc:
            raise OutputError(f"{final.parent}: cannot create the run directory: {exc.strerror}") from None

    def path(self, name: str) -> Path:
        return self.stage / name

    def commit(self) -> None:
        with deferred_signals():
            if self.final.is_dir():
                for new in self.stage.iterdir():
                    old = self.final / new.name
                    if old.is_file():
                        os.chmod(new, old.stat().st_mode & 0o7777)
                if not _exchange(self.stage, self.final):
                    aside = Path(tempfile.mkdtemp(prefix=f".{self.final.name}.finml-old-", dir=self.final.parent))
                    os.rename(self.final, aside / "old")
                    os.rename(self.stage, self.final)
                    self.stage = aside
                shutil.rmtree(self.stage, ignore_errors=True)  # now the previous run's directory
            else:
                os.rename(self.stage, self.final)

    def discard(self) -> None:
        shutil.rmtree(self.stage, ignore_errors=True)
