"""Every AWS call of the crawl goes through a :class:`PacedCalls`: in an account, one
:class:`AccountCalls` per account; to AWS Organizations, one :func:`organizations_calls` per crawl.

It takes a token from its rate limiter before each attempt (botocore's own retries included),
tells the limiter about every throttled attempt, waits out throttling that outlasts botocore's
retries, and (in an account) renews expired credentials once before giving up. Expected AWS
answers (NoSuchEntity, AccessDenied...) come back as ``ClientError`` for the caller to turn into data.
"""
from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

from botocore.exceptions import ClientError

from crawler.aws.errors import AWS_ERRORS, error_code, error_message
from crawler.aws.ratelimit import RateLimiter
from crawler.aws.sessions import AccountSession, SessionFactory
from crawler.progress import Progress

log = logging.getLogger(__name__)

THROTTLING_CODES = frozenset({"Throttling", "ThrottlingException", "TooManyRequestsException",
                              "RequestLimitExceeded", "SlowDown"})
#: Waits between attempts once botocore's own retries gave up on Throttling.
PATIENCE_FIRST_PAUSE, PATIENCE_LONGEST_PAUSE = 2.0, 30.0
EXPIRED_CODES = frozenset({"ExpiredToken", "ExpiredTokenException", "RequestExpired"})


class MalformedAnswer(Exception):
    """AWS answered something that cannot be right (a job without JobStatus, a Marker repeated)."""


#: What a call can raise because of what AWS answered: recorded, never a reason to stop the crawl.
ANSWER_ERRORS = (*AWS_ERRORS, MalformedAnswer)


def marker_pages(call: Callable[..., dict[str, Any]], operation: str, first: dict[str, Any] | None = None,
                 **arguments: Any) -> Iterator[dict[str, Any]]:
    """Every page of a Marker-paginated IAM operation (botocore has no paginator for most of them).

    Follows IsTruncated and Marker to the end, never counts items (IAM may return fewer than
    MaxItems while more follow); ``first`` is a page already read. A Marker seen twice raises
    MalformedAnswer instead of looping forever.
    """
    page = call(operation, **arguments) if first is None else first
    seen: set[str] = set()
    while True:
        yield page
        if not page.get("IsTruncated"):
            return
        marker = page["Marker"]
        if marker in seen:
            raise MalformedAnswer(f"{operation} repeated a Marker")
        seen.add(marker)
        page = call(operation, **arguments, Marker=marker)


def token_pages(call: Callable[..., dict[str, Any]], operation: str, **arguments: Any) -> Iterator[dict[str, Any]]:
    """Every page of a NextToken-paginated operation (Organizations listings).

    Follows NextToken until it is absent, through empty pages (AWS may answer an empty page
    while more follow); a NextToken seen twice raises MalformedAnswer instead of looping forever.
    """
    page = call(operation, **arguments)
    seen: set[str] = set()
    while True:
        yield page
        token = page.get("NextToken")
        if not token:
            return
        if token in seen:
            raise MalformedAnswer(f"{operation} repeated a NextToken")
        seen.add(token)
        page = call(operation, **arguments, NextToken=token)


class SessionLost(Exception):
    """A job (or report) was made by an earlier role session and cannot be read in this one:
    generate it again. Carries what the read answered, recorded if that happens too often."""

    def __init__(self, code: str = "NoSuchEntity",
                 message: str = "made by an earlier role session, it cannot be read in this one") -> None:
        super().__init__(message)
        self.code, self.message = code, message


def read_job(calls: AccountCalls, generation: int, operation: str, **arguments: Any) -> dict[str, Any]:
    """Call ``operation`` to read a job made in credential ``generation``; SessionLost when it
    cannot be read in this session.

    NoSuchEntity on a JobId means another session made it, and so does any error once the
    credentials were renewed since the job was made: IAM answers a JobId of an older session with
    AccessDenied or InvalidInput too (and the renewal may have happened in this very read, after
    ExpiredToken).
    """
    try:
        answer = calls(operation, **arguments)
    except AWS_ERRORS as error:
        if error_code(error) == "NoSuchEntity" or generation != calls.generation:
            raise SessionLost(error_code(error), error_message(error)) from error
        raise
    if generation != calls.generation:
        raise SessionLost()
    return answer


