"""Schema for GPU profiles: one YAML file per GPU model in this directory.

A profile holds the facts about one GPU model that cloud node groups, on-prem Ansible, Kubernetes scheduling and
capacity planning share. Loading is strict (unknown keys are rejected) and every error names the file, the key path
and what is allowed; users never see a pydantic traceback.
"""

from __future__ import annotations

import re
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictInt, StrictStr, field_validator, model_validator

#: Most GPU instances one MIG-capable GPU can be split into (A100, H100, H200: seven compute slices).
MAX_MIG_INSTANCES = 7
#: Compute and memory slices of a MIG-capable GPU (A100, H100, H200): a GPU instance takes a run of memory slices
#: starting at one of its profile's placements (`nvidia-smi mig -lgipp`), and instances may not overlap.
MIG_COMPUTE_SLICES = 7
MIG_MEMORY_SLICES = 8
#: The EKS managed node group AMI type for NVIDIA GPUs used by default.
DEFAULT_AWS_AMI_TYPE = "AL2023_x86_64_NVIDIA"
#: Taint effects Kubernetes accepts.
TAINT_EFFECTS = ("NoSchedule", "PreferNoSchedule", "NoExecute")
#: Label every GPU node carries; its value is the profile's lowercase name.
PROFILE_LABEL_KEY = "finml.io/gpu-profile"
#: The taint every GPU node must carry so that only GPU workloads land on it.
REQUIRED_GPU_TAINT = ("nvidia.com/gpu", "present", "NoSchedule")

#: CUDA compute capabilities per architecture, used to cross-check the two fields.
ARCHITECTURE_COMPUTE_CAPABILITIES: dict[str, tuple[str, ...]] = {
    "Turing": ("7.5",),
    "Ampere": ("8.0", "8.6", "8.7"),
    "Ada": ("8.9",),
    "Hopper": ("9.0",),
}

_PROFILE_NAME_RE = re.compile(r"^[A-Z][A-Z0-9]*(-[0-9]+GB)?$")
_MIG_PROFILE_NAME_RE = re.compile(r"^(?P<slices>[1-7])g\.(?P<gb>[0-9]+)gb(?P<media>\+me)?$")
_INSTANCE_TYPE_RE = re.compile(r"^[a-z][a-z0-9-]*\.[a-z0-9]+$")
_DRIVER_BRANCH_RE = re.compile(r"^[0-9]{3}$")
# Kubernetes label syntax: optional DNS-subdomain prefix, then a 63-character name.
_LABEL_NAME = r"[A-Za-z0-9]([A-Za-z0-9_.-]{0,61}[A-Za-z0-9])?"
_LABEL_KEY_RE = re.compile(r"^([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?(\.[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)*/)?" + _LABEL_NAME + "$")
_LABEL_VALUE_RE = re.compile(r"^(" + _LABEL_NAME + ")?$")


class KeyedError(ValueError):
    """A validation error that knows which key (relative to the model that raised it) is wrong."""

    def __init__(self, loc: tuple[str | int, ...], message: str) -> None:
        super().__init__(message)
        self.loc = loc
        self.message = message


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _quoted_version(value: Any) -> Any:
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        raise ValueError(f'must be a quoted string such as "9.0" (YAML read {value!r} as a number)')
    return value


