"""Property-based fuzzing of every file kind the CLI reads: arbitrary byte edits and structured edits of the shipped
files. Whatever the input, finml exits 0/1 with a correct verdict or 2 with a message naming the file — never a
traceback, never exit 3 ("internal error"). Example counts stay modest so the suite stays fast; derandomized so a
failure reproduces.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.tree_edits import apply_tree
from cli_harness import MINI_PACK, ROOT, make_project, run_inprocess

TINY_PLAN = ROOT / "tests" / "fixtures" / "plans" / "tiny.json"
FUZZ = settings(max_examples=25, deadline=None, derandomize=True, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture,
                                       HealthCheck.data_too_large])
FEW = settings(FUZZ, max_examples=12)  # kinds whose valid mutants start the policy pack (about a second each)

# ------------------------------------------------------------------------------------------------ mutations

byte_edit = st.one_of(
    st.tuples(st.just("set"), st.integers(0, 1 << 20), st.integers(0, 255)),
    st.tuples(st.just("insert"), st.integers(0, 1 << 20), st.binary(min_size=1, max_size=8)),
    st.tuples(st.just("delete"), st.integers(0, 1 << 20), st.integers(1, 64)),
    st.tuples(st.just("truncate"), st.integers(0, 1 << 20), st.just(0)),
    st.tuples(st.just("dup-line"), st.integers(0, 1 << 20), st.just(0)),
    st.tuples(st.just("insert"), st.integers(0, 1 << 20), st.sampled_from(
        [b"\xff", b"\x00", b"&a ", b"*a", b"!!python/name:os.system ", b"\t", b"{", b"[", b"]", b"}", b"\"", b":",
         b"\n- ", b"<<: *a\n", b"\xed\xa0\x80", b"\\ud800", b"NaN", b"1e999", b"-", b"~"])),
)


def apply_bytes(data: bytes, edits: list) -> bytes:
    for op, pos, arg in edits:
        pos = pos % (len(data) + 1)
        if op == "set" and data:
            pos = min(pos, len(data) - 1)
            data = data[:pos] + bytes([arg]) + data[pos + 1:]
        elif op == "insert":
            data = data[:pos] + arg + data[pos:]
        elif op == "delete":
            data = data[:pos] + data[pos + arg:]
        elif op == "truncate":
            data = data[:pos]
        elif op == "dup-line":
            lines = data.split(b"\n")
            i = pos % len(lines)
            lines.insert(i, lines[i])
            data = b"\n".join(lines)
    return data


junk = st.one_of(st.none(), st.booleans(), st.integers(-(2 ** 70), 2 ** 70), st.floats(allow_nan=False),
                 st.text(max_size=12), st.lists(st.integers(), max_size=3),
                 st.dictionaries(st.text(max_size=5), st.integers(), max_size=2),
                 st.sampled_from(["", "urn:pulumi:dev::finml::pulumi:pulumi:Stack::finml-dev", "pulumi:pulumi:Stack",
                                  "/dev/nvme1n1", "onprem:fra-dc1", "aws:us-east-1", "H100:80GB:8", "finml:x"]))
tree_edit = st.tuples(st.sampled_from(["drop", "replace", "add", "copy"]), st.integers(0, 100_000), junk)


def check(result, shown: str, allowed=(0, 2)) -> None:
    text = result.stderr
    assert "Traceback" not in text, text
    assert "internal error" not in text, text
    assert result.returncode in allowed, f"exit {result.returncode}:\n{text[-3000:]}"
    if result.returncode == 2:
        assert shown in text, f"the message does not name {shown}:\n{text[-3000:]}"


# ------------------------------------------------------------------------------------------------ stack files

STACK_TEXT = {name: (ROOT / "stacks" / f"Pulumi.{name}.yaml").read_bytes() for name in ("dev", "onprem-dc1")}


@pytest.fixture(scope="module")
def fuzz_project(tmp_path_factory) -> Path:
    return make_project(tmp_path_factory.mktemp("fuzz"), {"dev": STACK_TEXT["dev"].decode()}, with_profiles=True)


def _stack_check(project: Path, data: bytes, command: tuple[str, ...] = ("config", "check")):
    target = project / "stacks" / "Pulumi.fuzzed.yaml"
    target.write_bytes(data)
    return run_inprocess("--cwd", str(project), *command, "--stack", "fuzzed"), str(target)


@FUZZ
@given(stack=st.sampled_from(sorted(STACK_TEXT)), edits=st.lists(byte_edit, min_size=1, max_size=4))
def test_stack_file_byte_mutations(fuzz_project, stack, edits):
    result, shown = _stack_check(fuzz_project, apply_bytes(STACK_TEXT[stack], edits))
    check(result, shown)


@FUZZ
@given(stack=st.sampled_from(sorted(STACK_TEXT)), edits=st.lists(tree_edit, min_size=1, max_size=3))
def test_stack_file_structure_mutations(fuzz_project, stack, edits):
    doc = apply_tree(yaml.safe_load(STACK_TEXT[stack]), edits)
    result, shown = _stack_check(fuzz_project, yaml.safe_dump(doc, sort_keys=False).encode())
    check(result, shown)


@FUZZ
@given(edits=st.lists(st.one_of(byte_edit.filter(lambda e: e[0] != "truncate"), tree_edit), min_size=1, max_size=3))
def test_inventory_input_mutations(fuzz_project, edits):
    """`finml inventory` reads the on-prem stack file (nodes, disks, MIG layouts) and writes Ansible's inventory."""
    data = STACK_TEXT["onprem-dc1"]
    tree = [e for e in edits if e[0] in ("drop", "replace", "add", "copy")]
    if tree:
        data = yaml.safe_dump(apply_tree(yaml.safe_load(data), tree), sort_keys=False).encode()
    data = apply_bytes(data, [e for e in edits if e[0] not in ("drop", "replace", "add", "copy")])
    result, shown = _stack_check(fuzz_project, data, ("inventory",))
    check(result, shown)
    if result.returncode == 0:
        assert isinstance(yaml.safe_load(result.stdout), dict)


