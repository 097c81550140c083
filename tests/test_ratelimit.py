"""The per-account token bucket: its rate bound, the cut on throttling and the probe upward, on a fake clock."""
from __future__ import annotations

import random
import threading
from collections.abc import Callable

import pytest

from crawler.aws.ratelimit import (
    ADAPTIVE_START,
    BOOK_START_SHARE,
    CUT_FACTOR,
    CUT_INTERVAL,
    FAST_SHARE,
    FORGET_FACTOR,
    MAXIMUM_RATE,
    MINIMUM_RATE,
    PROBE_STEP,
    RateBook,
    RateLimiter,
)

START = 1000.0
#: The shortest time a sleep takes (well above the float spacing of START).
MIN_SLEEP = 1e-9


class FakeTime:
    """A monotonic clock that only moves when someone sleeps (or the test advances it); thread-safe."""

    def __init__(self, now: float = START) -> None:
        self.now = now
        self.slept: list[float] = []
        self._lock = threading.Lock()

    def clock(self) -> float:
        with self._lock:
            return self.now

    def sleep(self, seconds: float) -> None:
        # A real sleep always lets some time pass; without a floor, a delay below the float spacing of ``now``
        # (the limiter asks for ~1e-17 s when rounding leaves 0.9999999999999998 tokens) would freeze the clock.
        assert seconds >= 0
        with self._lock:
            self.now += max(seconds, MIN_SLEEP)
            self.slept.append(seconds)

    def advance(self, seconds: float) -> None:
        with self._lock:
            self.now += seconds


def limiter_on(fake: FakeTime, rate: float | None) -> RateLimiter:
    return RateLimiter(rate, clock=fake.clock, sleep=fake.sleep)


def worst_window_excess(granted: list[float], rate: float) -> float:
    """max over i <= j of (j - i + 1) - rate * (t_j - t_i): the most calls any window got beyond its refill."""
    worst, lowest = float("-inf"), float("inf")
    for index, moment in enumerate(granted):
        lowest = min(lowest, index - rate * moment)
        worst = max(worst, index + 1 - rate * moment - lowest)
    return worst


@pytest.fixture
def fake() -> FakeTime:
    return FakeTime()


@pytest.mark.parametrize("rate", [0.5, 1.0, 3.0, 10.0, 57.5, 400.0])
def test_back_to_back_calls_get_exactly_the_rate(fake: FakeTime, rate: float) -> None:
    limiter = limiter_on(fake, rate)
    calls = 200

    waited = [limiter.acquire() for _ in range(calls)]

    elapsed = fake.now - START
    # The bucket starts with one token: the first call is free, every further one costs 1/rate seconds.
    assert waited[0] == 0.0
    assert elapsed == pytest.approx((calls - 1) / rate)
    assert calls <= 1 + rate * elapsed + 1e-6
    assert sum(waited) == pytest.approx(sum(fake.slept))


@pytest.mark.parametrize("rate", [1.0, 4.0, 25.0, 200.0])
@pytest.mark.parametrize("seed", [1, 2])
def test_no_window_ever_gets_more_than_the_rate_beyond_the_bucket(fake: FakeTime, rate: float, seed: int) -> None:
    """Bursts after idle pauses and back-to-back runs, over a simulated ten minutes or more."""
    rng = random.Random(seed)
    limiter = limiter_on(fake, rate)
    granted: list[float] = []

    while fake.now - START < 600:
        if rng.random() < 0.02:
            fake.advance(rng.uniform(0, 2.0))  # the caller pauses: the bucket refills (up to one second's worth)
        limiter.acquire()
        granted.append(fake.now)

    elapsed = granted[-1] - START
    # Over the whole window: the initial token plus the rate, nothing more.
    assert len(granted) <= 1 + rate * elapsed + 1e-6
    # Over every window [t_i, t_j]: at most one full bucket plus what the rate refills in between,
    # j - i + 1 <= bucket + rate * (t_j - t_i), checked for all pairs at once through a running minimum.
    assert worst_window_excess(granted, rate) <= max(rate, 1.0) + 1e-6


