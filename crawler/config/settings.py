"""The crawler's settings: frozen dataclasses, one per section of the YAML config.

``crawler.config.loader.load_config`` builds a :class:`Config` from a file and validates it
completely; the rest of the crawler only ever sees these frozen objects. Defaults here are
the defaults documented in ``config/crawler.example.yaml``.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field, replace
from datetime import date

PARTITIONS = ("aws", "aws-cn", "aws-us-gov")
ENTITY_TYPES = ("USER", "ROLE", "GROUP", "POLICY")
ACCOUNT_STATES = ("PENDING_ACTIVATION", "ACTIVE", "SUSPENDED", "PENDING_CLOSURE", "CLOSED")
GRANULARITIES = ("SERVICE_LEVEL", "ACTION_LEVEL")
COMPRESSIONS = ("zstd", "snappy", "gzip", "none")
RETRY_MODES = ("standard", "adaptive", "legacy")
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")
ORGANIZATION_SOURCES = ("organizations", "static")
DEFAULT_ROLE_ARN_TEMPLATE = "arn:{partition}:iam::{account_id}:role/{role_name}"
#: STS limits a chained role session (through a hub role) to one hour.
CHAINED_SESSION_LIMIT = 3600


@dataclass(frozen=True)
class AwsSettings:
    """Where the crawler's own credentials come from (the standard boto3 chain)."""

    profile: str | None = None
    region: str | None = None
    partition: str = "aws"


@dataclass(frozen=True)
class TagFilter:
    """An account tag ``key`` with one of ``values`` (any value when empty)."""

    key: str
    values: tuple[str, ...] = ()


@dataclass(frozen=True)
class AccountFilter:
    """Accounts matched by id, OU (nested OUs included), tag or name glob; empty matches nothing."""

    account_ids: tuple[str, ...] = ()
    #: OU ids (``ou-ab12-xxxxxxxx``, ``r-ab12``) or name paths from the root (``Root/Workloads/Prod``).
    ous: tuple[str, ...] = ()
    tags: tuple[TagFilter, ...] = ()
    #: ``fnmatch`` globs on the account name, case-sensitive.
    names: tuple[str, ...] = ()

    @property
    def is_empty(self) -> bool:
        """True when the filter names nothing."""
        return not (self.account_ids or self.ous or self.tags or self.names)


@dataclass(frozen=True)
class StaticAccount:
    """An account listed in the config (``organization.source: static``)."""

    id: str
    name: str = ""
    tags: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True)
class OrganizationSettings:
    """Where the target accounts come from and which of them to crawl."""

    source: str = "organizations"
    accounts: tuple[StaticAccount, ...] = ()
    #: An account is crawled when it matches ``include`` (or ``include`` is empty) and not ``exclude``.
    include: AccountFilter = field(default_factory=AccountFilter)
    exclude: AccountFilter = field(default_factory=AccountFilter)
    states: tuple[str, ...] = ("ACTIVE",)


@dataclass(frozen=True)
class AssumeRoleSettings:
    """How to enter each account."""

    role_name: str = "AccessCrawlerRole"
    #: Template with ``{partition}``, ``{account_id}`` and ``{role_name}``.
    role_arn: str = DEFAULT_ROLE_ARN_TEMPLATE
    external_id: str | None = None
    session_name: str = "access-crawler"
    duration_seconds: int = 3600
    #: Full ARN of a role to assume first and chain through (sessions then last at most one hour).
    hub_role_arn: str | None = None
    hub_external_id: str | None = None

    def role_arn_for(self, account_id: str, partition: str) -> str:
        """The ARN of the role to assume in ``account_id``."""
        return self.role_arn.format(partition=partition, account_id=account_id, role_name=self.role_name)


@dataclass(frozen=True)
class EntitySettings:
    """Which IAM entities of each account get access-advisor jobs."""

    types: tuple[str, ...] = ENTITY_TYPES
    aws_managed_policies: bool = False
    path_prefix: str = "/"
    #: Regular expressions (``re.search``) on the entity name.
    include_names: tuple[str, ...] = ()
    exclude_names: tuple[str, ...] = ()
    service_linked_roles: bool = True


