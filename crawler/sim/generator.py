"""Draw a synthetic AWS Organization, deterministically from a seed.

``generate(OrgSpec(...))`` returns an :class:`OrganizationModel`: a management account and N
member accounts in nested OUs, each with users, groups, roles (one service-linked), and
customer-managed policies, and each principal's last use of the services it is granted.
The same spec (seed and ``as_of`` included) always gives the same organization.

With ``hostile_names`` the OUs, accounts, IAM entities, paths and tags get names that AWS
accepts but naive code breaks on (slashes, dots, quotes, control and bidi characters, CSV
formulas, maximum lengths). They come from a random stream of their own, so the organization
is otherwise the same as without them: same ids, dates, grants and activity.
"""
from __future__ import annotations

import random
import string
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any

from crawler.sim.catalog import ServiceCatalog, load_catalog
from crawler.sim.model import (
    TRACKING_PERIOD_DAYS,
    Account,
    AccountModel,
    Entity,
    InlinePolicy,
    ManagedPolicy,
    OrganizationalUnit,
    OrganizationModel,
    ServiceActivity,
    Use,
)
from crawler.sim.policies import grants_of_document, merge_grants

REGIONS = ("us-east-1", "us-east-1", "us-east-1", "us-west-2", "eu-west-1", "eu-central-1",
           "ap-southeast-2")
POPULAR = ("s3", "ec2", "iam", "lambda", "dynamodb", "logs", "monitoring", "sqs", "sns", "kms",
           "sts", "cloudformation", "secretsmanager", "ssm", "ecr", "ecs", "rds", "events",
           "states", "elasticloadbalancing", "autoscaling", "route53", "cloudfront", "glue")
TEAMS = ("payments", "web", "data", "platform", "identity", "search", "mobile", "risk")

#: (name, parent name, env tag) -- depth 3 below the root: Workloads/Prod/Payments.
OU_TEMPLATE = (
    ("Security", "Root", "security"), ("Infrastructure", "Root", "infra"),
    ("Network", "Infrastructure", "infra"), ("Workloads", "Root", "prod"),
    ("Prod", "Workloads", "prod"), ("Payments", "Prod", "prod"), ("Web", "Prod", "prod"),
    ("NonProd", "Workloads", "dev"), ("Dev", "NonProd", "dev"), ("Test", "NonProd", "test"),
    ("Sandbox", "Root", "sandbox"), ("Suspended", "Root", "suspended"),
)
ACCOUNT_HOMES = ("Payments", "Web", "Prod", "Dev", "Test", "Sandbox", "Network", "Security")

ADMIN_POLICY = "AdministratorAccess"
READ_ONLY_POLICY = "ReadOnlyAccess"
ORG_ACCESS_ROLE = "OrganizationAccountAccessRole"
OPERATOR_USER = "access-crawler-operator"

# -- hostile names: each within the pattern and length AWS accepts for its field -------------
#: Organizations OU names: any text, 1-128 characters. A "/" (ambiguous in a joined name path), "..",
#: line breaks, a tab, NUL, quotes and commas, a right-to-left override, a decomposed accent (NFC would
#: change it) and emoji, CJK, the root's own name, a CSV formula, and 128 characters (384 bytes in UTF-8).
HOSTILE_OU_NAMES = (
    "Security/Audit", "..", "Net\nwork", "Work\tloads", '"Prod", \'live\', eu', "\u202eStnemyap",
    "Cafe\u0301 \U0001F310\U0001F680", "\u958b\u767a\u74b0\u5883", "Root", " Test\r\n\x00 ",
    '=HYPERLINK("http://x.invalid","Sandbox")', "Suspended-" + "\u9577" * 118,
)
#: Account names: printable ASCII (U+0020-U+007E), 1-50 characters.
HOSTILE_ACCOUNT_NAMES = (
    '"quoted", with, commas', "../../etc/passwd", "C:\\Users\\..\\x", "=cmd|' /C calc'!A0",
    ("long-account-name-" + "n" * 50)[:50], "<b>&amp;</b>", "O'Brien; DROP TABLE accounts;--", "  padded  ",
    "%s %n {0} ${jndi:x}", "+SUM(1+1)", "*?[glob]", "NULL",
)
#: IAM user, role, group and policy names: ``[\w+=,.@-]+`` (ASCII word characters), 1-64 (users, roles)
#: or 1-128 characters (groups, policies).
HOSTILE_IAM_NAMES = ("..", ".", "a,b", "=x", "@@", "+x+", "a=b,c=d", "x@example.com", "-", "...", "@SUM", "-1+1")
IAM_NAME_MAX = {"USER": 64, "ROLE": 64, "GROUP": 128, "POLICY": 128}
#: IAM paths of users, groups and roles: ``/`` or ``/[\x21-\x7E]+/``, at most 512 characters.
HOSTILE_PATHS = ("/../", "/a\"b'c/", "/x\\y/", "/%2e%2e/", "/<x>&amp;/", "/=cmd|'calc'!A0/", "/a/../b/",
                 "/" + "p" * 510 + "/")
