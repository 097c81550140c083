"""Fixtures that start simulated organizations (``make_org`` is shared, in tests/conftest.py)."""
from __future__ import annotations

from collections.abc import Iterator

import pytest

from crawler.sim import OrgSpec, SimulatedOrganization


@pytest.fixture
def small_org() -> Iterator[SimulatedOrganization]:
    """A 4-account organization in moto's in-process mock."""
    sim = SimulatedOrganization(OrgSpec(accounts=4, entities=14, seed=11))
    with sim.in_process():
        yield sim


@pytest.fixture
def served_org() -> Iterator[SimulatedOrganization]:
    """A 3-account organization served on 127.0.0.1 (any free port)."""
    sim = SimulatedOrganization(OrgSpec(accounts=3, entities=12, seed=5))
    with sim.serve(port=0):
        yield sim
