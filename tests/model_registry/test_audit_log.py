"""The hash-chained audit log: concurrent writers lose nothing; edits, deletions and reorderings are named."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from registry_helpers import run_cli

from finml.model_registry.audit import AuditLog, verify

WRITER = """
import sys
sys.path.insert(0, {root!r})
from finml.model_registry.audit import AuditLog
log = AuditLog({path!r})
for i in range({n}):
    log.append({{"action": "promote", "decision": "allowed" if i % 2 else "refused", "writer": {w}, "i": i}})
"""


def fill(path: Path, n: int = 5) -> None:
    log = AuditLog(path)
    for i in range(n):
        log.append({"action": "promote", "decision": "refused", "i": i})


def test_concurrent_processes_lose_no_record(tmp_path):
    path = tmp_path / "audit.jsonl"
    root = str(Path(__file__).resolve().parents[2])
    procs = [subprocess.Popen([sys.executable, "-c", WRITER.format(root=root, path=str(path), n=20, w=w)])
             for w in range(10)]
    assert all(p.wait(timeout=120) == 0 for p in procs)
    result = verify(path)
    assert result.ok and result.records == 200
    records = AuditLog(path).records()
    assert sorted((r["writer"], r["i"]) for r in records) == [(w, i) for w in range(10) for i in range(20)]
    assert [r["seq"] for r in records] == list(range(1, 201))


@pytest.mark.parametrize("tamper, bad_line", [
    ("edit", 3), ("delete", 3), ("reorder", 2), ("truncate-json", 4),
])
def test_tampering_is_detected_at_the_first_bad_record(tmp_path, tamper, bad_line):
    path = tmp_path / "audit.jsonl"
    fill(path)
    lines = path.read_text().splitlines()
    if tamper == "edit":
        rec = json.loads(lines[2])
        rec["decision"] = "allowed"
        lines[2] = json.dumps(rec, sort_keys=True, separators=(",", ":"))
    elif tamper == "delete":
        del lines[2]
    elif tamper == "reorder":
        lines[1], lines[2] = lines[2], lines[1]
    else:
        lines[3] = lines[3][:40]
    path.write_text("\n".join(lines) + "\n")
    result = verify(path)
    assert not result.ok and result.bad_line == bad_line, result
    proc = run_cli("model", "audit-log", "verify", "--audit-log", str(path), env=None)
    assert proc.returncode == 1 and f"line {bad_line}" in proc.stderr, proc.stderr


def test_edit_with_a_recomputed_hash_still_breaks_the_chain(tmp_path):
    from finml.model_registry.audit import record_hash

    path = tmp_path / "audit.jsonl"
    fill(path)
    lines = path.read_text().splitlines()
    rec = json.loads(lines[1])
    rec["decision"] = "allowed"
    rec["hash"] = record_hash(rec)
    lines[1] = json.dumps(rec)
    path.write_text("\n".join(lines) + "\n")
    result = verify(path)
    assert not result.ok and result.bad_line == 3 and "removed" in result.reason


def test_removal_from_the_end_needs_the_head(tmp_path):
    path = tmp_path / "audit.jsonl"
    fill(path)
    head = verify(path).head
    path.write_text("\n".join(path.read_text().splitlines()[:-1]) + "\n")
    assert verify(path).ok
    assert not verify(path, expect_head=head).ok
    proc = run_cli("model", "audit-log", "verify", "--audit-log", str(path), "--expect-head", head, env=None)
    assert proc.returncode == 1 and "removed from the end" in proc.stderr
    ok = run_cli("model", "audit-log", "verify", "--audit-log", str(path), env=None)
    assert ok.returncode == 0 and "4 record(s)" in ok.stdout


def test_a_broken_tail_is_not_extended(tmp_path):
    from finml.model_registry.audit import AuditError

    path = tmp_path / "audit.jsonl"
    fill(path, 2)
    with open(path, "a") as fh:
        fh.write("garbage\n")
    with pytest.raises(AuditError):
        AuditLog(path).append({"action": "promote"})


def test_missing_log_is_bad_input(tmp_path):
    proc = run_cli("model", "audit-log", "verify", "--audit-log", str(tmp_path / "none.jsonl"), env=None)
    assert proc.returncode == 2 and "not found" in proc.stderr
