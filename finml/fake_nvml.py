"""A fake NVML layer for tests and GPU-less hosts: the subset of the ``pynvml`` API that ``gpu_probe`` uses.

It is built from a *scenario* (a dict, or a JSON file) describing the driver and GPUs of an imaginary node, and raises
errors with the same names and numeric codes as ``pynvml`` (``NVMLError_LibraryNotFound`` is code 12, and so on).
Standard library only, like ``gpu_probe``, so both can be copied to a bare node side by side.

Scenario format (all keys optional except ``gpus``)::

    {
      "driver_version": "570.124.06",
      "cuda_driver_version": 12080,          # as NVML returns it: 1000 * major + 10 * minor
      "init_error": "LIBRARY_NOT_FOUND",     # nvmlInit() raises this (NVML_ERROR_* suffix or the number)
      "gpus": [
        {
          "name": "NVIDIA H100 80GB HBM3",
          "uuid": "GPU-...",                 # default: derived from the index
          "memory_total_mib": 81559,
          "repeat": 8,                       # this entry stands for 8 identical GPUs (UUIDs still differ)
          "mig": {"current": 1, "pending": 1, "instances": [
              {"profile": "1g.10gb", "memory_mib": 9984, "gpu_instance_id": 9, "compute_instance_id": 0}]},
                                             # "mig": null -> MIG not supported on this GPU
          "ecc": {"current": 1, "pending": 1},   # null -> ECC not supported
          "persistence_mode": 1,
          "errors": {"nvmlDeviceGetEccMode": "NOT_SUPPORTED"}   # make one call on this GPU fail
        }
      ]
    }

Set ``FINML_FAKE_NVML=/path/scenario.json`` and ``gpu_probe`` uses this layer instead of ``pynvml`` (a test hook).
"""

from __future__ import annotations

import json
import uuid as _uuid
from typing import Any, Dict, List, Optional

NVML_SUCCESS = 0
NVML_FEATURE_DISABLED = 0
NVML_FEATURE_ENABLED = 1
NVML_DEVICE_MIG_DISABLE = 0
NVML_DEVICE_MIG_ENABLE = 1

# Same codes and class names as pynvml (nvml.h), so code that checks either works with both.
ERROR_CODES = {
    "UNINITIALIZED": 1,
    "INVALID_ARGUMENT": 2,
    "NOT_SUPPORTED": 3,
    "NO_PERMISSION": 4,
    "ALREADY_INITIALIZED": 5,
    "NOT_FOUND": 6,
    "INSUFFICIENT_SIZE": 7,
    "INSUFFICIENT_POWER": 8,
    "DRIVER_NOT_LOADED": 9,
    "TIMEOUT": 10,
    "IRQ_ISSUE": 11,
    "LIBRARY_NOT_FOUND": 12,
    "FUNCTION_NOT_FOUND": 13,
    "CORRUPTED_INFOROM": 14,
    "GPU_IS_LOST": 15,
    "RESET_REQUIRED": 16,
    "OPERATING_SYSTEM": 17,
    "LIB_RM_VERSION_MISMATCH": 18,
    "IN_USE": 19,
    "MEMORY": 20,
    "NO_DATA": 21,
    "INSUFFICIENT_RESOURCES": 23,
    "NOT_READY": 27,
    "GPU_NOT_FOUND": 28,
    "INVALID_STATE": 29,
    "UNKNOWN": 999,
}
_MESSAGES = {
    1: "Uninitialized",
    2: "Invalid Argument",
    3: "Not Supported",
    4: "Insufficient Permissions",
    5: "Already Initialized",
    6: "Not Found",
    9: "Driver Not Loaded",
    12: "NVML Shared Library Not Found",
    13: "Function Not Found",
    15: "GPU is lost",
    18: "RM has detected an NVML/RM version mismatch.",
    999: "Unknown Error",
}