def test_an_idle_limiter_bursts_at_most_one_seconds_worth(fake: FakeTime) -> None:
    limiter = limiter_on(fake, 5.0)
    fake.advance(3600)

    free = 0
    while limiter.acquire() == 0.0:
        free += 1

    assert free == 5


def test_throttled_cuts_the_rate_at_most_once_per_interval(fake: FakeTime) -> None:
    limiter = limiter_on(fake, None)

    for _ in range(5):  # a burst of throttled answers is one signal
        limiter.throttled()
    after_burst = limiter.rate
    fake.advance(CUT_INTERVAL / 2)
    limiter.throttled()
    within_interval = limiter.rate
    fake.advance(CUT_INTERVAL / 2)
    limiter.throttled()
    next_interval = limiter.rate

    assert after_burst == pytest.approx(ADAPTIVE_START * CUT_FACTOR)
    assert within_interval == after_burst
    assert next_interval == pytest.approx(ADAPTIVE_START * CUT_FACTOR ** 2)
    assert limiter.throttles == 7


def test_throttled_empties_the_bucket(fake: FakeTime) -> None:
    limiter = limiter_on(fake, 20.0)
    fake.advance(10)
    limiter.acquire()  # refills a full bucket of 20 tokens and takes one

    limiter.throttled()
    waited = limiter.acquire()

    assert waited == pytest.approx(1 / (20.0 * CUT_FACTOR))


def test_a_throttle_also_empties_what_accrued_since_the_last_call(fake: FakeTime) -> None:
    limiter = limiter_on(fake, 20.0)
    limiter.acquire()
    fake.advance(5)  # the call takes 5 s: botocore retries it with backoff, each attempt throttled

    limiter.throttled()
    free = 0
    while limiter.acquire() == 0.0:
        free += 1

    assert free == 0  # today: 12 calls go straight out right after AWS said Throttling


@pytest.mark.parametrize("rate", [1.0, 5.0, 80.0, 150.0])
def test_succeeded_climbs_back_to_the_configured_rate_and_no_further(fake: FakeTime, rate: float) -> None:
    limiter = limiter_on(fake, rate)
    for _ in range(3):
        limiter.throttled()
        fake.advance(CUT_INTERVAL)
    cut = limiter.rate
    seen = []

    for _ in range(20_000):
        limiter.succeeded()
        seen.append(limiter.rate)

    assert cut < rate
    assert max(seen) == rate
    assert seen[-1] == rate
    assert seen == sorted(seen)  # only upward


def test_succeeded_adds_about_one_request_per_second_each_second(fake: FakeTime) -> None:
    limiter = limiter_on(fake, None)
    start = limiter.rate

    limiter.succeeded()
    one = limiter.rate
    for _ in range(round(one)):  # one second's worth of calls at that rate
        limiter.succeeded()

    assert one == pytest.approx(start + 1 / start)
    assert limiter.rate - one == pytest.approx(1.0, rel=0.1)


def test_an_adaptive_limiter_starts_at_the_adaptive_start_and_climbs_past_any_configured_rate(fake: FakeTime) -> None:
    limiter = limiter_on(fake, None)
    start = limiter.rate

    for _ in range(10_000):
        limiter.succeeded()

    assert start == ADAPTIVE_START
    assert limiter.maximum == MAXIMUM_RATE
    assert limiter.rate > 100.0


def successes_until(limiter: RateLimiter, rate: float) -> int:
    """Successful calls it takes the limiter to climb to ``rate``."""
    count = 0
    while limiter.rate < rate:
        limiter.succeeded()
        count += 1
    return count


def test_after_a_measured_cut_the_climb_is_quick_far_below_the_ceiling_and_slow_near_it(fake: FakeTime) -> None:
    limiter = limiter_on(fake, None)
    limiter.rate = 40.0
    limiter.throttled()
    for _ in range(20):
        limiter.succeeded()
    fake.advance(1.0)
    limiter.throttled()  # 20 calls in 1 s got through: AWS allows 20 a second
    assert (limiter.ceiling, limiter.ceiling_measured) == (pytest.approx(20.0), True)
    limiter.rate = 20.0 * CUT_FACTOR

    quick = successes_until(limiter, 20.0 * FAST_SHARE)
    slow = successes_until(limiter, 20.0)

    # Quick: about one request per second each second, i.e. r dr per step: (17^2 - 12^2) / 2 calls.
    assert quick == pytest.approx((17.0 ** 2 - 12.0 ** 2) / 2, rel=0.05)
    # Slow: PROBE_STEP per call from 17 to 20, about 8 seconds of calls at that rate.
    assert slow == pytest.approx(3.0 / PROBE_STEP, rel=0.02)


