"""Model lineage as resources: datasets and the models trained on them.

These components create no cloud or Kubernetes objects. They exist so the resource graph (and therefore the policy
pack, online and offline) sees each dataset's classification and site, and each model's training data (by dataset
name) and derived classification, as registered properties. Workloads name their model in their own props and in
the `finml.io/model` label.

Both live in this one module (a deliberate exception to one-component-per-file): they are two halves of one
concept and neither is useful alone.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import pulumi

from finml import config as cfg


def model_classification(model: cfg.Model, datasets: Iterable[cfg.Dataset]) -> str:
    """A model is as sensitive as the most sensitive data it was trained on."""
    by_name = {d.name: d for d in datasets}
    missing = [n for n in model.trained_on if n not in by_name]
    if missing:
        raise ValueError(f"model {model.name!r} is trained on unknown dataset(s) {', '.join(missing)}; "
                         f"declared: {', '.join(sorted(by_name)) or 'none'}")
    return max((by_name[n].classification for n in model.trained_on), key=cfg.classification_rank)


@dataclass(frozen=True)
class DatasetArgs:
    name: str
    classification: str
    site: str


class Dataset(pulumi.ComponentResource):
    """A dataset's classification and site, registered as props {name, classification, site}."""

    dataset_name: str
    classification: str
    site: str

    def __init__(self, name: str, args: DatasetArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        props = {"name": args.name, "classification": args.classification, "site": args.site}
        super().__init__("finml:ml:Dataset", name, props, opts)
        self.dataset_name = args.name
        self.classification = args.classification
        self.site = args.site
        # The engine gives stack policies a component's registered outputs, not its inputs: register the lineage.
        self.register_outputs(props)


@dataclass(frozen=True)
class ModelArgs:
    name: str
    trained_on: Sequence[str]
    classification: str
    """The highest classification of `trained_on` (see model_classification)."""


class Model(pulumi.ComponentResource):
    """A model's training data and derived classification, registered as props {name, trainedOn, classification}."""

    model_name: str
    trained_on: tuple[str, ...]
    classification: str

    def __init__(self, name: str, args: ModelArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        props = {"name": args.name, "trainedOn": list(args.trained_on), "classification": args.classification}
        super().__init__("finml:ml:Model", name, props, opts)
        self.model_name = args.name
        self.trained_on = tuple(args.trained_on)
        self.classification = args.classification
        # The engine gives stack policies a component's registered outputs, not its inputs: register the lineage.
        self.register_outputs(props)
