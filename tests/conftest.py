"""Test-wide safety: no test may reach real AWS or read someone's credentials."""
from __future__ import annotations

import contextlib
import itertools
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from crawler.sim import FaultPlan, OrgSpec, SimulatedOrganization
from tests.helpers import SIM_PROFILE

FAKE_ENV = {
    "AWS_ACCESS_KEY_ID": "AKIAFAKEFAKEFAKEFAKE",
    "AWS_SECRET_ACCESS_KEY": "fake-secret-for-tests-only",
    "AWS_SESSION_TOKEN": "fake-session-token",
    "AWS_DEFAULT_REGION": "us-east-1",
    "AWS_REGION": "us-east-1",
}
CLEARED = ("AWS_PROFILE", "AWS_DEFAULT_PROFILE", "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_IAM", "AWS_ENDPOINT_URL_STS",
           "AWS_ENDPOINT_URL_ORGANIZATIONS", "AWS_ROLE_ARN", "AWS_WEB_IDENTITY_TOKEN_FILE",
           "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI", "AWS_CONTAINER_CREDENTIALS_FULL_URI", "MOTO_ACCOUNT_ID")


def isolate_aws(patch: pytest.MonkeyPatch, config: Path, credentials: Path) -> None:
    """Fake credentials, no profile or endpoint from the caller's environment, no instance
    metadata, and these AWS config files: a real call fails."""
    for name in CLEARED:
        patch.delenv(name, raising=False)
    for name, value in FAKE_ENV.items():
        patch.setenv(name, value)
    patch.setenv("AWS_CONFIG_FILE", str(config))
    patch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(credentials))
    patch.setenv("AWS_EC2_METADATA_DISABLED", "true")


@pytest.fixture(autouse=True)
def fake_aws_environment(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """Fake credentials, empty AWS config files, no instance metadata: a real call fails."""
    home = tmp_path_factory.mktemp("aws-home")
    config, credentials = home / "config", home / "credentials"
    config.write_text("", encoding="utf-8")
    credentials.write_text("", encoding="utf-8")
    isolate_aws(monkeypatch, config, credentials)
    yield home


@pytest.fixture
def make_org() -> Iterator[Callable[..., SimulatedOrganization]]:
    """Start organizations with a spec, faults and options, in moto's in-process mock; stopped after the test."""
    with contextlib.ExitStack() as started:

        def start(spec: OrgSpec | None = None, faults: FaultPlan | None = None,
                  **options: Any) -> SimulatedOrganization:
            sim = SimulatedOrganization(spec or OrgSpec(accounts=4, entities=14, seed=11), faults, **options)
            started.enter_context(sim.in_process())
            return sim

        yield start


@pytest.fixture
def crawl_org(make_org: Callable[..., SimulatedOrganization],
              fake_aws_environment: Path) -> Callable[..., SimulatedOrganization]:
    """Start an organization (as ``make_org``) and point the AWS profile ``sim`` at it.

    The crawler reaches it exactly as it would reach AWS: through a named profile in the
    standard AWS config files (moto's in-process mock answers every botocore request).
    """

    def start(spec: OrgSpec | None = None, faults: FaultPlan | None = None, **options: Any) -> SimulatedOrganization:
        sim = make_org(spec, faults, **options)
        sim.write_aws_config(fake_aws_environment, profile=SIM_PROFILE)
        return sim

    return start


@pytest.fixture(scope="session")
def s3_server() -> Iterator[str]:
    """moto's S3 server on loopback (one per test process); its URL."""
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()


_BUCKETS = itertools.count()


@pytest.fixture
def make_s3_root(s3_server: str, monkeypatch: pytest.MonkeyPatch, fake_aws_environment: Path) -> Callable[[], str]:
    """Make ``s3://<new bucket>/access-data`` on moto's S3 server, reached as S3 is (``AWS_ENDPOINT_URL_S3``).

    Call it after starting the simulated organization: moto's in-process mock resets every
    backend it shares with the server when it starts.
    """
    import boto3

    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", s3_server)

    def make() -> str:
        bucket = f"access-crawler-test-{next(_BUCKETS)}"
        boto3.session.Session().client("s3", region_name="us-east-1").create_bucket(Bucket=bucket)
        return f"s3://{bucket}/access-data"

    return make