class MigProfile(_Strict):
    """One MIG GPU-instance profile a GPU supports, e.g. ``1g.10gb``."""

    name: StrictStr = Field(description="NVIDIA MIG profile name, '<slices>g.<memory>gb' with optional '+me' (media extensions), e.g. '1g.10gb'.")
    count_per_gpu: StrictInt = Field(ge=1, description="Most instances of this profile one GPU can hold at the same time.")
    memory_gib: StrictInt = Field(ge=1, description="Memory of one instance, in the marketing GB of the profile name.")
    memory_slices: StrictInt = Field(ge=1, le=MIG_MEMORY_SLICES, description=f"Memory slices (of {MIG_MEMORY_SLICES}) one instance occupies, as `nvidia-smi mig -lgipp` reports after the colon.")
    placements: tuple[StrictInt, ...] = Field(min_length=1, description="Memory-slice indexes where an instance may start (`nvidia-smi mig -lgipp`), e.g. [0, 4] for a 3g profile.")

    @field_validator("name")
    @classmethod
    def _name_syntax(cls, value: str) -> str:
        if not _MIG_PROFILE_NAME_RE.match(value):
            raise ValueError(f"{value!r} is not a MIG profile name; allowed: '<1-7>g.<memory>gb' with optional '+me', e.g. '1g.10gb'")
        return value

    @property
    def slices(self) -> int:
        """Compute slices (the 'Ng' part of the name)."""
        return int(_MIG_PROFILE_NAME_RE.match(self.name).group("slices"))  # type: ignore[union-attr]

    @model_validator(mode="after")
    def _memory_matches_name(self) -> MigProfile:
        named_gb = int(_MIG_PROFILE_NAME_RE.match(self.name).group("gb"))  # type: ignore[union-attr]
        if named_gb != self.memory_gib:
            raise KeyedError(("memory_gib",), f"is {self.memory_gib} but the profile name {self.name!r} says {named_gb}; allowed: {named_gb}")
        for index, start in enumerate(self.placements):
            if start < 0 or start + self.memory_slices > MIG_MEMORY_SLICES:
                raise KeyedError(("placements", index), f"{start} + {self.memory_slices} memory slices runs past the GPU's {MIG_MEMORY_SLICES}; "
                                 f"allowed: 0..{MIG_MEMORY_SLICES - self.memory_slices}")
            if start % self.memory_slices and self.memory_slices > 1:
                raise KeyedError(("placements", index), f"{start} is not aligned to the profile's {self.memory_slices} memory slices")
        if list(self.placements) != sorted(set(self.placements)):
            raise KeyedError(("placements",), "must be distinct and ascending")
        return self

    @property
    def media_extensions(self) -> bool:
        """Whether this is a '+me' profile (it holds the GPU's single set of media engines)."""
        return self.name.endswith("+me")


class MigConfig(_Strict):
    """Multi-Instance GPU capabilities of the model."""

    supported: StrictBool = Field(description="Whether the GPU can be partitioned with MIG.")
    max_instances: StrictInt = Field(ge=0, le=MAX_MIG_INSTANCES, description=f"Most GPU instances one GPU can be split into (0 without MIG, at most {MAX_MIG_INSTANCES}).")
    profiles: tuple[MigProfile, ...] = Field(default=(), description="GPU-instance profiles the GPU supports; empty without MIG.")

    @model_validator(mode="after")
    def _consistent(self) -> MigConfig:
        if not self.supported:
            if self.profiles:
                raise KeyedError(("profiles",), "must be empty when mig.supported is false; allowed: []")
            if self.max_instances != 0:
                raise KeyedError(("max_instances",), f"is {self.max_instances} but mig.supported is false; allowed: 0")
            return self
        if self.max_instances < 1:
            raise KeyedError(("max_instances",), f"must be 1..{MAX_MIG_INSTANCES} when mig.supported is true")
        if not self.profiles:
            raise KeyedError(("profiles",), "must list at least one MIG profile when mig.supported is true")
        seen: set[str] = set()
        for index, profile in enumerate(self.profiles):
            if profile.name in seen:
                raise KeyedError(("profiles", index, "name"), f"{profile.name!r} is listed twice; each MIG profile once")
            seen.add(profile.name)
            if profile.count_per_gpu > self.max_instances:
                raise KeyedError(
                    ("profiles", index, "count_per_gpu"),
                    f"is {profile.count_per_gpu} but mig.max_instances is {self.max_instances}; allowed: 1..{self.max_instances}",
                )
            if profile.slices * profile.count_per_gpu > MAX_MIG_INSTANCES:
                raise KeyedError(
                    ("profiles", index, "count_per_gpu"),
                    f"{profile.count_per_gpu} x {profile.name} needs {profile.slices * profile.count_per_gpu} compute slices; "
                    f"a GPU has {MAX_MIG_INSTANCES}",
                )
            if profile.count_per_gpu > len(profile.placements):
                raise KeyedError(
                    ("profiles", index, "count_per_gpu"),
                    f"is {profile.count_per_gpu} but {profile.name} has {len(profile.placements)} placements; allowed: 1..{len(profile.placements)}",
                )
        return self


