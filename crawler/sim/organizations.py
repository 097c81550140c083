"""Organizations listings as AWS answers them today, replacing moto's.

- ``MaxResults`` is 1..20 and pages may be empty while ``NextToken`` is set (the simulator
  returns an empty page after the first one, so a client that stops early loses accounts);
- accounts carry ``State`` (``Status`` was retired) and, optionally, ``Paths``.
"""
from __future__ import annotations

import base64
import json
from typing import Any

from moto.core.utils import unix_time
from moto.organizations.models import FakeAccount, OrganizationsBackend, organizations_backends

from crawler.sim.state import SimError, SimState

MAX_RESULTS = 20


def _backend(response: Any) -> OrganizationsBackend:
    """The organization the caller belongs to; members may not list it."""
    backend: OrganizationsBackend = response.organizations_backend
    if backend.org is not None:
        return backend
    if response.current_account in organizations_backends.master_accounts:
        raise SimError("AccessDeniedException", "You don't have permissions to access this resource.")
    raise SimError("AWSOrganizationsNotInUseException",
                   "Your account is not a member of an organization.")


def _page(response: Any, items: list[Any], state: SimState, scope: str) -> tuple[list[Any], str | None]:
    """One page of ``items`` and the token of the next, empty pages included."""
    raw = response._get_param("MaxResults")
    limit = MAX_RESULTS if raw in (None, "") else int(raw)
    if not 1 <= limit <= MAX_RESULTS:
        raise SimError("InvalidInputException", f"You provided a value that does not match the required "
                       f"pattern or range: MaxResults must be between 1 and {MAX_RESULTS}.")
    offset, empty = _decode(response._get_param("NextToken"), scope)
    if empty:
        return [], _encode(scope, offset, False)
    page = items[offset:offset + limit]
    following = offset + len(page)
    if following >= len(items):
        return page, None
    return page, _encode(scope, following, state.empty_pages and offset == 0)


def _encode(scope: str, offset: int, empty: bool) -> str:
    return base64.urlsafe_b64encode(json.dumps([scope, offset, empty]).encode()).decode()


def _decode(token: str | None, scope: str) -> tuple[int, bool]:
    if not token:
        return 0, False
    try:
        owner, offset, empty = json.loads(base64.urlsafe_b64decode(token.encode()))
        if owner == scope:
            return int(offset), bool(empty)
    except (ValueError, TypeError):
        pass
    raise SimError("InvalidInputException", "The NextToken is not valid.")


def describe(account: FakeAccount, backend: OrganizationsBackend, state: SimState) -> dict[str, Any]:
    """An ``Account`` structure: ``State`` without the retired ``Status``; ``Paths`` when enabled."""
    item = {"Id": account.id, "Arn": account.arn, "Email": account.email, "Name": account.name,
            "State": account.state, "JoinedMethod": account.joined_method,
            "JoinedTimestamp": unix_time(account.create_time)}
    if state.account_paths:
        item["Paths"] = [_path(account, backend) + "/"]
    return item


def _path(account: FakeAccount, backend: OrganizationsBackend) -> str:
    parents = {unit.id: getattr(unit, "parent_id", None) for unit in backend.ou}
    chain = []
    current = account.parent_id
    while current:
        chain.append(current)
        current = parents.get(current)
    return "/".join([backend.org.id, *reversed(chain), account.id])  # type: ignore[union-attr]


def list_accounts(response: Any, state: SimState) -> str:
    """``ListAccounts``: every account, in the order they joined."""
    backend = _backend(response)
    accounts = sorted(backend.accounts, key=lambda account: (account.create_time, account.id))
    page, token = _page(response, accounts, state, "accounts")
    return _json({"Accounts": [describe(account, backend, state) for account in page]}, token)


def list_accounts_for_parent(response: Any, state: SimState) -> str:
    """``ListAccountsForParent``: the accounts directly under a root or OU."""
    backend = _backend(response)
    parent_id = _parent(response, backend)
    accounts = sorted((a for a in backend.accounts if a.parent_id == parent_id), key=lambda a: a.id)
    page, token = _page(response, accounts, state, "accounts:" + parent_id)
    return _json({"Accounts": [describe(account, backend, state) for account in page]}, token)


def list_organizational_units_for_parent(response: Any, state: SimState) -> str:
    """``ListOrganizationalUnitsForParent``: the OUs directly under a root or OU."""
    backend = _backend(response)
    parent_id = _parent(response, backend)
    units = sorted((unit for unit in backend.ou if unit.type == "ORGANIZATIONAL_UNIT" and unit.parent_id == parent_id),
                   key=lambda unit: unit.id)
    page, token = _page(response, units, state, "ous:" + parent_id)
    return _json({"OrganizationalUnits": [{"Id": unit.id, "Arn": unit.arn, "Name": unit.name} for unit in page]},
                 token)


def list_children(response: Any, state: SimState) -> str:
    """``ListChildren``: OUs or accounts directly under a root or OU."""
    backend = _backend(response)
    parent_id = _parent(response, backend)
    child_type = response._get_param("ChildType")
    if child_type == "ACCOUNT":
        ids = sorted(a.id for a in backend.accounts if a.parent_id == parent_id)
    elif child_type == "ORGANIZATIONAL_UNIT":
        ids = sorted(u.id for u in backend.ou if u.type == "ORGANIZATIONAL_UNIT" and u.parent_id == parent_id)
    else:
        raise SimError("InvalidInputException", f"ChildType {child_type} is not valid.")
    page, token = _page(response, ids, state, f"children:{child_type}:{parent_id}")
    return _json({"Children": [{"Id": child, "Type": child_type} for child in page]}, token)


def describe_account(response: Any, state: SimState) -> str:
    """``DescribeAccount`` with ``State`` and no ``Status``."""
    backend = _backend(response)
    account_id = response._get_param("AccountId")
    account = next((a for a in backend.accounts if a.id == account_id), None)
    if account is None:
        raise SimError("AccountNotFoundException", "You specified an account that doesn't exist.")
    return json.dumps({"Account": describe(account, backend, state)})


def _parent(response: Any, backend: OrganizationsBackend) -> str:
    parent_id = response._get_param("ParentId")
    if not any(unit.id == parent_id for unit in backend.ou):
        raise SimError("ParentNotFoundException", "You specified a parent that doesn't exist.")
    return parent_id


def _json(result: dict[str, Any], token: str | None) -> str:
    if token:
        result["NextToken"] = token
    return json.dumps(result)
