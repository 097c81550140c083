"""The pyarrow schema of every table: the one source of truth for files, docs and warehouse DDL.

Every table is partitioned by ``snapshot_date`` (Hive style, ``snapshot_date=YYYY-MM-DD``);
the partition column lives in the directory name, not in the files, which is what Athena,
BigQuery and Spark expect of external tables. Timestamps are microseconds in UTC; account
ids and every other id are strings.
"""
from __future__ import annotations

import pyarrow as pa

TIMESTAMP = pa.timestamp("us", tz="UTC")
PARTITION_COLUMN = "snapshot_date"
PARTITION_TYPE = pa.date32()
#: The partition column as readers see it (it is in the directory name, not in the files).
PARTITION_FIELD = pa.field(PARTITION_COLUMN, PARTITION_TYPE, nullable=False, metadata={
    "description": "Snapshot date: the UTC date the run started (or output.snapshot_date), "
                   "read from the directory name snapshot_date=YYYY-MM-DD."})
TAGS = pa.list_(pa.struct([pa.field("key", pa.string(), nullable=False),
                           pa.field("value", pa.string(), nullable=False)]))


def _field(name: str, kind: pa.DataType, description: str, nullable: bool = True) -> pa.Field:
    return pa.field(name, kind, nullable=nullable, metadata={"description": description})


def _schema(description: str, *fields: pa.Field) -> pa.Schema:
    return pa.schema(list(fields), metadata={"description": description})


_RUN = _field("run_id", pa.string(), "Id of the crawl run that wrote the row.", nullable=False)
_COLLECTED = _field("collected_at", TIMESTAMP,
                    "When AWS completed the access-advisor job (JobCompletionDate).", nullable=False)
_ORG = _field("organization_id", pa.string(), "AWS Organizations id (o-...); null for a static account list.")
_ACCOUNT = _field("account_id", pa.string(), "12-digit AWS account id, as text.", nullable=False)
_ACCOUNT_NAME = _field("account_name", pa.string(), "Account name.")
_OU_PATH = _field("ou_path", pa.string(), "OU path by names from the root, e.g. Root/Workloads/Prod.")
_ENTITY_TYPE = _field("entity_type", pa.string(), "USER, ROLE, GROUP or POLICY.", nullable=False)
_ENTITY_ARN = _field("entity_arn", pa.string(), "ARN of the user, role, group or managed policy.", nullable=False)
_ENTITY_NAME = _field("entity_name", pa.string(), "Name of the entity.", nullable=False)
_ENTITY_PATH = _field("entity_path", pa.string(), "IAM path of the entity.")
_NAMESPACE = _field("service_namespace", pa.string(), "Service namespace (s3, ec2, ...).", nullable=False)
_SERVICE_NAME = _field("service_name", pa.string(), "Service name as AWS reports it.")
_ENTITY_KEYS = (_RUN, _COLLECTED, _ORG, _ACCOUNT, _ACCOUNT_NAME, _OU_PATH, _ENTITY_TYPE, _ENTITY_ARN,
                _ENTITY_NAME, _ENTITY_PATH, _NAMESPACE, _SERVICE_NAME)

SERVICE_LAST_ACCESSED = _schema(
    "One row per entity and service its policies grant: when it was last used (access advisor, service level).",
    *_ENTITY_KEYS,
    _field("last_authenticated", TIMESTAMP,
           "Last authenticated attempt to use the service; null = not used within the tracking period."),
    _field("last_authenticated_entity", pa.string(), "ARN of the user or role that made the last attempt."),
    _field("last_authenticated_region", pa.string(), "Region of the last attempt."),
    _field("total_authenticated_entities", pa.int32(),
           "Number of users and roles that attempted to use the service within the tracking period."),
)

ACTION_LAST_ACCESSED = _schema(
    "One row per entity and tracked action (access advisor, action level).",
    *_ENTITY_KEYS,
    _field("action_name", pa.string(), "Action name (e.g. GetObject).", nullable=False),
    _field("last_accessed_time", TIMESTAMP,
           "Last attempt to call the action; null = not used within the tracking period."),
    _field("last_accessed_entity", pa.string(), "ARN of the user or role that made the last attempt."),
    _field("last_accessed_region", pa.string(), "Region of the last attempt."),
)

