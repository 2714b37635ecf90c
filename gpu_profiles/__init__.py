"""GPU profiles: one YAML file per GPU model, loaded into validated, immutable :class:`GpuProfile` objects.

    >>> profiles = load_profiles()
    >>> spec = parse_gpu_shorthand("H100:80GB:8")
    >>> spec.resolve(profiles).name, spec.count
    ('H100-80GB', 8)
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from gpu_profiles.schema import (
    AwsInstanceType,
    DriverConfig,
    GpuProfile,
    KeyedError,
    KubernetesConfig,
    MigConfig,
    MigProfile,
    Taint,
    instance_types_for,
)

__all__ = [
    "AwsInstanceType",
    "DriverConfig",
    "GpuProfile",
    "GpuSpec",
    "KubernetesConfig",
    "MigConfig",
    "MigProfile",
    "PROFILES_DIR",
    "ProfileError",
    "Taint",
    "clear_cache",
    "instance_types_for",
    "load_profile_file",
    "load_profiles",
    "parse_gpu_shorthand",
    "profiles_to_json",
]

#: Directory holding the shipped profile YAMLs (this package).
PROFILES_DIR = Path(__file__).resolve().parent
#: Most GPUs a shorthand may ask for on one node.
MAX_GPU_COUNT = 64
#: Largest profile file read (profiles are a few KiB).
MAX_PROFILE_BYTES = 256 * 1024
SHORTHAND_HELP = "expected MODEL[:<memory>GB][:COUNT], e.g. 'H100:80GB:8', 'T4:16GB:1' or 'L4'"


class ProfileError(ValueError):
    """A GPU profile file or GPU shorthand is invalid. The message names the file, the key path and what is allowed."""

    def __init__(self, message: str, *, path: Path | None = None, key: str | None = None) -> None:
        super().__init__(message)
        self.path = path
        self.key = key


# --------------------------------------------------------------------------------------------------- loading


class _UniqueKeyLoader(yaml.SafeLoader):
    """SafeLoader that rejects duplicate mapping keys instead of silently keeping the last one."""


def _construct_unique_mapping(loader: _UniqueKeyLoader, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
    seen: set[Any] = set()
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=deep)
        if key in seen:
            raise yaml.constructor.ConstructorError(None, None, f"duplicate key {key!r}", key_node.start_mark)
        seen.add(key)
    return loader.construct_mapping(node, deep=deep)


_UniqueKeyLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_unique_mapping)


def _display_path(path: Path) -> str:
    try:
        return str(path.resolve().relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def _format_loc(loc: tuple[Any, ...]) -> str:
    text = ""
    for part in loc:
        if isinstance(part, int):
            text += f"[{part}]"
        elif re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", str(part)):
            text += f".{part}" if text else str(part)
        else:
            text += f"[{json.dumps(str(part))}]"
    return text or "(top level)"


def _model_at(loc: tuple[Any, ...]) -> type[BaseModel] | None:
    """The pydantic model class that validates the mapping at ``loc`` inside a profile, if any."""
    model: type[BaseModel] = GpuProfile
    for part in loc:
        if isinstance(part, int):
            continue
        field = model.model_fields.get(str(part))
        if field is None:
            return None
        candidates = [field.annotation, *getattr(field.annotation, "__args__", ())]
        nested = [c for c in candidates if isinstance(c, type) and issubclass(c, BaseModel)]
        if not nested:
            return None
        model = nested[0]
    return model


def _describe(error: Mapping[str, Any]) -> tuple[str, str]:
    """(key path, message) for one pydantic error, in the words a profile author needs."""
    loc = tuple(error["loc"])
    cause = (error.get("ctx") or {}).get("error")
    if isinstance(cause, KeyedError):
        return _format_loc(loc + cause.loc), cause.message
    kind = error["type"]
    if kind == "extra_forbidden":
        parent = _model_at(loc[:-1])
        allowed = ", ".join(parent.model_fields) if parent else "see gpu_profiles/README.md"
        return _format_loc(loc), f"unknown key; allowed keys here: {allowed}"
    if kind == "missing":
        return _format_loc(loc), "required key is missing; see gpu_profiles/README.md"
    message = str(error["msg"]).removeprefix("Value error, ")
    if kind.endswith("_type") and "input" in error:
        message += f" (got {type(error['input']).__name__} {error['input']!r})"
    return _format_loc(loc), message


def _validation_error(path: Path, exc: ValidationError) -> ProfileError:
    described = [_describe(error) for error in exc.errors()]
    shown = _display_path(path)
    lines = [f"{shown}: {key}: {message}" for key, message in described]
    return ProfileError("\n".join(lines), path=path, key=described[0][0] if described else None)


def load_profile_file(path: str | os.PathLike[str]) -> GpuProfile:
    """Load and validate one profile YAML; raise :class:`ProfileError` naming the file and key on any problem."""
    path = Path(path)
    shown = _display_path(path)
    from finml.safeload import InputError, loads_yaml, read_text  # bounded: size, depth, aliases, duplicate keys

    try:
        text = read_text(path, "a GPU profile", MAX_PROFILE_BYTES)
    except InputError as exc:
        raise ProfileError(f"{shown}: cannot read GPU profile: {exc.problem}", path=path) from None
    try:
        data, _ = loads_yaml(text, shown, "a GPU profile", expect=None)
    except InputError as exc:
        where = f" at line {exc.line}" if exc.line else ""
        raise ProfileError(f"{shown}: invalid YAML{where}: {exc.problem}", path=path) from None
    if not isinstance(data, dict):
        raise ProfileError(f"{shown}: a GPU profile must be a YAML mapping of keys, got {type(data).__name__}", path=path)
    try:
        profile = GpuProfile.model_validate(data)
    except ValidationError as exc:
        raise _validation_error(path, exc) from None
    if profile.name != path.stem:
        raise ProfileError(
            f"{shown}: name: is {profile.name!r} but the file is named {path.name!r}; allowed: {path.stem!r} (name equals the file stem)",
            path=path,
            key="name",
        )
    return profile


_CACHE: dict[Path, dict[str, GpuProfile]] = {}


def clear_cache() -> None:
    """Forget profiles loaded earlier, so the next :func:`load_profiles` reads the files again."""
    _CACHE.clear()


def load_profiles(directory: str | os.PathLike[str] | None = None, *, reload: bool = False) -> dict[str, GpuProfile]:
    """Load every ``*.yaml`` profile in ``directory`` (default: this package), keyed by profile name.

    Results are cached per directory; pass ``reload=True`` (or call :func:`clear_cache`) to read the files again.
    All bad files are reported together in one :class:`ProfileError`.
    """
    root = Path(directory).resolve() if directory is not None else PROFILES_DIR
    if not reload and root in _CACHE:
        return dict(_CACHE[root])
    if not root.is_dir():
        raise ProfileError(f"{_display_path(root)}: GPU profile directory does not exist", path=root)
    files = sorted(root.glob("*.yaml"))
    if not files:
        raise ProfileError(f"{_display_path(root)}: no GPU profiles (*.yaml) found", path=root)
    profiles: dict[str, GpuProfile] = {}
    sources: dict[str, Path] = {}
    problems: list[ProfileError] = []
    for file in files:
        try:
            profile = load_profile_file(file)
        except ProfileError as exc:
            problems.append(exc)
            continue
        profiles[profile.name] = profile
        sources[profile.name] = file
    problems.extend(_cross_file_problems(profiles, sources))
    if problems:
        error = ProfileError("\n".join(str(p) for p in problems), path=problems[0].path, key=problems[0].key)
        error.problems = problems  # type: ignore[attr-defined]
        raise error
    _CACHE[root] = profiles
    return dict(profiles)


def _cross_file_problems(profiles: Mapping[str, GpuProfile], sources: Mapping[str, Path]) -> list[ProfileError]:
    """NVML product names must identify one profile, or the probe could not tell which GPU a node has."""
    owner: dict[str, str] = {}
    problems = []
    for name in sorted(profiles):
        for index, product in enumerate(profiles[name].nvml_product_names):
            folded = product.strip().lower()
            if folded in owner:
                path = sources[name]
                problems.append(
                    ProfileError(
                        f"{_display_path(path)}: nvml_product_names[{index}]: {product!r} is already claimed by profile "
                        f"{owner[folded]} ({_display_path(sources[owner[folded]])}); each NVML product name belongs to one profile",
                        path=path,
                        key=f"nvml_product_names[{index}]",
                    )
                )
            else:
                owner[folded] = name
    return problems


def profiles_to_json(profiles: Mapping[str, GpuProfile]) -> str:
    """Profiles as the JSON list ``finml/gpu_probe.py --profiles-json`` reads (for nodes without PyYAML)."""
    return json.dumps([profiles[name].model_dump(mode="json") for name in sorted(profiles)], indent=2, sort_keys=True) + "\n"


# --------------------------------------------------------------------------------------------------- shorthand

_MODEL_RE = re.compile(r"([A-Za-z][A-Za-z0-9]*)(?:-([0-9]+)GB)?", re.IGNORECASE | re.ASCII)
_MEMORY_RE = re.compile(r"([0-9]+)\s*(?:GB|GIB)", re.IGNORECASE | re.ASCII)
_COUNT_RE = re.compile(r"[0-9]+", re.ASCII)


class GpuSpec(BaseModel):
    """A parsed GPU shorthand such as ``H100:80GB:8``: model, optional memory, GPUs per node."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    model: str = Field(description="GPU model in upper case, e.g. 'H100'.")
    memory_gib: int | None = Field(default=None, ge=1, description="GPU memory in GB, or None when the model alone is enough.")
    count: int = Field(default=1, ge=1, le=MAX_GPU_COUNT, description="GPUs per node.")

    def resolve(self, profiles: Mapping[str, GpuProfile]) -> GpuProfile:
        """The profile this spec names; :class:`ProfileError` when none or several fit."""
        same_model = sorted((p for p in profiles.values() if p.model.upper() == self.model), key=lambda p: p.memory_gib)
        if not same_model:
            known = ", ".join(sorted({p.model for p in profiles.values()}))
            raise ProfileError(f"GPU {self.model!r} has no profile; allowed models: {known}", key="model")
        if self.memory_gib is None:
            if len(same_model) > 1:
                options = ", ".join(f"{self.model}:{p.memory_gib}GB" for p in same_model)
                raise ProfileError(f"GPU {self.model!r} is ambiguous; add the memory: {options}", key="memory_gib")
            return same_model[0]
        for profile in same_model:
            if profile.memory_gib == self.memory_gib:
                return profile
        sizes = ", ".join(f"{p.memory_gib}GB" for p in same_model)
        raise ProfileError(f"GPU {self.model!r} has no {self.memory_gib}GB profile; allowed: {sizes}", key="memory_gib")

    def __str__(self) -> str:
        memory = f":{self.memory_gib}GB" if self.memory_gib is not None else ""
        return f"{self.model}{memory}:{self.count}"