#: Paths of managed policies: ``((/[A-Za-z0-9.,+@=_-]+)*)/``, at most 512 characters.
HOSTILE_POLICY_PATHS = ("/../", "/./", "/a,b/", "/=x/@@/", "/+1/-1/", "/" + "q" * 510 + "/")
#: Tag keys and values (Organizations and IAM): ``[\p{L}\p{Z}\p{N}_.:/=+\-@]``; keys 1-128, values 0-256
#: characters. Control characters are not allowed, so line breaks are U+2028 and U+2029.
HOSTILE_TAG_KEYS = ("note", "\u8aac\u660e", "a:b/c=d")
HOSTILE_TAG_VALUES = (
    "line one\u2028line two", "para one\u2029para two", "\u6771\u4eac\u30c1\u30fc\u30e0",
    "\u00dcn\u00efc\u00f6d\u00e9", "\u0663\u0664\u0665", "a\u00a0b\u3000c", "", "  padded  ", "=1+1",
    "a=b:c/d@e", "v" * 256,
)


@dataclass(frozen=True)
class OrgSpec:
    """What to generate. ``entities`` counts every entity of an account (roles, users,
    groups, customer-managed policies), the crawler's role and the admin role included."""

    accounts: int = 12
    entities: int = 12
    seed: int = 1
    as_of: datetime | None = None
    partition: str = "aws"
    crawler_role_name: str = "AccessCrawlerRole"
    #: A role in the management account the crawler may chain through (trusted by member roles
    #: through the management account's root principal).
    hub_role_name: str = "AccessCrawlerHub"
    #: When set, the crawler role's trust policy requires this sts:ExternalId.
    external_id: str | None = None
    #: Member accounts whose crawler role is missing (AssumeRole answers AccessDenied).
    accounts_without_crawler_role: int = 0
    extra_tags: dict[str, str] = field(default_factory=dict)
    #: Names AWS accepts that break naive code (OUs, accounts, IAM entities, paths, tags); the
    #: crawler's role, the hub role and the operator user keep their names.
    hostile_names: bool = False

    def resolved_as_of(self) -> datetime:
        """``as_of`` or the current minute, UTC."""
        if self.as_of is not None:
            return self.as_of.astimezone(timezone.utc).replace(microsecond=0)
        return datetime.now(timezone.utc).replace(second=0, microsecond=0)


def generate(spec: OrgSpec, catalog: ServiceCatalog | None = None) -> OrganizationModel:
    """Draw the organization described by ``spec``."""
    if spec.accounts < 0 or spec.entities < 8:
        raise ValueError("an organization needs accounts >= 0 and entities >= 8 per account")
    return _Generator(spec, catalog or load_catalog()).organization()


