"""The YAML configuration: conversion by expected type, errors with file, line and key, and the example file."""
from __future__ import annotations

import typing
from dataclasses import fields, is_dataclass, replace
from datetime import date
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from crawler.config.loader import ConfigError, config_digest, describe_config, load_config, parse_config
from crawler.config.settings import Config, StaticAccount, TagFilter
from crawler.errors import UsageError

EXAMPLE = Path(__file__).resolve().parents[1] / "config" / "crawler.example.yaml"
SOURCE = "cfg.yaml"


def error_of(text: str, environ: dict[str, str] | None = None) -> ConfigError:
    """The ConfigError that parsing ``text`` (named cfg.yaml) raises."""
    with pytest.raises(ConfigError) as caught:
        parse_config(text, SOURCE, environ or {})
    return caught.value


def assert_error(error: ConfigError, line: int, key: str, *fragments: str) -> None:
    """The message is ``cfg.yaml:<line>: <key>: ...`` and contains every fragment, and no traceback."""
    message = str(error)
    assert message.startswith(f"{SOURCE}:{line}: {key + ': ' if key else ''}"), message
    for fragment in fragments:
        assert fragment in message, message
    assert "Traceback" not in message and "\n" not in message
    assert isinstance(error, UsageError) and error.exit_code == 2