def test_after_a_lone_throttle_the_climb_back_is_quick_all_the_way(fake: FakeTime) -> None:
    """A throttle after a quiet spell (a burst, someone else using the account) is not evidence
    enough to stay below a rate that was fine: the configured rate comes back in seconds."""
    limiter = limiter_on(fake, 20.0)
    limiter.throttled()
    assert (limiter.ceiling, limiter.ceiling_measured) == (20.0, False)

    calls = successes_until(limiter, 20.0)

    assert calls == pytest.approx((20.0 ** 2 - 12.0 ** 2) / 2, rel=0.05)


def test_a_second_cut_soon_after_remembers_what_aws_let_through(fake: FakeTime) -> None:
    """After a cut AWS's bucket is empty: the calls that got through until the next throttle came
    at AWS's rate, a better ceiling than the rate throttled (which overshoots a full bucket)."""
    limiter = limiter_on(fake, None)
    limiter.throttled()  # at ADAPTIVE_START: the first cut remembers the rate throttled
    assert limiter.ceiling == ADAPTIVE_START
    for _ in range(5):
        limiter.succeeded()
    fake.advance(2 * CUT_INTERVAL)  # 5 calls in 2 s got through: AWS allows 2.5 a second

    limiter.throttled()

    assert limiter.ceiling == pytest.approx(2.5)


def test_a_cut_after_a_quiet_spell_remembers_the_rate_throttled(fake: FakeTime) -> None:
    limiter = limiter_on(fake, None)
    limiter.throttled()
    limiter.succeeded()
    fake.advance(5.0)  # one call in 5 s: the account was waiting on jobs, not held back by AWS
    rate = limiter.rate

    limiter.throttled()

    assert limiter.ceiling == rate


def test_a_ceiling_passed_by_a_margin_without_throttling_is_forgotten(fake: FakeTime) -> None:
    limiter = limiter_on(fake, None)
    limiter.rate = 10.0
    limiter.throttled()
    limiter.ceiling_measured = True  # as after a second cut soon after the first
    successes_until(limiter, 10.0 * FORGET_FACTOR + PROBE_STEP)

    limiter.succeeded()

    assert limiter.ceiling is None
    before = limiter.rate
    limiter.succeeded()
    assert limiter.rate - before == pytest.approx(1 / before)  # quick again


def test_a_new_adaptive_limiter_starts_below_the_ceiling_other_accounts_found(fake: FakeTime) -> None:
    book = RateBook()
    first = RateLimiter(None, clock=fake.clock, sleep=fake.sleep, book=book)
    assert book.ceiling() is None and first.rate == ADAPTIVE_START
    for ceiling in (8.0, 6.0, 7.0):
        other = RateLimiter(None, clock=fake.clock, sleep=fake.sleep, book=book)
        other.rate = ceiling
        other.throttled()

    later = RateLimiter(None, clock=fake.clock, sleep=fake.sleep, book=book)
    configured = RateLimiter(3.0, clock=fake.clock, sleep=fake.sleep, book=book)

    assert book.ceiling() == 7.0
    assert (later.rate, later.ceiling) == (pytest.approx(7.0 * BOOK_START_SHARE), 7.0)
    assert (configured.rate, configured.ceiling) == (3.0, None)  # a configured rate is the user's


def test_a_first_cut_takes_the_ceiling_other_accounts_measured(fake: FakeTime) -> None:
    book = RateBook()
    measuring = RateLimiter(None, clock=fake.clock, sleep=fake.sleep, book=book)
    late = RateLimiter(None, clock=fake.clock, sleep=fake.sleep, book=book)
    measuring.throttled()
    for _ in range(8):
        measuring.succeeded()
    fake.advance(2 * CUT_INTERVAL)
    measuring.throttled()  # 8 calls in 2 s got through: 4 a second, measured
    assert book.measured() == pytest.approx(4.0)

    late.throttled()  # its own first cut could only remember the rate throttled (10)

    assert late.ceiling == pytest.approx(4.0)
    assert late.rate == pytest.approx(4.0 * BOOK_START_SHARE)


