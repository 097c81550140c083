"""Least privilege, proven: the IAM templates in scripts/iam allow exactly the actions the crawler calls.

The simulator records every request with the principal that signed it (``SimState.requests``);
two crawls with every option on (action level, both drill-downs, AWS-managed policies, an
ExternalId, accounts without ``Paths`` so the OU walk lists accounts per parent, tag filters, the
Organizations view per SCP)
record what each principal really calls:

- "as the hub": the crawler's credentials are the hub role itself (an AWS profile with
  ``role_arn``, as an instance or task role would be), and it enters each account directly;
- "through the hub": the crawler starts with other credentials and chains through
  ``assume_role.hub_role_arn``.
"""
from __future__ import annotations

import fnmatch
from collections.abc import Iterable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import pytest

from crawler.config.settings import (
    AccountFilter,
    AdvisorSettings,
    AssumeRoleSettings,
    AwsSettings,
    EntitySettings,
    OrganizationsAccessSettings,
    OrganizationSettings,
    TagFilter,
)
from crawler.crawl.scheduler import run_crawl
from crawler.sim import OrgSpec, SimulatedOrganization
from crawler.sim.org_report import entity_paths
from crawler.sim.state import Request
from tests.cloudformation import as_list, lint_problems, load_template, policy_statements
from tests.conftest import isolate_aws
from tests.helpers import SIM_PROFILE, crawl_config, crawlable

TEMPLATES = Path(__file__).resolve().parent.parent / "scripts" / "iam"
MEMBER_TEMPLATE, HUB_TEMPLATE = TEMPLATES / "member-role.yaml", TEMPLATES / "hub-role.yaml"
SPEC = OrgSpec(accounts=4, entities=14, seed=11, external_id="quarterly-review-7")
HUB_PROFILE = "hub"
#: Allowed to everyone, whatever the policies say (AWS: "No permissions are required").
NEEDS_NO_PERMISSION = {"sts:GetCallerIdentity"}
#: Never called by the crawler, but IAM requires them of the caller of GenerateOrganizationsAccessReport
#: (IAM User Guide, last accessed information: required permissions for Organizations data).
REQUIRED_FOR_ORGANIZATIONS_REPORTS = {"organizations:DescribePolicy", "organizations:ListChildren",
                                      "organizations:ListParents", "organizations:ListPoliciesForTarget",
                                      "organizations:ListRoots", "organizations:ListTargetsForPolicy"}
WRITE_PREFIXES = ("Create", "Delete", "Put", "Update", "Attach", "Detach", "Tag", "Untag", "Add", "Remove", "Set",
                  "Upload", "Pass")


# -- CloudFormation templates ----------------------------------------------------------------
@dataclass(frozen=True)
class Grant:
    """One Allow statement of a role's permission policies."""

    actions: tuple[str, ...]
    resources: tuple[Any, ...]


def role_grants(template: dict[str, Any]) -> list[Grant]:
    """Every Allow statement of the inline policies of the template's one IAM role."""
    roles = [resource for resource in template["Resources"].values() if resource["Type"] == "AWS::IAM::Role"]
    assert len(roles) == 1, "each template creates one role"
    grants = []
    for policy in roles[0]["Properties"]["Policies"]:
        for statement in policy_statements(policy["PolicyDocument"]):
            assert statement["Effect"] == "Allow" and not {"NotAction", "NotResource"} & set(statement)
            grants.append(Grant(tuple(as_list(statement["Action"])), tuple(as_list(statement["Resource"]))))
    return grants


def allowed_actions(template: dict[str, Any]) -> set[str]:
    """The actions a template's role may call."""
    return {action for grant in role_grants(template) for action in grant.actions}


def resource_patterns(template: dict[str, Any], action: str, names: dict[str, str]) -> list[str]:
    """The resources a template allows ``action`` on, as globs: ``${Name}`` replaced from ``names``,
    then from the parameters' defaults."""
    defaults = {name: str(parameter["Default"]) for name, parameter in template["Parameters"].items()
                if "Default" in parameter}
    patterns = []
    for grant in role_grants(template):
        if action in grant.actions:
            patterns += [_substituted(resource, {**defaults, **names}) for resource in grant.resources]
    return patterns