ENTITIES = _schema(
    "One row per inventoried entity with its job outcome, so a missing row is never mistaken for unused.",
    _RUN, _ORG, _ACCOUNT, _ACCOUNT_NAME, _OU_PATH, _ENTITY_TYPE, _ENTITY_ARN, _ENTITY_NAME, _ENTITY_PATH,
    _field("entity_id", pa.string(), "IAM unique id (AIDA..., AROA..., AGPA..., ANPA...)."),
    _field("create_date", TIMESTAMP, "When the entity was created."),
    _field("tags", TAGS, "Tags of the user or role."),
    _field("attached_policy_arns", pa.list_(pa.string()), "Managed policies attached to the user, role or group."),
    _field("inline_policy_names", pa.list_(pa.string()), "Inline policies of the user, role or group."),
    _field("permissions_boundary_arn", pa.string(), "Permissions boundary of the user or role."),
    _field("group_names", pa.list_(pa.string()), "Groups of a user."),
    _field("member_names", pa.list_(pa.string()), "Users in a group."),
    _field("is_service_linked", pa.bool_(), "A service-linked role (path /aws-service-role/).", nullable=False),
    _field("is_aws_managed", pa.bool_(), "An AWS-managed policy.", nullable=False),
    _field("role_last_used", TIMESTAMP, "RoleLastUsed.LastUsedDate of a role."),
    _field("role_last_used_region", pa.string(), "RoleLastUsed.Region of a role."),
    _field("job_outcome", pa.string(),
           "completed, failed, timed_out, deleted or skipped: whether this entity's access data is in the "
           "dataset.", nullable=False),
    _field("job_id", pa.string(), "Access-advisor JobId of the last attempt."),
    _field("job_created_at", TIMESTAMP, "JobCreationDate of the last attempt."),
    _field("collected_at", TIMESTAMP, "JobCompletionDate of the completed job."),
    _field("job_attempts", pa.int32(), "Jobs generated for this entity.", nullable=False),
    _field("services_granted", pa.int32(), "Services listed by the completed job."),
    _field("services_used", pa.int32(), "Services with a last-authenticated time."),
    _field("error_code", pa.string(), "AWS error code when the job did not complete."),
    _field("error_message", pa.string(), "Error message when the job did not complete."),
)

ACCOUNTS = _schema(
    "One row per target account and what happened to it.",
    _RUN, _ORG, _ACCOUNT, _ACCOUNT_NAME,
    _field("account_email", pa.string(), "Root e-mail of the account."),
    _field("account_arn", pa.string(), "ARN of the account in Organizations."),
    _OU_PATH,
    _field("ou_path_ids", pa.string(), "OU path by ids, e.g. r-ab12/ou-ab12-xxxxxxxx."),
    _field("state", pa.string(), "Organizations State (ACTIVE, SUSPENDED, ...)."),
    _field("joined_at", TIMESTAMP, "When the account joined the organization."),
    _field("tags", TAGS, "Account tags from Organizations."),
    _field("outcome", pa.string(), "ok, failed or skipped.", nullable=False),
    _field("error_code", pa.string(), "AWS error code when the account failed."),
    _field("error_message", pa.string(), "Error message when the account failed."),
    _field("role_arn", pa.string(), "Role assumed to enter the account."),
    _field("entity_count", pa.int32(), "Entities inventoried.", nullable=False),
    _field("entities_completed", pa.int32(), "Entities whose job completed.", nullable=False),
    _field("entities_failed", pa.int32(), "Entities whose job failed or timed out.", nullable=False),
    _field("entities_deleted", pa.int32(), "Entities deleted during the crawl.", nullable=False),
    _field("started_at", TIMESTAMP, "When the crawler started on the account."),
    _field("finished_at", TIMESTAMP, "When the crawler finished the account."),
)

