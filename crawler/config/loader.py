"""Load the YAML configuration into validated, frozen settings (:mod:`crawler.config.settings`).

Every problem raises :class:`ConfigError` as ``<file>:<line>: <key.path>: <problem>``. Values are
converted from the text as written, by the type each setting expects (see :mod:`crawler.config.yamlnodes`),
after ``${VAR}`` / ``${VAR:-default}`` interpolation (``$${`` is a literal ``${``).
"""
from __future__ import annotations

import hashlib
import json
import os
import re
from collections.abc import Mapping
from dataclasses import fields, is_dataclass, replace
from datetime import date
from string import Formatter
from typing import Any

import yaml
from yaml.nodes import MappingNode, Node

from crawler.config.settings import (
    ACCOUNT_STATES,
    CHAINED_SESSION_LIMIT,
    COMPRESSIONS,
    ENTITY_TYPES,
    GRANULARITIES,
    LOG_LEVELS,
    ORGANIZATION_SOURCES,
    PARTITIONS,
    RETRY_MODES,
    AccountFilter,
    AdvisorSettings,
    AssumeRoleSettings,
    AwsSettings,
    ConcurrencySettings,
    Config,
    EntitySettings,
    LoggingSettings,
    OrganizationsAccessSettings,
    OrganizationSettings,
    OutputSettings,
    StaticAccount,
    TagFilter,
)
from crawler.config.yamlnodes import (
    MAX_DOCUMENT_CHARACTERS,
    NodeError,
    Reader,
    boolean,
    child,
    choice,
    compose_document,
    integer,
    iso_date,
    listing,
    optional,
    positive_number,
    section,
    string,
)
from crawler.errors import UsageError

DEFAULT_SOURCE = "<config>"
_ACCOUNT_ID = re.compile(r"[0-9]{12}")
_ACCOUNT_ID_EXPECTED = 'an account id, which is 12 digits (quote it to keep leading zeros, e.g. "001234567000")'
_OU_ID = re.compile(r"ou-[0-9a-z]{4,32}-[a-z0-9]{8,32}|r-[0-9a-z]{4,32}")
_OU_EXPECTED = "an OU id (ou-ab12-cdef3456, r-ab12) or a path of OU names from the root (Root/Workloads/Prod)"
_ROLE_ARN = r"arn:(?:aws|aws-cn|aws-us-gov):iam::[0-9]{12}:role/(?:[\w+=,.@-]+/)*[\w+=,.@-]{1,64}"
_EXTERNAL_ID = r"[\w+=,.@:/-]{2,1224}"
_EXTERNAL_ID_EXPECTED = "an external id (2 to 1224 letters, digits and +=,.@:/_-)"
_TEMPLATE_FIELDS = ("partition", "account_id", "role_name")
_TEMPLATE_EXAMPLE = "arn:{partition}:iam::{account_id}:role/{role_name}"
_COMPRESSION_LEVELS = {"zstd": 22, "gzip": 9}
_SAMPLE_ACCOUNT_ID = "123456789012"


class ConfigError(UsageError):
    """A configuration problem, reported as ``<file>:<line>: <key.path>: <problem>`` (exit code 2)."""

    def __init__(self, source: str, line: int | None, key: str | None, problem: str) -> None:
        self.source, self.line, self.key, self.problem = source, line, key, problem
        where = source if line is None else f"{source}:{line}"
        super().__init__(": ".join(part for part in (where, key, problem) if part))


def load_config(path: str | os.PathLike[str], environ: Mapping[str, str] | None = None) -> Config:
    """Read and validate the config file at ``path``; ``environ`` (default ``os.environ``) feeds ``${VAR}``."""
    source = os.fspath(path)
    try:
        with open(source, "rb") as file:
            data = file.read(MAX_DOCUMENT_CHARACTERS + 1)
    except OSError as error:
        raise ConfigError(source, None, None, f"cannot read the config file: {error.strerror or error}") from None
    if len(data) > MAX_DOCUMENT_CHARACTERS:
        raise ConfigError(source, 1, None, f"the file is larger than {MAX_DOCUMENT_CHARACTERS // 1024} KiB")
    try:
        content = data.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        line = data.count(b"\n", 0, error.start) + 1
        raise ConfigError(source, line, None, f"not UTF-8 text (byte 0x{data[error.start]:02x})") from None
    return replace(parse_config(content, source, environ), source=source)


