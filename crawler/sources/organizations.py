"""The accounts to crawl: discovered through AWS Organizations or listed in the config, then filtered.

Discovery is split into small ``_list_*`` functions that call AWS (the "get" edge) and pure
functions that turn their answers into frozen :class:`Account` records. The filters
(:func:`select_accounts`, :func:`account_matches`) are pure as well.

Names, emails and tags that come from AWS are untrusted text and are kept exactly as given;
whoever displays them escapes them (see :mod:`crawler.listing`).
"""
from __future__ import annotations

import fnmatch
import logging
import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, TypeVar

from botocore.exceptions import BotoCoreError, ClientError

from crawler.aws.calls import MalformedAnswer, token_pages
from crawler.aws.timestamps import utc
from crawler.config.settings import AccountFilter, OrganizationSettings
from crawler.errors import CrawlerError

log = logging.getLogger(__name__)
_Answer = TypeVar("_Answer")
#: How discovery calls AWS Organizations: ``call(operation, **arguments)`` -> the answer.
Call = Callable[..., dict[str, Any]]

#: The largest page Organizations listings allow.
PAGE_SIZE = 20
#: What AWS names every organization's root (used when ListRoots leaves the name out).
ROOT_NAME = "Root"
#: Organizations calls in flight at once during discovery (it throttles early: keep it small).
DISCOVERY_THREADS = 4
#: How often one listing is run again after a malformed answer before discovery gives up.
MALFORMED_ATTEMPTS = 3
_OU_ID_PREFIXES = ("r-", "ou-")

_ACCESS_HINT = ("discover accounts from the organization's management account or a delegated administrator "
                "for AWS Organizations, or list the accounts in the config (organization.source: static)")
_RETRY_HINT = "AWS Organizations kept failing after botocore's retries: try again later"
_HINTS = {
    "AccessDeniedException": "these credentials may not list the organization's accounts: " + _ACCESS_HINT,
    "AWSOrganizationsNotInUseException": "these credentials belong to an account that is not in an "
                                         "organization: " + _ACCESS_HINT,
    "TooManyRequestsException": "AWS Organizations kept throttling beyond concurrency.throttle_patience_seconds: "
                                "try again later or raise it",
    "ServiceException": _RETRY_HINT,
}


@dataclass(frozen=True)
class Account:
    """One AWS account of the organization (or of the static list in the config)."""

    id: str
    name: str
    email: str | None
    arn: str | None
    #: ACTIVE, SUSPENDED, ...; ``None`` for a static account.
    state: str | None
    #: OU names from the root, e.g. ``Root/Workloads/Prod`` (the root itself: ``Root``).
    ou_path: str | None
    #: OU ids from the root, e.g. ``r-ab12/ou-ab12-xxxxxxxx``.
    ou_path_ids: str | None
    joined_at: datetime | None
    #: (key, value) pairs sorted by key.
    tags: tuple[tuple[str, str], ...]
    #: The OU names from the root, one per level: unambiguous where a name contains "/".
    ou_names: tuple[str, ...] = ()


@dataclass(frozen=True)
class Discovery:
    """Every account found (before filtering), sorted by id, and the organization they belong to."""

    organization_id: str | None
    management_account_id: str | None
    accounts: tuple[Account, ...]
    #: The root and every OU the discovery walked (empty for a static account list).
    tree: OrganizationTree = field(default_factory=lambda: OrganizationTree())


class DiscoveryError(CrawlerError):
    """AWS Organizations could not be read: not reachable, access denied, or not in an organization."""

    def __init__(self, message: str, code: str | None = None) -> None:
        super().__init__(message)
        #: The AWS error code, when AWS answered with one.
        self.code = code


@dataclass(frozen=True)
class OrganizationTree:
    """What a walk of the OU tree found: the name of every root and OU, by id, and (when the
    walk listed accounts too) each account's chain of parent ids from the root down."""

    names: Mapping[str, str] = field(default_factory=dict)
    account_chains: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    #: Every root and OU as its chain of ids from the root down to it, top-down.
    unit_chains: tuple[tuple[str, ...], ...] = ()


# -- discovery: get ----------------------------------------------------------------------
def discover_accounts(call: Call) -> Discovery:
    """Every account of the organization, with OU paths and tags, through ``call`` (an
    ``organizations`` :class:`crawler.aws.calls.PacedCalls`: every call paced, throttling waited out).

    Raises :class:`DiscoveryError` (with the AWS error code) when Organizations cannot be read.
    """
    try:
        return _discover(call)
    except ClientError as error:
        raise discovery_error(error) from error
    except BotoCoreError as error:
        raise DiscoveryError(f"AWS Organizations is not reachable: {error}; {_ACCESS_HINT}") from error
    except MalformedAnswer as error:
        raise DiscoveryError(f"AWS Organizations answered a malformed response ({error}); try again later") from error


