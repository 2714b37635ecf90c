#!/usr/bin/env python3
"""finml GPU probe: what GPUs does this node have, and do they match its GPU profile?

Runs as ``python -m finml.gpu_probe``, as ``finml gpu probe`` and as a standalone script copied to a bare-metal node
(Ansible installs it as /usr/local/libexec/finml/gpu_probe.py and uses ``--json`` output as a local fact). It therefore
imports only the standard library, ``pynvml`` (nvidia-ml-py, lazily) and, for ``--profiles-dir``, PyYAML.

Exit codes: 0 ok; 1 NVML failed while probing; 2 bad arguments or profile/scenario file; 3 no NVML on this host
(driver or libnvidia-ml.so.1 missing); 4 the GPUs do not match ``--expect-profile``.

Test hook: with ``FINML_FAKE_NVML=/path/scenario.json`` the probe answers from ``fake_nvml`` (a file next to this one,
or ``finml.fake_nvml``) instead of the real NVML, so hosts without GPUs can exercise it.
"""

from __future__ import annotations

import argparse
import copy
import importlib.util
import json
import os
import re
import sys
from pathlib import Path
from typing import Any, Dict, Iterable, List, Optional, Sequence

SCHEMA = "finml-gpu-probe/1"
PROG = "finml gpu probe"
FAKE_NVML_ENV = "FINML_FAKE_NVML"

EXIT_OK = 0
EXIT_NVML_ERROR = 1
EXIT_USAGE = 2
EXIT_NO_NVML = 3
EXIT_MISMATCH = 4

#: In-repo default for --profiles-dir: gpu_profiles/ beside the finml package.
DEFAULT_PROFILES_DIR = Path(__file__).resolve().parent.parent / "gpu_profiles"

# NVML error codes (nvml.h); compared by number so the real pynvml and the fake behave the same.
_NVML_ERROR_NOT_SUPPORTED = 3
_NVML_ERROR_INVALID_ARGUMENT = 2
_NVML_ERROR_NOT_FOUND = 6
_NVML_ERROR_FUNCTION_NOT_FOUND = 13
_NO_NVML_REASONS = {
    4: "no permission to open the NVIDIA devices",
    9: "NVIDIA kernel driver not loaded",
    12: "libnvidia-ml.so.1 not found",
    18: "libnvidia-ml.so.1 does not match the loaded kernel driver version",
}

# A reported memory size matches a profile when it lies within this fraction of the profile's marketing GB:
# NVML reports e.g. 15360 MiB for a 16 GB T4 with ECC on, 143771 MiB for a 141 GB H200.
_MEMORY_MATCH_LOW = 0.90
_MEMORY_MATCH_HIGH = 1.02
_MIG_NAME_RE = re.compile(r"\bMIG\s+([1-8]g\.[0-9]+gb(?:\+[a-z]+)*)\s*$", re.IGNORECASE)