# -- one bad value: "# comment / section: / key: value" puts the key on line 3 --------------------
@pytest.mark.parametrize(("section", "key", "value", "fragment"), [
    ("concurrency", "accounts", "0", "an integer from 1 to 256, got '0'"),
    ("concurrency", "accounts", "257", "from 1 to 256"),
    ("concurrency", "accounts", "eight", "got 'eight'"),
    ("concurrency", "accounts", "8.5", "an integer"),
    ("concurrency", "accounts", "0x10", "an integer"),
    ("concurrency", "accounts", "'8'", "remove the quotes"),
    ("concurrency", "accounts", "[8]", "got a list"),
    ("concurrency", "accounts", "~", "got null"),
    ("concurrency", "acounts", "8", "did you mean 'accounts'?"),
    ("concurrency", "requests_per_second_per_account", "0", "greater than 0"),
    ("concurrency", "requests_per_second_per_account", "1001", "at most 1000"),
    ("concurrency", "jobs_in_flight_per_account", "1001", "from 1 to 1000"),
    ("concurrency", "max_attempts", "21", "from 1 to 20"),
    ("concurrency", "retry_mode", "fast", "one of standard, adaptive, legacy"),
    ("concurrency", "connect_timeout_seconds", "-1", "greater than 0"),
    ("concurrency", "read_timeout_seconds", ".inf", "a number"),
    ("concurrency", "read_timeout_seconds", "1e999", "a number"),
    ("advisor", "granularity", "service", "did you mean 'SERVICE_LEVEL'?"),
    ("advisor", "job_timeout_seconds", "86401", "at most 86400"),
    ("advisor", "job_timeout_seconds", "0", "greater than 0"),
    ("advisor", "job_retries", "11", "from 0 to 10"),
    ("advisor", "job_retries", "-1", "from 0 to 10"),
    ("advisor", "poll_interval_seconds", "0", "greater than 0"),
    ("advisor", "page_size", "1001", "from 1 to 1000"),
    ("advisor", "page_size", "0", "from 1 to 1000"),
    ("advisor", "entity_details", "maybe", "true or false"),
    ("advisor", "policies_granting_access", "1", "true or false"),
    ("organizations_access", "enabled", "maybe", "true or false"),
    ("organizations_access", "per_policy", "'true'", "remove the quotes"),
    ("organizations_access", "per_polcy", "true", "did you mean 'per_policy'?"),
    ("organizations_access", "reports_in_flight", "0", "from 1 to 100"),
    ("aws", "partition", "aws-eu", "one of aws, aws-cn, aws-us-gov"),
    ("aws", "region", "US-EAST-1", "an AWS region"),
    ("aws", "region", "useast1", "an AWS region"),
    ("aws", "profile", "''", "must not be empty"),
    ("aws", "regoin", "us-east-1", "did you mean 'region'?"),
    ("assume_role", "role_name", "'bad name'", "an IAM role name"),
    ("assume_role", "role_name", "", "got null"),
    ("assume_role", "session_name", "x", "a session name"),
    ("assume_role", "external_id", "x", "an external id"),
    ("assume_role", "external_id", "'has space'", "an external id"),
    ("assume_role", "duration_seconds", "899", "from 900 to 43200"),
    ("assume_role", "duration_seconds", "43201", "from 900 to 43200"),
    ("assume_role", "hub_role_arn", "Hub", "a role ARN"),
    ("assume_role", "hub_role_arn", "arn:aws:iam::123456789012:user/x", "a role ARN"),
    ("assume_role", "role_arn", "arn:{partition}:iam::{account}:role/X", "only placeholders"),
    ("assume_role", "role_arn", "arn:{partition}:iam::123456789012:role/X", "contains {account_id}"),
    ("assume_role", "role_arn", "'{account_id}'", "an IAM role ARN template"),
    ("assume_role", "role_arn", "arn:{partition}:iam::{account_id}:user/{role_name}", "an IAM role ARN template"),
    ("assume_role", "role_arn", "'arn:{partition}:iam::{account_id}:role/{role_name!r}'", "only placeholders"),
    ("assume_role", "role_arn", "'arn:{partition}:iam::{account_id}:role/{'", "not a valid template"),
    ("assume_role", "role_arn", "arn:aws-cn:iam::{account_id}:role/X", "partition 'aws-cn'"),
    ("entities", "types", "[]", "at least one"),
    ("entities", "path_prefix", "/teams", "starts and ends with /"),
    ("entities", "path_prefix", "teams/", "starts and ends with /"),
    ("entities", "include_names", "'['", "not a valid regular expression: unterminated character set"),
    ("entities", "service_linked_roles", "'yes'", "remove the quotes"),
    ("organization", "source", "org", "one of organizations, static"),
    ("organization", "states", "[]", "at least one"),
    ("organization", "states", "{a: b}", "got a mapping"),
    ("organization", "accounts", "['123456789012']", "set organization.source: static"),
    ("output", "path", "''", "must not be empty"),
    ("output", "compression", "lz4", "one of zstd, snappy, gzip, none"),
    ("output", "compression_level", "23", "from 1 to 22"),
    ("output", "snapshot_date", "2024-13-01", "month must be in 1..12"),
    ("output", "snapshot_date", "20240101", "YYYY-MM-DD"),
    ("output", "snapshot_date", "yesterday", "YYYY-MM-DD"),
    ("output", "max_rows_per_file", "999", "at least 1000"),
    ("output", "row_group_rows", "999", "at least 1000"),
    ("output", "row_group_rows", "6000000", "more than max_rows_per_file (5000000)"),
    ("logging", "level", "warn", "did you mean 'WARNING'?"),
    ("logging", "file_level", "trace", "one of DEBUG, INFO, WARNING, ERROR"),
    ("logging", "max_bytes", "1024", "at least 65536"),
    ("logging", "backup_count", "1001", "from 0 to 1000"),
    ("logging", "json", "'false'", "remove the quotes"),
    ("logging", "file", "''", "must not be empty"),
    ("logging", "levle", "INFO", "unknown key 'levle'; did you mean 'level'? (valid keys: level, file,"),
])
def test_a_bad_value_names_file_line_and_key(section: str, key: str, value: str, fragment: str) -> None:
    error = error_of(f"# access-crawler\n{section}:\n  {key}: {value}\n")
    assert_error(error, 3, f"{section}.{key}", fragment)
    assert (error.source, error.line, error.key) == (SOURCE, 3, f"{section}.{key}")


