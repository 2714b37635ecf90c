"""Check Kubernetes manifests (a rendered training run, or any `kubectl apply` input) with the stack's policy pack.

The manifests are checked as part of their site's cluster, not on their own: the stack's program runs under the mock
runtime (as in `finml preview`), each manifest becomes a plan resource deployed through that site's Kubernetes
provider, and the combined plan goes to the pack over the Analyzer gRPC protocol. So the pack derives each object's
site from the cluster lineage, exactly as for the stack's own objects, and never from the manifests' labels.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any, Iterable

import yaml

from finml.plan import Plan, PlanResource, load_plan
from finml.policy_check import site_of

STACK_TYPE = "pulumi:pulumi:Stack"
K8S_PROVIDER = "pulumi:providers:kubernetes"


class ManifestError(ValueError):
    """Manifests that cannot be checked; the message names the file and what is wrong."""


def load_manifests(paths: Iterable[Path | str]) -> list[tuple[str, dict[str, Any]]]:
    """(where, manifest) for every object in the files (`-` reads stdin); `List` kinds are unpacked."""
    out: list[tuple[str, dict[str, Any]]] = []
    for path in paths:
        name = str(path)
        try:
            text = sys.stdin.read() if name == "-" else Path(path).read_text()
            docs = list(yaml.safe_load_all(text))
        except OSError as exc:
            raise ManifestError(f"{name}: cannot read ({exc.strerror})") from None
        except yaml.YAMLError as exc:
            raise ManifestError(f"{name}: not YAML ({str(exc).splitlines()[0]})") from None
        for i, doc in enumerate(docs):
            if doc is None:
                continue
            items = doc.get("items") if isinstance(doc, dict) and str(doc.get("kind", "")).endswith("List") else [doc]
            for j, item in enumerate(items or []):
                where = f"{name}: document {i + 1}" + (f" item {j + 1}" if len(items) > 1 else "")
                if not isinstance(item, dict) or not isinstance(item.get("apiVersion"), str) \
                        or not isinstance(item.get("kind"), str) \
                        or not isinstance((item.get("metadata") or {}).get("name"), str):
                    raise ManifestError(f"{where}: needs apiVersion, kind and metadata.name")
                out.append((where, item))
    if not out:
        raise ManifestError(f"{', '.join(map(str, paths))}: no Kubernetes objects found")
    return out


def type_token(manifest: dict[str, Any]) -> str:
    """`kubernetes:batch/v1:Job`, `kubernetes:core/v1:Service`: the Pulumi Kubernetes provider's type tokens."""
    api = manifest["apiVersion"]
    return f"kubernetes:{'core/' + api if '/' not in api else api}:{manifest['kind']}"


def site_provider(plan: Plan, site: str) -> str:
    """URN of the Kubernetes provider that deploys to `site`'s cluster in this plan."""
    index = plan.by_urn()
    found = sorted({r.urn for r in plan.resources if r.type == K8S_PROVIDER and site_of(index, r) == site})
    if not found:
        sites = sorted({site_of(index, r) for r in plan.resources if r.type == K8S_PROVIDER})
        raise ManifestError(f"stack {plan.stack!r} deploys no Kubernetes cluster at site {site!r}; "
                            f"clusters at: {', '.join(sites) or 'none'}")
    if len(found) > 1:
        raise ManifestError(f"stack {plan.stack!r} has {len(found)} Kubernetes providers at site {site!r}; "
                            "which cluster the manifests go to is ambiguous")
    return found[0]


def attach_manifests(plan: Plan, site: str, manifests: list[tuple[str, dict[str, Any]]]) -> tuple[Plan, list[str]]:
    """A copy of `plan` with the manifests added as resources of `site`'s cluster; returns it and their URNs."""
    provider = site_provider(plan, site)
    stack_urn = next((r.urn for r in plan.resources if r.type == STACK_TYPE), None)
    existing = {r.urn for r in plan.resources}
    added: list[PlanResource] = []
    for _, manifest in manifests:
        meta = manifest.get("metadata") or {}
        name = f"manifest:{meta.get('namespace', 'default')}/{meta['name']}"
        rtype = type_token(manifest)
        urn = f"urn:pulumi:{plan.stack}::{plan.project}::{rtype}::{name}"
        if urn in existing:
            raise ManifestError(f"{rtype} {name} appears twice")
        existing.add(urn)
        added.append(PlanResource(urn=urn, type=rtype, name=name, custom=True, parent=stack_urn, provider=provider,
                                  dependencies=[provider], props=manifest))
    return Plan(project=plan.project, stack=plan.stack, config=plan.config,
                resources=[*plan.resources, *added]), [r.urn for r in added]


def stack_plan(stack_file: Path, program: Path, out: Path, root: Path) -> Plan:
    """The stack's plan from its program under the mock runtime (what `finml preview` writes)."""
    proc = subprocess.run([sys.executable, "-m", "finml.mockrun", str(stack_file), str(program), str(out)],
                          cwd=root, capture_output=True, text=True)
    if proc.returncode != 0:
        raise ManifestError(f"{stack_file}: the program failed (exit {proc.returncode}):\n{proc.stderr.strip()}")
    return load_plan(out)
