"""The reference training image's definition (workloads/reference/Dockerfile) agrees with what the rendered Jobs run
and with the project's pins. No container engine runs here, so the image is not built: these checks read the
Dockerfile, its requirements file, pyproject.toml and the trainer's own imports."""

from __future__ import annotations

import ast
import re
import shlex
import sys
import tomllib
from importlib.metadata import packages_distributions
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

from finml.config import load_stack_file
from gpu_profiles import load_profiles
from workloads import images
from workloads.training_job import IMAGE, TRAINER_UID, TrainingRun, render_training_run

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = ROOT / "workloads" / "reference" / "Dockerfile"
REQUIREMENTS = ROOT / "workloads" / "reference" / "requirements.txt"
ENTRY_MODULE = "workloads.reference.train"
PYTORCH_BASE = re.compile(r"^pytorch/pytorch:(?P<torch>\d+\.\d+\.\d+)-cuda(?P<cuda>\d+\.\d+)-cudnn\d+-runtime$")


def instructions(text: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) of a Dockerfile: comments dropped, backslash continuations joined."""
    lines, current = [], ""
    for raw in text.splitlines():
        stripped = raw.strip()
        if not current and (not stripped or stripped.startswith("#")):
            continue
        current += stripped.removesuffix("\\").strip() + " " if stripped.endswith("\\") else stripped
        if not stripped.endswith("\\"):
            lines.append(current)
            current = ""
    return [(line.split(None, 1)[0].upper(), line.split(None, 1)[1] if " " in line else "") for line in lines]


def requirements(path: Path) -> dict[str, Requirement]:
    reqs = [Requirement(line.split("#", 1)[0].strip()) for line in path.read_text().splitlines()
            if line.split("#", 1)[0].strip()]
    return {canonicalize_name(r.name): r for r in reqs}


def pyproject() -> tuple[dict[str, Requirement], dict[str, Requirement]]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    as_map = lambda items: {canonicalize_name(r.name): r for r in map(Requirement, items)}  # noqa: E731
    return as_map(project["dependencies"]), as_map(project["optional-dependencies"]["ml"])


def module_file(module: str) -> Path | None:
    base = ROOT.joinpath(*module.split("."))
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def trainer_modules() -> tuple[set[str], set[str]]:
    """The repository modules the entry module imports (transitively, function-level imports included) and the
    top-level names of every other module they import."""
    seen: set[str] = set()
    external: set[str] = set()
    todo = [ENTRY_MODULE]
    while todo:
        module = todo.pop()
        if module in seen:
            continue
        seen.add(module)
        path = module_file(module)
        assert path is not None, f"{module} is imported by the trainer but is not in the repository"
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                     else [node.module] if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module
                     else [])
            for name in names:
                if name.split(".")[0] == "workloads":
                    parts = name.split(".")
                    todo += [".".join(parts[:i]) for i in range(1, len(parts) + 1) if module_file(".".join(parts[:i]))]
                elif name != "__future__":
                    external.add(name.split(".")[0])
    return seen, external - set(sys.stdlib_module_names)


@pytest.fixture(scope="module")
def dockerfile() -> list[tuple[str, str]]:
    return instructions(DOCKERFILE.read_text())


def _one(dockerfile, instruction: str) -> str:
    values = [args for name, args in dockerfile if name == instruction]
    assert len(values) == 1, f"{DOCKERFILE}: expected one {instruction}, found {values}"
    return values[0]


def test_base_is_a_pinned_cuda_pytorch_runtime_whose_torch_is_in_the_projects_range(dockerfile):
    base = _one(dockerfile, "FROM")
    name, _, digest = base.partition("@")
    if digest:
        assert re.fullmatch(r"sha256:[0-9a-f]{64}", digest), f"{DOCKERFILE}: FROM {base}: malformed digest"
    match = PYTORCH_BASE.match(name)
    assert match, f"{DOCKERFILE}: FROM {base}: expected pytorch/pytorch:<torch>-cuda<ver>-cudnn<n>-runtime (explicit tag)"
    torch_version = Version(match["torch"])
    _, ml = pyproject()
    assert ml["torch"].specifier.contains(torch_version), f"base torch {torch_version} outside pyproject {ml['torch']}"
    pinned = requirements(REQUIREMENTS)["torch"]
    assert str(pinned.specifier) == f"=={torch_version}", (
        f"{REQUIREMENTS}: torch must be pinned to the base image's {torch_version} (so pip keeps its CUDA build), "
        f"found {pinned}")


def test_requirements_carry_the_projects_pins(dockerfile):
    core, ml = pyproject()
    for name, req in requirements(REQUIREMENTS).items():
        if name == "torch":
            continue
        project = ml.get(name) or core.get(name)
        assert project is not None, f"{REQUIREMENTS}: {req} is not a dependency of pyproject.toml"
        assert req.specifier == project.specifier, f"{REQUIREMENTS}: {req} disagrees with pyproject's {project}"


def test_every_third_party_import_of_the_trainer_is_installed_by_the_image():
    _, external = trainer_modules()
    assert {"torch", "numpy", "pandas", "sklearn", "mlflow"} <= external, external  # the walk sees function imports
    reqs = requirements(REQUIREMENTS)
    dists = packages_distributions()
    provided_by_deps = {"numpy"}  # torch, pandas and scikit-learn require it; pinned by none of them here
    for top in sorted(external - provided_by_deps):
        names = {canonicalize_name(d) for d in dists.get(top, [top])}
        assert names & set(reqs), f"the trainer imports {top!r} ({', '.join(sorted(names))}); {REQUIREMENTS} lacks it"


def test_the_image_holds_every_repository_module_the_trainer_imports_at_the_path_the_job_runs(dockerfile):
    env = _one(dockerfile, "ENV")
    pythonpath = dict(item.split("=", 1) for item in shlex.split(env))["PYTHONPATH"]
    copies = []
    for name, args in dockerfile:
        if name == "COPY":
            *sources, dest = shlex.split(args)
            for source in sources:
                assert (ROOT / source).exists(), f"{DOCKERFILE}: COPY {source}: not in the repository"
                copies.append((ROOT / source, Path(dest)))

    def in_image(path: Path) -> Path | None:
        for source, dest in copies:
            if path == source:
                return dest
            if source.is_dir() and path.is_relative_to(source):
                return dest / path.relative_to(source)
        return None

    modules, _ = trainer_modules()
    assert ENTRY_MODULE in modules and "workloads.reference.data" in modules
    for module in sorted(modules):
        image_path = in_image(module_file(module))
        expected = Path(pythonpath).joinpath(*module.split("."))
        assert image_path in (expected.with_suffix(".py"), expected / "__init__.py"), (
            f"{DOCKERFILE}: {module} is not copied under PYTHONPATH={pythonpath} (found {image_path})")
    assert in_image(REQUIREMENTS) is not None


def test_the_image_runs_as_the_jobs_non_root_user(dockerfile):
    user = _one(dockerfile, "USER")
    assert user.isdigit() and int(user) != 0, f"{DOCKERFILE}: USER {user}: a numeric non-root uid (runAsNonRoot)"
    assert int(user) == TRAINER_UID
    assert dockerfile[-1][0] in ("USER", "CMD", "ENTRYPOINT") and [n for n, _ in dockerfile].index("USER") > max(
        i for i, (n, _) in enumerate(dockerfile) if n == "RUN"), "nothing may run as root after USER is set"


def test_the_dockerfile_builds_the_image_the_rendered_job_runs():
    header = DOCKERFILE.read_text().splitlines()[0]
    built = re.match(r"^# (\S+) ", header)
    assert built, f"{DOCKERFILE}: the first line names the image it builds"
    stack = load_stack_file(ROOT / "stacks" / "Pulumi.hybrid-prod.yaml", load_profiles())
    job = stack.platform.workloads.training[0]
    registry = stack.image_registry(job.site)
    expected = f"{images.repository_path(registry, IMAGE)}:{images.IMAGES[IMAGE].tag}"
    assert built[1] == expected, f"{DOCKERFILE} builds {built[1]}, the site's registry serves {expected}"
    assert f"-t {built[1]} " in DOCKERFILE.read_text(), "the build command in the header tags the same image"
    *_, manifest = render_training_run(TrainingRun(stack, job.site, job.name, "img1"), load_profiles())
    (container,) = manifest["spec"]["template"]["spec"]["containers"]
    assert container["image"] == images.site_image(stack, job.site, IMAGE)
    command = container["command"]
    assert command[0] == "torchrun" and command[command.index("-m") + 1] == ENTRY_MODULE
    assert container["securityContext"]["runAsUser"] == TRAINER_UID