def parse_config(text: str, source: str = DEFAULT_SOURCE, environ: Mapping[str, str] | None = None) -> Config:
    """Validate the YAML ``text``; ``source`` names it in errors. The result's ``source`` is None."""
    reader = Reader(os.environ if environ is None else environ)
    try:
        root = compose_document(text)
        config: Config = Config() if root is None else _CONFIG(root, "", reader)
        _check_organization(config.organization, reader)
        _check_assume_role(config.assume_role, config.aws.partition, reader)
        _check_advisor(config.advisor, reader)
        _check_organizations_access(config, reader)
        _check_output(config.output, reader)
    except NodeError as error:
        raise ConfigError(source, error.line, error.key, error.problem) from None
    return config


def _account_id(node: Node, path: str, reader: Reader) -> str:
    """A 12-digit account id, exactly as written (quoted or not)."""
    value = reader.scalar(node, path, _ACCOUNT_ID_EXPECTED).text
    if not _ACCOUNT_ID.fullmatch(value):
        raise reader.wrong(node, path, _ACCOUNT_ID_EXPECTED)
    return value


def _organizational_unit(node: Node, path: str, reader: Reader) -> str:
    """An OU or root id, or a path of OU names from ``Root`` (without a trailing slash)."""
    value = reader.scalar(node, path, _OU_EXPECTED).text
    if _OU_ID.fullmatch(value):
        return value
    names = value.removesuffix("/").split("/")
    if names[0] != "Root" or not all(names):
        raise reader.wrong(node, path, _OU_EXPECTED)
    return "/".join(names)


def _regular_expression(node: Node, path: str, reader: Reader) -> str:
    """A Python regular expression that compiles."""
    value: str = _TEXT(node, path, reader)
    try:
        re.compile(value)
    except (re.error, OverflowError, RecursionError, ValueError) as error:
        raise reader.fail(node, path, f"not a valid regular expression: {error}") from None
    return value


def _role_arn_template(node: Node, path: str, reader: Reader) -> str:
    """A role ARN template using only {partition}, {account_id} (required) and {role_name}."""
    template: str = _TEXT(node, path, reader)
    try:
        placeholders = [(name, spec, conversion) for _, name, spec, conversion in Formatter().parse(template)
                        if name is not None]
    except ValueError as error:
        raise reader.fail(node, path, f"not a valid template ({error})") from None
    if any(name not in _TEMPLATE_FIELDS or spec or conversion for name, spec, conversion in placeholders):
        raise reader.wrong(node, path, "a template whose only placeholders are {partition}, {account_id} "
                                       "and {role_name}")
    if "account_id" not in [name for name, _, _ in placeholders]:
        raise reader.wrong(node, path, "a template that contains {account_id}")
    sample = template.format(partition="aws", account_id=_SAMPLE_ACCOUNT_ID, role_name="AccessCrawlerRole")
    if not re.fullmatch(_ROLE_ARN, sample, re.ASCII):
        raise reader.wrong(node, path, f"an IAM role ARN template such as {_TEMPLATE_EXAMPLE}")
    return template


def _tag_filters(node: Node, path: str, reader: Reader) -> tuple[TagFilter, ...]:
    """``{key: value | [values] | null}`` as TagFilters sorted by key (null: any value)."""
    if reader.is_null(node, path):
        return ()
    filters = []
    for key, key_node, value_node in reader.pairs(node, path, "a mapping of tag keys to a value, values or null"):
        key_path = child(path, key)
        if not key:
            raise reader.fail(key_node, key_path, "a tag key must not be empty")
        if reader.is_null(value_node, key_path):
            filters.append(TagFilter(key))
            continue
        values: tuple[str, ...] = _TAG_VALUES(value_node, key_path, reader)
        if not values:
            raise reader.fail(value_node, key_path, "an empty list matches no account; write null to match any value")
        filters.append(TagFilter(key, values))
    return tuple(sorted(filters, key=lambda tag_filter: tag_filter.key))