def _substituted(resource: Any, names: dict[str, str]) -> str:
    """A resource's text (a ``!Sub`` with its names replaced; the names of a two-argument ``!Sub``
    come from ``names`` too)."""
    if isinstance(resource, str):
        return resource
    text = resource["Fn::Sub"]
    if isinstance(text, list):
        text = text[0]
    for name, value in names.items():
        text = text.replace("${" + name + "}", value)
    assert "${" not in text, f"unresolved name in {text}"
    return text


def matches(arn: str, patterns: list[str]) -> bool:
    """Whether an IAM resource glob of ``patterns`` matches ``arn``."""
    return any(fnmatch.fnmatchcase(arn, pattern) for pattern in patterns)


# -- the recording -----------------------------------------------------------------------------
@dataclass
class Recording:
    """Who called what in the two crawls, and the organization they crawled."""

    sim: SimulatedOrganization
    as_hub: list[Request]
    through_hub: list[Request]
    #: The ARNs of the organization's service control policies (read while it ran).
    scp_arns: list[str]

    @property
    def member_role_arns(self) -> set[str]:
        return {self.sim.role_arn(account_id) for account_id in self.sim.model.accounts}

    @property
    def hub_role_arn(self) -> str:
        return self.sim.role_arn(self.sim.management_account_id, self.sim.model.hub_role_name)

    def actions(self, requests: Iterable[Request], principals: set[str]) -> set[str]:
        return {request.action for request in requests if request.principal in principals}


def every_option(output: Path, aws: AwsSettings, assume_role: AssumeRoleSettings) -> Any:
    """A crawl config with every option that calls AWS on."""
    advisor = AdvisorSettings(granularity="ACTION_LEVEL", entity_details=True, policies_granting_access=True,
                              poll_interval_seconds=0.05, max_poll_interval_seconds=0.5)
    organization = OrganizationSettings(exclude=AccountFilter(tags=(TagFilter("access-crawler", ("skip",)),)))
    return crawl_config(output, aws=aws, assume_role=assume_role, advisor=advisor, organization=organization,
                        entities=EntitySettings(aws_managed_policies=True),
                        organizations_access=OrganizationsAccessSettings(enabled=True, per_policy=True))


def crawl_and_record(sim: SimulatedOrganization, config: Any) -> list[Request]:
    """Crawl; the requests it made (the simulator's counters are reset first)."""
    sim.state.requests.clear()
    summary = run_crawl(config)
    assert summary.complete and summary.manifest["accounts"]["ok"] == len(crawlable(sim))
    return list(sim.state.requests)


def attach_a_customer_scp(sim: SimulatedOrganization) -> None:
    """An SCP of the organization's own (besides AWS's FullAWSAccess), attached to its first OU."""
    client = sim.client("organizations")
    content = '{"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "s3:*", "Resource": "*"}]}'
    policy = client.create_policy(Name="only-s3", Description="test", Type="SERVICE_CONTROL_POLICY",
                                  Content=content)["Policy"]["PolicySummary"]
    client.attach_policy(PolicyId=policy["Id"], TargetId=sim.model.ous[0].id)