class NVMLError(Exception):
    """Base of the fake NVML errors; ``NVMLError(code)`` returns the matching subclass, as in pynvml."""

    _by_code: Dict[int, type] = {}
    _code: Optional[int] = None
    value: int

    def __new__(cls, value: Optional[int] = None) -> "NVMLError":
        if value is None:
            value = cls._code if cls._code is not None else ERROR_CODES["UNKNOWN"]
        if cls is NVMLError:
            cls = NVMLError._by_code.get(value, NVMLError)
        obj = Exception.__new__(cls)
        obj.value = value
        return obj

    def __init__(self, value: Optional[int] = None) -> None:
        super().__init__(self.value)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, NVMLError) and self.value == other.value

    __hash__ = Exception.__hash__

    def __str__(self) -> str:
        return _MESSAGES.get(self.value, "NVML Error with code %d" % self.value)


def _class_name(suffix: str) -> str:
    # Same rule as pynvml: NVML_ERROR_LIBRARY_NOT_FOUND -> NVMLError_LibraryNotFound
    return "NVMLError_" + "".join(part.capitalize() for part in suffix.split("_"))


for _suffix, _code in ERROR_CODES.items():
    _cls = type(_class_name(_suffix), (NVMLError,), {"_code": _code})
    NVMLError._by_code[_code] = _cls
    globals()[_cls.__name__] = _cls
    globals()["NVML_ERROR_" + _suffix] = _code


def error_code(spec: Any) -> int:
    """Numeric NVML error code from a scenario value: 12, "12", "LIBRARY_NOT_FOUND" or "NVML_ERROR_LIBRARY_NOT_FOUND"."""
    if isinstance(spec, bool):
        raise ValueError("NVML error must be a name such as 'NOT_SUPPORTED' or a number, got %r" % (spec,))
    if isinstance(spec, int):
        return spec
    text = str(spec).strip().upper()
    if text.isdigit():
        return int(text)
    text = text[len("NVML_ERROR_"):] if text.startswith("NVML_ERROR_") else text
    if text not in ERROR_CODES:
        raise ValueError("unknown NVML error %r; allowed: %s" % (spec, ", ".join(sorted(ERROR_CODES))))
    return ERROR_CODES[text]


class MemoryInfo:
    """What ``nvmlDeviceGetMemoryInfo`` returns: sizes in bytes."""

    def __init__(self, total: int, used: int = 0) -> None:
        self.total = total
        self.used = used
        self.free = total - used


class _Gpu:
    def __init__(self, index: int, spec: Dict[str, Any]) -> None:
        self.index = index
        self.name = str(spec["name"])
        self.uuid = str(spec.get("uuid") or "GPU-%s" % _uuid.UUID(int=(0xF1A0 << 96) + index))
        self.memory_total = int(spec["memory_total_mib"]) * 1024 * 1024
        self.mig = spec.get("mig", {"current": 0, "pending": 0})
        self.ecc = spec.get("ecc", {"current": 1, "pending": 1})
        self.persistence_mode = spec.get("persistence_mode", 1)
        self.errors = {name: error_code(code) for name, code in (spec.get("errors") or {}).items()}
        self.mig_devices: List[_MigDevice] = []
        if self.mig and self.mig.get("current"):
            for mig_index, instance in enumerate(self.mig.get("instances") or []):
                self.mig_devices.append(_MigDevice(self, mig_index, instance))


class _MigDevice:
    def __init__(self, parent: _Gpu, index: int, spec: Dict[str, Any]) -> None:
        self.parent = parent
        self.index = index
        self.profile = str(spec["profile"])
        self.memory_total = int(spec["memory_mib"]) * 1024 * 1024
        self.gpu_instance_id = int(spec.get("gpu_instance_id", index))
        self.compute_instance_id = int(spec.get("compute_instance_id", 0))
        self.uuid = str(spec.get("uuid") or "MIG-%s" % _uuid.UUID(int=(0xF1A1 << 96) + (parent.index << 8) + index))
        # NVML names a MIG device after its parent and its GPU-instance profile.
        self.name = "%s MIG %s" % (parent.name, self.profile)