@pytest.mark.parametrize(("text", "line", "key", "fragment"), [
    ("assume_role:\n  hub_role_arn: arn:aws:iam::123456789012:role/Hub\n  duration_seconds: 7200\n",
     3, "assume_role.duration_seconds", "at most 3600 seconds (one hour)"),
    ("assume_role:\n  hub_external_id: abc\n", 2, "assume_role.hub_external_id", "hub_role_arn is not"),
    ("aws:\n  partition: aws-cn\nassume_role:\n  hub_role_arn: arn:aws:iam::123456789012:role/Hub\n",
     4, "assume_role.hub_role_arn", "partition 'aws'"),
    ("aws:\n  partition: aws-us-gov\nassume_role:\n  role_arn: arn:aws:iam::{account_id}:role/X\n",
     4, "assume_role.role_arn", "aws.partition is 'aws-us-gov'"),
    ("organization:\n  source: static\n", 2, "organization.source", "organization.accounts"),
    ("organization:\n  source: static\n  accounts: []\n", 3, "organization.accounts", "needs the accounts"),
    ("organization:\n  source: static\n  accounts:\n    - '123456789012'\n    - id: '123456789012'\n",
     5, "organization.accounts[1]", "'123456789012' is listed twice (first at line 4)"),
    ("organization:\n  include:\n    account_ids: ['111111111111', '111111111111']\n",
     3, "organization.include.account_ids[1]", "listed twice"),
    ("organization:\n  include:\n    account_ids: ['111111111111']\n  exclude:\n    account_ids:\n"
     "      - '222222222222'\n      - '111111111111'\n",
     7, "organization.exclude.account_ids[1]", "both in include.account_ids and exclude.account_ids"),
    ("organization:\n  source: static\n  accounts:\n    - name: x\n",
     4, "organization.accounts[0]", "missing key 'id'"),
    ("organization:\n  source: static\n  accounts:\n    - {id: '123456789012', nmae: x}\n",
     4, "organization.accounts[0].nmae", "did you mean 'name'?"),
    ("organization:\n  include:\n    tags:\n      env: []\n", 4, "organization.include.tags.env", "null to match any"),
    ("organization:\n  exclude:\n    ous: [Workloads/Prod]\n", 3, "organization.exclude.ous[0]", "Root/Workloads/Prod"),
    ("organization:\n  include:\n    names: ['']\n", 3, "organization.include.names[0]", "must not be empty"),
    ("organization:\n  states:\n    - ACTIVE\n    - DELETED\n", 4, "organization.states[1]", "PENDING_ACTIVATION"),
    ("advisor:\n  poll_interval_seconds: 5\n  max_poll_interval_seconds: 2\n",
     3, "advisor.max_poll_interval_seconds", "less than poll_interval_seconds (5)"),
    ("advisor:\n  poll_interval_seconds: 20\n", 2, "advisor.poll_interval_seconds", "(10) is less than"),
    ("organization:\n  source: static\n  accounts: ['123456789012']\norganizations_access:\n  enabled: true\n",
     5, "organizations_access.enabled", "cannot run with organization.source: static"),
    ("organizations_access: {enabled: true}\norganization: {source: static, accounts: ['123456789012']}\n",
     1, "organizations_access.enabled", "it cannot run with organization.source: static"),
    ("output:\n  compression: snappy\n  compression_level: 3\n", 3, "output.compression_level", "not to compression"),
    ("output:\n  compression: gzip\n  compression_level: 10\n", 3, "output.compression_level", "gzip is 1 to 9"),
    ("output:\n  max_rows_per_file: 1000\n", 2, "output.max_rows_per_file", "row_group_rows (131072)"),
    ("concurrency:\n  accounts: 8\n  read_timeout_seconds: 5\n  accounts: 9\n",
     4, "concurrency.accounts", "duplicate key 'accounts' (first at line 2)"),
    ("aws: {}\nlogging: {}\naws: {}\n", 3, "aws", "duplicate key 'aws' (first at line 1)"),
    ("\nloging:\n  level: INFO\n", 2, "loging", "did you mean 'logging'?"),
    ("\naws: [a]\n", 2, "aws", "expected a mapping with the keys profile, region, partition, got a list"),
    ("entities:\n  types:\n    - {a: b}\n", 3, "entities.types[0]", "got a mapping"),
    ("entities:\n  types: [USER, ROLE, USER]\n", 2, "entities.types[2]", "'USER' is listed twice (first at line 2)"),
    ("entities:\n  types: [USERS]\n", 2, "entities.types[0]", "did you mean 'USER'?"),
    ("aws:\n  ? [a]\n  : 1\n", 2, "aws", "a key must be text"),
    ("concurrency:\n  <<: {accounts: 8}\n", 2, "concurrency.<<", "merge keys"),
    ("output:\n  path: !!python/object/apply:os.system [ls]\n", 2, "", "YAML tags such as '!!python/object/apply"),
    ("\n- aws\n", 2, "", "a mapping of sections"),
    ("aws:\n  region: [us-east-1\n", 3, "", "YAML syntax error"),
    ("a: &a [*a]\n", 1, "", "refers to a node that contains it"),
    ("x: " + "[" * 40 + "]" * 40 + "\n", 1, "", "nested more than 32 levels"),
    ("aws:\n  profile: \x00\n", 2, "", "U+0000"),
    ('aws:\n  profile: "\\UFFFFFFFF"\n', 2, "", "YAML syntax error"),
])
def test_structural_and_combination_errors(text: str, line: int, key: str, fragment: str) -> None:
    assert_error(error_of(text), line, key, fragment)


