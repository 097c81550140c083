"""The one place credentials are made: the crawler's own session and a session in each account.

The base session follows the standard AWS configuration (credential chain, ``aws.profile``,
``AWS_ENDPOINT_URL`` and ``AWS_ENDPOINT_URL_<SERVICE>``), so VPC or FIPS endpoints and the
simulator need no code of their own here. Each account is entered by assuming a role,
optionally chained through a hub role; its credentials renew themselves before they expire.

Access-advisor JobIds are bound to the role session that created them, so every renewal
increments :attr:`AccountSession.generation`: the advisor regenerates jobs made in an
earlier generation instead of reading them.
"""
from __future__ import annotations

import logging
import os
import threading
from datetime import datetime, timezone
from typing import Any

import boto3
import botocore.session
import botocore.utils
from botocore.config import Config as BotocoreConfig
from botocore.credentials import RefreshableCredentials
from botocore.exceptions import BotoCoreError, ClientError
from botocore.parsers import ResponseParserError

from crawler import __version__
from crawler.aws.errors import AWS_ERRORS, error_code, error_message
from crawler.aws.s3 import ConditionalObjects
from crawler.config.settings import CHAINED_SESSION_LIMIT, AssumeRoleSettings, AwsSettings, ConcurrencySettings
from crawler.errors import CrawlerError

log = logging.getLogger(__name__)

#: The region where each partition's global services (Organizations, IAM) are reached.
HOME_REGIONS = {"aws": "us-east-1", "aws-cn": "cn-northwest-1", "aws-us-gov": "us-gov-west-1"}


class CredentialsError(CrawlerError):
    """The crawler's own credentials are missing or unusable."""


class AwsSettingsError(CredentialsError):
    """The AWS settings cannot be used as given (a profile that does not exist, half a key pair, an
    endpoint URL that is not a URL): nothing was called; exit code 2, as for a bad config."""

    exit_code = 2


class EnterAccountError(CrawlerError):
    """AssumeRole into an account failed; carries the AWS error code and message."""

    def __init__(self, account_id: str, role_arn: str, code: str, message: str) -> None:
        super().__init__(f"cannot assume {role_arn}: {code}: {message}")
        self.account_id, self.role_arn, self.code, self.message = account_id, role_arn, code, message


def _profile_setting(profile: str | None) -> str:
    """The AWS profile in use and where it was named: aws.profile, else the environment as botocore reads it."""
    if profile:
        return f"AWS profile {profile!r} (aws.profile)"
    for name in ("AWS_DEFAULT_PROFILE", "AWS_PROFILE"):  # botocore's order
        if os.environ.get(name):
            return f"AWS profile {os.environ[name]!r} ({name})"
    return "the default AWS profile"


def _endpoint_setting(service: str) -> str:
    """Where botocore takes ``service``'s endpoint URL from: the first of its settings that is set."""
    for name in (f"AWS_ENDPOINT_URL_{service.upper().replace('-', '_')}", "AWS_ENDPOINT_URL"):
        if os.environ.get(name):
            return name
    return "endpoint_url of the AWS profile"


def parse_timestamp(value: Any) -> Any:
    """botocore's timestamp parser, without dateutil for the ISO 8601 text with a zone that AWS
    answers (dateutil took a seventh of a crawl's CPU): the same instant; anything else (naive
    text, epoch numbers, RFC 822) goes to botocore's own parser, unchanged."""
    if isinstance(value, str):
        try:
            parsed = datetime.fromisoformat(value)
        except ValueError:
            parsed = None
        if parsed is not None and parsed.tzinfo is not None:
            return parsed
    return botocore.utils.parse_timestamp(value)


def use_fast_timestamps(core: botocore.session.Session) -> None:
    """Make every client of ``core`` parse timestamps with :func:`parse_timestamp`."""
    core.get_component("response_parser_factory").set_parser_defaults(timestamp_parser=parse_timestamp)


