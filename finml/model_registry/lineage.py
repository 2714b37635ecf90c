"""Lineage that is computed, not typed.

A model version's classification is the highest `finml.classification` among the dataset inputs of the run that
produced it: model version -> logged model -> source run -> dataset inputs. Every input must carry two input tags:

    finml.classification   public | internal | confidential | restricted
    finml.site             the site holding the data, e.g. onprem:fra-dc1 or aws:eu-central-1

Anything missing or unreadable (no source run, a run without dataset inputs, a tag missing or with a value outside
the convention, a registry error) makes the lineage `unknown`, which ranks above `restricted` and is allowed
nowhere: the gate fails closed.

    lineage = resolve_lineage(MlflowClient(), "fraud-scorer", "3")
    lineage.classification          # "restricted" | ... | "unknown"
    lineage.offending_dataset       # the input that set the classification (or caused `unknown`)
    lineage.digest                  # sha256 over the canonical lineage record, logged in the audit trail
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import asdict, dataclass, field
from typing import Any

CLASSIFICATIONS: tuple[str, ...] = ("public", "internal", "confidential", "restricted")
UNKNOWN = "unknown"
TAG_CLASSIFICATION = "finml.classification"
TAG_SITE = "finml.site"
# Same grammar as finml.config.SITE_RE (kept here so this module needs nothing but the standard library and mlflow).
SITE_RE = re.compile(r"^aws:[a-z]{2}(-gov)?-[a-z]+-\d$|^onprem:[a-z0-9]([a-z0-9-]{0,30}[a-z0-9])?$")
LINEAGE_FORMAT = "finml-lineage/1"
LOGGED_MODEL_SOURCE_RE = re.compile(r"^models:/(m-[0-9a-f]{32})/?$")


def classification_rank(classification: str) -> int:
    """public 0 … restricted 3; unknown (or anything else) ranks above every known classification."""
    try:
        return CLASSIFICATIONS.index(classification)
    except ValueError:
        return len(CLASSIFICATIONS)


@dataclass(frozen=True)
class DatasetRef:
    """One dataset input of the source run, as the registry recorded it."""

    name: str
    digest: str
    classification: str          # one of CLASSIFICATIONS, or "unknown" when the tag is missing or invalid
    site: str                    # a site id, or "unknown"
    source_type: str = ""
    source: str = ""
    problem: str | None = None   # why classification or site is unknown


@dataclass(frozen=True)
class Lineage:
    name: str
    version: str
    classification: str
    datasets: tuple[DatasetRef, ...]
    source_run_id: str | None
    logged_model_id: str | None
    source: str | None
    problems: tuple[str, ...] = field(default=())

    @property
    def unknown(self) -> bool:
        return self.classification == UNKNOWN

    @property
    def offending_dataset(self) -> DatasetRef | None:
        """The first dataset input with the lineage's (highest) classification: the one a refusal names."""
        for ds in self.datasets:
            if ds.classification == self.classification:
                return ds
        return None

    def record(self) -> dict[str, Any]:
        """The canonical, JSON-ready lineage record (what the digest covers, what a copy carries)."""
        return {
            "format": LINEAGE_FORMAT,
            "model": self.name,
            "version": str(self.version),
            "classification": self.classification,
            "source_run_id": self.source_run_id,
            "logged_model_id": self.logged_model_id,
            "datasets": [{k: v for k, v in asdict(ds).items() if k != "problem" or v is not None}
                         for ds in self.datasets],
            "problems": list(self.problems),
        }

    @property
    def digest(self) -> str:
        body = self.record()
        # The digest identifies the data lineage, not the registry entry: a faithful copy has the same digest.
        body = {k: v for k, v in body.items() if k in ("format", "classification", "datasets", "problems")}
        canonical = json.dumps(body, sort_keys=True, separators=(",", ":"))
        return "sha256:" + hashlib.sha256(canonical.encode()).hexdigest()


def _tags(dataset_input: Any) -> dict[str, str]:
    return {t.key: t.value for t in (getattr(dataset_input, "tags", None) or [])}