@dataclass(frozen=True)
class AdvisorSettings:
    """Access-advisor jobs: granularity, drill-downs, patience."""

    granularity: str = "SERVICE_LEVEL"
    job_timeout_seconds: float = 600.0
    #: How often a FAILED job is generated again before it is recorded as failed.
    job_retries: int = 2
    poll_interval_seconds: float = 1.0
    max_poll_interval_seconds: float = 10.0
    page_size: int = 1000
    #: GetServiceLastAccessedDetailsWithEntities for groups and policies (one call per used service).
    entity_details: bool = False
    #: ListPoliciesGrantingServiceAccess for every entity (up to 200 namespaces per call).
    policies_granting_access: bool = False


@dataclass(frozen=True)
class OrganizationsAccessSettings:
    """The Organizations view of access advisor (GenerateOrganizationsAccessReport), from the
    management account: one report for the root, every OU and every selected account."""

    enabled: bool = False
    #: Also one report per service control policy attached directly to each target
    #: (Organizations ListPolicies, then ListTargetsForPolicy for each SCP).
    per_policy: bool = False
    #: Reports generated at once (IAM answers ReportGenerationLimitExceeded beyond its own limit,
    #: which the crawler waits out).
    reports_in_flight: int = 4


@dataclass(frozen=True)
class ConcurrencySettings:
    """How much work runs at once, and how hard each account is pushed."""

    accounts: int = 8
    #: IAM requests per second per account; ``None`` lets the crawler find the rate itself.
    requests_per_second_per_account: float | None = None
    jobs_in_flight_per_account: int = 50
    #: IAM calls one account may have in flight at once (the account's rate limit still applies):
    #: more hides the latency of each call.
    parallel_calls_per_account: int = 4
    max_attempts: int = 10
    retry_mode: str = "standard"
    connect_timeout_seconds: float = 10.0
    read_timeout_seconds: float = 60.0
    #: How long one call keeps trying while AWS throttles (after botocore's own retries) before
    #: the entity or account it serves is recorded as failed.
    throttle_patience_seconds: float = 300.0


@dataclass(frozen=True)
class OutputSettings:
    """Where and how the dataset is written."""

    path: str = "./access-crawler-data"
    compression: str = "zstd"
    compression_level: int | None = None
    #: The snapshot this run writes; ``None`` means today's date in UTC.
    snapshot_date: date | None = None
    max_rows_per_file: int = 5_000_000
    row_group_rows: int = 128 * 1024

    def __post_init__(self) -> None:
        # "~/data" is the home directory's data for every reader of the path (the dataset, its
        # log, the summary), not a directory named "~": expanded once, here.
        object.__setattr__(self, "path", os.path.expanduser(self.path))


@dataclass(frozen=True)
class LoggingSettings:
    """Console and rotating log file."""

    level: str = "INFO"
    #: Log file; ``None`` means ``<output.path>/_logs/access-crawler.log``.
    file: str | None = None
    file_enabled: bool = True
    file_level: str = "DEBUG"
    max_bytes: int = 10 * 1024 * 1024
    backup_count: int = 5
    compress_rotated: bool = True
    json: bool = False


@dataclass(frozen=True)
class Config:
    """A complete, validated configuration."""

    aws: AwsSettings = field(default_factory=AwsSettings)
    organization: OrganizationSettings = field(default_factory=OrganizationSettings)
    assume_role: AssumeRoleSettings = field(default_factory=AssumeRoleSettings)
    entities: EntitySettings = field(default_factory=EntitySettings)
    advisor: AdvisorSettings = field(default_factory=AdvisorSettings)
    organizations_access: OrganizationsAccessSettings = field(default_factory=OrganizationsAccessSettings)
    concurrency: ConcurrencySettings = field(default_factory=ConcurrencySettings)
    output: OutputSettings = field(default_factory=OutputSettings)
    logging: LoggingSettings = field(default_factory=LoggingSettings)
    #: The file it was read from, if any.
    source: str | None = None

    def with_output(self, path: str) -> Config:
        """The same settings writing to ``path``."""
        return replace(self, output=replace(self.output, path=path))