@pytest.fixture(scope="module")
def recording(tmp_path_factory: pytest.TempPathFactory) -> Recording:
    """Both crawls of one organization whose accounts list no ``Paths``."""
    output, home = tmp_path_factory.mktemp("permissions"), tmp_path_factory.mktemp("permissions-aws")
    sim = SimulatedOrganization(SPEC, account_paths=False)
    with pytest.MonkeyPatch.context() as patch, sim.in_process():
        config, credentials = sim.write_aws_config(home, profile=SIM_PROFILE)
        hub = sim.role_arn(sim.management_account_id, sim.model.hub_role_name)
        with config.open("a", encoding="utf-8") as profiles:
            profiles.write(f"[profile {HUB_PROFILE}]\nregion = us-east-1\nrole_arn = {hub}\n"
                           f"source_profile = {SIM_PROFILE}\n")
        isolate_aws(patch, config, credentials)
        attach_a_customer_scp(sim)
        external_id = AssumeRoleSettings(external_id=SPEC.external_id)
        as_hub = crawl_and_record(sim, every_option(output / "as-hub", AwsSettings(profile=HUB_PROFILE,
                                                                                   region="us-east-1"), external_id))
        chained = replace(external_id, hub_role_arn=hub)
        through_hub = crawl_and_record(sim, every_option(output / "through-hub", AwsSettings(
            profile=SIM_PROFILE, region="us-east-1"), chained))
        scps = sim.client("organizations").list_policies(Filter="SERVICE_CONTROL_POLICY")["Policies"]
    return Recording(sim, as_hub, through_hub, [policy["Arn"] for policy in scps])


# -- the tests ---------------------------------------------------------------------------------
def test_the_recording_saw_every_option(recording: Recording) -> None:
    for name, requests in (("as the hub", recording.as_hub), ("through the hub", recording.through_hub)):
        print(f"{name}:")
        for principal, action in sorted({(request.principal, request.action) for request in requests}):
            print(f"  {principal or '(starting credentials)'}  {action}")
    everything = {request.action for request in recording.as_hub + recording.through_hub}
    assert {"organizations:ListAccountsForParent", "organizations:ListTagsForResource",
            "iam:GetServiceLastAccessedDetailsWithEntities", "iam:ListPoliciesGrantingServiceAccess",
            "iam:GenerateOrganizationsAccessReport", "organizations:ListPolicies",
            "organizations:ListTargetsForPolicy"} <= everything
    entered = {recording.sim.role_arn(account_id) for account_id in crawlable(recording.sim)}
    assert {request.principal for request in recording.as_hub} == {"", recording.hub_role_arn} | entered
    assert recording.actions(recording.as_hub, {""}) == {"sts:AssumeRole"}, "the profile's source assumes the hub"
    assert {request.principal for request in recording.through_hub} == {"", recording.hub_role_arn} | entered


def test_member_role_allows_exactly_what_the_crawler_calls_in_an_account(recording: Recording) -> None:
    called = recording.actions(recording.as_hub + recording.through_hub, recording.member_role_arns)
    assert called == allowed_actions(load_template(MEMBER_TEMPLATE)) - REQUIRED_FOR_ORGANIZATIONS_REPORTS


def test_only_the_management_account_makes_organizations_access_reports(recording: Recording) -> None:
    """The member role's report actions are needed in the management account only (OrganizationsView)."""
    reporting = {request.principal for request in recording.as_hub + recording.through_hub
                 if request.action.endswith("OrganizationsAccessReport")}
    assert reporting == {recording.sim.role_arn(recording.sim.management_account_id)}
    member = load_template(MEMBER_TEMPLATE)
    unconditional = {action for listed in as_list(member["Resources"]["CrawlerRole"]["Properties"]["Policies"][0]
                                                  ["PolicyDocument"]["Statement"])
                     if "Fn::If" not in listed for action in as_list(listed["Action"])}
    assert not unconditional & ({"iam:GenerateOrganizationsAccessReport", "iam:GetOrganizationsAccessReport"}
                                | REQUIRED_FOR_ORGANIZATIONS_REPORTS)


def test_hub_role_allows_exactly_what_the_crawler_calls_as_the_hub(recording: Recording) -> None:
    # The S3 output's actions (granted with OutputBucket) are proven by tests/test_dataset_s3.py.
    allowed = {action for action in allowed_actions(load_template(HUB_TEMPLATE)) if not action.startswith("s3:")}
    called = recording.actions(recording.as_hub, {recording.hub_role_arn}) - NEEDS_NO_PERMISSION
    assert called == allowed
    chained = recording.actions(recording.through_hub, {recording.hub_role_arn})
    assert chained == allowed, "through the hub, the hub role does it all"


