"""Every AWS call made inside an account goes through one :class:`AccountCalls`.

It takes a token from the account's rate limiter before each attempt (botocore's own retries
included), tells the limiter about every throttled attempt, and renews expired credentials
once before giving up. Expected AWS answers (NoSuchEntity, AccessDenied...) come back as
``ClientError`` for the caller to turn into data.
"""
from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

from botocore.exceptions import ClientError

from crawler.progress import Progress
from crawler.ratelimit import RateLimiter
from crawler.sessions import AWS_ERRORS, AccountSession, error_code, error_message

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


class AccountCalls:
    """Rate-limited, throttle-aware calls of one service in one account."""

    def __init__(self, session: AccountSession, service: str, limiter: RateLimiter,
                 progress: Progress | None = None, patience: float = 300.0, stop: threading.Event | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.session, self.service, self.limiter, self.progress = session, service, limiter, progress
        self.patience, self.stop, self.clock = patience, stop or threading.Event(), clock
        self.account_id = session.account_id
        self.client = session.client(service)
        service_id = self.client.meta.service_model.service_id.hyphenize()
        self.client.meta.events.register(f"before-send.{service_id}", self._pace_retry)
        self.client.meta.events.register(f"needs-retry.{service_id}", self._notice_attempt)

    @property
    def generation(self) -> int:
        """The credentials' generation (see :class:`crawler.sessions.AccountSession`)."""
        return self.session.generation

    def __call__(self, operation: str, **arguments: Any) -> dict[str, Any]:
        """Call ``operation`` (snake_case boto3 name) once the rate limit allows it.

        Expired credentials are renewed once; Throttling that outlasts botocore's retries is
        waited out for up to ``throttle_patience_seconds``; anything else is raised.
        """
        renewed, give_up_at, pause = False, self.clock() + self.patience, PATIENCE_FIRST_PAUSE
        while True:
            self.limiter.acquire()
            try:
                answer = getattr(self.client, operation)(**arguments)
            except ClientError as error:
                code = error_code(error)
                if code in EXPIRED_CODES and not renewed:
                    log.info("%s: credentials expired, renewing", operation, extra={"account_id": self.account_id})
                    self.session.renew()
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