class AwsInstanceType(_Strict):
    """An EC2 instance type that carries this GPU."""

    type: StrictStr = Field(description="EC2 instance type, e.g. 'p5.48xlarge'.")
    gpu_count: StrictInt = Field(ge=1, le=16, description="GPUs of this model in one instance.")

    @field_validator("type")
    @classmethod
    def _type_syntax(cls, value: str) -> str:
        if not _INSTANCE_TYPE_RE.match(value):
            raise ValueError(f"{value!r} is not an EC2 instance type; allowed: '<family>.<size>' e.g. 'g5.xlarge'")
        return value


class Taint(_Strict):
    """A Kubernetes node taint."""

    key: StrictStr = Field(description="Taint key, Kubernetes label-key syntax, e.g. 'nvidia.com/gpu'.")
    value: StrictStr = Field(default="", description="Taint value, Kubernetes label-value syntax, e.g. 'present'.")
    effect: Literal["NoSchedule", "PreferNoSchedule", "NoExecute"] = Field(description="Taint effect.")

    @field_validator("key")
    @classmethod
    def _key_syntax(cls, value: str) -> str:
        if not _LABEL_KEY_RE.match(value):
            raise ValueError(f"{value!r} is not a valid taint key; allowed: '[dns-prefix/]name', name up to 63 of [A-Za-z0-9_.-]")
        return value

    @field_validator("value")
    @classmethod
    def _value_syntax(cls, value: str) -> str:
        if not _LABEL_VALUE_RE.match(value):
            raise ValueError(f"{value!r} is not a valid taint value; allowed: up to 63 of [A-Za-z0-9_.-], alphanumeric at both ends")
        return value


class KubernetesConfig(_Strict):
    """How nodes with this GPU appear to Kubernetes."""

    labels: dict[StrictStr, StrictStr] = Field(description=f"Node labels; must include {PROFILE_LABEL_KEY!r} with the profile's lowercase name.")
    taints: tuple[Taint, ...] = Field(description="Node taints; must include nvidia.com/gpu=present:NoSchedule.")

    @model_validator(mode="after")
    def _syntax_and_required_taint(self) -> KubernetesConfig:
        for key, value in self.labels.items():
            if not _LABEL_KEY_RE.match(key):
                raise KeyedError(("labels", key), "is not a valid label key; allowed: '[dns-prefix/]name', name up to 63 of [A-Za-z0-9_.-]")
            if not _LABEL_VALUE_RE.match(value):
                raise KeyedError(("labels", key), f"{value!r} is not a valid label value; allowed: up to 63 of [A-Za-z0-9_.-], alphanumeric at both ends")
        if not any((t.key, t.value, t.effect) == REQUIRED_GPU_TAINT for t in self.taints):
            raise KeyedError(("taints",), "must include {key: nvidia.com/gpu, value: present, effect: NoSchedule}")
        return self


class DriverConfig(_Strict):
    """NVIDIA driver requirements of nodes with this GPU."""

    branch: StrictStr = Field(description="NVIDIA datacenter driver branch to install, e.g. '570'.")
    fabric_manager: StrictBool = Field(description="Whether nvidia-fabricmanager must run (SXM boards on an NVSwitch baseboard).")
    nvswitch: StrictBool = Field(description="Whether the GPUs of one node are connected through NVSwitch.")

    @field_validator("branch", mode="before")
    @classmethod
    def _branch_quoted(cls, value: Any) -> Any:
        return _quoted_version(value)

    @field_validator("branch")
    @classmethod
    def _branch_syntax(cls, value: str) -> str:
        if not _DRIVER_BRANCH_RE.match(value):
            raise ValueError(f"{value!r} is not a driver branch; allowed: three digits such as \"570\"")
        return value

    @model_validator(mode="after")
    def _fabric_manager_needs_nvswitch(self) -> DriverConfig:
        if self.fabric_manager and not self.nvswitch:
            raise KeyedError(("fabric_manager",), "is true but nvswitch is false; Fabric Manager only manages NVSwitch systems")
        return self


