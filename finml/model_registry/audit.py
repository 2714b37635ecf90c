"""The registry's audit trail: append-only, hash-chained JSON lines.

Every promotion, copy and refusal appends one record. Each record carries `seq` (1, 2, …), `prev` (the previous
record's `hash`; 64 zeros for the first) and `hash` = sha256 over the record's canonical JSON without `hash`. Editing
a record breaks its hash; deleting or reordering records breaks `seq`/`prev` of the next one; `verify()` names the
first record that fails. Truncating the tail is caught by comparing with a head hash kept elsewhere (`expect_head`:
on AWS the copy of each record in the site's S3 Object Lock bucket, which nobody can overwrite or delete — see
`audit_bucket.py`).

Appends take an exclusive `flock` on the log, read the current head and write one line with a single `write()`
followed by `fsync`, so concurrent writers (processes or threads) never interleave or lose a record.
"""

from __future__ import annotations

import datetime as dt
import fcntl
import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

GENESIS = "0" * 64
FORMAT = "finml-audit/1"
TAIL_CHUNK = 65536


def _canonical(record: dict[str, Any]) -> bytes:
    return json.dumps(record, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def record_hash(record: dict[str, Any]) -> str:
    return hashlib.sha256(_canonical({k: v for k, v in record.items() if k != "hash"})).hexdigest()


def _last_line(fh) -> bytes | None:
    """The last complete line of an open binary file (None when empty), read from the end."""
    end = fh.seek(0, os.SEEK_END)
    if end == 0:
        return None
    pos, buf = end, b""
    while pos > 0:
        step = min(TAIL_CHUNK, pos)
        pos -= step
        fh.seek(pos)
        buf = fh.read(step) + buf
        body = buf.rstrip(b"\n")
        idx = body.rfind(b"\n")
        if idx >= 0:
            return body[idx + 1:]
    return buf.rstrip(b"\n") or None


class AuditLog:
    def __init__(self, path: Path) -> None:
        self.path = Path(path)

    def append(self, event: dict[str, Any]) -> dict[str, Any]:
        """Chain `event` onto the log and return the full record written (with seq, time, prev, hash)."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o640)
        with os.fdopen(fd, "r+b") as fh:
            fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
            try:
                last = _last_line(fh)
                if last is None:
                    seq, prev = 1, GENESIS
                else:
                    try:
                        head = json.loads(last)
                        seq, prev = int(head["seq"]) + 1, str(head["hash"])
                    except (ValueError, KeyError, TypeError):
                        raise AuditError(f"{self.path}: the last record is not a valid audit record; run "
                                         f"`finml model audit-log verify` — refusing to extend a broken chain"
                                         ) from None
                record = {"format": FORMAT, "seq": seq,
                          "time": dt.datetime.now(dt.timezone.utc).isoformat(timespec="microseconds"),
                          **{k: v for k, v in event.items() if k not in ("format", "seq", "time", "prev", "hash")},
                          "prev": prev}
                record["hash"] = record_hash(record)
                fh.seek(0, os.SEEK_END)
                fh.write(_canonical(record) + b"\n")
                fh.flush()
                os.fsync(fh.fileno())
            finally:
                fcntl.flock(fh.fileno(), fcntl.LOCK_UN)
        return record

    def records(self) -> list[dict[str, Any]]:
        with open(self.path, "rb") as fh:
            return [json.loads(line) for line in fh if line.strip()]


class AuditError(RuntimeError):
    pass


@dataclass(frozen=True)
class VerifyResult:
    ok: bool
    records: int
    head: str
    bad_line: int | None = None      # 1-based line number of the first bad record
    bad_seq: int | None = None
    reason: str = ""

    def message(self, path: Path) -> str:
        if self.ok:
            return f"{path}: ok — {self.records} record(s), chain intact, head {self.head}"
        seq = f" (seq {self.bad_seq})" if self.bad_seq is not None else ""
        return f"{path}: line {self.bad_line}{seq}: {self.reason}"


def verify(path: Path, expect_head: str | None = None) -> VerifyResult:
    """Check every record's hash and link; the first failure is reported (line number, seq, why)."""
    prev, expected_seq, count = GENESIS, 1, 0
    with open(path, "rb") as fh:
        for lineno, raw in enumerate(fh, start=1):
            if not raw.strip():
                return VerifyResult(False, count, prev, lineno, None, "empty line inside the log")
            try:
                record = json.loads(raw)
                if not isinstance(record, dict):
                    raise ValueError("not an object")
            except ValueError as exc:
                return VerifyResult(False, count, prev, lineno, None, f"not a JSON record ({exc})")
            seq = record.get("seq")
            if record.get("hash") != record_hash(record):
                return VerifyResult(False, count, prev, lineno, seq, "hash does not match the record's content "
                                                                     "(the record was edited)")
            if record.get("prev") != prev or seq != expected_seq:
                why = (f"expected seq {expected_seq} linked to {prev[:16]}…, found seq {seq} linked to "
                       f"{str(record.get('prev'))[:16]}… (a record before it was removed, or records were reordered)")
                return VerifyResult(False, count, prev, lineno, seq if isinstance(seq, int) else None, why)
            prev, expected_seq, count = record["hash"], expected_seq + 1, count + 1
    if expect_head is not None and prev != expect_head:
        return VerifyResult(False, count, prev, count + 1, None,
                            f"log ends at head {prev} but {expect_head} was expected (records were removed from "
                            f"the end)")
    return VerifyResult(True, count, prev)