def _discover(call: Call) -> Discovery:
    organization = _describe_organization(call)
    listed = _list_accounts(call)
    if not listed:  # a body botocore could not read becomes an empty page: never report an empty organization
        raise DiscoveryError("AWS Organizations ListAccounts listed no account, not even the management account; "
                             "try again later")
    needs_account_walk = any(chain_from_paths(item) is None for item in listed)
    # Tags and the OU tree share one small pool: the tag listings are queued first and the tree's
    # levels behind them, so a few calls are always in flight and no more (Organizations throttles early).
    pool = ThreadPoolExecutor(DISCOVERY_THREADS, thread_name_prefix="discovery")
    try:
        tags = _list_all_tags(call, [str(item["Id"]) for item in listed], pool)
        tree = _walk_tree(call, needs_account_walk, pool)
        discovery = build_discovery(organization, listed, tree, tags.result())
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
    for account in discovery.accounts:
        if account.ou_path_ids is None:
            log.warning("account %s has no OU path: neither in Paths nor found under any OU", account.id)
    return discovery


def _describe_organization(call: Call) -> Mapping[str, Any]:
    answer = _retry_malformed("describe_organization", lambda: call("describe_organization"))
    organization: Mapping[str, Any] = answer.get("Organization") or {}
    return organization


def _list_accounts(call: Call) -> list[Mapping[str, Any]]:
    return _paginate(call, "list_accounts", "Accounts", page_size=PAGE_SIZE)


def _list_roots(call: Call) -> list[Mapping[str, Any]]:
    return _paginate(call, "list_roots", "Roots", page_size=PAGE_SIZE)


def _list_organizational_units(call: Call, parent_id: str) -> list[Mapping[str, Any]]:
    return _paginate(call, "list_organizational_units_for_parent", "OrganizationalUnits",
                     page_size=PAGE_SIZE, ParentId=parent_id)


def _list_accounts_for_parent(call: Call, parent_id: str) -> list[Mapping[str, Any]]:
    return _paginate(call, "list_accounts_for_parent", "Accounts", page_size=PAGE_SIZE, ParentId=parent_id)


class _PendingTags:
    """Tag listings submitted to a pool; :meth:`result` waits for all of them."""

    def __init__(self, account_ids: Sequence[str], futures: Sequence[Future[list[Mapping[str, Any]]]]) -> None:
        self._account_ids, self._futures = account_ids, futures

    def result(self) -> dict[str, list[Mapping[str, Any]]]:
        """Every account's tags by id; the first failed listing raises."""
        return {account_id: future.result() for account_id, future in zip(self._account_ids, self._futures,
                                                                           strict=True)}


def _list_all_tags(call: Call, account_ids: Sequence[str], pool: ThreadPoolExecutor) -> _PendingTags:
    """Tags of every account: one call each, a few at a time (a thousand accounts one by one take minutes)."""
    failed = threading.Event()

    def tags_of(account_id: str) -> list[Mapping[str, Any]]:
        if failed.is_set():  # one listing failed beyond the throttle patience: the discovery fails, stop asking
            return []
        try:
            return _list_tags(call, account_id)
        except BaseException:
            failed.set()
            raise

    return _PendingTags(account_ids, [pool.submit(tags_of, account_id) for account_id in account_ids])


def _list_tags(call: Call, account_id: str) -> list[Mapping[str, Any]]:
    return _paginate(call, "list_tags_for_resource", "Tags", ResourceId=account_id)


def _paginate(call: Call, operation: str, result_key: str, page_size: int | None = None,
              **params: Any) -> list[Mapping[str, Any]]:
    """Every item of a listing, following NextToken until it is absent, through empty pages too."""
    if page_size is not None:
        params["MaxResults"] = page_size

    def listing() -> list[Mapping[str, Any]]:
        return [item for page in token_pages(call, operation, **params) for item in page.get(result_key) or []]

    return _retry_malformed(operation, listing)


