"""Which Pulumi project a `finml` command works on — found like the Pulumi CLI finds it, never from where finml is
installed.

From the working directory (or `--cwd DIR`) upward, the first directory holding `Pulumi.yaml` (or `Pulumi.yml`) is
the project root. Its `stackConfigDir` (default: the root) holds `Pulumi.<stack>.yaml`; its `main` (default: the
root) holds the program `__main__.py`. The policy pack (`policies/`), GPU profiles (`gpu_profiles/`, falling back
to the profiles shipped with finml when the project has none) and the default output directory (`build/`) are
resolved inside the project root.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from finml.safeload import InputError, load_yaml

PROJECT_FILES = ("Pulumi.yaml", "Pulumi.yml")
MAX_PROJECT_FILE_BYTES = 256 * 1024


class ProjectError(Exception):
    """No usable project: one line saying where finml looked and what it needs (exit 2)."""


@dataclass(frozen=True)
class Project:
    root: Path
    file: Path
    name: str
    stacks_dir: Path
    program: Path
    pack_dir: Path
    gpu_profiles_dir: Path
    build_dir: Path

    def stack_file(self, stack: str) -> Path:
        return self.stacks_dir / f"Pulumi.{stack}.yaml"


def find_project_file(start: Path) -> Path | None:
    start = start.resolve()
    for directory in (start, *start.parents):
        for name in PROJECT_FILES:
            candidate = directory / name
            if candidate.is_file():
                return candidate
    return None


def _inside(root: Path, value: object, key: str, source: Path) -> Path:
    if not isinstance(value, str) or not value.strip():
        raise ProjectError(f"{source}: {key}: must be a directory path relative to the project (got {value!r})")
    path = (root / value).resolve()
    if path != root and root not in path.parents:
        raise ProjectError(f"{source}: {key}: {value!r} points outside the project directory {root}")
    return path


def load_project(start: Path | None = None) -> Project:
    """The project containing `start` (default: the working directory)."""
    start = Path.cwd() if start is None else Path(start)
    if not start.is_dir():
        raise ProjectError(f"--cwd {start}: not a directory")
    file = find_project_file(start)
    if file is None:
        raise ProjectError(f"no Pulumi project found in {start.resolve()} or any parent directory (looked for "
                           f"Pulumi.yaml); run finml inside a finml project or pass --cwd DIR")
    root = file.parent
    try:
        doc, _ = load_yaml(file, "a Pulumi project file", dict, MAX_PROJECT_FILE_BYTES)
    except InputError as exc:
        raise ProjectError(str(exc)) from None
    name = doc.get("name")
    if not isinstance(name, str) or not name:
        raise ProjectError(f"{file}: name: required, the project name (e.g. finml)")
    stacks_dir = _inside(root, doc["stackConfigDir"], "stackConfigDir", file) if "stackConfigDir" in doc else root
    program_dir = _inside(root, doc["main"], "main", file) if "main" in doc else root
    program = program_dir if program_dir.suffix == ".py" else program_dir / "__main__.py"
    profiles = root / "gpu_profiles"
    if not any(profiles.glob("*.yaml")):
        from gpu_profiles import PROFILES_DIR

        profiles = PROFILES_DIR
    return Project(root=root, file=file, name=name, stacks_dir=stacks_dir, program=program,
                   pack_dir=root / "policies", gpu_profiles_dir=profiles, build_dir=root / "build")
