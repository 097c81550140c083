"""Fixtures that start simulated organizations (in process, or on loopback HTTP)."""
from __future__ import annotations

from collections.abc import Iterator

import pytest

from crawler.sim import FaultPlan, OrgSpec, SimulatedOrganization


@pytest.fixture
def small_org() -> Iterator[SimulatedOrganization]:
    """A 4-account organization in moto's in-process mock."""
    sim = SimulatedOrganization(OrgSpec(accounts=4, entities=14, seed=11))
    with sim.in_process():
        yield sim


@pytest.fixture
def make_org() -> Iterator:
    """Start an organization with the given spec and faults (in process); stopped after the test."""
    started = []

    def start(spec: OrgSpec | None = None, faults: FaultPlan | None = None, **options: object) -> SimulatedOrganization:
        sim = SimulatedOrganization(spec or OrgSpec(accounts=4, entities=14, seed=11), faults, **options)
        context = sim.in_process()
        context.__enter__()
        started.append(context)
        return sim

    yield start
    for context in reversed(started):
        context.__exit__(None, None, None)


@pytest.fixture
def served_org() -> Iterator[SimulatedOrganization]:
    """A 3-account organization served on 127.0.0.1 (any free port)."""
    sim = SimulatedOrganization(OrgSpec(accounts=3, entities=12, seed=5))
    with sim.serve(port=0):
        yield sim