class HostileNames:
    """Hostile names for one organization, from a random stream of their own (seeded from the
    spec's seed), so drawing them changes nothing else. Each list is shuffled once and used in turn
    across the organization, so every name appears once enough entities ask for one; within an
    account an IAM name is used at most once per entity type (IAM names are unique per type)."""

    def __init__(self, seed: int) -> None:
        self.rng = random.Random(f"access-crawler-sim:hostile-names:{seed}")
        self.iam_names = {kind: self._shuffled((*HOSTILE_IAM_NAMES, _long_iam_name(kind)))
                          for kind in IAM_NAME_MAX}
        self.paths = self._shuffled(HOSTILE_PATHS)
        self.policy_paths = self._shuffled(HOSTILE_POLICY_PATHS)
        self.account_names = self._shuffled(HOSTILE_ACCOUNT_NAMES)
        self.tag_values = self._shuffled(HOSTILE_TAG_VALUES)
        self.cursor: dict[str, int] = {}
        self.taken: dict[str, set[str]] = {}

    def _shuffled(self, names: tuple[str, ...]) -> tuple[str, ...]:
        return tuple(self.rng.sample(names, len(names)))

    def _next(self, key: str, names: tuple[str, ...]) -> str:
        index = self.cursor.get(key, 0)
        self.cursor[key] = index + 1
        return names[index % len(names)]

    def ou_names(self) -> tuple[str, ...]:
        """One hostile name for each OU of the template, in the template's order."""
        return self._shuffled(HOSTILE_OU_NAMES)

    def new_account(self) -> None:
        """Start an account: its IAM names may repeat another account's, never each other."""
        self.taken = {}

    def account_name(self) -> str:
        """The next hostile account name."""
        return self._next("account", self.account_names)

    def iam_name(self, kind: str, default: str) -> str:
        """The next hostile name for an entity of ``kind``, or ``default`` once this account used them all."""
        taken = self.taken.setdefault(kind, set())
        if len(taken) == len(self.iam_names[kind]):
            return default
        name = self._next(kind, self.iam_names[kind])
        while name in taken:
            name = self._next(kind, self.iam_names[kind])
        taken.add(name)
        return name

    def inline_name(self) -> str:
        """A hostile inline policy name (one inline policy per owner: no uniqueness to keep)."""
        return self._next("inline", self.iam_names["POLICY"])

    def path(self, kind: str) -> str:
        """The next hostile path for an entity of ``kind`` (policies have a stricter pattern)."""
        if kind == "POLICY":
            return self._next("policy-path", self.policy_paths)
        return self._next("path", self.paths)

    def tags(self) -> dict[str, str]:
        """A ``note`` tag and the next hostile key (unless that is ``note``), with the next hostile values:
        U+2028/U+2029 line breaks, CJK, empty, maximum length, formulas."""
        keys = dict.fromkeys((self._next("tag-key", HOSTILE_TAG_KEYS), "note"))
        return {key: self._next("tag-value", self.tag_values) for key in keys}


def _long_iam_name(kind: str) -> str:
    """A name of the longest length IAM allows for ``kind``."""
    return (f"{kind.lower()}-max-" + "m" * IAM_NAME_MAX[kind])[:IAM_NAME_MAX[kind]]