ERRORS = _schema(
    "Every recorded failure.",
    _RUN, _ORG,
    _field("account_id", pa.string(), "Account of the failure; null for a failure before any account."),
    _field("entity_arn", pa.string(), "Entity of the failure, if any."),
    _field("stage", pa.string(),
           "discover, assume_role, inventory, generate_job, read_job, entity_details, policies or "
           "organizations_access (the Organizations view; entity_arn then holds the report's entity path).",
           nullable=False),
    _field("error_code", pa.string(), "AWS error code (or the crawler's: JobFailed, JobTimedOut, ...)."),
    _field("error_message", pa.string(), "Error message."),
    _field("attempts", pa.int32(), "Attempts made before the failure was recorded.", nullable=False),
    _field("occurred_at", TIMESTAMP, "When it was recorded.", nullable=False),
)

ENTITY_SERVICE_ACCESS = _schema(
    "Which users and roles used a service through a group or policy (GetServiceLastAccessedDetailsWithEntities).",
    _RUN, _COLLECTED, _ORG, _ACCOUNT, _ENTITY_TYPE, _ENTITY_ARN, _NAMESPACE,
    _field("accessor_arn", pa.string(), "ARN of the user or role that used the service.", nullable=False),
    _field("accessor_name", pa.string(), "Its name."),
    _field("accessor_type", pa.string(), "USER or ROLE."),
    _field("accessor_id", pa.string(), "Its IAM unique id."),
    _field("accessor_path", pa.string(), "Its IAM path."),
    _field("last_authenticated", TIMESTAMP, "Its last attempt to use the service."),
)

POLICIES_GRANTING_ACCESS = _schema(
    "Which policies grant an entity each of its services (ListPoliciesGrantingServiceAccess).",
    _RUN, _ORG, _ACCOUNT, _ENTITY_TYPE, _ENTITY_ARN, _NAMESPACE,
    _field("policy_name", pa.string(), "Policy name.", nullable=False),
    _field("policy_type", pa.string(), "INLINE or MANAGED."),
    _field("policy_arn", pa.string(), "ARN of a managed policy."),
    _field("policy_owner_type", pa.string(), "For an inline policy: USER, ROLE or GROUP that holds it."),
    _field("policy_owner_name", pa.string(), "For an inline policy: the name of its holder."),
)

ORGANIZATIONS_ACCESS = _schema(
    "The Organizations view (opt-in, organizations_access.enabled): one row per root, OU or account, service "
    "control policy (or none) and service the SCPs allow: when accounts below it last used the service "
    "(GenerateOrganizationsAccessReport, from the management account).",
    _RUN,
    _field("collected_at", TIMESTAMP, "When AWS completed the report (JobCompletionDate).", nullable=False),
    _field("organization_id", pa.string(), "AWS Organizations id (o-...).", nullable=False),
    _field("target_type", pa.string(), "ROOT, ORGANIZATIONAL_UNIT or ACCOUNT: what the report is about.",
           nullable=False),
    _field("target_id", pa.string(), "Id of the root (r-...), OU (ou-...) or account (12 digits, as text).",
           nullable=False),
    _field("target_name", pa.string(), "Name of the root, OU or account."),
    _field("target_path", pa.string(), "Entity path of the target: o-.../r-.../ou-.../<account id>.",
           nullable=False),
    _field("target_ou_path", pa.string(),
           "OU path by names from the root down to the target (an account: its parent OU), e.g. Root/Workloads."),
    _field("policy_id", pa.string(),
           "The SCP the report is limited to (p-...); null for the report of every SCP that applies."),
    _field("policy_name", pa.string(), "Name of that SCP; null for the report of every SCP that applies."),
    _NAMESPACE, _SERVICE_NAME,
    _field("last_authenticated_at", TIMESTAMP,
           "Last authenticated attempt by an account below the target to use the service; null = not used "
           "within the tracking period."),
    _field("region", pa.string(), "Region of the last attempt."),
    _field("last_authenticated_entity_path", pa.string(),
           "Entity path of the account that made the last attempt (AccessDetails.EntityPath)."),
    _field("last_authenticated_account_id", pa.string(),
           "The account that made the last attempt (12 digits, as text), from that entity path."),
    _field("total_authenticated_entities", pa.int32(),
           "Number of accounts below the target that attempted to use the service within the tracking period."),
    _field("job_id", pa.string(), "JobId of the report.", nullable=False),
    _field("job_created_at", TIMESTAMP, "When the report was generated (JobCreationDate)."),
)