def test_aliases_cannot_expand_into_a_billion_laughs() -> None:
    rows = ["a0: &a0 [lol, lol, lol, lol, lol, lol, lol, lol, lol, lol]"]
    rows += [f"a{level}: &a{level} [{', '.join([f'*a{level - 1}'] * 10)}]" for level in range(1, 10)]
    assert_error(error_of("\n".join(rows)), 1, "", "more than 100000 values once its aliases are expanded")


def test_aliases_within_the_limit_work() -> None:
    config = parse_config("entities:\n  include_names: &names ['^a']\n  exclude_names: *names\n")
    assert config.entities.exclude_names == ("^a",)


def test_documents_over_one_mebibyte_are_refused() -> None:
    assert_error(error_of("#" * (1024 * 1024 + 1)), 1, "", "larger than 1024 KiB")


# -- account ids --------------------------------------------------------------------------------
ACCOUNT_ID_PLACES = [
    ("organization:\n  source: static\n  accounts:\n    - {value}\n", 4, "organization.accounts[0]"),
    ("organization:\n  source: static\n  accounts:\n    - id: {value}\n", 4, "organization.accounts[0].id"),
    ("organization:\n  include:\n    account_ids: [{value}]\n", 3, "organization.include.account_ids[0]"),
    ("organization:\n  exclude:\n    account_ids:\n      - {value}\n", 4, "organization.exclude.account_ids[0]"),
]


def account_ids_of(config: Config) -> tuple[str, ...]:
    """Every account id the configuration names."""
    organization = config.organization
    return (tuple(account.id for account in organization.accounts) + organization.include.account_ids
            + organization.exclude.account_ids)


@pytest.mark.parametrize(("template", "line", "key"), ACCOUNT_ID_PLACES)
@pytest.mark.parametrize(("written", "expected"), [
    ("123456789012", "123456789012"),
    ("001234567000", "001234567000"),
    ("000000000010", "000000000010"),
    ('"001234567000"', "001234567000"),
    ("'012345670089'", "012345670089"),
])
def test_account_ids_are_kept_as_written(template: str, line: int, key: str, written: str, expected: str) -> None:
    assert account_ids_of(parse_config(template.format(value=written))) == (expected,)


@pytest.mark.parametrize(("template", "line", "key"), ACCOUNT_ID_PLACES)
@pytest.mark.parametrize("written", ["0x1F", "1234", "12345678901", "1234567890123", "1.2e11", "1_234_567_890",
                                     "123456789012.0", "true", "~", "'12345'", "' 123456789012'", "[1]"])
def test_anything_but_twelve_digits_is_refused_with_a_hint_to_quote(
        template: str, line: int, key: str, written: str) -> None:
    assert_error(error_of(template.format(value=written)), line, key, "12 digits", "quote it", '"001234567000"')