def _account_tags(node: Node, path: str, reader: Reader) -> tuple[tuple[str, str], ...]:
    """``{key: value}`` as (key, value) pairs sorted by key (null: empty value)."""
    if reader.is_null(node, path):
        return ()
    tags = []
    for key, key_node, value_node in reader.pairs(node, path, "a mapping of tag keys to values"):
        key_path = child(path, key)
        if not key:
            raise reader.fail(key_node, key_path, "a tag key must not be empty")
        tags.append((key, "" if reader.is_null(value_node, key_path) else _TAG_VALUE(value_node, key_path, reader)))
    return tuple(sorted(tags))


def _static_account(node: Node, path: str, reader: Reader) -> StaticAccount:
    """A static account: a 12-digit id alone, or a mapping of id, name and tags."""
    if isinstance(node, MappingNode):
        account: StaticAccount = _STATIC_ACCOUNT(node, path, reader)
        return account
    return StaticAccount(_account_id(node, path, reader))


_TEXT = string()
_TAG_VALUE = string(allow_empty=True)
_TAG_VALUES = listing(_TAG_VALUE, "tag values")
_STATIC_ACCOUNT = section(StaticAccount, {"id": _account_id, "name": _TAG_VALUE, "tags": _account_tags})
_ACCOUNT_FILTER = section(AccountFilter, {
    "account_ids": listing(_account_id, "account ids", unique_by=str),
    "ous": listing(_organizational_unit, "OU ids or paths"),
    "tags": _tag_filters,
    "names": listing(_TEXT, "account name globs"),
})
_CONFIG = section(Config, {
    "aws": section(AwsSettings, {
        "profile": optional(_TEXT),
        "region": optional(string(r"[a-z]{2}(-[a-z]+)+-[0-9]+", "an AWS region such as us-east-1")),
        "partition": choice(PARTITIONS),
    }),
    "organization": section(OrganizationSettings, {
        "source": choice(ORGANIZATION_SOURCES),
        "accounts": listing(_static_account, "accounts (12-digit ids, or mappings of id, name and tags)",
                            unique_by=lambda account: account.id),
        "include": _ACCOUNT_FILTER,
        "exclude": _ACCOUNT_FILTER,
        "states": listing(choice(ACCOUNT_STATES), "account states", non_empty=True, unique_by=str),
    }),
    "assume_role": section(AssumeRoleSettings, {
        "role_name": string(r"[\w+=,.@-]{1,64}", "an IAM role name (1 to 64 letters, digits and +=,.@_-)"),
        "role_arn": _role_arn_template,
        "external_id": optional(string(_EXTERNAL_ID, _EXTERNAL_ID_EXPECTED)),
        "session_name": string(r"[\w+=,.@-]{2,64}", "a session name (2 to 64 letters, digits and +=,.@_-)"),
        "duration_seconds": integer(900, 43200),
        "hub_role_arn": optional(string(_ROLE_ARN, "a role ARN such as arn:aws:iam::123456789012:role/Hub")),
        "hub_external_id": optional(string(_EXTERNAL_ID, _EXTERNAL_ID_EXPECTED)),
    }),
    "entities": section(EntitySettings, {
        "types": listing(choice(ENTITY_TYPES), "entity types", non_empty=True, unique_by=str),
        "aws_managed_policies": boolean(),
        "path_prefix": string(r"/(?:[\x21-\x7e]*/)?", "an IAM path that starts and ends with / (/ or /teams/)"),
        "include_names": listing(_regular_expression, "regular expressions"),
        "exclude_names": listing(_regular_expression, "regular expressions"),
        "service_linked_roles": boolean(),
    }),
    "advisor": section(AdvisorSettings, {
        "granularity": choice(GRANULARITIES),
        "job_timeout_seconds": positive_number(86400),
        "job_retries": integer(0, 10),
        "poll_interval_seconds": positive_number(),
        "max_poll_interval_seconds": positive_number(),
        "page_size": integer(1, 1000),
        "entity_details": boolean(),
        "policies_granting_access": boolean(),
    }),
    "organizations_access": section(OrganizationsAccessSettings, {
        "enabled": boolean(),
        "per_policy": boolean(),
        "reports_in_flight": integer(1, 100),
    }),
    "concurrency": section(ConcurrencySettings, {
        "accounts": integer(1, 256),
        "requests_per_second_per_account": optional(positive_number(1000)),
        "jobs_in_flight_per_account": integer(1, 1000),
        "parallel_calls_per_account": integer(1, 64),
        "max_attempts": integer(1, 20),
        "retry_mode": choice(RETRY_MODES),
        "connect_timeout_seconds": positive_number(),
        "read_timeout_seconds": positive_number(),
        "throttle_patience_seconds": positive_number(86400),
    }),
    "output": section(OutputSettings, {
        "path": _TEXT,
        "compression": choice(COMPRESSIONS),
        "compression_level": optional(integer(1, max(_COMPRESSION_LEVELS.values()))),
        "snapshot_date": optional(iso_date()),
        "max_rows_per_file": integer(1000),
        "row_group_rows": integer(1000),
    }),
    "logging": section(LoggingSettings, {
        "level": choice(LOG_LEVELS),
        "file": optional(_TEXT),
        "file_enabled": boolean(),
        "file_level": choice(LOG_LEVELS),
        "max_bytes": integer(64 * 1024),
        "backup_count": integer(0, 1000),
        "compress_rotated": boolean(),
        "json": boolean(),
    }),
}, ignored=("source",))


