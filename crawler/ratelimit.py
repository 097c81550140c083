"""Per-account request rate: IAM throttles each account separately, so each gets its own bucket.

A token bucket shared by every thread working in one account. On ``Throttling`` the rate is
cut (multiplicatively); successful calls raise it again (additively) up to the configured rate,
or without a ceiling when the rate is to be found (``requests_per_second_per_account: null``).
"""
from __future__ import annotations

import threading
import time
from collections.abc import Callable

#: Where an adaptive limiter starts, and the bounds it moves in (requests per second).
ADAPTIVE_START = 10.0
MINIMUM_RATE = 0.5
MAXIMUM_RATE = 1000.0
#: Cut to this share of the rate on throttling, at most once per ``CUT_INTERVAL`` seconds
#: (a burst of throttled answers is one signal, not many).
CUT_FACTOR = 0.6
CUT_INTERVAL = 1.0


class RateLimiter:
    """A token bucket whose rate adapts to throttling."""

    def __init__(self, rate: float | None, clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        self.ceiling = rate if rate is not None else MAXIMUM_RATE
        self.rate = rate if rate is not None else ADAPTIVE_START
        self._clock, self._sleep = clock, sleep
        self._lock = threading.Lock()
        # One token, not a full bucket: others may be using the account's IAM bucket too, and a
        # full start was measured to cost throttled calls for a gain of at most one second.
        self._tokens = 1.0
        self._updated = clock()
        self._last_cut = float("-inf")
        self.throttles = 0

    def acquire(self) -> float:
        """Wait for a token; return the seconds waited."""
        waited = 0.0
        while True:
            with self._lock:
                self._refill()
                # Within rounding of a whole token counts as one (a float sum of rates falls
                # short by ~1e-16, and a sleep that short would spin on a coarse clock).
                if self._tokens >= 1.0 - 1e-9:
                    self._tokens -= 1.0
                    return waited
                delay = (1.0 - self._tokens) / self.rate
            self._sleep(delay)
            waited += delay

    def throttled(self) -> None:
        """AWS answered Throttling: slow down."""
        with self._lock:
            self.throttles += 1
            now = self._clock()
            if now - self._last_cut >= CUT_INTERVAL:
                self._last_cut = now
                self._refill()
                # A configured rate below the floor stays where it is: a cut never speeds up.
                self.rate = max(min(MINIMUM_RATE, self.rate), self.rate * CUT_FACTOR)
                self._tokens = min(self._tokens, 0.0)

    def succeeded(self) -> None:
        """A call went through: probe upward (about one request per second more each second)."""
        with self._lock:
            self.rate = min(self.ceiling, self.rate + 1.0 / self.rate)

    def _refill(self) -> None:
        now = self._clock()
        # A bucket of one second's worth: short bursts allowed, never more than the rate over a second.
        self._tokens = min(max(self.rate, 1.0), self._tokens + (now - self._updated) * self.rate)
        self._updated = now
