"""The IAM service namespaces the simulator knows, and the actions it tracks.

The list is generated from botocore's service models by ``scripts/update-service-catalog``
and shipped with the package, so a seed builds the same organization whatever botocore
version is installed.
"""
from __future__ import annotations

import fnmatch
import json
from dataclasses import dataclass, field
from functools import cache
from importlib import resources


@dataclass(frozen=True)
class Service:
    """One IAM service namespace, as access advisor names it."""

    namespace: str
    name: str
    tracked_actions: tuple[str, ...]

    @property
    def tracks_actions(self) -> bool:
        """Whether access advisor reports action-level data for this service."""
        return bool(self.tracked_actions)


@dataclass(frozen=True, eq=False)
class ServiceCatalog:
    """Every service namespace, sorted, with lookups by namespace (hashed by identity)."""

    services: tuple[Service, ...]
    source: str
    _index: dict[str, Service] = field(init=False, repr=False, compare=False)
    _namespaces: tuple[str, ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_index", {service.namespace: service for service in self.services})
        object.__setattr__(self, "_namespaces", tuple(service.namespace for service in self.services))

    @property
    def namespaces(self) -> tuple[str, ...]:
        """All namespaces in sorted order."""
        return self._namespaces

    def get(self, namespace: str) -> Service | None:
        """The service for ``namespace``, or None when IAM does not know it."""
        return self._index.get(namespace)

    def tracked(self) -> tuple[Service, ...]:
        """The services with action-level tracking."""
        return tuple(service for service in self.services if service.tracks_actions)

    def matching_actions(self, namespace: str, pattern: str) -> frozenset[str]:
        """Tracked actions of ``namespace`` matched by an IAM action pattern such as ``Get*``."""
        service = self.get(namespace)
        if service is None:
            return frozenset()
        if pattern == "*":
            return frozenset(service.tracked_actions)
        lowered = pattern.lower()
        return frozenset(action for action in service.tracked_actions
                         if fnmatch.fnmatchcase(action.lower(), lowered))


@cache
def load_catalog() -> ServiceCatalog:
    """Load the shipped catalog (cached: it is immutable)."""
    text = resources.files("crawler.sim").joinpath("data/services.json").read_text("utf-8")
    document = json.loads(text)
    services = tuple(
        Service(entry["namespace"], entry["name"], tuple(entry["tracked_actions"]))
        for entry in sorted(document["services"], key=lambda entry: entry["namespace"])
    )
    return ServiceCatalog(services=services, source=document["source"])
