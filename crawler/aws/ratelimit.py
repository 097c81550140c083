"""Per-account request rate: IAM throttles each account separately, so each gets its own bucket.

A token bucket shared by every thread working in one account. On ``Throttling`` the rate is
cut (at most once per ``CUT_INTERVAL``: a burst of throttled answers is one signal) and a
*ceiling* remembered: the rate that was throttled or, when a second throttle follows soon, the
rate AWS let through in between (*measured*: AWS's bucket was empty since the first). Successful
calls raise the rate again: quickly (about one request per second each second), except near a
measured ceiling, where the next throttle would be: there slowly (about 2% a second), and
quickly again once past it by a margin without a throttle (it was a passing dip). The rate
never exceeds the configured one; without one (``requests_per_second_per_account: null``) it
is found this way.

IAM's quota is the same in every account unless someone else is using an account's IAM at
the time, so the ceilings the accounts of one crawl found are pooled in a :class:`RateBook`:
an adaptive limiter created after some account was throttled starts just below their median
instead of finding the ceiling again with throttled calls of its own.
"""
from __future__ import annotations

import statistics
import threading
import time
from collections.abc import Callable

#: Where an adaptive limiter starts when no account has been throttled yet, and the bounds it
#: moves in (requests per second).
ADAPTIVE_START = 10.0
MINIMUM_RATE = 0.5
MAXIMUM_RATE = 1000.0
#: Cut to this share of the rate on throttling, at most once per ``CUT_INTERVAL`` seconds.
CUT_FACTOR = 0.6
CUT_INTERVAL = 1.0
#: Below this share of the ceiling the rate climbs quickly, above it slowly (by PROBE_STEP per
#: successful call: PROBE_STEP x rate per second, i.e. 2% a second).
FAST_SHARE = 0.85
PROBE_STEP = 0.02
#: Past the ceiling by this factor without a throttle: the ceiling is forgotten.
FORGET_FACTOR = 1.2
#: A limiter that starts from the book starts at this share of the pooled ceiling.
BOOK_START_SHARE = 0.9
#: A cut this soon after the previous one (seconds) measures the ceiling by the calls that got
#: through in between: AWS's bucket was empty since that cut, so they came at AWS's own rate.
MEASURE_HORIZON = 10.0


class RateBook:
    """The ceilings the accounts of one crawl found, pooled: where new adaptive limiters start,
    and what a limiter throttled for the first time can take instead of finding it again."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._ceilings: dict[int, tuple[float, bool]] = {}

    def note(self, limiter: object, ceiling: float, measured: bool = False) -> None:
        """``limiter`` was throttled at ``ceiling`` requests per second (its latest, replacing
        earlier ones); ``measured``: by what AWS let through, not by the rate that was throttled."""
        with self._lock:
            self._ceilings[id(limiter)] = (ceiling, measured)

    def ceiling(self) -> float | None:
        """The median measured ceiling, else the median of all, or None before any account was throttled."""
        return self._median(measured_only=False)

    def measured(self) -> float | None:
        """The median measured ceiling, or None before any was measured."""
        return self._median(measured_only=True)

    def _median(self, measured_only: bool) -> float | None:
        with self._lock:
            measured = [value for value, was_measured in self._ceilings.values() if was_measured]
            values = measured or ([] if measured_only else [value for value, _ in self._ceilings.values()])
            return statistics.median(values) if values else None


class RateLimiter:
    """A token bucket whose rate adapts to throttling."""

    def __init__(self, rate: float | None, clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], None] = time.sleep, book: RateBook | None = None) -> None:
        self.maximum = rate if rate is not None else MAXIMUM_RATE
        self.rate = rate if rate is not None else ADAPTIVE_START
        #: The rate the last cut was made from (None: never throttled, or forgotten).
        self.ceiling: float | None = None
        #: Whether the ceiling was measured (by what AWS let through): only then is the climb
        #: near it slow. A lone throttle (a burst, someone else using the account) is not evidence
        #: enough to spend seconds below a rate that was fine.
        self.ceiling_measured = False
        self._book = book
        if book is not None and rate is None:
            self._start_from(book)
        self._clock, self._sleep = clock, sleep
        self._lock = threading.Lock()
        # One token, not a full bucket: others may be using the account's IAM bucket too, and a
        # full start was measured to cost throttled calls for a gain of at most one second.
        self._tokens = 1.0
        self._updated = clock()
        self._last_cut = float("-inf")
        self._since_cut = 0
        self.throttles = 0

    def _start_from(self, book: RateBook) -> None:
        """Start just below the ceiling other accounts found, if any did."""
        measured = book.measured()
        pooled = measured if measured is not None else book.ceiling()
        if pooled is not None:
            self.ceiling, self.ceiling_measured = pooled, measured is not None
            self.rate = max(MINIMUM_RATE, min(self.maximum, pooled * BOOK_START_SHARE))

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
        """AWS answered Throttling: slow down, and remember where."""
        pooled = self._book.measured() if self._book is not None else None
        with self._lock:
            self.throttles += 1
            now = self._clock()
            if now - self._last_cut < CUT_INTERVAL:
                return
            self._refill()
            ceiling, measured = self._ceiling_at(now)
            if not measured and pooled is not None:  # other accounts measured theirs: take it
                ceiling, measured = min(ceiling, pooled), True
            self.ceiling, self.ceiling_measured = ceiling, measured
            self._last_cut, self._since_cut = now, 0
            cut = BOOK_START_SHARE * ceiling if measured else self.rate * CUT_FACTOR
            # A configured rate below the floor stays where it is: a cut never speeds up.
            self.rate = max(min(MINIMUM_RATE, self.rate), min(cut, self.rate * BOOK_START_SHARE))
            self._tokens = min(self._tokens, 0.0)
        if self._book is not None:
            self._book.note(self, ceiling, measured)

    def _ceiling_at(self, now: float) -> tuple[float, bool]:
        """The rate to remember for a cut now, and whether it was measured: what AWS let through
        since the last cut when that is lower than the rate throttled (which overshoots when
        AWS's bucket had tokens saved, as it has at the start), else the rate throttled."""
        elapsed = now - self._last_cut
        if elapsed > MEASURE_HORIZON:
            return self.rate, False
        delivered = self._since_cut / elapsed
        # Far below the rate: the account was not asking for more; the measure says nothing.
        if self.rate * CUT_FACTOR / 2 <= delivered < self.rate:
            return delivered, True
        return self.rate, False

    def succeeded(self) -> None:
        """A call went through: climb, quickly far below the ceiling, slowly near it."""
        with self._lock:
            self._since_cut += 1
            ceiling = self.ceiling
            if ceiling is not None and self.rate > ceiling * FORGET_FACTOR:
                self.ceiling = ceiling = None
            # Quick: 1/rate a call is about one request per second more each second.
            quick = ceiling is None or not self.ceiling_measured or self.rate < ceiling * FAST_SHARE
            step = 1.0 / self.rate if quick else PROBE_STEP
            self.rate = min(self.maximum, self.rate + step)

    def _refill(self) -> None:
        now = self._clock()
        # A bucket of one second's worth: short bursts allowed, never more than the rate over a second.
        self._tokens = min(max(self.rate, 1.0), self._tokens + (now - self._updated) * self.rate)
        self._updated = now
