"""A simulated AWS Organization on moto, with IAM access advisor and fault injection.

Imported only by tests, ``access-crawler demo``, ``access-crawler sim serve`` and the
benchmarks: the crawler itself never imports it, and reaches it like real AWS.
"""
from crawler.sim.faults import AccountFaults, FaultPlan, RequestFaults
from crawler.sim.generator import OrgSpec, generate
from crawler.sim.simulator import SimulatedOrganization

__all__ = ["AccountFaults", "FaultPlan", "OrgSpec", "RequestFaults", "SimulatedOrganization", "generate"]
