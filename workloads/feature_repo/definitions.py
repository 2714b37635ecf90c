"""Feast objects of the reference card-fraud repository, built from `catalog.py` for one site.

    objects = feature_objects(site="onprem:fra-dc1", offline_uri="/data/offline", allowed="restricted")
    store.apply(objects)

Only the feature views whose classification the site may hold are built (`allowed`): a site that may not hold
restricted data never even registers `customer_profile`. Every data source and feature view carries the tags
``finml.classification`` and ``finml.site``.

Access (Feast permissions): Feast 0.67's permission matcher looks for a ``required_tags`` attribute on the resource,
which feature views do not have, so a permission keyed on ``required_tags`` matches *every* view (see
tests/feature_store/test_permissions.py). The permissions below are therefore keyed on the classification through
exact name patterns generated from the same tag: one permission per classification, listing the views that carry it.
Readers are granted by namespace *or* by that namespace's service-account group (`system:serviceaccounts:<ns>`):
Feast's Kubernetes authentication (the cluster) reports both for a service-account token, its OIDC authentication
(local mode, tests) reports the token's `groups` claim, so one permission means the same in both.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping

from feast import Entity, FeatureService, FeatureView, Field, FileSource, ValueType
from feast.data_source import DataSource
from feast.permissions.action import ALL_ACTIONS, READ, AuthzedAction
from feast.permissions.permission import Permission
from feast.permissions.policy import CombinedGroupNamespacePolicy, RoleBasedPolicy
from feast.types import Float64, Int64

from workloads.feature_repo.catalog import (
    CLASSIFICATION_TAG,
    ENTITIES,
    SITE_TAG,
    SOURCES_BY_NAME,
    FeatureViewSpec,
    classification_rank,
    feature_views_up_to,
    service_account_group,
)

_DTYPES = {"int64": Int64, "float64": Float64}
#: Role of the materialization job and operators: may apply and write, read everything the site holds.
ADMIN_ROLE = "finml-feature-admin"
#: Service name of the reference model's feature service (all views the site holds).
FRAUD_SERVICE = "fraud_detection"


def _tags(classification: str, site: str) -> dict[str, str]:
    return {CLASSIFICATION_TAG: classification, SITE_TAG: site}


def entities() -> dict[str, Entity]:
    return {e.name: Entity(name=e.name, join_keys=[e.join_key], value_type=ValueType.STRING,
                           description=e.description) for e in ENTITIES}


def data_source(name: str, *, site: str, offline_uri: str) -> FileSource:
    spec = SOURCES_BY_NAME[name]
    return FileSource(name=spec.name, path=f"{offline_uri.rstrip('/')}/{spec.file}",
                      timestamp_field="event_timestamp", created_timestamp_column="created_timestamp",
                      description=spec.description, tags=_tags(spec.classification, site))


def feature_view(spec: FeatureViewSpec, *, site: str, sources: Mapping[str, DataSource],
                 entity_objects: Mapping[str, Entity]) -> FeatureView:
    return FeatureView(
        name=spec.name, entities=[entity_objects[spec.entity]], ttl=spec.ttl,
        schema=[Field(name=col, dtype=_DTYPES[dtype]) for col, dtype in spec.features],
        source=sources[spec.source], online=True, description=spec.description,
        tags=_tags(spec.classification, site))


def access_permissions(views: Iterable[FeatureViewSpec], readers: Mapping[str, Iterable[str]],
                       services: Mapping[str, str] | None = None) -> list[Permission]:
    """One read permission per classification: the feature views carrying it (and the feature services whose
    highest classification it is, from `services`: name → classification) may be read by service accounts of the
    namespaces in `readers[classification]` (none listed: nobody but the admin role).

    Feast grants when any matching permission grants, so a view must match only its own classification's
    permission: exact name patterns guarantee that.
    """
    by_class: dict[str, list[str]] = {}
    for v in views:
        by_class.setdefault(v.classification, []).append(v.name)
    for name, classification in (services or {}).items():
        by_class.setdefault(classification, []).append(name)
    perms = [Permission(name="feature-admin", types=[FeatureView, FeatureService, Entity, DataSource],
                        actions=ALL_ACTIONS, policy=RoleBasedPolicy(roles=[ADMIN_ROLE]))]
    for classification in sorted(by_class, key=classification_rank):
        namespaces = sorted(set(readers.get(classification, ())))
        perms.append(Permission(
            name=f"read-{classification}-features", types=[FeatureView, FeatureService],
            name_patterns=[f"^{re.escape(n)}$" for n in sorted(by_class[classification])],
            actions=[*READ, AuthzedAction.DESCRIBE],
            policy=CombinedGroupNamespacePolicy(groups=[service_account_group(n) for n in namespaces],
                                                namespaces=namespaces),
            tags={CLASSIFICATION_TAG: classification}))
    return perms


def feature_objects(*, site: str, offline_uri: str, allowed: str,
                    readers: Mapping[str, Iterable[str]] | None = None) -> list:
    """Entities, sources, feature views, the fraud feature service and the access permissions for one site.

    `allowed`: the highest classification the site's residency rules allow for the feature store.
    `readers`: classification → namespaces whose service accounts may read views of that classification;
    None builds no permissions: only for stores nobody serves (the offline point-in-time tests) — with none in the
    registry, Feast lets every authenticated caller of a feature server read everything.
    """
    views = feature_views_up_to(allowed)
    ents = entities()
    sources = {name: data_source(name, site=site, offline_uri=offline_uri) for name in {v.source for v in views}}
    fvs = [feature_view(v, site=site, sources=sources, entity_objects=ents) for v in views]
    service_class = max((v.classification for v in views), key=classification_rank)
    service = FeatureService(name=FRAUD_SERVICE, features=fvs,
                             description="Every feature view of the reference fraud model held on this site.",
                             tags=_tags(service_class, site))
    objects: list = [*ents.values(), *sources.values(), *fvs, service]
    if readers is not None:
        objects.extend(access_permissions(views, readers, {FRAUD_SERVICE: service_class}))
    return objects