@pytest.mark.parametrize(("value", "expected"), [("001234567000", "001234567000"), ("1234", None)])
def test_interpolated_account_ids_are_checked_like_written_ones(value: str, expected: str | None) -> None:
    text = "organization:\n  include:\n    account_ids:\n      - ${ACCOUNT}\n"
    if expected is None:
        assert_error(error_of(text, {"ACCOUNT": value}), 4, "organization.include.account_ids[0]",
                     "quote it", "got '1234' (from '${ACCOUNT}')")
    else:
        assert parse_config(text, environ={"ACCOUNT": value}).organization.include.account_ids == (expected,)


# -- interpolation ----------------------------------------------------------------------------
@pytest.mark.parametrize(("value", "environ", "expected"), [
    ("s3://${BUCKET}/${PREFIX:-iam}", {"BUCKET": "b"}, "s3://b/iam"),
    ("s3://${BUCKET}/${PREFIX:-iam}", {"BUCKET": "b", "PREFIX": "p"}, "s3://b/p"),
    ("${PREFIX:-fallback}", {"PREFIX": ""}, "fallback"),
    ("${EMPTY}x", {"EMPTY": ""}, "x"),
    ("'$${HOME}/data'", {}, "${HOME}/data"),
    ("cost$$${X}", {"X": "1"}, "cost$${X}"),
    ("a$b$", {}, "a$b$"),
    ("${NESTED}", {"NESTED": "${OTHER}"}, "${OTHER}"),
    ('"${SPACED:-with spaces}"', {}, "with spaces"),
])
def test_interpolation(value: str, environ: dict[str, str], expected: str) -> None:
    assert parse_config(f"output:\n  path: {value}\n", environ=environ).output.path == expected


@pytest.mark.parametrize(("text", "expected"), [
    ("concurrency:\n  accounts: ${N}\n", 12),
    ("concurrency:\n  accounts: ${MISSING:-3}\n", 3),
    ("concurrency:\n  read_timeout_seconds: ${N}.5\n", 12.5),
    ("logging:\n  json: ${FLAG:-yes}\n", True),
    ("aws:\n  profile: ${MISSING:-}\n", None),
])
def test_interpolation_happens_before_conversion(text: str, expected: object) -> None:
    config = parse_config(text, environ={"N": "12"})
    section, key = text.split(":\n  ")[0], text.split(":\n  ")[1].split(":")[0]
    assert getattr(getattr(config, section), key) == expected


@pytest.mark.parametrize(("value", "fragment"), [
    ("s3://${BUCKET}/x", "environment variable BUCKET is not set (write ${BUCKET:-default}"),
    ("${1BAD}", "bad variable reference '${1BAD}'"),
    ("${UNCLOSED", "bad variable reference '${'"),
    ("${}", "bad variable reference"),
])
def test_interpolation_errors(value: str, fragment: str) -> None:
    assert_error(error_of(f"# x\noutput:\n  path: {value}\n"), 3, "output.path", fragment)


def test_interpolation_reads_os_environ_by_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ACCESS_CRAWLER_TEST_ACCOUNTS", "5")
    assert parse_config("concurrency:\n  accounts: ${ACCESS_CRAWLER_TEST_ACCOUNTS}\n").concurrency.accounts == 5