def _check_organization(organization: OrganizationSettings, reader: Reader) -> None:
    """Account source versus listed accounts; ids both included and excluded."""
    if organization.source == "static" and not organization.accounts:
        raise reader.conflict(["organization.accounts", "organization.source"],
                              "'static' needs the accounts to crawl, listed under organization.accounts")
    if organization.source == "organizations" and organization.accounts:
        raise reader.conflict(["organization.accounts"], "accounts are listed but organization.source is "
                              "'organizations' (discover them); set organization.source: static to crawl this list")
    excluded = organization.exclude.account_ids
    for account_id in organization.include.account_ids:
        if account_id in excluded:
            index = excluded.index(account_id)
            raise reader.conflict([f"organization.exclude.account_ids[{index}]", "organization.exclude.account_ids"],
                                  f"account {account_id} is both in include.account_ids and exclude.account_ids")


def _check_assume_role(assume_role: AssumeRoleSettings, partition: str, reader: Reader) -> None:
    """Partitions of the role ARNs, role chaining's one-hour limit, hub external id without hub."""
    role_partition = assume_role.role_arn_for(_SAMPLE_ACCOUNT_ID, partition).split(":")[1]
    if role_partition != partition:
        raise reader.conflict(["assume_role.role_arn", "aws.partition"], f"role_arn is in partition "
                              f"'{role_partition}' but aws.partition is '{partition}' (write arn:{{partition}}:...)")
    hub = assume_role.hub_role_arn
    if hub is not None and hub.split(":")[1] != partition:
        raise reader.conflict(["assume_role.hub_role_arn"], f"hub_role_arn is in partition '{hub.split(':')[1]}' "
                              f"but aws.partition is '{partition}'")
    if hub is not None and assume_role.duration_seconds > CHAINED_SESSION_LIMIT:
        raise reader.conflict(["assume_role.duration_seconds", "assume_role.hub_role_arn"],
                              f"duration_seconds is {assume_role.duration_seconds}, but a session chained through "
                              f"hub_role_arn lasts at most {CHAINED_SESSION_LIMIT} seconds (one hour)")
    if hub is None and assume_role.hub_external_id is not None:
        raise reader.conflict(["assume_role.hub_external_id"], "hub_external_id is set but hub_role_arn is not")


def _check_advisor(advisor: AdvisorSettings, reader: Reader) -> None:
    """The longest poll interval is at least the first one."""
    if advisor.max_poll_interval_seconds < advisor.poll_interval_seconds:
        raise reader.conflict(["advisor.max_poll_interval_seconds", "advisor.poll_interval_seconds"],
                              f"max_poll_interval_seconds ({advisor.max_poll_interval_seconds:g}) is less than "
                              f"poll_interval_seconds ({advisor.poll_interval_seconds:g})")


