"""Ground truth: exactly what AWS would report for every entity of a generated organization.

Tests compare a crawl's output with these rows, row for row. Rows use the column names of
the crawler's dataset (``service_last_accessed`` and ``action_last_accessed``).
"""
from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

from crawler.sim.catalog import ServiceCatalog, load_catalog
from crawler.sim.generator import principal_grants
from crawler.sim.model import AccountModel, Entity, OrganizationModel
from crawler.sim.reports import ServiceReport, build_report


def principals_of(model: AccountModel, entity: Entity) -> list[str]:
    """The users and roles whose activity counts in the entity's report."""
    if entity.type in ("USER", "ROLE"):
        return [entity.arn]
    users = [candidate for candidate in model.entities if candidate.type == "USER"]
    if entity.type == "GROUP":
        return [user.arn for user in users if entity.name in user.groups]
    holders = {candidate.arn for candidate in model.entities
               if candidate.type in ("USER", "ROLE") and entity.arn in candidate.attached}
    groups = {group.name for group in model.entities if group.type == "GROUP" and entity.arn in group.attached}
    holders.update(user.arn for user in users if groups.intersection(user.groups))
    return sorted(holders)


def entity_reports(org: OrganizationModel, action_level: bool = False,
                   catalog: ServiceCatalog | None = None) -> Iterator[tuple[Entity, list[ServiceReport]]]:
    """Every entity of every account with the report access advisor would give for it."""
    catalog = catalog or load_catalog()
    cutoff = org.tracking_cutoff
    for model in org.accounts.values():
        for entity in model.entities:
            grants = principal_grants(model, entity, catalog)
            yield entity, build_report(grants, principals_of(model, entity), model.activity,
                                       catalog, cutoff, action_level)


def service_rows(org: OrganizationModel) -> list[dict[str, Any]]:
    """One row per (entity, service): the service-level ground truth."""
    rows = []
    for entity, reports in entity_reports(org):
        for report in reports:
            rows.append({
                **_entity_columns(entity), "service_namespace": report.namespace,
                "service_name": report.name, "last_authenticated": report.last_authenticated,
                "last_authenticated_entity": report.last_authenticated_entity,
                "last_authenticated_region": report.last_authenticated_region,
                "total_authenticated_entities": report.total_authenticated_entities})
    return rows


def action_rows(org: OrganizationModel) -> list[dict[str, Any]]:
    """One row per (entity, service, tracked action): the action-level ground truth."""
    rows = []
    for entity, reports in entity_reports(org, action_level=True):
        for report in reports:
            for action in report.actions or ():
                rows.append({
                    **_entity_columns(entity), "service_namespace": report.namespace,
                    "action_name": action.action_name, "last_accessed_time": action.last_accessed_time,
                    "last_accessed_entity": action.last_accessed_entity,
                    "last_accessed_region": action.last_accessed_region})
    return rows


def entity_rows(org: OrganizationModel) -> list[dict[str, Any]]:
    """One row per entity, with its account's name and state."""
    return [{**_entity_columns(entity), "entity_id": entity.id,
             "account_name": org.accounts[entity.account_id].account.name,
             "account_state": org.accounts[entity.account_id].account.state,
             "service_linked": entity.is_service_linked}
            for model in org.accounts.values() for entity in model.entities]


def write_ground_truth(org: OrganizationModel, directory: str | Path) -> dict[str, Path]:
    """Write the ground truth as JSON Lines files (timestamps in ISO 8601 UTC)."""
    target = Path(directory)
    target.mkdir(parents=True, exist_ok=True)
    written = {}
    for name, rows in (("service_last_accessed", service_rows(org)),
                       ("action_last_accessed", action_rows(org)),
                       ("entities", entity_rows(org))):
        path = target / f"{name}.jsonl"
        with path.open("w", encoding="utf-8") as handle:
            for row in rows:
                handle.write(json.dumps(row, default=_iso, ensure_ascii=False) + "\n")
        written[name] = path
    return written


def _entity_columns(entity: Entity) -> dict[str, Any]:
    return {"account_id": entity.account_id, "entity_type": entity.type, "entity_arn": entity.arn,
            "entity_name": entity.name, "entity_path": entity.path}


def _iso(value: Any) -> str:
    if isinstance(value, datetime):
        return value.isoformat().replace("+00:00", "Z")
    raise TypeError(f"cannot serialise {type(value).__name__}")