# -- conversions that succeed -------------------------------------------------------------------
@pytest.mark.parametrize(("text", "path", "expected"), [
    ("logging:\n  json: yes\n", "logging.json", True),
    ("logging:\n  json: ON\n", "logging.json", True),
    ("logging:\n  json: False\n", "logging.json", False),
    ("logging:\n  compress_rotated: off\n", "logging.compress_rotated", False),
    ("advisor:\n  job_timeout_seconds: 30\n", "advisor.job_timeout_seconds", 30.0),
    ("advisor:\n  poll_interval_seconds: .5\n", "advisor.poll_interval_seconds", 0.5),
    ("output:\n  max_rows_per_file: 1_000_000\n", "output.max_rows_per_file", 1_000_000),
    ("advisor:\n  granularity: action_level\n", "advisor.granularity", "ACTION_LEVEL"),
    ("organizations_access:\n  enabled: yes\n", "organizations_access.enabled", True),
    ("organizations_access:\n  per_policy: true\n", "organizations_access.per_policy", True),
    ("organizations_access:\n  reports_in_flight: 8\n", "organizations_access.reports_in_flight", 8),
    ("aws:\n  partition: AWS-CN\n", "aws.partition", "aws-cn"),
    ("output:\n  compression: GZIP\n", "output.compression", "gzip"),
    ("organization:\n  states: suspended\n", "organization.states", ("SUSPENDED",)),
    ("entities:\n  types: role\n", "entities.types", ("ROLE",)),
    ("entities:\n  include_names: ^app-\n", "entities.include_names", ("^app-",)),
    ("aws:\n  profile: no\n", "aws.profile", "no"),
    ("aws:\n  profile: 1234\n", "aws.profile", "1234"),
    ("aws:\n  profile: ~\n", "aws.profile", None),
    ("aws:\n  profile: 'null'\n", "aws.profile", "null"),
    ("concurrency:\n  requests_per_second_per_account:\n", "concurrency.requests_per_second_per_account", None),
    ("concurrency:\n  requests_per_second_per_account: 2.5\n", "concurrency.requests_per_second_per_account", 2.5),
    ("output:\n  snapshot_date: 2024-02-29\n", "output.snapshot_date", date(2024, 2, 29)),
    ("output:\n  snapshot_date: '2024-02-29'\n", "output.snapshot_date", date(2024, 2, 29)),
    ("output:\n  compression: zstd\n  compression_level: 22\n", "output.compression_level", 22),
    ("organization:\n  include:\n    ous: [Root/Workloads/, r-ab12, ou-ab12-cdef3456]\n", "organization.include.ous",
     ("Root/Workloads", "r-ab12", "ou-ab12-cdef3456")),
    ("organization:\n  include:\n    tags: {team: payments, env: [prod, staging], owner: null}\n",
     "organization.include.tags",
     (TagFilter("env", ("prod", "staging")), TagFilter("owner"), TagFilter("team", ("payments",)))),
    ("organization:\n  source: STATIC\n  accounts:\n    - 001234567000\n    - id: '123456789012'\n      name: pay\n"
     "      tags: {team: payments, env: prod}\n", "organization.accounts",
     (StaticAccount("001234567000"), StaticAccount("123456789012", "pay", (("env", "prod"), ("team", "payments"))))),
    ("assume_role:\n  hub_role_arn: arn:aws:iam::123456789012:role/Hub\n  hub_external_id: x-1\n",
     "assume_role.hub_external_id", "x-1"),
    ("aws:\n", "aws.partition", "aws"),
    ("", "concurrency.accounts", 8),
    ("# only a comment\n", "logging.level", "INFO"),
])
def test_values_are_converted_by_the_expected_type(text: str, path: str, expected: object) -> None:
    value: object = parse_config(text, environ={})
    for name in path.split("."):
        value = getattr(value, name)
    assert value == expected


# -- files --------------------------------------------------------------------------------------
def test_load_config_records_the_source_and_reports_errors_with_the_file_name(tmp_path: Path) -> None:
    good, bad = tmp_path / "good.yaml", tmp_path / "bad.yaml"
    good.write_text("\ufeffconcurrency:\n  accounts: 3\n", encoding="utf-8")
    bad.write_text("concurrency:\n\n  accounts: 0\n", encoding="utf-8")
    config = load_config(good)
    assert (config.source, config.concurrency.accounts) == (str(good), 3)
    with pytest.raises(ConfigError, match=rf"^{bad}:3: concurrency\.accounts: expected an integer"):
        load_config(str(bad))


@pytest.mark.parametrize(("content", "fragment"), [
    (None, "cannot read the config file: No such file or directory"),
    ("directory", "cannot read the config file"),
    (b"aws:\n  profile: \xff\n", "2: not UTF-8 text (byte 0xff)"),
    (b"#" * (1024 * 1024 + 1), "1: the file is larger than 1024 KiB"),
])
def test_unreadable_files(tmp_path: Path, content: bytes | str | None, fragment: str) -> None:
    path = tmp_path / "config.yaml"
    if content == "directory":
        path.mkdir()
    elif isinstance(content, bytes):
        path.write_bytes(content)
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    assert str(caught.value).startswith(f"{path}:") and fragment in str(caught.value)