def _check_organizations_access(config: Config, reader: Reader) -> None:
    """The Organizations view needs AWS Organizations, not a static account list."""
    if config.organizations_access.enabled and config.organization.source == "static":
        raise reader.conflict(["organizations_access.enabled", "organization.source"],
                              "the Organizations view reads AWS Organizations (from the management account): "
                              "it cannot run with organization.source: static")


def _check_output(output: OutputSettings, reader: Reader) -> None:
    """Compression level versus codec; row groups no larger than files."""
    level, compression = output.compression_level, output.compression
    if level is not None and compression not in _COMPRESSION_LEVELS:
        raise reader.conflict(["output.compression_level", "output.compression"], f"compression_level applies to "
                              f"zstd (1 to 22) or gzip (1 to 9), not to compression: {compression}")
    if level is not None and level > _COMPRESSION_LEVELS[compression]:
        raise reader.conflict(["output.compression_level"], f"compression_level for {compression} is 1 to "
                              f"{_COMPRESSION_LEVELS[compression]}, got {level}")
    if output.row_group_rows > output.max_rows_per_file:
        raise reader.conflict(["output.row_group_rows", "output.max_rows_per_file"],
                              f"row_group_rows ({output.row_group_rows}) is more than max_rows_per_file "
                              f"({output.max_rows_per_file})")


def settings_document(config: Config) -> dict[str, Any]:
    """The resolved settings in the config file's structure, as plain dicts, lists, text and numbers."""
    document: dict[str, Any] = _document(config)
    del document["source"]
    return document


def _document(value: Any) -> Any:
    """Dataclasses as dicts (field order), tuples as lists, dates as YYYY-MM-DD."""
    if is_dataclass(value) and not isinstance(value, type):
        return {item.name: _tags_document(getattr(value, item.name)) if item.name == "tags"
                else _document(getattr(value, item.name)) for item in fields(value)}
    if isinstance(value, tuple):
        return [_document(item) for item in value]
    return value.isoformat() if isinstance(value, date) else value


def _tags_document(tags: tuple[Any, ...]) -> dict[str, Any]:
    """Tag filters or account tags as a mapping, the way they are written in the file."""
    if all(isinstance(tag, TagFilter) for tag in tags):
        return {tag.key: list(tag.values) or None for tag in tags}
    return dict(tags)


def _escape_references(value: Any) -> Any:
    """``${`` in text becomes ``$${`` so that reading the text back does not interpolate it."""
    if isinstance(value, dict):
        return {key: _escape_references(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_escape_references(item) for item in value]
    return value.replace("${", "$${") if isinstance(value, str) else value


def describe_config(config: Config) -> str:
    """The resolved settings as YAML (every key, defaults filled in); it loads back to the same settings."""
    origin = (config.source or DEFAULT_SOURCE).replace("\n", " ")
    header = f"# access-crawler settings resolved from {origin}\n"
    body = yaml.safe_dump(_escape_references(settings_document(config)), sort_keys=False, allow_unicode=True,
                          default_flow_style=False, width=1_000_000)
    return header + body


#: The settings that decide what a run writes, by section (None: the whole section). A run resumes
#: (and shards join) only a run started with the same ones; concurrency, logging, credentials and
#: the advisor's patience (timeouts, retries, polling, page size) may change between attempts.
DATA_SETTINGS: dict[str, tuple[str, ...] | None] = {
    "aws": ("partition",),
    "organization": None,
    "assume_role": ("role_name", "role_arn", "hub_role_arn"),
    "entities": None,
    "advisor": ("granularity", "entity_details", "policies_granting_access"),
    "organizations_access": ("enabled", "per_policy"),
    "output": None,
}


def config_digest(config: Config) -> str:
    """SHA-256 (hex) of the settings that decide what a run writes (:data:`DATA_SETTINGS`), as canonical JSON."""
    document = settings_document(config)
    relevant = {section: document[section] if keys is None else {key: document[section][key] for key in keys}
                for section, keys in DATA_SETTINGS.items()}
    canonical = json.dumps(relevant, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()
