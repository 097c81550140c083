"""Credentials and endpoints: the standard AWS configuration, assumed roles that renew themselves."""
from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import botocore.utils
import pytest

from crawler.aws.sessions import HOME_REGIONS, CredentialsError, EnterAccountError, SessionFactory, parse_timestamp
from crawler.config.settings import AssumeRoleSettings, AwsSettings, ConcurrencySettings
from crawler.crawl.scheduler import run_crawl
from crawler.sim import FaultPlan, OrgSpec, SimulatedOrganization
from tests.helpers import crawl_config, read_rows

SPEC = OrgSpec(accounts=2, entities=8, seed=3)
#: Nothing listens here: a call sent to it fails at once.
DEAD_ENDPOINT = "http://127.0.0.1:9"


@pytest.fixture
def served() -> Iterator[SimulatedOrganization]:
    """A simulated organization on a loopback HTTP endpoint."""
    sim = SimulatedOrganization(SPEC)
    with sim.serve(port=0):
        yield sim


def use_operator_credentials(sim: SimulatedOrganization, monkeypatch: pytest.MonkeyPatch) -> None:
    """The simulator's operator keys in the environment, as a user would export them."""
    for name, value in sim.environment().items():
        if name != "AWS_ENDPOINT_URL":
            monkeypatch.setenv(name, value)
    monkeypatch.delenv("AWS_SESSION_TOKEN", raising=False)


def no_profile(output: Path):  # noqa: ANN201 - a Config
    """Crawl settings with the default credential chain instead of the ``sim`` profile."""
    config = crawl_config(output)
    return replace(config, aws=AwsSettings(region="us-east-1"))