class FakeNvml:
    """Module-like object with the pynvml functions the probe calls, answering from a scenario."""

    NVMLError = NVMLError
    NVML_FEATURE_DISABLED = NVML_FEATURE_DISABLED
    NVML_FEATURE_ENABLED = NVML_FEATURE_ENABLED
    NVML_DEVICE_MIG_DISABLE = NVML_DEVICE_MIG_DISABLE
    NVML_DEVICE_MIG_ENABLE = NVML_DEVICE_MIG_ENABLE

    def __init__(self, scenario: Dict[str, Any]) -> None:
        if not isinstance(scenario, dict):
            raise ValueError("fake NVML scenario must be a JSON object, got %s" % type(scenario).__name__)
        unknown = set(scenario) - {"description", "driver_version", "cuda_driver_version", "init_error", "gpus"}
        if unknown:
            raise ValueError("unknown fake NVML scenario keys: %s" % ", ".join(sorted(unknown)))
        self.driver_version = str(scenario.get("driver_version", "570.124.06"))
        self.cuda_driver_version = int(scenario.get("cuda_driver_version", 12080))
        self.init_error = error_code(scenario["init_error"]) if scenario.get("init_error") is not None else None
        self._gpus: List[_Gpu] = []
        for position, spec in enumerate(scenario.get("gpus") or []):
            if not isinstance(spec, dict) or "name" not in spec or "memory_total_mib" not in spec:
                raise ValueError("fake NVML scenario gpus[%d] needs 'name' and 'memory_total_mib'" % position)
            for _ in range(int(spec.get("repeat", 1))):
                self._gpus.append(_Gpu(len(self._gpus), spec))
        self.initialized = 0
        self.calls: List[str] = []

    # -- helpers
    def _check(self, function: str, handle: Any = None) -> None:
        self.calls.append(function)
        if not self.initialized:
            raise NVMLError(ERROR_CODES["UNINITIALIZED"])
        gpu = handle.parent if isinstance(handle, _MigDevice) else handle
        if isinstance(gpu, _Gpu) and function in gpu.errors:
            raise NVMLError(gpu.errors[function])

    # -- library
    def nvmlInit(self) -> None:
        self.calls.append("nvmlInit")
        if self.init_error is not None:
            raise NVMLError(self.init_error)
        self.initialized += 1

    def nvmlInitWithFlags(self, flags: int) -> None:
        self.nvmlInit()

    def nvmlShutdown(self) -> None:
        self._check("nvmlShutdown")
        self.initialized -= 1

    def nvmlSystemGetDriverVersion(self) -> str:
        self._check("nvmlSystemGetDriverVersion")
        return self.driver_version

    def nvmlSystemGetCudaDriverVersion(self) -> int:
        self._check("nvmlSystemGetCudaDriverVersion")
        return self.cuda_driver_version

    def nvmlSystemGetCudaDriverVersion_v2(self) -> int:
        self._check("nvmlSystemGetCudaDriverVersion_v2")
        return self.cuda_driver_version

    # -- devices
    def nvmlDeviceGetCount(self) -> int:
        self._check("nvmlDeviceGetCount")
        return len(self._gpus)

    def nvmlDeviceGetHandleByIndex(self, index: int) -> _Gpu:
        self._check("nvmlDeviceGetHandleByIndex")
        if not 0 <= index < len(self._gpus):
            raise NVMLError(ERROR_CODES["INVALID_ARGUMENT"])
        return self._gpus[index]

    def nvmlDeviceGetName(self, handle: Any) -> str:
        self._check("nvmlDeviceGetName", handle)
        return handle.name

    def nvmlDeviceGetUUID(self, handle: Any) -> str:
        self._check("nvmlDeviceGetUUID", handle)
        return handle.uuid

    def nvmlDeviceGetIndex(self, handle: _Gpu) -> int:
        self._check("nvmlDeviceGetIndex", handle)
        return handle.index

    def nvmlDeviceGetMemoryInfo(self, handle: Any, version: Optional[int] = None) -> MemoryInfo:
        self._check("nvmlDeviceGetMemoryInfo", handle)
        return MemoryInfo(handle.memory_total)

    def nvmlDeviceGetMigMode(self, handle: _Gpu) -> List[int]:
        self._check("nvmlDeviceGetMigMode", handle)
        if not handle.mig:
            raise NVMLError(ERROR_CODES["NOT_SUPPORTED"])
        return [int(handle.mig.get("current", 0)), int(handle.mig.get("pending", handle.mig.get("current", 0)))]

    def nvmlDeviceGetMaxMigDeviceCount(self, handle: _Gpu) -> int:
        self._check("nvmlDeviceGetMaxMigDeviceCount", handle)
        if not handle.mig:
            raise NVMLError(ERROR_CODES["NOT_SUPPORTED"])
        return 7

    def nvmlDeviceGetMigDeviceHandleByIndex(self, handle: _Gpu, index: int) -> _MigDevice:
        self._check("nvmlDeviceGetMigDeviceHandleByIndex", handle)
        if not handle.mig:
            raise NVMLError(ERROR_CODES["NOT_SUPPORTED"])
        if not 0 <= index < 7:
            raise NVMLError(ERROR_CODES["INVALID_ARGUMENT"])
        if index >= len(handle.mig_devices):
            raise NVMLError(ERROR_CODES["NOT_FOUND"])
        return handle.mig_devices[index]

    def nvmlDeviceIsMigDeviceHandle(self, handle: Any) -> int:
        self._check("nvmlDeviceIsMigDeviceHandle", handle)
        return int(isinstance(handle, _MigDevice))

    def nvmlDeviceGetGpuInstanceId(self, handle: Any) -> int:
        self._check("nvmlDeviceGetGpuInstanceId", handle)
        if not isinstance(handle, _MigDevice):
            raise NVMLError(ERROR_CODES["INVALID_ARGUMENT"])
        return handle.gpu_instance_id

    def nvmlDeviceGetComputeInstanceId(self, handle: Any) -> int:
        self._check("nvmlDeviceGetComputeInstanceId", handle)
        if not isinstance(handle, _MigDevice):
            raise NVMLError(ERROR_CODES["INVALID_ARGUMENT"])
        return handle.compute_instance_id

    def nvmlDeviceGetEccMode(self, handle: _Gpu) -> List[int]:
        self._check("nvmlDeviceGetEccMode", handle)
        if not handle.ecc:
            raise NVMLError(ERROR_CODES["NOT_SUPPORTED"])
        return [int(handle.ecc.get("current", 0)), int(handle.ecc.get("pending", handle.ecc.get("current", 0)))]

    def nvmlDeviceGetPersistenceMode(self, handle: _Gpu) -> int:
        self._check("nvmlDeviceGetPersistenceMode", handle)
        if handle.persistence_mode is None:
            raise NVMLError(ERROR_CODES["NOT_SUPPORTED"])
        return int(handle.persistence_mode)


def from_scenario(scenario: Dict[str, Any]) -> FakeNvml:
    """A fake NVML answering from ``scenario`` (see the module docstring)."""
    return FakeNvml(scenario)


def load_scenario(path: str) -> FakeNvml:
    """A fake NVML answering from the scenario JSON file at ``path``; ValueError naming the file if it is bad."""
    try:
        with open(path, encoding="utf-8") as handle:
            scenario = json.load(handle)
    except OSError as exc:
        raise ValueError("cannot read fake NVML scenario %s: %s" % (path, exc.strerror or exc)) from None
    except ValueError as exc:
        raise ValueError("fake NVML scenario %s is not valid JSON: %s" % (path, exc)) from None
    try:
        return FakeNvml(scenario)
    except (KeyError, TypeError, ValueError) as exc:
        raise ValueError("fake NVML scenario %s: %s" % (path, exc)) from None