class _Generator:
    def __init__(self, spec: OrgSpec, catalog: ServiceCatalog) -> None:
        self.spec = spec
        self.catalog = catalog
        self.rng = random.Random(spec.seed)
        self.as_of = spec.resolved_as_of()
        self.used_ids: set[str] = set()
        self.hostile = HostileNames(spec.seed) if spec.hostile_names else None

    # -- organization ---------------------------------------------------------------
    def organization(self) -> OrganizationModel:
        org_id = "o-" + self._token(10, string.ascii_lowercase + string.digits)
        root_suffix = self._token(4, string.ascii_lowercase + string.digits)
        management_id = self._account_id()
        partition = self.spec.partition
        root = OrganizationalUnit(
            f"r-{root_suffix}", "Root", None,
            f"arn:{partition}:organizations::{management_id}:root/{org_id}/r-{root_suffix}")
        ous = self._ous(org_id, root, management_id)
        accounts = self._accounts(org_id, root, ous, management_id)
        return OrganizationModel(
            id=org_id, arn=f"arn:{partition}:organizations::{management_id}:organization/{org_id}",
            root=root, management_account_id=management_id, ous=ous, accounts=accounts,
            as_of=self.as_of, seed=self.spec.seed, partition=partition,
            crawler_role_name=self.spec.crawler_role_name, hub_role_name=self.spec.hub_role_name)

    def _ous(self, org_id: str, root: OrganizationalUnit, management_id: str) -> list[OrganizationalUnit]:
        by_name = {"Root": root}
        suffix = root.id[2:]
        shown = self.hostile.ou_names() if self.hostile else tuple(name for name, _parent, _env in OU_TEMPLATE)
        for (name, parent, _env), display in zip(OU_TEMPLATE, shown, strict=True):
            ou_id = f"ou-{suffix}-{self._token(8, string.ascii_lowercase + string.digits)}"
            arn = f"arn:{self.spec.partition}:organizations::{management_id}:ou/{org_id}/{ou_id}"
            by_name[name] = OrganizationalUnit(ou_id, display, by_name[parent].id, arn)
        self.ou_by_template = {name: ou for name, ou in by_name.items() if name != "Root"}
        return list(self.ou_by_template.values())

    def _accounts(self, org_id: str, root: OrganizationalUnit, ous: list[OrganizationalUnit],
                  management_id: str) -> dict[str, AccountModel]:
        ou_by_name = self.ou_by_template
        env_by_name = {name: env for name, _parent, env in OU_TEMPLATE}
        accounts: dict[str, AccountModel] = {}
        management = self._account(org_id, management_id, management_id, "management",
                                   root.id, "ACTIVE", {"env": "management", "team": "platform"})
        self.management_id = management_id
        accounts[management_id] = self._account_model(management, is_management=True)
        missing_role = self._accounts_missing_role()
        for index in range(self.spec.accounts):
            suspended = index == self.spec.accounts - 1 and self.spec.accounts >= 2
            home = "Suspended" if suspended else ACCOUNT_HOMES[index % len(ACCOUNT_HOMES)]
            team = TEAMS[self.rng.randrange(len(TEAMS))]
            env = env_by_name[home]
            name = f"{team}-{env}-{index + 1:03d}"
            tags = {"env": env, "team": team, "cost-center": f"cc-{self.rng.randrange(100, 999)}",
                    **self.spec.extra_tags}
            account_id = self._account_id()
            email = None
            if self.hostile:
                name, email = self.hostile.account_name(), f"o'brien+{index + 1:03d}@example.com"
                tags.update(self.hostile.tags())
            account = self._account(org_id, account_id, management_id, name, ou_by_name[home].id,
                                    "SUSPENDED" if suspended else "ACTIVE", tags, email)
            model = self._account_model(account, is_management=False,
                                        has_crawler_role=index not in missing_role)
            accounts[account_id] = model
        return accounts

    def _accounts_missing_role(self) -> set[int]:
        count = min(self.spec.accounts_without_crawler_role, max(self.spec.accounts - 1, 0))
        return set(range(count))

    def _account(self, org_id: str, account_id: str, management_id: str, name: str,
                  parent_id: str, state: str, tags: dict[str, str], email: str | None = None) -> Account:
        joined = self.as_of - timedelta(days=self.rng.randrange(30, 1800), seconds=self.rng.randrange(86400))
        return Account(
            id=account_id, name=name, email=email or f"aws+{name}@example.com", state=state,
            parent_id=parent_id, tags=tags, joined=joined,
            arn=f"arn:{self.spec.partition}:organizations::{management_id}:account/{org_id}/{account_id}")

    # -- one account ------------------------------------------------------------------
    def _account_model(self, account: Account, is_management: bool,
                       has_crawler_role: bool = True) -> AccountModel:
        model = AccountModel(account=account, has_crawler_role=has_crawler_role)
        if self.hostile:
            self.hostile.new_account()
        self._aws_managed_policies(model)
        budget = self.spec.entities
        if has_crawler_role:
            model.entities.append(self._crawler_role(account.id))
            budget -= 1
        model.entities.append(self._role(account.id, ORG_ACCESS_ROLE, "/", attached=[self._aws_arn(ADMIN_POLICY)],
                                         trust=self._trust_account(self.management_id)))
        budget -= 1
        if is_management:
            model.entities.append(self._user(account.id, OPERATOR_USER, "/",
                                             inline=[InlinePolicy("crawler-hub", _crawler_hub_document())]))
            model.entities.append(self._role(account.id, self.spec.hub_role_name, "/",
                                             inline=[InlinePolicy("crawler-hub", _crawler_hub_document())],
                                             trust=self._trust_account(account.id)))
            budget -= 2
        self._drawn_entities(model, budget)
        self._draw_activity(model)
        return model

    def _drawn_entities(self, model: AccountModel, budget: int) -> None:
        account_id = model.account.id
        policies = max(1, budget * 2 // 10)
        groups = max(1, budget // 10)
        users = max(1, budget * 2 // 10)
        roles = budget - policies - groups - users
        for index in range(policies):
            document = self._policy_document()
            name = self._name("POLICY", f"{self._word()}-policy-{index + 1:02d}")
            path = self._path("POLICY", "/" if index % 3 else "/teams/")
            arn = f"arn:{self.spec.partition}:iam::{account_id}:policy{path}{name}"
            model.managed_policies[arn] = ManagedPolicy(arn, name, path, document, aws_managed=False)
            model.entities.append(Entity(
                account_id, "POLICY", name, path, arn, self._entity_id("ANPA"), self._create_date(),
                document=document, description=f"Synthetic policy {index + 1}"))
        customer_arns = list(model.managed_policies)[-policies:]
        group_names = [self._name("GROUP", f"{self._word()}-group-{index + 1:02d}") for index in range(groups)]
        for name in group_names:
            model.entities.append(self._group(account_id, name, customer_arns))
        for index in range(users):
            user = self._user(account_id, self._name("USER", f"{self._word()}.user{index + 1:02d}"),
                              self._path("USER", "/people/"),
                              attached=self._some(customer_arns, 0, 2),
                              inline=self._maybe_inline(0.5))
            user.groups = self._some(group_names, 0, 2)
            model.entities.append(user)
        for entity in model.entities:
            if entity.type == "GROUP":
                entity.members = [user.name for user in model.entities
                                  if user.type == "USER" and entity.name in user.groups]
        for index in range(roles):
            if index == 0:
                model.entities.append(self._service_linked_role(account_id))
                continue
            attached = self._some(customer_arns, 0, 2)
            if self.rng.random() < 0.1:
                attached.append(self._aws_arn(READ_ONLY_POLICY))
            if self.rng.random() < 0.05:
                attached.append(self._aws_arn(ADMIN_POLICY))
            model.entities.append(self._role(
                account_id, self._name("ROLE", f"{self._word()}-role-{index:02d}"),
                self._path("ROLE", "/" if index % 4 else "/app/"),
                attached=attached, inline=self._maybe_inline(0.6), trust=self._trust_service()))

    def _aws_managed_policies(self, model: AccountModel) -> None:
        read_only_actions = [f"{ns}:{verb}*" for ns in self.catalog.namespaces[::3]
                             for verb in ("Get", "List", "Describe")]
        for name, path, document in (
            (ADMIN_POLICY, "/", _document(["*"])),
            (READ_ONLY_POLICY, "/", _document(read_only_actions)),
            ("AWSSupportServiceRolePolicy", "/aws-service-role/",
             _document(["support:*", "trustedadvisor:Describe*", "iam:GetRole"])),
        ):
            arn = f"arn:{self.spec.partition}:iam::aws:policy{path}{name}"
            model.managed_policies[arn] = ManagedPolicy(arn, name, path, document, aws_managed=True)

    # -- entities -----------------------------------------------------------------------
    def _crawler_role(self, account_id: str) -> Entity:
        document = _document(["iam:GenerateServiceLastAccessedDetails", "iam:Get*", "iam:List*"])
        trust = self._trust_account(self.management_id)
        if self.spec.external_id:
            trust["Statement"][0]["Condition"] = {"StringEquals": {"sts:ExternalId": self.spec.external_id}}
        return self._role(account_id, self.spec.crawler_role_name, "/",
                          inline=[InlinePolicy("access-advisor-read", document)], trust=trust)

    def _service_linked_role(self, account_id: str) -> Entity:
        return self._role(account_id, "AWSServiceRoleForSupport", "/aws-service-role/support.amazonaws.com/",
                          attached=[self._aws_arn("AWSSupportServiceRolePolicy", "/aws-service-role/")],
                          trust={"Version": "2012-10-17", "Statement": [{
                              "Effect": "Allow", "Principal": {"Service": "support.amazonaws.com"},
                              "Action": "sts:AssumeRole"}]})

    def _role(self, account_id: str, name: str, path: str, attached: list[str] | None = None,
              inline: list[InlinePolicy] | None = None, trust: dict[str, Any] | None = None) -> Entity:
        return Entity(account_id, "ROLE", name, path, self._arn(account_id, "role", path, name),
                      self._entity_id("AROA"), self._create_date(), tags=self._tags(name),
                      inline_policies=inline or [], attached=attached or [], trust_policy=trust)

    def _user(self, account_id: str, name: str, path: str, attached: list[str] | None = None,
              inline: list[InlinePolicy] | None = None) -> Entity:
        return Entity(account_id, "USER", name, path, self._arn(account_id, "user", path, name),
                      self._entity_id("AIDA"), self._create_date(), tags=self._tags(name),
                      inline_policies=inline or [], attached=attached or [])

    def _group(self, account_id: str, name: str, customer_arns: list[str]) -> Entity:
        path = self._path("GROUP", "/")
        return Entity(account_id, "GROUP", name, path, self._arn(account_id, "group", path, name),
                      self._entity_id("AGPA"), self._create_date(),
                      inline_policies=self._maybe_inline(0.8), attached=self._some(customer_arns, 0, 1))

    def _arn(self, account_id: str, kind: str, path: str, name: str) -> str:
        return f"arn:{self.spec.partition}:iam::{account_id}:{kind}{path}{name}"

    def _aws_arn(self, name: str, path: str = "/") -> str:
        return f"arn:{self.spec.partition}:iam::aws:policy{path}{name}"

    def _maybe_inline(self, probability: float) -> list[InlinePolicy]:
        if self.rng.random() >= probability:
            return []
        name = f"inline-{self._word()}"
        return [InlinePolicy(self.hostile.inline_name() if self.hostile else name, self._policy_document())]

    def _policy_document(self) -> dict[str, Any]:
        """A document granting a drawn set of services: mostly a few, sometimes very many."""
        roll = self.rng.random()
        count = (self.rng.randint(1, 6) if roll < 0.6 else self.rng.randint(7, 30) if roll < 0.93
                 else self.rng.randint(60, 150))
        popular = [ns for ns in POPULAR if self.catalog.get(ns)]
        chosen = set(self.rng.sample(popular, min(len(popular), max(1, count // 2))))
        others = [ns for ns in self.catalog.namespaces if ns not in chosen]
        chosen.update(self.rng.sample(others, max(0, count - len(chosen))))
        actions: list[str] = []
        for namespace in sorted(chosen):
            actions.extend(self._actions_for(namespace))
        return _document(actions)

    def _actions_for(self, namespace: str) -> list[str]:
        service = self.catalog.get(namespace)
        roll = self.rng.random()
        if roll < 0.5:
            return [f"{namespace}:*"]
        if roll < 0.8 or service is None or not service.tracked_actions:
            return [f"{namespace}:{verb}*" for verb in self.rng.sample(("Get", "List", "Describe", "Put"), 2)]
        picked = self.rng.sample(service.tracked_actions, min(len(service.tracked_actions), self.rng.randint(1, 5)))
        return [f"{namespace}:{action}" for action in sorted(picked)]

    # -- activity -----------------------------------------------------------------------
    def _draw_activity(self, model: AccountModel) -> None:
        """For each user and role, its last use of each granted service and tracked action."""
        for entity in model.entities:
            if entity.type not in ("USER", "ROLE") or entity.name in (self.spec.crawler_role_name, OPERATOR_USER,
                                                                      self.spec.hub_role_name):
                continue
            grants = principal_grants(model, entity, self.catalog)
            wide = len(grants) > 100
            activity: dict[str, ServiceActivity] = {}
            for namespace in sorted(grants):
                use = self._draw_use(entity.create_date, 0.03 if wide else 0.3)
                if use is not None:
                    activity[namespace] = ServiceActivity(use, self._draw_actions(use, entity, grants[namespace]))
            if activity:
                model.activity[entity.arn] = activity

    def _draw_use(self, created: datetime, used_probability: float) -> Use | None:
        roll = self.rng.random()
        region = self.rng.choice(REGIONS)
        if roll < used_probability:
            days = self.rng.choice((self.rng.uniform(0, 7), self.rng.uniform(7, 90), self.rng.uniform(90, 398)))
            when = self.as_of - timedelta(days=days)
            if when < created:
                when = created + (self.as_of - created) * self.rng.random()
            return Use(when.replace(microsecond=0), region)
        oldest_recordable = self.as_of - timedelta(days=TRACKING_PERIOD_DAYS + 2)
        if roll < used_probability + 0.05 and created < oldest_recordable - timedelta(days=1):
            span = (oldest_recordable - created).total_seconds()
            when = oldest_recordable - timedelta(seconds=self.rng.uniform(0, span))
            return Use(when.replace(microsecond=0), region)
        return None

    def _draw_actions(self, use: Use, entity: Entity, actions: frozenset[str]) -> dict[str, Use]:
        drawn: dict[str, Use] = {}
        for action in sorted(actions):
            if self.rng.random() < 0.35:
                earliest = max(entity.create_date, use.time - timedelta(days=60))
                when = earliest + (use.time - earliest) * self.rng.random()
                drawn[action] = Use(when.replace(microsecond=0), self.rng.choice((use.region, *REGIONS)))
        if drawn and self.rng.random() < 0.7:
            latest = self.rng.choice(sorted(drawn))
            drawn[latest] = Use(use.time, use.region)
        return drawn

    # -- small draws --------------------------------------------------------------------
    def _create_date(self) -> datetime:
        days = self.rng.choice((self.rng.uniform(1, 89), *(self.rng.uniform(90, 1500) for _ in range(4))))
        return (self.as_of - timedelta(days=days)).replace(microsecond=0)

    def _account_id(self) -> str:
        while True:
            upper = 10**10 if self.rng.random() < 0.2 else 10**12
            account_id = f"{self.rng.randrange(1, upper):012d}"
            if account_id not in self.used_ids:
                self.used_ids.add(account_id)
                return account_id

    def _entity_id(self, prefix: str) -> str:
        return prefix + self._token(17, string.ascii_uppercase + string.digits)

    def _token(self, length: int, alphabet: str) -> str:
        return "".join(self.rng.choice(alphabet) for _ in range(length))

    def _word(self) -> str:
        return self.rng.choice(("alpha", "billing", "build", "deploy", "etl", "ingest", "ledger",
                                "metrics", "ops", "report", "search", "sync", "web", "worker"))

    def _some(self, items: list[str], low: int, high: int) -> list[str]:
        return self.rng.sample(items, min(len(items), self.rng.randint(low, high)))

    def _tags(self, name: str) -> dict[str, str]:
        """Maybe an owner tag; hostile tags too when asked for, except on the crawler's own entities."""
        tags = {"owner": self.rng.choice(TEAMS)} if self.rng.random() < 0.5 else {}
        if self.hostile is None or name in (self.spec.crawler_role_name, self.spec.hub_role_name, OPERATOR_USER):
            return tags
        return {**tags, **self.hostile.tags()}

    def _name(self, kind: str, default: str) -> str:
        """``default``, or a hostile name for an entity of ``kind`` when the spec asks for them."""
        return self.hostile.iam_name(kind, default) if self.hostile else default

    def _path(self, kind: str, default: str) -> str:
        """``default``, or a hostile path for an entity of ``kind`` when the spec asks for them."""
        return self.hostile.path(kind) if self.hostile else default

    def _trust_account(self, account_id: str) -> dict[str, Any]:
        return {"Version": "2012-10-17", "Statement": [{
            "Effect": "Allow", "Principal": {"AWS": f"arn:{self.spec.partition}:iam::{account_id}:root"},
            "Action": "sts:AssumeRole"}]}

    def _trust_service(self) -> dict[str, Any]:
        service = self.rng.choice(("lambda", "ec2", "ecs-tasks", "states", "glue"))
        return {"Version": "2012-10-17", "Statement": [{
            "Effect": "Allow", "Principal": {"Service": f"{service}.amazonaws.com"},
            "Action": "sts:AssumeRole"}]}


def principal_grants(model: AccountModel, entity: Entity, catalog: ServiceCatalog) -> dict[str, frozenset[str]]:
    """What the generated policies grant an entity (a user's groups included)."""
    documents: list[dict[str, Any]] = []
    if entity.document is not None:
        documents.append(entity.document)
    owners = [entity]
    if entity.type == "USER":
        owners += [group for group in model.entities if group.type == "GROUP" and group.name in entity.groups]
    for owner in owners:
        documents += [policy.document for policy in owner.inline_policies]
        documents += [model.managed_policies[arn].document for arn in owner.attached]
    return merge_grants(grants_of_document(document, catalog) for document in documents)


def _document(actions: list[str]) -> dict[str, Any]:
    return {"Version": "2012-10-17",
            "Statement": [{"Effect": "Allow", "Action": actions, "Resource": "*"}]}


def _crawler_hub_document() -> dict[str, Any]:
    return _document(["organizations:List*", "organizations:Describe*", "sts:AssumeRole"])