_COUNT = pa.int32()
CRAWL_RUNS = _schema(
    "One row per run of the snapshot date, published with each snapshot: the run whose rows the snapshot holds "
    "(status published) and the earlier runs of that date (superseded, or never published). Join a table's "
    "run_id to crawl_runs where status = 'published' to read only the published run's rows.",
    _RUN,
    _field("status", pa.string(),
           "published (the run this snapshot holds), superseded (published before, replaced by superseded_by), "
           "running, interrupted or failed (never published).", nullable=False),
    _field("superseded_by", pa.string(), "The run that published this date again after this one."),
    _field("started_at", TIMESTAMP, "When the run started (its first attempt)."),
    _field("finished_at", TIMESTAMP, "When the run finished crawling."),
    _field("published_at", TIMESTAMP, "When the run published the snapshot (null if it never did)."),
    _field("config_digest", pa.string(), "SHA-256 of the settings that decide the data (see the README)."),
    _field("tool_version", pa.string(), "access-crawler version that ran it."),
    _ORG,
    _field("granularity", pa.string(), "SERVICE_LEVEL or ACTION_LEVEL."),
    _field("resumed", pa.bool_(), "True when the run finished an earlier, unfinished attempt of itself."),
    _field("shards", _COUNT, "Number of shards the run was split into; null for an unsharded run."),
    _field("accounts_selected", _COUNT, "Accounts the run selected."),
    _field("accounts_ok", _COUNT, "Accounts crawled completely."),
    _field("accounts_failed", _COUNT, "Accounts that failed (see the accounts and errors tables)."),
    _field("accounts_skipped", _COUNT, "Accounts skipped."),
    _field("entities", _COUNT, "Entities inventoried, every job outcome."),
    _field("entities_missing", _COUNT, "Entities without access data (failed, timed out or skipped jobs)."),
    _field("errors", pa.int64(), "Rows of the errors table the run recorded."),
    _field("table_rows", pa.list_(pa.struct([pa.field("table", pa.string(), nullable=False),
                                             pa.field("rows", pa.int64(), nullable=False)])),
           "Rows the run published in each table (crawl_runs itself excluded)."),
)

#: Every table, by its directory name under the output root.
TABLES: dict[str, pa.Schema] = {
    "service_last_accessed": SERVICE_LAST_ACCESSED,
    "action_last_accessed": ACTION_LAST_ACCESSED,
    "entities": ENTITIES,
    "accounts": ACCOUNTS,
    "errors": ERRORS,
    "entity_service_access": ENTITY_SERVICE_ACCESS,
    "policies_granting_access": POLICIES_GRANTING_ACCESS,
    "organizations_access": ORGANIZATIONS_ACCESS,
    "crawl_runs": CRAWL_RUNS,
}

#: Tables written from the run manifests when a snapshot is published, not staged by units.
RUN_TABLES = frozenset({"crawl_runs"})
#: Tables staged by the units of a run (accounts, the run's own unit).
STAGED_TABLES = tuple(table for table in TABLES if table not in RUN_TABLES)

#: Tables added after the first release: a manifest written before one existed does not list it.
LATER_TABLES = frozenset({"organizations_access", "crawl_runs"})

#: Sort order of the consolidated files (columns absent from a table are skipped).
SORT_KEYS = ("account_id", "entity_arn", "target_path", "policy_id", "service_namespace", "action_name",
             "accessor_arn", "policy_name", "stage", "occurred_at")


def sort_keys(table: str) -> list[str]:
    """The columns a table's consolidated files are sorted by."""
    if table in RUN_TABLES:
        return ["started_at", "run_id"]
    names = set(TABLES[table].names)
    return [key for key in SORT_KEYS if key in names]
