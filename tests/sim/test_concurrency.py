"""32 threads with their own boto3 clients hammer one simulated organization, in process and over HTTP."""
from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import boto3
import pytest

from crawler.sim import SimulatedOrganization
from crawler.sim.truth import entity_reports
from tests.sim.helpers import all_pages

THREADS = 32
JOBS_PER_THREAD = 2
#: botocore's client creation is not thread-safe (and every new boto3 session reloads the endpoint data).
CLIENT_LOCK = threading.Lock()


@pytest.fixture(params=["in_process", "served"])
def sim(request: pytest.FixtureRequest) -> SimulatedOrganization:
    """The organization in moto's in-process mock (make_org) or on loopback HTTP (served_org)."""
    if request.param == "in_process":
        return request.getfixturevalue("make_org")()
    return request.getfixturevalue("served_org")


def truth_services(sim: SimulatedOrganization) -> dict[str, list[tuple[str, Any]]]:
    """Entity ARN -> (namespace, last authenticated) of every service, from the ground truth."""
    return {entity.arn: [(report.namespace, report.last_authenticated) for report in reports]
            for entity, reports in entity_reports(sim.model, catalog=sim.catalog)}


def job_services(iam: Any, arn: str) -> list[tuple[str, Any]]:
    """Generate a job for ``arn`` and read every page of it."""
    job_id = iam.generate_service_last_accessed_details(Arn=arn)["JobId"]
    pages = all_pages(iam.get_service_last_accessed_details, JobId=job_id)
    assert {page["JobStatus"] for page in pages} == {"COMPLETED"}
    return [(item["ServiceNamespace"], item.get("LastAuthenticated"))
            for page in pages for item in page["ServicesLastAccessed"]]


def account_ids(organizations: Any) -> list[str]:
    """ListAccounts to the end."""
    pages = organizations.get_paginator("list_accounts").paginate(PaginationConfig={"PageSize": 2})
    return [account["Id"] for page in pages for account in page["Accounts"]]


def crawl(sim: SimulatedOrganization, session: boto3.Session, index: int, sts: Any, organizations: Any,
          account_id: str) -> dict[str, Any]:
    """One thread's share: assume role, inventory, a few jobs, ListAccounts."""
    credentials = sts.assume_role(RoleArn=sim.role_arn(account_id), RoleSessionName=f"thread-{index}")["Credentials"]
    with CLIENT_LOCK:
        iam = sim.client("iam", session=session, aws_access_key_id=credentials["AccessKeyId"],
                         aws_secret_access_key=credentials["SecretAccessKey"],
                         aws_session_token=credentials["SessionToken"])
    inventory = iam.get_account_authorization_details(MaxItems=10)
    entities = sim.model.accounts[account_id].entities
    arns = [entities[(index + offset) % len(entities)].arn for offset in range(JOBS_PER_THREAD)]
    return {"account": account_id, "inventory": inventory["IsTruncated"],
            "jobs": {arn: job_services(iam, arn) for arn in arns}, "accounts": account_ids(organizations)}


def test_concurrent_clients_see_a_consistent_organization(sim: SimulatedOrganization) -> None:
    active = [account_id for account_id, model in sim.model.accounts.items() if model.account.state == "ACTIVE"]
    session = sim.boto3_session()
    clients = [(sim.client("sts", session=session), sim.client("organizations", session=session))
               for _ in range(THREADS)]
    with ThreadPoolExecutor(max_workers=THREADS) as pool:
        futures = [pool.submit(crawl, sim, session, index, sts, organizations, active[index % len(active)])
                   for index, (sts, organizations) in enumerate(clients)]
        results = [future.result(timeout=60) for future in futures]
    truth = truth_services(sim)
    for result in results:
        assert result["inventory"] is True
        assert sorted(result["accounts"]) == sorted(sim.model.accounts)
        for arn, services in result["jobs"].items():
            assert services == truth[arn], arn
    assert len({arn for result in results for arn in result["jobs"]}) > THREADS // 2