# -- the example file -----------------------------------------------------------------------------
def test_the_example_file_loads_and_documents_the_defaults() -> None:
    config = load_config(EXAMPLE, environ={})
    assert config.source == str(EXAMPLE)
    assert replace(config, source=None) == Config()


def undocumented(settings_class: type, node: yaml.Node | None, prefix: str) -> list[str]:
    """Fields of ``settings_class`` (recursively into nested settings) missing from the mapping node."""
    hints = typing.get_type_hints(settings_class)
    assert isinstance(node, yaml.MappingNode)
    keys = {key.value: value for key, value in node.value}
    missing: list[str] = []
    for item in fields(settings_class):
        if item.name == "source":
            continue
        if item.name not in keys:
            missing.append(prefix + item.name)
        elif is_dataclass(hints[item.name]):
            missing += undocumented(hints[item.name], keys[item.name], f"{prefix}{item.name}.")
    return missing


def test_every_setting_is_a_key_of_the_example_file() -> None:
    root = yaml.compose(EXAMPLE.read_text(encoding="utf-8"), Loader=yaml.SafeLoader)
    assert undocumented(Config, root, "") == []


def test_every_key_of_the_example_file_has_a_comment_above_it() -> None:
    text = EXAMPLE.read_text(encoding="utf-8")
    lines = text.splitlines()
    pending = [yaml.compose(text, Loader=yaml.SafeLoader)]
    uncommented = []
    while pending:
        node = pending.pop()
        for key, value in node.value if isinstance(node, yaml.MappingNode) else []:
            if not lines[key.start_mark.line - 1].lstrip().startswith("#"):
                uncommented.append(key.value)
            pending.append(value)
    assert uncommented == []
    for command in ("validate", "accounts", "run"):
        assert f"access-crawler {command} -c FILE" in text


# -- describe_config and config_digest ------------------------------------------------------------
RICH = """
aws: {profile: "yes", region: eu-west-1, partition: AWS-US-GOV}
organization:
  source: static
  accounts:
    - 001234567000
    - id: "123456789012"
      name: "Zahlungen – prod: $${literal}"
      tags: {env: prod, "on": "null", empty: ""}
  include: {ous: [Root/Workloads/], tags: {env: [prod, staging], owner: ~}, names: ["prod-*", "null"]}
  exclude: {account_ids: ['999999999999']}
  states: [active, suspended]
assume_role:
  role_arn: "arn:{partition}:iam::{account_id}:role/path/{role_name}"
  external_id: "a:b/c"
  hub_role_arn: arn:aws-us-gov:iam::123456789012:role/Hub
  hub_external_id: xx
entities: {types: role, include_names: ['^a.*$', '\\d+ '], path_prefix: /teams/}
advisor: {granularity: action_level, job_timeout_seconds: 0.5, poll_interval_seconds: 0.25,
          max_poll_interval_seconds: 0.25}
concurrency: {requests_per_second_per_account: 1e-3, accounts: 1_0}
output: {path: "  spaced path ", compression: gzip, compression_level: 9, snapshot_date: 2024-02-29,
         max_rows_per_file: 1000, row_group_rows: 1000}
logging: {file: "~/x.log", file_enabled: off, json: YES, level: debug}
"""


@pytest.mark.parametrize("config", [Config(), parse_config(RICH, environ={}), load_config(EXAMPLE, environ={})],
                         ids=["defaults", "rich", "example"])
def test_describe_config_loads_back_to_the_same_settings(config: Config) -> None:
    described = describe_config(config)
    assert parse_config(described, environ={}) == replace(config, source=None)
    root = yaml.compose(described, Loader=yaml.SafeLoader)
    assert undocumented(Config, root, "") == []


def test_the_rich_config_is_read_as_written() -> None:
    config = parse_config(RICH, environ={})
    assert config.organization.accounts[1].name == "Zahlungen – prod: ${literal}"
    assert config.organization.accounts[1].tags == (("empty", ""), ("env", "prod"), ("on", "null"))
    assert (config.aws.profile, config.concurrency.accounts, config.logging.file) == ("yes", 10, "~/x.log")


