"""Hook the simulator into moto: new IAM operations, stricter STS and Organizations, faults,
and one lock so that 32+ concurrent clients cannot corrupt moto's dict-based backends.

moto looks up a snake_case method on its response class at every request, so adding an
operation is setting an attribute. Every request of IAM, STS and Organizations passes
through :func:`_dispatch`, which (while an organization is active) counts it, injects the
account's faults, and serializes access to moto. With no active organization, moto behaves
as if nothing were installed.
"""
from __future__ import annotations

import json
import socket
import time
import uuid
from collections.abc import Callable
from typing import Any

import moto.iam.models as moto_iam_models
from botocore.exceptions import ConnectionClosedError
from moto.core.responses import ActionResult
from moto.iam.responses import IamResponse
from moto.organizations.responses import OrganizationsResponse
from moto.sts.responses import TokenResponse

from crawler.sim import advisor, iam_inventory, org_report, organizations, sts
from crawler.sim.state import SimError, SimState, active_state

QUERY_NAMESPACES = {"iam": "https://iam.amazonaws.com/doc/2010-05-08/",
                    "sts": "https://sts.amazonaws.com/doc/2011-06-15/"}
SERVER_ERRORS = {"iam": "ServiceFailure", "sts": "InternalFailure", "organizations": "ServiceException"}
THROTTLE_ERRORS = {"iam": ("Throttling", "Rate exceeded"), "sts": ("Throttling", "Rate exceeded"),
                   "organizations": ("TooManyRequestsException",
                                     "AWS Organizations can't complete your request because another request "
                                     "is already in progress or the rate limit was exceeded.")}

IAM_OPERATIONS: dict[str, Callable[[Any, SimState], Any]] = {
    "generate_service_last_accessed_details": advisor.generate_service_last_accessed_details,
    "get_service_last_accessed_details": advisor.get_service_last_accessed_details,
    "get_service_last_accessed_details_with_entities": advisor.get_service_last_accessed_details_with_entities,
    "list_policies_granting_service_access": advisor.list_policies_granting_service_access,
    "generate_organizations_access_report": org_report.generate_organizations_access_report,
    "get_organizations_access_report": org_report.get_organizations_access_report,
    "get_account_authorization_details": iam_inventory.get_account_authorization_details,
}
ORGANIZATIONS_OPERATIONS: dict[str, Callable[[Any, SimState], Any]] = {
    "list_accounts": organizations.list_accounts,
    "list_accounts_for_parent": organizations.list_accounts_for_parent,
    "list_organizational_units_for_parent": organizations.list_organizational_units_for_parent,
    "list_children": organizations.list_children,
    "describe_account": organizations.describe_account,
}
STS_OPERATIONS: dict[str, Callable[[Any, SimState], Any]] = {"assume_role": sts.assume_role}

_installed = False
_original_dispatch: dict[type, Callable[..., Any]] = {}
_original_account_lookup = moto_iam_models.get_account_id_from
_account_cache: dict[str, str] = {}


def install() -> None:
    """Install the hooks (idempotent). They are inert until an organization is activated."""
    global _installed
    if _installed:
        return
    for response_class, operations in ((IamResponse, IAM_OPERATIONS), (TokenResponse, STS_OPERATIONS),
                                       (OrganizationsResponse, ORGANIZATIONS_OPERATIONS)):
        for name, handler in operations.items():
            original = getattr(response_class, name, None)
            setattr(response_class, name, _operation(handler, original))
        _original_dispatch[response_class] = response_class._dispatch
        response_class._dispatch = _dispatch  # type: ignore[method-assign]
    moto_iam_models.get_account_id_from = _cached_account_lookup
    _installed = True


def forget_accounts() -> None:
    """Drop the access-key -> account cache (after moto's backends were reset)."""
    _account_cache.clear()


def _cached_account_lookup(access_key: str) -> str:
    """moto scans every account for the access key on every request; remember the answer."""
    account = _account_cache.get(access_key)
    if account is None:
        account = _original_account_lookup(access_key)
        if active_state() is not None and account != moto_iam_models.DEFAULT_ACCOUNT_ID:
            _account_cache[access_key] = account
    return account


def _operation(handler: Callable[[Any, SimState], Any], original: Callable[..., Any] | None) -> Callable[..., Any]:
    def method(self: Any) -> Any:
        state = active_state()
        if state is None:
            if original is None:
                raise NotImplementedError("start a simulated organization to use this operation")
            return original(self)
        result = handler(self, state)
        return ActionResult(result) if isinstance(result, dict) else result

    method.__name__ = handler.__name__
    return method


