"""What access advisor reports for one entity: pure functions over grants and activity.

Used by the live simulator (grants read from moto's stored policies) and by the ground
truth (grants read from the generated model), so both say the same thing.
"""
from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime

from crawler.sim.catalog import ServiceCatalog
from crawler.sim.model import ServiceActivity, Use
from crawler.sim.policies import Grants

#: principal ARN -> namespace -> activity
Activity = Mapping[str, Mapping[str, ServiceActivity]]


@dataclass(frozen=True)
class ActionReport:
    """One tracked action of a service, as in ``TrackedActionsLastAccessed``."""

    action_name: str
    last_accessed_time: datetime | None
    last_accessed_entity: str | None
    last_accessed_region: str | None


@dataclass(frozen=True)
class ServiceReport:
    """One service of an entity, as in ``ServicesLastAccessed``.

    ``actions`` is None for service-level jobs and for services without action tracking.
    ``entities`` lists (principal ARN, last authenticated) of every principal that could
    have used the service through the entity, newest first (for ``...WithEntities``).
    """

    namespace: str
    name: str
    last_authenticated: datetime | None
    last_authenticated_entity: str | None
    last_authenticated_region: str | None
    total_authenticated_entities: int | None
    actions: tuple[ActionReport, ...] | None
    entities: tuple[tuple[str, datetime | None], ...]


def build_report(grants: Grants, principals: Iterable[str], activity: Activity,
                 catalog: ServiceCatalog, cutoff: datetime, action_level: bool) -> list[ServiceReport]:
    """The services ``grants`` lists, sorted by namespace, with the principals' last use.

    Use older than ``cutoff`` (the start of the tracking period) is not reported.
    """
    principal_list = sorted(set(principals))
    reports = []
    for namespace in sorted(grants):
        service = catalog.get(namespace)
        if service is None:
            continue
        uses = _uses(principal_list, activity, namespace, cutoff)
        latest = max(uses.items(), key=lambda item: (item[1].time, item[0]), default=None)
        actions = None
        if action_level and service.tracks_actions:
            actions = _action_reports(sorted(grants[namespace]), principal_list, activity, namespace, cutoff)
        reports.append(ServiceReport(
            namespace=namespace, name=service.name,
            last_authenticated=latest[1].time if latest else None,
            last_authenticated_entity=latest[0] if latest else None,
            last_authenticated_region=latest[1].region if latest else None,
            total_authenticated_entities=len(uses) if uses else None,
            actions=actions,
            entities=_entities_newest_first(principal_list, uses)))
    return reports


def _uses(principals: list[str], activity: Activity, namespace: str, cutoff: datetime) -> dict[str, Use]:
    uses = {}
    for principal in principals:
        service_activity = activity.get(principal, {}).get(namespace)
        if service_activity is not None and service_activity.use.time >= cutoff:
            uses[principal] = service_activity.use
    return uses


def _action_reports(actions: list[str], principals: list[str], activity: Activity, namespace: str,
                    cutoff: datetime) -> tuple[ActionReport, ...]:
    reports = []
    for action in actions:
        latest: tuple[str, Use] | None = None
        for principal in principals:
            service_activity = activity.get(principal, {}).get(namespace)
            use = service_activity.actions.get(action) if service_activity else None
            if use is not None and use.time >= cutoff and (latest is None or use.time > latest[1].time):
                latest = (principal, use)
        reports.append(ActionReport(
            action, latest[1].time if latest else None, latest[0] if latest else None,
            latest[1].region if latest else None))
    return tuple(reports)


def _entities_newest_first(principals: list[str], uses: Mapping[str, Use]) -> tuple[tuple[str, datetime | None], ...]:
    used = sorted(((arn, use.time) for arn, use in uses.items()), key=lambda item: (-item[1].timestamp(), item[0]))
    unused = [(arn, None) for arn in principals if arn not in uses]
    return tuple(used) + tuple(unused)