def test_aws_endpoint_url_reaches_every_service(served: SimulatedOrganization, tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    use_operator_credentials(served, monkeypatch)
    monkeypatch.setenv("AWS_ENDPOINT_URL", str(served.endpoint_url))
    summary = run_crawl(no_profile(tmp_path))
    assert summary.complete and summary.manifest["accounts"]["ok"] == 2


def test_service_specific_endpoints_win_over_the_general_one(served: SimulatedOrganization, tmp_path: Path,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    use_operator_credentials(served, monkeypatch)
    monkeypatch.setenv("AWS_ENDPOINT_URL", DEAD_ENDPOINT)
    for service in ("IAM", "STS", "ORGANIZATIONS"):
        monkeypatch.setenv(f"AWS_ENDPOINT_URL_{service}", str(served.endpoint_url))
    summary = run_crawl(no_profile(tmp_path))
    assert summary.complete and summary.manifest["accounts"]["ok"] == 2


def test_a_profile_with_endpoint_url_is_honoured(served: SimulatedOrganization, tmp_path: Path,
                                                 fake_aws_environment: Path) -> None:
    served.write_aws_config(fake_aws_environment, profile="sim")
    summary = run_crawl(crawl_config(tmp_path))
    assert summary.complete


def test_an_unknown_profile_is_a_clear_error() -> None:
    with pytest.raises(CredentialsError, match="no-such-profile"):
        SessionFactory(AwsSettings(profile="no-such-profile"), AssumeRoleSettings(), ConcurrencySettings())


@pytest.mark.parametrize("partition, account_id, expected", [
    ("aws", "001234567000", "arn:aws:iam::001234567000:role/AccessCrawlerRole"),
    ("aws-cn", "123456789012", "arn:aws-cn:iam::123456789012:role/AccessCrawlerRole"),
    ("aws-us-gov", "123456789012", "arn:aws-us-gov:iam::123456789012:role/AccessCrawlerRole"),
])
def test_role_arns_carry_the_partition(partition: str, account_id: str, expected: str) -> None:
    factory = SessionFactory(AwsSettings(partition=partition, region=HOME_REGIONS[partition]),
                             AssumeRoleSettings(), ConcurrencySettings())
    assert factory.role_arn(account_id) == expected


def test_role_arn_template_with_a_path() -> None:
    template = "arn:{partition}:iam::{account_id}:role/audit/{role_name}"
    settings = AssumeRoleSettings(role_name="Crawler", role_arn=template)
    factory = SessionFactory(AwsSettings(region="us-east-1"), settings, ConcurrencySettings())
    assert factory.role_arn("001234567000") == "arn:aws:iam::001234567000:role/audit/Crawler"


def test_missing_role_gives_the_aws_error_code(crawl_org, tmp_path: Path) -> None:
    sim = crawl_org(replace(SPEC, accounts_without_crawler_role=1))
    missing = next(i for i, m in sim.model.accounts.items() if not m.has_crawler_role)
    config = crawl_config(tmp_path)
    factory = SessionFactory(config.aws, config.assume_role, config.concurrency)
    with pytest.raises(EnterAccountError) as raised:
        factory.enter_account(missing)
    assert raised.value.code == "AccessDenied" and raised.value.account_id == missing


def test_credentials_renew_before_they_expire_and_count_generations(crawl_org, tmp_path: Path) -> None:
    sim = crawl_org(SPEC, FaultPlan.uniform(session_seconds=2))
    config = crawl_config(tmp_path)
    factory = SessionFactory(config.aws, config.assume_role, config.concurrency)
    session = factory.enter_account(sim.member_account_ids[0])
    iam = session.client("iam")
    iam.list_roles(MaxItems=1)
    first_expiry = session.expires_at
    assert session.generation == 0 and first_expiry is not None
    time.sleep(1.6)  # inside the last quarter of the 2-second lifetime
    iam.list_roles(MaxItems=1)
    assert session.generation == 1 and session.expires_at is not None and session.expires_at > first_expiry


def test_hub_sessions_are_capped_at_one_hour(crawl_org, tmp_path: Path) -> None:
    sim = crawl_org(SPEC)
    hub = sim.role_arn(sim.management_account_id, sim.model.hub_role_name)
    config = crawl_config(tmp_path, assume_role=AssumeRoleSettings(hub_role_arn=hub, duration_seconds=3600))
    factory = SessionFactory(config.aws, config.assume_role, config.concurrency)
    session = factory.enter_account(sim.member_account_ids[0])
    assert session.source is not None and session.duration_seconds <= 3600
    assert session.client("iam").get_account_summary()["SummaryMap"] is not None


def test_accounts_table_names_the_role_it_assumed(crawl_org, tmp_path: Path) -> None:
    sim = crawl_org(SPEC)
    run_crawl(crawl_config(tmp_path))
    roles = {row["account_id"]: row["role_arn"] for row in read_rows(tmp_path, "accounts")}
    assert roles == {account_id: sim.role_arn(account_id) for account_id in roles}


def test_no_credentials_at_all_is_a_clear_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    with pytest.raises(CredentialsError, match="no AWS credentials found"):
        run_crawl(no_profile(tmp_path))


def test_discovery_refused_is_recorded_as_a_failed_run(crawl_org, tmp_path: Path, fake_aws_environment: Path) -> None:
    from crawler.sources.organizations import DiscoveryError
    from crawler.store.dataset import read_manifest

    crawl_org(SPEC)
    with (fake_aws_environment / "credentials").open("a", encoding="utf-8") as handle:
        handle.write("[stranger]\naws_access_key_id = AKIASTRANGERSTRANGER\naws_secret_access_key = x\n")
    config = replace(crawl_config(tmp_path), aws=AwsSettings(profile="stranger", region="us-east-1"))
    with pytest.raises(DiscoveryError):
        run_crawl(config, run_id="refused")
    assert read_manifest(str(tmp_path), "refused")["status"] == "failed"


@pytest.mark.parametrize("text", [
    "2026-11-30T03:00:00Z", "2026-11-30T03:00:00.123Z", "2026-11-30T03:00:00.123456Z", "2026-11-30T03:00:00+00:00",
    "2026-11-30T08:30:00+05:30", "2026-11-29T22:00:00-05:00", "1999-12-31T23:59:59Z",
    # not the fast path: botocore's own parser, unchanged
    "2026-11-30T03:00:00", "2026-11-30", "Mon, 30 Nov 2026 03:00:00 GMT", "2026-11-30T03:00:00.1234567Z",
])
def test_fast_timestamps_are_the_instants_botocore_parses(text: str) -> None:
    ours, botocores = parse_timestamp(text), botocore.utils.parse_timestamp(text)
    assert ours == botocores
    assert (ours.utcoffset() is None) == (botocores.utcoffset() is None)


@pytest.mark.parametrize("value", [1796007072, 1796007072.5, "1796007072"])
def test_epoch_timestamps_go_to_botocore(value: object) -> None:
    assert parse_timestamp(value) == botocore.utils.parse_timestamp(value)