def dataset_ref(dataset_input: Any) -> DatasetRef:
    """Read one `DatasetInput`; missing or invalid finml tags make it unknown (with the reason)."""
    ds = dataset_input.dataset
    tags = _tags(dataset_input)
    problems = []
    classification = tags.get(TAG_CLASSIFICATION)
    if classification is None:
        problems.append(f"input tag {TAG_CLASSIFICATION} is missing")
        classification = UNKNOWN
    elif classification not in CLASSIFICATIONS:
        problems.append(f"input tag {TAG_CLASSIFICATION}={classification!r} is not one of {', '.join(CLASSIFICATIONS)}")
        classification = UNKNOWN
    site = tags.get(TAG_SITE)
    if site is None:
        problems.append(f"input tag {TAG_SITE} is missing")
        site = UNKNOWN
    elif not SITE_RE.match(site):
        problems.append(f"input tag {TAG_SITE}={site!r} is not a site id (aws:<region> or onprem:<site-id>)")
        site = UNKNOWN
    if site == UNKNOWN:
        classification = UNKNOWN  # data of unknown location cannot be vouched for
    return DatasetRef(name=str(ds.name), digest=str(ds.digest), classification=classification, site=site,
                      source_type=str(getattr(ds, "source_type", "") or ""), source=str(getattr(ds, "source", "") or ""),
                      problem="; ".join(problems) or None)


def lineage_from_inputs(name: str, version: str, dataset_inputs: list[Any], *, source_run_id: str | None,
                        logged_model_id: str | None = None, source: str | None = None,
                        problems: tuple[str, ...] = ()) -> Lineage:
    datasets = tuple(dataset_ref(di) for di in dataset_inputs)
    problems = tuple(problems) + tuple(f"dataset {d.name!r} ({d.digest}): {d.problem}" for d in datasets if d.problem)
    if not datasets:
        problems += (f"run {source_run_id} has no dataset inputs",)
    if problems:
        classification = UNKNOWN
    else:
        classification = max((d.classification for d in datasets), key=classification_rank)
    return Lineage(name=name, version=str(version), classification=classification, datasets=datasets,
                   source_run_id=source_run_id, logged_model_id=logged_model_id, source=source, problems=problems)


def _unknown(name: str, version: str, problem: str, *, run_id: str | None = None, model_id: str | None = None,
             source: str | None = None) -> Lineage:
    return Lineage(name=name, version=str(version), classification=UNKNOWN, datasets=(), source_run_id=run_id,
                   logged_model_id=model_id, source=source, problems=(problem,))


def resolve_lineage(client: Any, name: str, version: str | int) -> Lineage:
    """Compute the lineage of registered model `name` version `version` through an `MlflowClient`.

    Never raises for missing or unreadable lineage: the result is `unknown` with the reason in `problems`. Errors
    reaching the registry for the model version itself (authentication, TLS, not found) are raised, so that callers
    can tell "no such model" from "no lineage".
    """
    version = str(version)
    mv = client.get_model_version(name, version)
    model_id = getattr(mv, "model_id", None) or None
    run_id = getattr(mv, "run_id", None) or None
    source = getattr(mv, "source", None)
    if not model_id and isinstance(source, str):
        match = LOGGED_MODEL_SOURCE_RE.match(source)  # registries that report the logged model only as its URI
        model_id = match.group(1) if match else None
    if model_id:
        try:
            logged = client.get_logged_model(model_id)
        except Exception as exc:  # noqa: BLE001 — unreadable lineage is unknown lineage
            return _unknown(name, version, f"logged model {model_id} cannot be read: {_short(exc)}",
                            run_id=run_id, model_id=model_id, source=source)
        logged_run = getattr(logged, "source_run_id", None) or None
        if logged_run and run_id and logged_run != run_id:
            return _unknown(name, version, f"model version names run {run_id} but its logged model {model_id} "
                                           f"comes from run {logged_run}", run_id=run_id, model_id=model_id,
                            source=source)
        run_id = logged_run or run_id
    if not run_id:
        return _unknown(name, version, "model version has no source run", model_id=model_id, source=source)
    try:
        run = client.get_run(run_id)
    except Exception as exc:  # noqa: BLE001
        return _unknown(name, version, f"source run {run_id} cannot be read: {_short(exc)}", run_id=run_id,
                        model_id=model_id, source=source)
    inputs = list(getattr(getattr(run, "inputs", None), "dataset_inputs", None) or [])
    return lineage_from_inputs(name, version, inputs, source_run_id=run_id, logged_model_id=model_id, source=source)


def resolve_alias(client: Any, name: str, alias: str) -> str:
    """The version number an alias points at (raises the registry's error when the alias is not set)."""
    return str(client.get_model_version_by_alias(name, alias).version)


def _short(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {text[:300]}"