class SessionFactory:
    """Makes the crawler's base session, its clients, and one :class:`AccountSession` per account."""

    def __init__(self, aws: AwsSettings, assume_role: AssumeRoleSettings, concurrency: ConcurrencySettings) -> None:
        self.aws, self.assume_role, self.concurrency = aws, assume_role, concurrency
        self.partition = aws.partition
        try:
            self.base = boto3.Session(profile_name=aws.profile, region_name=aws.region)
        except BotoCoreError as error:
            raise AwsSettingsError(f"{_profile_setting(aws.profile)}: {error}") from error
        use_fast_timestamps(self.base._session)
        self.region = aws.region or self.base.region_name or HOME_REGIONS[self.partition]
        self._lock = threading.Lock()
        # One botocore session makes every account's clients, each with its account's credentials:
        # a session per account cost ~12 ms of CPU each (botocore registers its handlers anew).
        # A session of the same profile keeps its settings (endpoint_url, region); it shares the
        # base session's loader, so the service models are read once.
        accounts_core = botocore.session.Session(profile=aws.profile)
        accounts_core.register_component("data_loader", self.base._session.get_component("data_loader"))
        use_fast_timestamps(accounts_core)
        self._accounts_core = accounts_core
        self._accounts = boto3.Session(botocore_session=accounts_core, region_name=self.region)
        self._hub_lock = threading.Lock()
        self._hub: AccountSession | None = None

    def client_config(self, pool_size: int = 10) -> BotocoreConfig:
        """Retries with backoff for throttling and transient errors; a pool sized to the concurrency."""
        return BotocoreConfig(
            retries={"mode": self.concurrency.retry_mode, "total_max_attempts": self.concurrency.max_attempts},
            max_pool_connections=max(pool_size, 10),
            connect_timeout=self.concurrency.connect_timeout_seconds,
            read_timeout=self.concurrency.read_timeout_seconds,
            user_agent_extra=f"access-crawler/{__version__}")

    def base_client(self, service: str, region: str | None = None) -> Any:
        """A client with the crawler's own credentials (client creation is not thread-safe: locked);
        AwsSettingsError naming the setting that makes it impossible."""
        self.base_credentials()
        with self._lock:
            try:
                return self.base.client(service, region_name=region or self.region, config=self.client_config())
            except BotoCoreError as error:  # e.g. a malformed region
                raise AwsSettingsError(f"cannot make an AWS {service} client: {error}") from error
            except ValueError as error:  # botocore: "Invalid endpoint: <url>"
                raise AwsSettingsError(f"{_endpoint_setting(service)} is not a usable endpoint URL: {error}") from error

    def base_credentials(self) -> Any:
        """The crawler's own credentials (None when there are none); AwsSettingsError when they are set
        but cannot be loaded (``AWS_SECRET_ACCESS_KEY=`` empty, a broken profile)."""
        try:
            return self.base.get_credentials()
        except BotoCoreError as error:
            raise AwsSettingsError(f"the crawler's AWS credentials cannot be loaded: {error}") from error

    def s3_objects(self) -> ConditionalObjects:
        """Conditional S3 writes (the publish claim, the lease) with the crawler's own credentials."""
        return ConditionalObjects(lambda: self.base_client("s3"))

    @classmethod
    def default(cls) -> SessionFactory:
        """A factory of the standard credential chain and default settings (commands without a config)."""
        return cls(AwsSettings(), AssumeRoleSettings(), ConcurrencySettings())

    def organizations_client(self) -> Any:
        """An Organizations client in the partition's home region: as the hub role when one is
        configured (the crawler's own credentials may be outside the organization), else with
        the crawler's own credentials."""
        region = HOME_REGIONS[self.partition]
        if self.assume_role.hub_role_arn:
            return self._hub_session().client("organizations", region)
        return self.base_client("organizations", region)

    def caller_identity(self) -> dict[str, Any]:
        """GetCallerIdentity of the base credentials: who the crawl runs as (CredentialsError if nobody)."""
        if self.base_credentials() is None:
            raise CredentialsError("no AWS credentials found: set aws.profile, or use the standard AWS credential "
                                   "chain (environment, ~/.aws files, SSO, instance or container role)")
        try:
            return dict(self.base_client("sts").get_caller_identity())
        except AWS_ERRORS as error:
            raise CredentialsError(f"the crawler's AWS credentials do not work: {error_code(error)}: "
                                   f"{error_message(error)}") from error

    def account_client(self, credentials: RefreshableCredentials, service: str, region: str | None = None,
                       pool_size: int = 10) -> Any:
        """A client of ``service`` that signs with ``credentials`` (an account's, renewing themselves)."""
        with self._lock:
            # botocore gives a new client the session's credentials object, kept by the client
            # (renewals included): set for this creation only, under the lock.
            self._accounts_core._credentials = credentials
            try:
                return self._accounts.client(service, region_name=region or self.region,
                                             config=self.client_config(pool_size))
            finally:
                self._accounts_core._credentials = None

    def role_arn(self, account_id: str) -> str:
        """The role the crawler assumes in ``account_id``."""
        return self.assume_role.role_arn_for(account_id, self.partition)

    def enter_account(self, account_id: str) -> AccountSession:
        """Assume the crawler's role in ``account_id`` (through the hub role when configured)."""
        settings = self.assume_role
        source = self._hub_session() if settings.hub_role_arn else None
        duration = settings.duration_seconds
        if source is not None:
            duration = min(duration, CHAINED_SESSION_LIMIT)
        session = AccountSession(self, account_id, self.role_arn(account_id), settings.external_id, duration, source)
        session.start()
        return session

    def _hub_session(self) -> AccountSession:
        with self._hub_lock:
            if self._hub is None:
                hub_arn = self.assume_role.hub_role_arn or ""
                hub = AccountSession(self, hub_arn.split(":")[4], hub_arn, self.assume_role.hub_external_id,
                                     self.assume_role.duration_seconds, None)
                hub.start()
                self._hub = hub
            return self._hub