def _retry_malformed(operation: str, call: Callable[[], _Answer]) -> _Answer:
    """Run ``call`` again (from its start) when AWS answers a body of the wrong shape, which
    botocore's parser reports as AttributeError/TypeError/KeyError rather than as a ClientError."""
    action = "".join(word.title() for word in operation.split("_"))  # list_accounts -> ListAccounts
    for attempt in range(1, MALFORMED_ATTEMPTS + 1):
        try:
            return call()
        except (AttributeError, TypeError, KeyError) as error:
            if attempt == MALFORMED_ATTEMPTS:
                raise DiscoveryError(f"AWS Organizations answered {action} with a malformed response "
                                     f"{MALFORMED_ATTEMPTS} times in a row ({error!r}); try again later") from error
            log.warning("AWS Organizations %s: malformed response (%r), attempt %d of %d", action, error,
                        attempt, MALFORMED_ATTEMPTS)
    raise AssertionError("unreachable")


def _walk_tree(call: Call, with_accounts: bool, pool: ThreadPoolExecutor) -> OrganizationTree:
    """Walk the OU tree top-down once, the parents of one level listed in parallel; list each
    parent's accounts too when ``with_accounts`` (one more call per OU, needed only when some
    account came without ``Paths``)."""
    names: dict[str, str] = {}
    chains: dict[str, tuple[str, ...]] = {}
    level: list[tuple[str, ...]] = []
    for root in _list_roots(call):
        names[root["Id"]] = root.get("Name") or ROOT_NAME
        level.append((root["Id"],))
    unit_chains = list(level)

    def children(chain: tuple[str, ...]) -> tuple[list[Mapping[str, Any]], list[Mapping[str, Any]]]:
        accounts = _list_accounts_for_parent(call, chain[-1]) if with_accounts else []
        return accounts, _list_organizational_units(call, chain[-1])

    while level:
        next_level: list[tuple[str, ...]] = []
        for chain, (accounts, units) in zip(level, pool.map(children, level), strict=True):
            for item in accounts:
                chains[str(item["Id"])] = chain
            for unit in units:
                if unit["Id"] not in names:  # a cycle cannot happen in AWS; never loop on a bad answer
                    names[unit["Id"]] = unit.get("Name", "")
                    next_level.append((*chain, unit["Id"]))
        level = next_level
        unit_chains.extend(level)
    return OrganizationTree(names, chains, tuple(unit_chains))


def discovery_error(error: ClientError) -> DiscoveryError:
    """A :class:`DiscoveryError` for an error AWS answered, with its code and a hint."""
    code = error.response.get("Error", {}).get("Code") or "Unknown"
    message = error.response.get("Error", {}).get("Message") or str(error)
    server_error = error.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0) >= 500
    hint = _HINTS.get(code, _RETRY_HINT if server_error else _ACCESS_HINT)
    return DiscoveryError(f"AWS Organizations {error.operation_name} failed with {code}: {message} ({hint})",
                          code=code)


# -- discovery: transform (pure) -----------------------------------------------------------
def build_discovery(organization: Mapping[str, Any], listed: Iterable[Mapping[str, Any]], tree: OrganizationTree,
                    tags: Mapping[str, Sequence[Mapping[str, Any]]]) -> Discovery:
    """A :class:`Discovery` from DescribeOrganization, ListAccounts, the OU walk and each account's tags."""
    accounts = {}
    for item in listed:
        account = account_from_aws(item, tree, tags.get(str(item["Id"]), ()))
        accounts[account.id] = account
    return Discovery(organization_id=organization.get("Id"),
                     management_account_id=organization.get("MasterAccountId"),
                     accounts=tuple(sorted(accounts.values(), key=lambda account: account.id)), tree=tree)


def account_from_aws(item: Mapping[str, Any], tree: OrganizationTree | None = None,
                     tags: Sequence[Mapping[str, Any]] = ()) -> Account:
    """An :class:`Account` from an Organizations ``Account`` structure, placed in ``tree``."""
    tree = tree or OrganizationTree()
    account_id = str(item["Id"])
    chain = chain_from_paths(item) or tree.account_chains.get(account_id)
    return Account(id=account_id, name=item.get("Name") or "", email=item.get("Email"), arn=item.get("Arn"),
                   state=account_state(item), ou_path=ou_path_names(chain, tree.names),
                   ou_path_ids="/".join(chain) if chain else None,
                   joined_at=utc_datetime(item.get("JoinedTimestamp")), tags=sorted_tags(tags),
                   ou_names=ou_name_chain(chain, tree.names))


def account_state(item: Mapping[str, Any]) -> str | None:
    """``State``, or the retired ``Status`` only where ``State`` is absent."""
    state = item.get("State")
    return state if state is not None else item.get("Status")


