"""Every AWS call made inside an account goes through one :class:`AccountCalls`.

It takes a token from the account's rate limiter before each call, tells the limiter about
every throttled attempt (botocore's own retries included), and renews expired credentials
once before giving up. Expected AWS answers (NoSuchEntity, AccessDenied...) come back as
``ClientError`` for the caller to turn into data.
"""
from __future__ import annotations

import logging
from typing import Any

from botocore.exceptions import ClientError

from crawler.progress import Progress
from crawler.ratelimit import RateLimiter
from crawler.sessions import AccountSession, error_code

log = logging.getLogger(__name__)

THROTTLING_CODES = frozenset({"Throttling", "ThrottlingException", "TooManyRequestsException",
                              "RequestLimitExceeded", "SlowDown"})
EXPIRED_CODES = frozenset({"ExpiredToken", "ExpiredTokenException", "RequestExpired"})


class AccountCalls:
    """Rate-limited, throttle-aware calls of one service in one account."""

    def __init__(self, session: AccountSession, service: str, limiter: RateLimiter,
                 progress: Progress | None = None) -> None:
        self.session, self.service, self.limiter, self.progress = session, service, limiter, progress
        self.account_id = session.account_id
        self.client = session.client(service)
        self.client.meta.events.register(f"needs-retry.{service}", self._notice_attempt)

    @property
    def generation(self) -> int:
        """The credentials' generation (see :class:`crawler.sessions.AccountSession`)."""
        return self.session.generation

    def __call__(self, operation: str, **arguments: Any) -> dict[str, Any]:
        """Call ``operation`` (snake_case boto3 name) once the rate limit allows it."""
        for renewal in (False, True):
            self.limiter.acquire()
            try:
                answer = getattr(self.client, operation)(**arguments)
            except ClientError as error:
                if error_code(error) in EXPIRED_CODES and not renewal:
                    log.info("%s: credentials expired, renewing", operation, extra={"account_id": self.account_id})
                    self.session.renew()
                    continue
                raise
            self.limiter.succeeded()
            return dict(answer)
        raise AssertionError("unreachable")  # pragma: no cover - the loop returns or raises

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