def test_config_digest_is_stable_and_ignores_source_and_formatting(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("concurrency:\n  accounts: 8\n", encoding="utf-8")
    digest = config_digest(Config())
    assert len(digest) == 64 and int(digest, 16) >= 0
    assert config_digest(load_config(path)) == digest == config_digest(parse_config("concurrency: {accounts: 8}"))
    assert config_digest(parse_config(RICH, environ={})) == config_digest(parse_config(RICH, environ={}))


@pytest.mark.parametrize("text", [
    "output: {path: other}", "organization: {states: [ACTIVE, SUSPENDED]}", "output: {compression: snappy}",
    "entities: {aws_managed_policies: true}", "organization: {include: {tags: {env: null}}}",
    "advisor: {granularity: ACTION_LEVEL}", "output: {snapshot_date: 2024-01-01}", "aws: {partition: aws-cn}",
    "assume_role: {role_name: Other}", "organizations_access: {enabled: true}",
    "advisor: {policies_granting_access: true}",
])
def test_config_digest_changes_when_a_setting_of_the_data_changes(text: str) -> None:
    assert config_digest(parse_config(text)) != config_digest(Config())


@pytest.mark.parametrize("text", [
    "concurrency: {accounts: 9}", "logging: {level: DEBUG}", "advisor: {job_timeout_seconds: 600.5}",
    "advisor: {poll_interval_seconds: 2, job_retries: 5, page_size: 100}", "aws: {profile: other, region: eu-west-1}",
    "assume_role: {session_name: nightly, duration_seconds: 900}", "organizations_access: {reports_in_flight: 2}",
])
def test_config_digest_ignores_settings_that_do_not_change_the_data(text: str) -> None:
    """A run stopped by a crash resumes after its concurrency or logging is changed, instead of crawling again."""
    assert config_digest(parse_config(text)) == config_digest(Config())


# -- robustness ---------------------------------------------------------------------------------
BASES = [EXAMPLE.read_text(encoding="utf-8").splitlines(), RICH.splitlines()]
PRINTABLE = st.characters(blacklist_categories=("Cs", "Cc"))
TOKENS = ["~", "[", "]", "{", "}", ":", "- ", "&a ", "*a", "!!python/object:os.system", "${X}", "${Y:-1}", "$${",
          "${", "0x1F", "001234567000", "yes", "1e999", "'", '"', "\t", "#", "<<: ", "? ", "|", ">", "%", "@", "\\",
          "accounts", "aws", "organization", "\x00", "\u2028", "\ud800", "1_000", "-1", "2024-02-30"]


@st.composite
def mutated_configs(draw: st.DrawFn) -> str:
    """The example file or RICH with random lines replaced, reindented, cut or spliced."""
    lines = list(draw(st.sampled_from(BASES)))
    for _ in range(draw(st.integers(1, 6))):
        index = draw(st.integers(0, len(lines) - 1))
        action = draw(st.sampled_from(["token", "indent", "insert", "delete", "duplicate", "text"]))
        line = lines[index]
        if action == "token":
            cut = draw(st.integers(0, len(line)))
            lines[index] = line[:cut] + draw(st.sampled_from(TOKENS)) + line[cut:]
        elif action == "indent":
            lines[index] = " " * draw(st.integers(0, 8)) + line.lstrip()
        elif action == "insert":
            lines.insert(index, draw(st.text(PRINTABLE, max_size=30)))
        elif action == "delete":
            del lines[index]
        elif action == "duplicate":
            lines.insert(draw(st.integers(0, len(lines))), line)
        else:
            lines[index] = line.split(":")[0] + ": " + draw(st.text(PRINTABLE, max_size=20))
        lines = lines or [""]
    return "\n".join(lines)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(mutated_configs())
def test_mutated_configs_load_or_raise_config_error(text: str) -> None:
    try:
        parse_config(text, "mutated.yaml", {"X": "1"})
    except ConfigError as error:
        assert str(error).startswith("mutated.yaml") and "Traceback" not in str(error)