class NvmlUnavailable(Exception):
    """NVML cannot be used on this host (library or driver missing); ``reason`` says why."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class ProbeUsageError(Exception):
    """Bad arguments, profile file or fake-NVML scenario (exit 2)."""


class ProbeError(Exception):
    """NVML failed in the middle of probing (exit 1)."""


# ----------------------------------------------------------------------------------------------------- NVML access


def _is_nvml_error(exc: BaseException) -> bool:
    return type(exc).__name__.startswith("NVMLError") and isinstance(getattr(exc, "value", None), int)


def _nvml_code(exc: BaseException) -> Optional[int]:
    return getattr(exc, "value", None) if _is_nvml_error(exc) else None


def _load_fake_nvml(scenario_path: str) -> Any:
    """The fake NVML for ``FINML_FAKE_NVML``: prefer fake_nvml.py beside this file (standalone copies), then the package."""
    module = None
    sibling = Path(__file__).resolve().parent / "fake_nvml.py"
    if sibling.is_file():
        spec = importlib.util.spec_from_file_location("_finml_fake_nvml", sibling)
        if spec is not None and spec.loader is not None:
            module = importlib.util.module_from_spec(spec)
            spec.loader.exec_module(module)
    if module is None:
        try:
            from finml import fake_nvml as module  # type: ignore[no-redef]
        except ImportError:
            raise ProbeUsageError(
                "%s is set but fake_nvml.py is neither next to %s nor importable as finml.fake_nvml" % (FAKE_NVML_ENV, Path(__file__).name)
            ) from None
    try:
        return module.load_scenario(scenario_path)
    except ValueError as exc:
        raise ProbeUsageError(str(exc)) from None


def load_nvml() -> Any:
    """The NVML binding to use: the fake when ``FINML_FAKE_NVML`` is set, else ``pynvml``."""
    scenario = os.environ.get(FAKE_NVML_ENV)
    if scenario:
        return _load_fake_nvml(scenario)
    try:
        import pynvml  # noqa: PLC0415 - lazy: the module must import on hosts without it
    except ImportError:
        raise NvmlUnavailable("nvidia-ml-py (pynvml) is not installed") from None
    return pynvml


def _text(value: Any) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


def _optional(function: Any, *args: Any) -> Any:
    """Call an NVML query; None when the GPU or driver does not support it."""
    try:
        return function(*args)
    except Exception as exc:
        if _nvml_code(exc) in (_NVML_ERROR_NOT_SUPPORTED, _NVML_ERROR_FUNCTION_NOT_FOUND):
            return None
        raise


def _mode(value: Optional[int]) -> str:
    if value is None:
        return "unsupported"
    return "enabled" if int(value) else "disabled"


def _cuda_driver_version(nvml: Any) -> Optional[str]:
    for name in ("nvmlSystemGetCudaDriverVersion_v2", "nvmlSystemGetCudaDriverVersion"):
        function = getattr(nvml, name, None)
        if function is None:
            continue
        value = _optional(function)
        if value is not None:
            value = int(value)
            return "%d.%d" % (value // 1000, (value % 1000) // 10)
    return None


def _mib(total_bytes: int) -> int:
    return int(total_bytes) // (1024 * 1024)


def _gib(total_bytes: int) -> float:
    return round(int(total_bytes) / 1024 ** 3, 1)


def _mig_instances(nvml: Any, handle: Any) -> List[Dict[str, Any]]:
    instances = []
    for slot in range(int(nvml.nvmlDeviceGetMaxMigDeviceCount(handle))):
        try:
            mig = nvml.nvmlDeviceGetMigDeviceHandleByIndex(handle, slot)
        except Exception as exc:
            if _nvml_code(exc) in (_NVML_ERROR_NOT_FOUND, _NVML_ERROR_INVALID_ARGUMENT):
                continue  # empty slot
            raise
        name = _text(nvml.nvmlDeviceGetName(mig))
        match = _MIG_NAME_RE.search(name)
        memory = nvml.nvmlDeviceGetMemoryInfo(mig).total
        instances.append(
            {
                "index": slot,
                "uuid": _text(nvml.nvmlDeviceGetUUID(mig)),
                "profile": match.group(1).lower() if match else None,
                "gpu_instance_id": _optional(nvml.nvmlDeviceGetGpuInstanceId, mig),
                "compute_instance_id": _optional(nvml.nvmlDeviceGetComputeInstanceId, mig),
                "memory_total_mib": _mib(memory),
                "memory_total_gib": _gib(memory),
            }
        )
    return instances


def _probe_gpu(nvml: Any, index: int) -> Dict[str, Any]:
    handle = nvml.nvmlDeviceGetHandleByIndex(index)
    memory = nvml.nvmlDeviceGetMemoryInfo(handle).total
    mig_mode = _optional(nvml.nvmlDeviceGetMigMode, handle)
    mig_current, mig_pending = (mig_mode[0], mig_mode[1]) if mig_mode is not None else (None, None)
    ecc = _optional(nvml.nvmlDeviceGetEccMode, handle)
    return {
        "index": index,
        "uuid": _text(nvml.nvmlDeviceGetUUID(handle)),
        "name": _text(nvml.nvmlDeviceGetName(handle)),
        "memory_total_mib": _mib(memory),
        "memory_total_gib": _gib(memory),
        "mig_mode_current": _mode(mig_current),
        "mig_mode_pending": _mode(mig_pending),
        "mig_instances": _mig_instances(nvml, handle) if mig_current else [],
        "ecc_mode_current": _mode(ecc[0] if ecc is not None else None),
        "persistence_mode": _mode(_optional(nvml.nvmlDeviceGetPersistenceMode, handle)),
    }


def probe(nvml: Any = None) -> Dict[str, Any]:
    """Collect driver and per-GPU facts through ``nvml`` (default: ``pynvml``, or the fake under ``FINML_FAKE_NVML``).

    Raises :class:`NvmlUnavailable` when NVML cannot start on this host and :class:`ProbeError` when a query fails.
    """
    if nvml is None:
        nvml = load_nvml()
    try:
        nvml.nvmlInit()
    except Exception as exc:
        code = _nvml_code(exc)
        if code is None:
            raise
        raise NvmlUnavailable(_NO_NVML_REASONS.get(code, "%s (NVML error %d)" % (exc, code))) from None
    gpu_index: Optional[int] = None
    try:
        driver_version = _text(nvml.nvmlSystemGetDriverVersion())
        cuda_driver_version = _cuda_driver_version(nvml)
        gpus = []
        for gpu_index in range(int(nvml.nvmlDeviceGetCount())):
            gpus.append(_probe_gpu(nvml, gpu_index))
    except Exception as exc:
        if _nvml_code(exc) is None:
            raise
        where = " on GPU %d" % gpu_index if gpu_index is not None else ""
        raise ProbeError("NVML error%s: %s" % (where, exc)) from None
    finally:
        try:
            nvml.nvmlShutdown()
        except Exception as exc:  # a failed shutdown must not hide the probe result
            if _nvml_code(exc) is None:
                raise
    return {
        "schema": SCHEMA,
        "nvml_available": True,
        "driver_version": driver_version,
        "cuda_driver_version": cuda_driver_version,
        "gpu_count": len(gpus),
        "gpus": gpus,
    }


# ----------------------------------------------------------------------------------------------------- profiles


def _profile_dict(profile: Any) -> Dict[str, Any]:
    if hasattr(profile, "model_dump"):  # a gpu_profiles.GpuProfile
        return profile.model_dump(mode="json")
    return dict(profile)


def _profile_list(profiles: Any) -> List[Dict[str, Any]]:
    if profiles is None:
        return []
    if isinstance(profiles, dict):
        profiles = profiles.values()
    return [_profile_dict(p) for p in profiles]


def _check_profile_entries(entries: Any, source: str) -> List[Dict[str, Any]]:
    """The few fields the probe needs, checked so a bad file fails with its name and key (exit 2)."""
    if not isinstance(entries, list):
        raise ProbeUsageError("%s: must hold a JSON list of GPU profiles, got %s" % (source, type(entries).__name__))
    checked = []
    for position, entry in enumerate(entries):
        where = "%s: [%d]" % (source, position)
        if not isinstance(entry, dict):
            raise ProbeUsageError("%s: each profile must be an object, got %s" % (where, type(entry).__name__))
        if not isinstance(entry.get("name"), str) or not entry["name"]:
            raise ProbeUsageError("%s.name: required, a non-empty string such as 'H100-80GB'" % where)
        memory = entry.get("memory_gib")
        if isinstance(memory, bool) or not isinstance(memory, int) or memory < 1:
            raise ProbeUsageError("%s.memory_gib: required, a positive integer (GB), got %r" % (where, memory))
        names = entry.get("nvml_product_names")
        if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
            raise ProbeUsageError("%s.nvml_product_names: required, a list of strings" % where)
        checked.append(entry)
    return checked


def load_profiles_json(path: str) -> List[Dict[str, Any]]:
    """Profiles from a JSON list of profile objects (the YAML fields; see ``gpu_profiles.profiles_to_json``)."""
    try:
        with open(path, encoding="utf-8") as handle:
            entries = json.load(handle)
    except OSError as exc:
        raise ProbeUsageError("%s: cannot read profiles: %s" % (path, exc.strerror or exc)) from None
    except ValueError as exc:
        raise ProbeUsageError("%s: invalid JSON: %s" % (path, exc)) from None
    return _check_profile_entries(entries, path)


def load_profiles_dir(directory: str) -> List[Dict[str, Any]]:
    """Profiles from the ``*.yaml`` files of a directory (needs PyYAML)."""
    root = Path(directory)
    if not root.is_dir():
        raise ProbeUsageError("%s: profiles directory does not exist" % directory)
    try:
        import yaml  # noqa: PLC0415 - optional dependency
    except ImportError:
        raise ProbeUsageError("PyYAML is not installed; use --profiles-json instead of --profiles-dir") from None
    entries = []
    for file in sorted(root.glob("*.yaml")):
        try:
            entry = yaml.safe_load(file.read_text(encoding="utf-8"))
        except (OSError, yaml.YAMLError) as exc:
            raise ProbeUsageError("%s: cannot read GPU profile: %s" % (file, str(exc).splitlines()[0])) from None
        entries.extend(_check_profile_entries([entry], str(file)))
    if not entries:
        raise ProbeUsageError("%s: no GPU profiles (*.yaml) found" % directory)
    return entries


def _memory_matches(reported_mib: int, memory_gib: int) -> bool:
    ratio = (reported_mib / 1024.0) / memory_gib
    return _MEMORY_MATCH_LOW <= ratio <= _MEMORY_MATCH_HIGH


def _match_gpu(gpu: Dict[str, Any], profiles: List[Dict[str, Any]]) -> Dict[str, Optional[str]]:
    product = gpu["name"].strip().lower()
    for profile in profiles:
        if product in (n.strip().lower() for n in profile["nvml_product_names"]):
            return {"profile": profile["name"], "profile_match": "product_name"}
    by_memory = [p for p in profiles if _memory_matches(gpu["memory_total_mib"], p["memory_gib"])]
    # Of several same-sized models (A100-80GB and H100-80GB), prefer the one the product name mentions.
    named = [p for p in by_memory if re.search(r"\b%s\b" % re.escape(p["name"].split("-")[0]), gpu["name"], re.IGNORECASE)]
    for candidates in (named, by_memory):
        if len(candidates) == 1:
            return {"profile": candidates[0]["name"], "profile_match": "memory"}
    return {"profile": None, "profile_match": "none"}


def _index_ranges(indexes: Iterable[int]) -> str:
    return ",".join(str(i) for i in indexes)


def match_profiles(result: Dict[str, Any], profiles: Any, expected: Optional[str] = None) -> Dict[str, Any]:
    """A copy of a :func:`probe` result with per-GPU ``profile``/``profile_match``, top-level ``profile``,
    ``expected_profile`` and ``mismatch`` (readable problems; empty when all is well).

    GPUs match by NVML product name, falling back to memory size. ``profiles`` is a list or dict of profile dicts or
    ``GpuProfile`` objects; ``expected`` a profile name (case-insensitive), which must be among them.
    """
    profile_list = _profile_list(profiles)
    names = {p["name"].lower(): p["name"] for p in profile_list}
    if expected is not None:
        if expected.lower() not in names:
            allowed = ", ".join(sorted(names.values())) or "none loaded"
            raise ProbeUsageError("unknown profile %r for --expect-profile; allowed: %s" % (expected, allowed))
        expected = names[expected.lower()]
    matched = copy.deepcopy(result)
    mismatch: List[str] = []
    for gpu in matched.get("gpus", []):
        gpu.update(_match_gpu(gpu, profile_list))
        if gpu["profile"] is None and profile_list:
            mismatch.append("gpu %d: %s (%s GiB) matches no GPU profile" % (gpu["index"], gpu["name"], gpu["memory_total_gib"]))
        elif expected is not None and gpu["profile"] != expected:
            mismatch.append("gpu %d: expected %s, found %s (%s)" % (gpu["index"], expected, gpu["profile"], gpu["name"]))
    found = sorted({g["profile"] for g in matched.get("gpus", []) if g["profile"] is not None})
    if len(found) > 1:
        groups = "; ".join(
            "%s on gpus %s" % (name, _index_ranges(g["index"] for g in matched["gpus"] if g["profile"] == name)) for name in found
        )
        mismatch.append("GPUs of different profiles on one node: %s" % groups)
    if expected is not None and not matched.get("gpus"):
        mismatch.append("expected %s, found no GPUs" % expected)
    unmatched = any(g["profile"] is None for g in matched.get("gpus", []))
    matched["profile"] = found[0] if len(found) == 1 and not unmatched else None
    matched["expected_profile"] = expected
    matched["mismatch"] = mismatch
    return matched


# ----------------------------------------------------------------------------------------------------- output


def _mismatch_summary(result: Dict[str, Any]) -> str:
    expected = result["expected_profile"]
    gpus = result.get("gpus", [])
    if not gpus:
        return "expected profile %s but found no GPUs" % expected
    wrong = [g for g in gpus if g["profile"] != expected]
    found: Dict[str, List[int]] = {}
    for gpu in wrong:
        found.setdefault("%s (%s)" % (gpu["profile"] or "no profile", gpu["name"]), []).append(gpu["index"])
    details = ", ".join("%s on %d of %d GPUs" % (what, len(idx), len(gpus)) for what, idx in sorted(found.items()))
    return "expected profile %s but found %s" % (expected, details)


def _mode_text(current: str, pending: str) -> str:
    return current if pending == current else "%s (pending %s)" % (current, pending)


def format_table(result: Dict[str, Any]) -> str:
    """The human-readable report."""
    gpus = result.get("gpus", [])
    header = "driver %s, CUDA %s, %d GPU%s, profile %s" % (
        result.get("driver_version"),
        result.get("cuda_driver_version") or "unknown",
        len(gpus),
        "" if len(gpus) == 1 else "s",
        result.get("profile") or "-",
    )
    if result.get("expected_profile"):
        header += " (expected %s)" % result["expected_profile"]
    rows = [("GPU", "NAME", "MEMORY", "MIG", "ECC", "PERSISTENCE", "PROFILE", "UUID")]
    for gpu in gpus:
        rows.append(
            (
                str(gpu["index"]),
                gpu["name"],
                "%.1f GiB" % gpu["memory_total_gib"],
                _mode_text(gpu["mig_mode_current"], gpu["mig_mode_pending"]),
                gpu["ecc_mode_current"],
                gpu["persistence_mode"],
                gpu.get("profile") or "-",
                gpu["uuid"],
            )
        )
    widths = [max(len(row[column]) for row in rows) for column in range(len(rows[0]))]
    lines = [PROG + ": " + header]
    for row in rows:
        lines.append("  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip())
    for gpu in gpus:
        if gpu["mig_instances"]:
            lines.append("MIG devices on GPU %d:" % gpu["index"])
            for mig in gpu["mig_instances"]:
                lines.append(
                    "  %-10s gi %-3s ci %-3s %6.1f GiB  %s"
                    % (mig["profile"] or "?", mig["gpu_instance_id"], mig["compute_instance_id"], mig["memory_total_gib"], mig["uuid"])
                )
    if result.get("mismatch"):
        lines.append("mismatch:")
        lines.extend("  - " + problem for problem in result["mismatch"])
    return "\n".join(lines) + "\n"


def format_json(result: Dict[str, Any]) -> str:
    """Stable JSON: sorted keys, fixed indentation, no timestamps."""
    return json.dumps(result, indent=2, sort_keys=True) + "\n"


# ----------------------------------------------------------------------------------------------------- CLI


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Report this node's NVIDIA GPUs (through NVML) and check them against a GPU profile.",
        epilog="Exit codes: 0 ok, 1 NVML error while probing, 2 bad arguments or profile file, "
        "3 NVML not available on this host, 4 GPUs do not match --expect-profile. "
        "Test hook: %s=/path/scenario.json answers from a fake NVML." % FAKE_NVML_ENV,
    )
    parser.add_argument("--json", action="store_true", help="print stable, sorted JSON instead of a table")
    parser.add_argument("--expect-profile", metavar="NAME", help="exit 4 unless every GPU matches this profile, e.g. H100-80GB")
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--profiles-dir", metavar="DIR", help="GPU profile YAMLs (default: gpu_profiles/ beside the finml package)")
    source.add_argument("--profiles-json", metavar="FILE", help="GPU profiles as a JSON list (for nodes without PyYAML)")
    return parser


def _profiles_for(args: argparse.Namespace) -> List[Dict[str, Any]]:
    if args.profiles_json:
        return load_profiles_json(args.profiles_json)
    if args.profiles_dir:
        return load_profiles_dir(args.profiles_dir)
    if DEFAULT_PROFILES_DIR.is_dir() and any(DEFAULT_PROFILES_DIR.glob("*.yaml")):
        try:
            return load_profiles_dir(str(DEFAULT_PROFILES_DIR))
        except ProbeUsageError:
            if args.expect_profile:
                raise
    return []


def run(argv: Optional[Sequence[str]] = None) -> int:
    """The ``finml gpu probe`` command; returns the exit code (see the module docstring)."""
    try:
        args = _parser().parse_args(list(argv) if argv is not None else None)
    except SystemExit as exc:  # argparse has printed usage and the error
        return int(exc.code) if isinstance(exc.code, int) else EXIT_USAGE
    try:
        profiles = _profiles_for(args)
        if args.expect_profile and not profiles:
            raise ProbeUsageError("--expect-profile needs GPU profiles; pass --profiles-json FILE or --profiles-dir DIR")
        match_profiles({"gpus": []}, profiles, args.expect_profile)  # reject an unknown profile before touching NVML
        result = probe()
    except ProbeUsageError as exc:
        print("%s: %s" % (PROG, exc), file=sys.stderr)
        return EXIT_USAGE
    except NvmlUnavailable as exc:
        print("%s: NVML not available on this host (%s)" % (PROG, exc.reason), file=sys.stderr)
        if args.json:
            sys.stdout.write(format_json({"schema": SCHEMA, "nvml_available": False, "error": exc.reason}))
        return EXIT_NO_NVML
    except ProbeError as exc:
        print("%s: %s" % (PROG, exc), file=sys.stderr)
        return EXIT_NVML_ERROR
    result = match_profiles(result, profiles, args.expect_profile)
    sys.stdout.write(format_json(result) if args.json else format_table(result))
    if args.expect_profile and result["mismatch"]:
        print("%s: %s" % (PROG, _mismatch_summary(result)), file=sys.stderr)
        return EXIT_MISMATCH
    return EXIT_OK


def main() -> None:
    sys.exit(run(sys.argv[1:]))


if __name__ == "__main__":
    main()