class GpuProfile(_Strict):
    """Facts about one GPU model, loaded from ``gpu_profiles/<name>.yaml``."""

    name: StrictStr = Field(description="Profile id, equal to the file stem, e.g. 'H100-80GB': model, then '-<memory>GB' where one model has several memory sizes.")
    vendor: Literal["nvidia"] = Field(description="GPU vendor.")
    architecture: Literal["Turing", "Ampere", "Ada", "Hopper"] = Field(description="GPU architecture.")
    memory_gib: StrictInt = Field(ge=1, description="GPU memory in the marketing GB NVIDIA uses for the model, e.g. 80 or 141.")
    compute_capability: StrictStr = Field(description="CUDA compute capability as a quoted string, e.g. \"9.0\".")
    nvml_product_names: tuple[StrictStr, ...] = Field(min_length=1, description="Product names NVML (nvidia-smi) reports for this model.")
    mig: MigConfig = Field(description="Multi-Instance GPU capabilities.")
    aws_instance_types: tuple[AwsInstanceType, ...] = Field(default=(), description="EC2 instance types carrying this GPU; empty for on-prem-only models.")
    aws_ami_type: Literal["AL2023_x86_64_NVIDIA", "BOTTLEROCKET_x86_64_NVIDIA"] = Field(
        default=DEFAULT_AWS_AMI_TYPE, description="EKS managed node group AMI type for nodes with this GPU."
    )
    kubernetes: KubernetesConfig = Field(description="Node labels and taints.")
    driver: DriverConfig = Field(description="Driver requirements.")

    @field_validator("compute_capability", mode="before")
    @classmethod
    def _compute_capability_quoted(cls, value: Any) -> Any:
        return _quoted_version(value)

    @field_validator("name")
    @classmethod
    def _name_syntax(cls, value: str) -> str:
        if not _PROFILE_NAME_RE.match(value):
            raise ValueError(f"{value!r} is not a profile name; allowed: upper-case model with optional '-<memory>GB', e.g. 'L4', 'H100-80GB'")
        return value

    @model_validator(mode="after")
    def _cross_checks(self) -> GpuProfile:
        allowed_cc = ARCHITECTURE_COMPUTE_CAPABILITIES[self.architecture]
        if self.compute_capability not in allowed_cc:
            raise KeyedError(("compute_capability",), f"{self.compute_capability!r} does not fit architecture {self.architecture}; allowed: {', '.join(allowed_cc)}")
        for index, mig_profile in enumerate(self.mig.profiles):
            if mig_profile.memory_gib > self.memory_gib:
                raise KeyedError(
                    ("mig", "profiles", index, "memory_gib"),
                    f"{mig_profile.memory_gib} exceeds the GPU's memory_gib {self.memory_gib}; allowed: 1..{self.memory_gib}",
                )
        seen_names: set[str] = set()
        for index, product_name in enumerate(self.nvml_product_names):
            if product_name.strip().lower() in seen_names:
                raise KeyedError(("nvml_product_names", index), f"{product_name!r} is listed twice")
            seen_names.add(product_name.strip().lower())
        seen_types: set[str] = set()
        for index, instance in enumerate(self.aws_instance_types):
            if instance.type in seen_types:
                raise KeyedError(("aws_instance_types", index, "type"), f"{instance.type!r} is listed twice")
            seen_types.add(instance.type)
        label = self.kubernetes.labels.get(PROFILE_LABEL_KEY)
        if label != self.k8s_label_value:
            raise KeyedError(("kubernetes", "labels", PROFILE_LABEL_KEY), f"is {label!r}; allowed: {self.k8s_label_value!r} (the profile name in lower case)")
        return self

    @property
    def model(self) -> str:
        """The GPU model without the memory suffix, e.g. 'H100' for 'H100-80GB'."""
        return self.name.split("-", 1)[0]

    @property
    def k8s_label_value(self) -> str:
        """Value of the ``finml.io/gpu-profile`` node label: the profile name in lower case."""
        return self.name.lower()


def instance_types_for(profile: GpuProfile) -> set[str]:
    """EC2 instance types that carry ``profile``'s GPU."""
    return {instance.type for instance in profile.aws_instance_types}