def test_through_a_hub_role_the_starting_credentials_only_assume_it(recording: Recording) -> None:
    """With ``assume_role.hub_role_arn`` the crawler's own credentials (which may be outside the
    organization) only assume the hub role; the hub role lists the organization and enters the accounts."""
    starting = recording.actions(recording.through_hub, {""}) - NEEDS_NO_PERMISSION
    assert starting == {"sts:AssumeRole"}


def test_the_management_account_is_crawled_through_the_member_role(recording: Recording) -> None:
    management = recording.sim.management_account_id
    iam_callers = {request.principal for request in recording.as_hub + recording.through_hub
                   if request.account_id == management and request.service == "iam"}
    assert iam_callers == {recording.sim.role_arn(management)}, "deploy member-role.yaml in the management account too"


@pytest.mark.parametrize("template", [MEMBER_TEMPLATE, HUB_TEMPLATE], ids=lambda path: path.name)
def test_templates_allow_no_wildcard_and_no_write_action(template: Path) -> None:
    """Read-only everywhere, but for the dataset itself: S3 actions only on the output bucket and prefix."""
    for grant in role_grants(load_template(template)):
        for action in grant.actions:
            service, operation = action.split(":")
            assert "*" not in action and "?" not in action, action
            if service == "s3":
                assert grant.resources and all("${OutputBucket}" in str(resource) for resource in grant.resources)
                continue
            assert service in ("iam", "sts", "organizations") and not operation.startswith(WRITE_PREFIXES), action


def test_resources_allowed_cover_what_the_crawler_touched(recording: Recording) -> None:
    """Where a template names resources, every ARN the crawler used matches one of them."""
    sim, hub, member = recording.sim, load_template(HUB_TEMPLATE), load_template(MEMBER_TEMPLATE)
    model = sim.model
    names = {"AWS::Partition": model.partition, "AWS::AccountId": model.management_account_id,
             "OrganizationId": model.id, "Management": model.management_account_id}
    assert all(matches(arn, resource_patterns(hub, "sts:AssumeRole", names)) for arn in recording.member_role_arns)
    parents = [model.root.arn, *(unit.arn for unit in model.ous)]
    for action in ("organizations:ListOrganizationalUnitsForParent", "organizations:ListAccountsForParent"):
        assert all(matches(arn, resource_patterns(hub, action, names)) for arn in parents), action
    tagged = resource_patterns(hub, "organizations:ListTagsForResource", names)
    assert all(matches(account.account.arn, tagged) for account in model.accounts.values())
    scps = resource_patterns(hub, "organizations:ListTargetsForPolicy", names)
    assert len(recording.scp_arns) == 2 and all(matches(arn, scps) for arn in recording.scp_arns), recording.scp_arns
    reports = resource_patterns(member, "iam:GenerateOrganizationsAccessReport", names)
    assert all(matches(f"arn:{model.partition}:iam::{model.management_account_id}:access-report/{path}", reports)
               for path in entity_paths(model))
    for account_id in crawlable(sim):
        names["AWS::AccountId"] = account_id
        generate = resource_patterns(member, "iam:GenerateServiceLastAccessedDetails", names)
        listing = resource_patterns(member, "iam:ListPoliciesGrantingServiceAccess", names)
        for entity in model.accounts[account_id].entities:
            assert matches(entity.arn, generate), entity.arn
            assert entity.type == "POLICY" or matches(entity.arn, listing), entity.arn
        assert all(matches(arn, generate) for arn in model.accounts[account_id].managed_policies)


def test_member_role_trusts_only_the_hub_role() -> None:
    role = load_template(MEMBER_TEMPLATE)["Resources"]["CrawlerRole"]["Properties"]
    statements = role["AssumeRolePolicyDocument"]["Statement"]
    assert [statement["Principal"] for statement in statements] == [{"AWS": {"Ref": "HubRoleArn"}}]
    assert [statement["Action"] for statement in statements] == ["sts:AssumeRole"]


@pytest.mark.parametrize("template", [MEMBER_TEMPLATE, HUB_TEMPLATE], ids=lambda path: path.name)
def test_cfn_lint_passes(template: Path) -> None:
    assert lint_problems(template) == []
