"""What an IAM policy document grants, in access-advisor terms.

Access advisor lists a service for an entity when an identity-based policy allows any
action of it. Both the generator's ground truth and the live simulator use this module,
so the two can only disagree if the documents stored in moto differ from the generated ones.
"""
from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from functools import lru_cache
from typing import Any
from urllib.parse import unquote

from crawler.sim.catalog import ServiceCatalog

#: namespace -> tracked actions granted in it (empty when the service tracks none).
Grants = dict[str, frozenset[str]]


def parse_document(document: str | Mapping[str, Any]) -> Mapping[str, Any]:
    """Return a policy document as a mapping, decoding JSON (URL-encoded or not)."""
    if isinstance(document, Mapping):
        return document
    text = document if document.lstrip().startswith("{") else unquote(document)
    return json.loads(text)


def grants_of_document(document: str | Mapping[str, Any], catalog: ServiceCatalog) -> Grants:
    """The services, and the tracked actions in them, that a document's Allow statements grant.

    Cached by the document's text: treat the answer as read-only.
    """
    text = document if isinstance(document, str) else json.dumps(document, sort_keys=True)
    return _grants_of_text(text, catalog)


@lru_cache(maxsize=8192)
def _grants_of_text(text: str, catalog: ServiceCatalog) -> Grants:
    grants: dict[str, set[str]] = {}
    for statement in _statements(parse_document(text)):
        if statement.get("Effect") != "Allow":
            continue
        for action in _as_list(statement.get("Action", [])):
            _add_action(grants, action, catalog)
    return {namespace: frozenset(actions) for namespace, actions in grants.items()}


def merge_grants(all_grants: Iterable[Grants]) -> Grants:
    """The union of several grants (an entity's policies together)."""
    merged: dict[str, set[str]] = {}
    for grants in all_grants:
        for namespace, actions in grants.items():
            merged.setdefault(namespace, set()).update(actions)
    return {namespace: frozenset(actions) for namespace, actions in merged.items()}


def _statements(document: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    return [statement for statement in _as_list(document.get("Statement", []))
            if isinstance(statement, Mapping)]


def _as_list(value: Any) -> list[Any]:
    return list(value) if isinstance(value, list) else [value]


def _add_action(grants: dict[str, set[str]], action: str, catalog: ServiceCatalog) -> None:
    if action == "*":
        for service in catalog.services:
            grants.setdefault(service.namespace, set()).update(service.tracked_actions)
        return
    namespace, _, pattern = action.partition(":")
    namespace = namespace.lower()
    if catalog.get(namespace) is None or not pattern:
        return
    grants.setdefault(namespace, set()).update(catalog.matching_actions(namespace, pattern))