class AccountSession:
    """Credentials of one role in one account that renew themselves, and the clients that use them."""

    def __init__(self, factory: SessionFactory, account_id: str, role_arn: str, external_id: str | None,
                 duration_seconds: int, source: AccountSession | None) -> None:
        self.factory, self.account_id, self.role_arn = factory, account_id, role_arn
        self.external_id, self.duration_seconds, self.source = external_id, duration_seconds, source
        #: Incremented at every renewal: jobs of an older generation cannot be read any more.
        self.generation = 0
        self._lock = threading.Lock()
        self._clients: dict[str, Any] = {}
        self._credentials: RefreshableCredentials | None = None

    def start(self) -> None:
        """Assume the role now; EnterAccountError when AWS refuses."""
        metadata = self._assume()
        self._credentials = RefreshableCredentials.create_from_metadata(
            metadata, refresh_using=self._renew, method="assume-role")
        self._set_refresh_timeouts(metadata)

    def client(self, service: str, region: str | None = None) -> Any:
        """A client of ``service`` in this account (in ``region``, default the crawl's), created
        once and shared by the account's threads."""
        key = f"{service}@{region or self.factory.region}"
        with self._lock:
            if key not in self._clients:
                assert self._credentials is not None, "start() the session first"
                self._clients[key] = self.factory.account_client(
                    self._credentials, service, region, self.factory.concurrency.parallel_calls_per_account)
            return self._clients[key]

    def renew(self) -> None:
        """Renew the credentials now (after ExpiredToken); bumps the generation."""
        assert self._credentials is not None
        self._credentials._protected_refresh(is_mandatory=True)

    @property
    def expires_at(self) -> datetime | None:
        """When the current credentials expire."""
        expiry = self._credentials._expiry_time if self._credentials else None
        return expiry.astimezone(timezone.utc) if expiry else None

    def _renew(self) -> dict[str, str]:
        metadata = self._assume()
        self._set_refresh_timeouts(metadata)
        self.generation += 1
        log.info("renewed credentials of %s (generation %d)", self.role_arn, self.generation,
                 extra={"account_id": self.account_id})
        return metadata

    def _set_refresh_timeouts(self, metadata: dict[str, str]) -> None:
        """Renew a quarter of the lifetime before expiry (at most 15 minutes before).

        botocore's defaults (15 and 10 minutes) would renew a 15-minute session on every call,
        and every renewal costs the jobs in flight.
        """
        assert self._credentials is not None
        expiry = datetime.fromisoformat(metadata["expiry_time"])
        lifetime = max((expiry - datetime.now(timezone.utc)).total_seconds(), 1.0)
        self._credentials._advisory_refresh_timeout = min(900.0, lifetime / 4)
        self._credentials._mandatory_refresh_timeout = min(600.0, lifetime / 8)

    def _assume(self) -> dict[str, str]:
        client = self.source.client("sts") if self.source else self.factory.base_client("sts")
        arguments: dict[str, Any] = {"RoleArn": self.role_arn, "RoleSessionName": self.factory.assume_role.session_name,
                                     "DurationSeconds": self.duration_seconds}
        if self.external_id:
            arguments["ExternalId"] = self.external_id
        try:
            answer = client.assume_role(**arguments)
        except ClientError as error:
            raise EnterAccountError(self.account_id, self.role_arn, error_code(error), error_message(error)) from error
        except (BotoCoreError, ResponseParserError) as error:
            raise EnterAccountError(self.account_id, self.role_arn, type(error).__name__, str(error)) from error
        credentials = answer["Credentials"]
        return {"access_key": credentials["AccessKeyId"], "secret_key": credentials["SecretAccessKey"],
                "token": credentials["SessionToken"], "expiry_time": credentials["Expiration"].isoformat()}