def _dispatch(self: Any, request: Any, full_url: Any = None, headers: Any = None) -> Any:
    state = active_state()
    if state is None:
        return _original_dispatch[type(self)](self, request, full_url, headers)
    service = self.service_name
    try:
        with state.lock:
            self.setup_class(request, full_url, headers)
        operation = self._get_action()
        account = self.current_account
        if service != "iam":
            return _serve(self, state, service, operation, account, request)
        with state.iam_request(account):
            return _serve(self, state, service, operation, account, request)
    except SimError as error:
        return render_error(service, error)


def _serve(self: Any, state: SimState, service: str, operation: str, account: str, request: Any) -> Any:
    malformed = _inject_faults(state, service, operation, account, self.get_access_key())
    if malformed:
        return 200, {"Content-Type": "text/xml" if service in QUERY_NAMESPACES else "application/x-amz-json-1.1"}, \
            _MALFORMED[service in QUERY_NAMESPACES]
    with state.lock:
        answer = self.call_action()
    if state.roll() < state.faults.for_account(account).request_fault("drop_rate", operation):
        state.record("dropped", account, operation)
        return _drop_connection(request)
    return answer


def _drop_connection(request: Any) -> Any:
    """The answer is lost after the action ran: close the connection (served) or fail the send (in process)."""
    connection = getattr(request, "environ", {}).get("werkzeug.socket")
    if connection is None:
        raise ConnectionClosedError(endpoint_url=str(getattr(request, "url", "")))
    connection.shutdown(socket.SHUT_RDWR)
    return 500, {}, ""


#: Malformed answers: truncated XML (query protocol); for JSON, valid JSON of the wrong shape,
#: since botocore silently turns a 200 answer that is not JSON into an empty result.
_MALFORMED = {True: "<ErrorResponse><Error><Code>Throttl", False: '["Accounts", {"Id": null}]'}


def _inject_faults(state: SimState, service: str, operation: str, account: str, access_key: str) -> bool:
    """Count the call, apply the account's faults; True when the answer should be malformed."""
    state.count_call(account, service, operation, access_key)
    faults = state.faults.for_account(account)
    if sts.session_expired(state, access_key):
        raise SimError("ExpiredToken", "The security token included in the request is expired", 400)
    latency = faults.request_fault("latency_ms", operation)
    if latency:
        time.sleep(latency / 1000)
    if _throttled(state, service, account, operation):
        state.throttled[account] += 1
        state.record("throttled", account, operation)
        raise SimError(*THROTTLE_ERRORS[service], 400)
    if state.roll() < faults.request_fault("error_rate", operation):
        state.record("server_error", account, operation)
        raise SimError(SERVER_ERRORS[service], "An internal error occurred. Try again.", 500)
    if state.roll() < faults.request_fault("malformed_rate", operation):
        state.record("malformed", account, operation)
        return True
    return False


def _throttled(state: SimState, service: str, account: str, operation: str) -> bool:
    """Whether the request is throttled: beyond the account's IAM or Organizations rate, or by chance."""
    if service == "iam":
        return state.iam_throttled(account, operation)
    if service == "organizations":
        return state.organizations_throttled(account, operation)
    return state.roll() < state.faults.for_account(account).request_fault("throttle_rate", operation)


def render_error(service: str, error: SimError) -> tuple[int, dict[str, str], str]:
    """An error answer in the service's wire protocol (query XML or JSON)."""
    request_id = str(uuid.uuid4())
    if service in QUERY_NAMESPACES:
        kind = "Receiver" if error.status >= 500 else "Sender"
        body = (f'<ErrorResponse xmlns="{QUERY_NAMESPACES[service]}"><Error><Type>{kind}</Type>'
                f"<Code>{_xml(error.code)}</Code><Message>{_xml(error.message)}</Message></Error>"
                f"<RequestId>{request_id}</RequestId></ErrorResponse>")
        return error.status, {"Content-Type": "text/xml", "x-amzn-RequestId": request_id}, body
    body = json.dumps({"__type": error.code, "Message": error.message})
    return error.status, {"Content-Type": "application/x-amz-json-1.1", "x-amzn-RequestId": request_id,
                          "x-amzn-ErrorType": error.code}, body


def _xml(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