def chain_from_paths(item: Mapping[str, Any]) -> tuple[str, ...] | None:
    """The root and OU ids above the account, from the first entry of ``Paths``
    (``o-xxxx/r-xxxx/ou-xxxx-yyyyyyyy/.../<account id>/``); ``None`` when absent or unreadable."""
    paths = item.get("Paths") or ()
    if not paths:
        return None
    parts = [part for part in str(paths[0]).split("/") if part]
    if len(parts) < 3 or not parts[0].startswith("o-") or str(item.get("Id")) not in parts:
        return None
    chain = tuple(part for part in parts[1:] if part.startswith(_OU_ID_PREFIXES))
    return chain if chain and chain[0].startswith("r-") else None


def ou_path_names(chain: Sequence[str] | None, names: Mapping[str, str]) -> str | None:
    """``Root/Workloads/Prod`` for a chain of ids; ``None`` when an id's name is unknown."""
    path = ou_name_chain(chain, names)
    return "/".join(path) if path else None


def ou_name_chain(chain: Sequence[str] | None, names: Mapping[str, str]) -> tuple[str, ...]:
    """The OU names of a chain of ids, one per level; empty when an id's name is unknown."""
    if not chain or any(ou_id not in names for ou_id in chain):
        return ()
    return tuple(names[ou_id] for ou_id in chain)


def split_name_path(path: str) -> tuple[str, ...]:
    """``Root/Workloads/Prod`` -> its OU names; ``\\/`` is a "/" inside a name (``Root/Security\\/Audit``)."""
    names, current, characters = [], [], iter(path.rstrip("/"))
    for character in characters:
        if character == "\\":
            current.append(next(characters, "\\"))
        elif character == "/":
            names.append("".join(current))
            current = []
        else:
            current.append(character)
    return (*names, "".join(current))


def utc_datetime(value: Any) -> datetime | None:
    """A timezone-aware UTC datetime (a naive one is taken as UTC)."""
    return utc(value) if isinstance(value, datetime) else None


def sorted_tags(tags: Iterable[Mapping[str, Any]]) -> tuple[tuple[str, str], ...]:
    """``[{"Key": k, "Value": v}, ...]`` as (key, value) pairs sorted by key."""
    return tuple(sorted((str(tag["Key"]), str(tag.get("Value", ""))) for tag in tags))


# -- static list ---------------------------------------------------------------------------
def static_accounts(settings: OrganizationSettings) -> Discovery:
    """The accounts listed in the config (no AWS call): state unknown, tags from the config.
    An id listed twice is kept once (its first entry)."""
    accounts: dict[str, Account] = {}
    for listed in settings.accounts:
        accounts.setdefault(listed.id, Account(
            id=listed.id, name=listed.name, email=None, arn=None, state=None, ou_path=None, ou_path_ids=None,
            joined_at=None, tags=tuple(sorted(listed.tags))))
    return Discovery(organization_id=None, management_account_id=None,
                     accounts=tuple(sorted(accounts.values(), key=lambda account: account.id)))


# -- filters (pure) --------------------------------------------------------------------------
def select_accounts(discovery: Discovery, settings: OrganizationSettings) -> list[Account]:
    """The accounts to crawl, sorted by id: in one of ``settings.states`` (an unknown state always
    passes), matching ``include`` (or ``include`` empty) and not matching ``exclude``."""
    selected = [account for account in discovery.accounts
                if (account.state is None or account.state in settings.states)
                and (settings.include.is_empty or account_matches(account, settings.include))
                and not account_matches(account, settings.exclude)]
    return sorted(selected, key=lambda account: account.id)


def account_matches(account: Account, account_filter: AccountFilter) -> bool:
    """True when any criterion of the filter matches the account (an empty filter matches nothing)."""
    return (account.id in account_filter.account_ids
            or any(_matches_ou(account, ou) for ou in account_filter.ous)
            or any(_matches_tag(account, tag.key, tag.values) for tag in account_filter.tags)
            or any(fnmatch.fnmatchcase(account.name, pattern) for pattern in account_filter.names))


def _matches_ou(account: Account, ou: str) -> bool:
    """An OU or root id anywhere above the account, or a name path equal to or above its OU path."""
    if account.ou_path_ids and ou in account.ou_path_ids.split("/"):
        return True
    wanted = split_name_path(ou)
    # By whole names, level by level: "Root/Security" must not match an OU named "Security/Audit".
    return bool(account.ou_names) and any(wanted) and account.ou_names[:len(wanted)] == wanted


def _matches_tag(account: Account, key: str, values: Sequence[str]) -> bool:
    """The account has tag ``key``, with one of ``values`` (any value when empty)."""
    return any(tag_key == key and (not values or tag_value in values) for tag_key, tag_value in account.tags)