def test_the_book_keeps_each_limiters_latest_ceiling(fake: FakeTime) -> None:
    book = RateBook()
    limiter = RateLimiter(None, clock=fake.clock, sleep=fake.sleep, book=book)
    limiter.throttled()
    fake.advance(CUT_INTERVAL)
    limiter.throttled()

    assert book.ceiling() == pytest.approx(ADAPTIVE_START * CUT_FACTOR)


def test_an_adaptive_limiter_stops_at_the_maximum_rate(fake: FakeTime) -> None:
    limiter = limiter_on(fake, None)
    limiter.rate = MAXIMUM_RATE - 0.0001

    for _ in range(10):
        limiter.succeeded()

    assert limiter.rate == MAXIMUM_RATE


@pytest.mark.parametrize("rate", [None, 1.0, 3.0, MAXIMUM_RATE])
def test_the_rate_never_drops_below_the_minimum(fake: FakeTime, rate: float | None) -> None:
    limiter = limiter_on(fake, rate)
    seen = []

    for _ in range(100):
        limiter.throttled()
        seen.append(limiter.rate)
        fake.advance(CUT_INTERVAL)

    assert min(seen) == MINIMUM_RATE
    assert seen[-1] == MINIMUM_RATE


def test_at_the_minimum_rate_calls_are_spaced_by_its_inverse(fake: FakeTime) -> None:
    limiter = limiter_on(fake, None)
    for _ in range(50):
        limiter.throttled()
        fake.advance(CUT_INTERVAL)
    limiter.acquire()  # whatever the bucket held after the last cut
    before = fake.now

    limiter.acquire()

    assert fake.now - before == pytest.approx(1 / MINIMUM_RATE)


def test_a_throttle_never_raises_a_configured_rate_below_the_minimum(fake: FakeTime) -> None:
    limiter = limiter_on(fake, 0.2)  # the config allows any rate > 0

    limiter.throttled()

    assert limiter.rate <= 0.2


def run_together(work: Callable[[int], None], threads: int) -> None:
    """Run ``work(0)`` .. ``work(threads - 1)`` in threads released at the same moment; all must end cleanly."""
    barrier = threading.Barrier(threads)
    errors: list[BaseException] = []

    def run(index: int) -> None:
        try:
            barrier.wait()
            work(index)
        except BaseException as error:
            errors.append(error)

    workers = [threading.Thread(target=run, args=(index,)) for index in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(timeout=30)
    assert not errors
    assert not any(worker.is_alive() for worker in workers)


@pytest.mark.parametrize("rate", [5.0, 50.0])
def test_threads_sharing_a_limiter_never_get_more_than_the_simulated_time_allows(fake: FakeTime, rate: float) -> None:
    limiter = limiter_on(fake, rate)
    threads, per_thread = 8, 150

    def work(_: int) -> None:
        for _ in range(per_thread):
            limiter.acquire()

    run_together(work, threads)
    assert threads * per_thread <= 1 + rate * (fake.now - START) + 1e-6


def test_concurrent_acquire_throttled_and_succeeded_keep_count_and_bounds(fake: FakeTime) -> None:
    limiter = limiter_on(fake, 40.0)
    threads, per_thread = 8, 300
    rates: list[float] = []
    throttled: list[int] = []
    rates_lock = threading.Lock()

    def work(seed: int) -> None:
        rng = random.Random(seed)
        for _ in range(per_thread):
            limiter.acquire()
            if rng.random() < 0.2:
                limiter.throttled()
                with rates_lock:
                    throttled.append(seed)
            else:
                limiter.succeeded()
            with rates_lock:
                rates.append(limiter.rate)

    run_together(work, threads)
    assert limiter.throttles == len(throttled) > 0
    assert len(rates) == threads * per_thread
    assert all(MINIMUM_RATE <= rate <= 40.0 for rate in rates)