class PacedCalls:
    """Rate-limited, throttle-aware calls through one boto3 client.

    Every attempt (botocore's own retries included) waits for a token of ``limiter``, and every
    throttled attempt is told to it; Throttling that outlasts botocore's retries is waited out for
    up to ``patience`` seconds.
    """

    def __init__(self, client: Any, limiter: RateLimiter, progress: Progress | None = None, patience: float = 300.0,
                 stop: threading.Event | None = None, clock: Callable[[], float] = time.monotonic,
                 account_id: str = "-") -> None:
        self.client, self.limiter, self.progress = client, limiter, progress
        self.patience, self.stop, self.clock = patience, stop or threading.Event(), clock
        #: For log lines: the account the calls are made in ("-": no account in particular).
        self.account_id = account_id
        service_id = self.client.meta.service_model.service_id.hyphenize()
        self.client.meta.events.register(f"before-send.{service_id}", self._pace_retry)
        self.client.meta.events.register(f"needs-retry.{service_id}", self._notice_attempt)

    def __call__(self, operation: str, **arguments: Any) -> dict[str, Any]:
        """Call ``operation`` (snake_case boto3 name) once the rate limit allows it.

        Expired credentials are renewed once (where they can be, see :meth:`_renew`); Throttling
        that outlasts botocore's retries is waited out for up to ``patience`` seconds; anything
        else is raised.
        """
        renewed, give_up_at, pause = False, self.clock() + self.patience, PATIENCE_FIRST_PAUSE
        while True:
            self.limiter.acquire()
            try:
                answer = getattr(self.client, operation)(**arguments)
            except ClientError as error:
                code = error_code(error)
                if code in EXPIRED_CODES and not renewed and self._renew(operation):
                    renewed = True
                    continue
                if code in THROTTLING_CODES and self.clock() + pause < give_up_at and not self.stop.is_set():
                    log.info("%s: still throttled after botocore's retries, waiting %.0f s", operation, pause,
                             extra={"account_id": self.account_id})
                    self.stop.wait(pause)
                    pause = min(pause * 2, PATIENCE_LONGEST_PAUSE)
                    continue
                raise
            self.limiter.succeeded()
            return dict(answer)

    def _renew(self, operation: str) -> bool:
        """Renew expired credentials; False: these cannot be renewed here (the crawler's own
        credentials come from botocore's chain, which refreshes them itself)."""
        return False

    def _pace_retry(self, request: Any = None, **_: Any) -> None:
        """botocore's before-send event: a retry (after botocore's own backoff) waits for a token
        too, so the retries of throttled calls follow the rate that was just cut."""
        context = getattr(request, "context", None) or {}
        if context.get("retries", {}).get("attempt", 1) > 1:
            self.limiter.acquire()
        return None

    def _notice_attempt(self, response: Any = None, **_: Any) -> None:
        """botocore's needs-retry event: count throttled attempts; never changes the retry decision."""
        if not response:
            return None
        parsed = response[1] if isinstance(response, tuple) and len(response) > 1 else {}
        code = (parsed or {}).get("Error", {}).get("Code")
        if code in THROTTLING_CODES:
            self.limiter.throttled()
            if self.progress is not None:
                self.progress.add("throttled")
            log.debug("throttled (%s)", code, extra={"account_id": self.account_id})
        return None


class AccountCalls(PacedCalls):
    """Paced calls of one service in one account, as the crawler's role there: expired
    credentials are renewed once before giving up."""

    def __init__(self, session: AccountSession, service: str, limiter: RateLimiter,
                 progress: Progress | None = None, patience: float = 300.0, stop: threading.Event | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.session, self.service = session, service
        super().__init__(session.client(service), limiter, progress, patience, stop, clock, session.account_id)

    @property
    def generation(self) -> int:
        """The credentials' generation (see :class:`crawler.aws.sessions.AccountSession`)."""
        return self.session.generation

    def _renew(self, operation: str) -> bool:
        log.info("%s: credentials expired, renewing", operation, extra={"account_id": self.account_id})
        self.session.renew()
        return True


def organizations_calls(factory: SessionFactory, progress: Progress | None = None,
                        stop: threading.Event | None = None) -> PacedCalls:
    """Calls of AWS Organizations (as the crawler, or its hub role), paced by an adaptive limiter
    of their own and as patient with throttling as IAM calls (``throttle_patience_seconds``).

    Organizations allows an organization only a few requests a second: make one per crawl and
    share it (discovery's threads, the Organizations view).
    """
    return PacedCalls(factory.organizations_client(), RateLimiter(None), progress,
                      factory.concurrency.throttle_patience_seconds, stop)