def parse_gpu_shorthand(text: str) -> GpuSpec:
    """Parse ``MODEL[:<memory>GB][:COUNT]`` (case-insensitive; ``MODEL-<memory>GB`` also works) into a :class:`GpuSpec`.

    Raises :class:`ProfileError` (never anything else) for input that does not parse.
    """
    if not isinstance(text, str):
        raise ProfileError(f"GPU shorthand must be a string, got {type(text).__name__}; {SHORTHAND_HELP}")
    shown = repr(text)
    parts = [part.strip() for part in text.strip().split(":")]
    if not parts[0] or len(parts) > 3:
        raise ProfileError(f"invalid GPU shorthand {shown}: {SHORTHAND_HELP}")
    model_match = _MODEL_RE.fullmatch(parts[0])
    if not model_match:
        raise ProfileError(f"invalid GPU model {parts[0]!r} in {shown}: a model starts with a letter, then letters and digits; {SHORTHAND_HELP}")
    model = model_match.group(1).upper()
    memory = int(model_match.group(2)) if model_match.group(2) else None
    count: int | None = None
    for part in parts[1:]:
        memory_match = _MEMORY_RE.fullmatch(part)
        if memory_match and memory is None and count is None:
            memory = int(memory_match.group(1))
        elif _COUNT_RE.fullmatch(part) and count is None:
            count = int(part)
        else:
            raise ProfileError(f"invalid part {part!r} in GPU shorthand {shown}: {SHORTHAND_HELP}")
    if memory is not None and not 1 <= memory <= 4096:
        raise ProfileError(f"GPU memory {memory}GB in {shown} is out of range; allowed: 1..4096")
    if count is not None and not 1 <= count <= MAX_GPU_COUNT:
        raise ProfileError(f"GPU count {count} in {shown} is out of range; allowed: 1..{MAX_GPU_COUNT}")
    return GpuSpec(model=model, memory_gib=memory, count=count if count is not None else 1)