# ------------------------------------------------------------------------------------------------ GPU profiles

T4 = (ROOT / "gpu_profiles" / "T4.yaml").read_bytes()


@FUZZ
@given(edits=st.lists(st.one_of(byte_edit, tree_edit), min_size=1, max_size=3))
def test_gpu_profile_mutations(fuzz_project, edits):
    data = T4
    tree = [e for e in edits if e[0] in ("drop", "replace", "add", "copy")]
    if tree:
        data = yaml.safe_dump(apply_tree(yaml.safe_load(data), tree), sort_keys=False).encode()
    data = apply_bytes(data, [e for e in edits if e[0] not in ("drop", "replace", "add", "copy")])
    (fuzz_project / "gpu_profiles" / "T4.yaml").write_bytes(data)
    try:
        result = run_inprocess("--cwd", str(fuzz_project), "config", "check", "--stack", "dev")
    finally:
        (fuzz_project / "gpu_profiles" / "T4.yaml").write_bytes(T4)
    check(result, "T4.yaml")


@FUZZ
@given(edits=st.lists(byte_edit, min_size=1, max_size=3))
def test_project_file_mutations(fuzz_project, edits):
    original = (fuzz_project / "Pulumi.yaml").read_bytes()
    (fuzz_project / "Pulumi.yaml").write_bytes(apply_bytes(original, edits))
    try:
        result = run_inprocess("--cwd", str(fuzz_project), "config", "check", "--stack", "dev")
    finally:
        (fuzz_project / "Pulumi.yaml").write_bytes(original)
    check(result, "Pulumi.yaml")


# ------------------------------------------------------------------------------------------------ plans

PLAN = TINY_PLAN.read_bytes()


def expected_verdict(data: bytes) -> int:
    """The mini pack's rule, independently: a KMS key whose rotation is not exactly true is a violation."""
    doc = json.loads(data)
    return int(any(r["type"] == "aws:kms/key:Key" and r["props"].get("enableKeyRotation") is not True
                   for r in doc["resources"]))


def _plan_check(tmp: Path, data: bytes):
    plan = tmp / "fuzzed-plan.json"
    plan.write_bytes(data)
    cfg = tmp / "cfg.json"
    cfg.write_text("{}")
    return run_inprocess("--cwd", str(ROOT), "policy", "check", "--plan", str(plan), "--pack", str(MINI_PACK),
                         "--policy-config", str(cfg)), str(plan)


@FEW
@given(edits=st.lists(byte_edit, min_size=1, max_size=4))
def test_plan_byte_mutations(tmp_path, edits):
    data = apply_bytes(PLAN, edits)
    result, shown = _plan_check(tmp_path, data)
    check(result, shown, allowed=(0, 1, 2))
    if result.returncode in (0, 1):
        assert result.returncode == expected_verdict(data), result.stdout


@FEW
@given(edits=st.lists(tree_edit, min_size=1, max_size=3))
def test_plan_structure_mutations(tmp_path, edits):
    data = json.dumps(apply_tree(json.loads(PLAN), edits)).encode()
    result, shown = _plan_check(tmp_path, data)
    check(result, shown, allowed=(0, 1, 2))
    if result.returncode in (0, 1):
        assert result.returncode == expected_verdict(data), result.stdout


# ------------------------------------------------------------------------------------------------ policy config

POLICY_CONFIG = json.dumps({"kms-rotation": {"enforcementLevel": "mandatory"}, "all": "mandatory"}).encode()


@FEW
@given(edits=st.lists(st.one_of(byte_edit, tree_edit), min_size=1, max_size=3))
def test_policy_config_mutations(tmp_path, edits):
    data = POLICY_CONFIG
    tree = [e for e in edits if e[0] in ("drop", "replace", "add", "copy")]
    if tree:
        data = json.dumps(apply_tree(json.loads(data), tree)).encode()
    data = apply_bytes(data, [e for e in edits if e[0] not in ("drop", "replace", "add", "copy")])
    cfg = tmp_path / "fuzzed-config.json"
    cfg.write_bytes(data)
    result = run_inprocess("--cwd", str(ROOT), "policy", "check", "--plan", str(TINY_PLAN), "--pack", str(MINI_PACK),
                           "--policy-config", str(cfg))
    check(result, "fuzzed-config.json", allowed=(0, 2))
