"""The shared send-slot limiter, on whichever backend the settings pick (Redis or the database)."""

import math
import multiprocessing
import time

import pytest
from django.db import connections

from queueing.ratelimit import _claim, get_limiter


def test_claim_spaces_slots_one_interval_apart():
    tat, grant = _claim(tat=0.0, now=100.0, rate=10, wanted=3, horizon=math.inf)
    assert (grant.slots, grant.delay) == (3, 0.0)
    assert tat == pytest.approx(100.3)

    tat, grant = _claim(tat=tat, now=100.0, rate=10, wanted=1, horizon=math.inf)
    assert grant.delay == pytest.approx(0.3)
    assert tat == pytest.approx(100.4)


def test_a_horizon_grants_only_slots_that_start_soon():
    _, grant = _claim(tat=100.0, now=100.0, rate=10, wanted=50, horizon=0.25)
    assert grant.slots == 3  # slots at +0, +0.1, +0.2

    tat, grant = _claim(tat=101.0, now=100.0, rate=10, wanted=5, horizon=0.25)
    assert grant.slots == 0
    assert grant.delay == pytest.approx(0.75)
    assert tat == 101.0  # nothing claimed


@pytest.fixture
def limiter(transactional_db):
    limiter = get_limiter()
    yield limiter


def test_slots_handed_out_one_after_another(limiter):
    key = f"test:{id(limiter)}:sequence"
    started = time.monotonic()
    first = limiter.take(key, rate=20, wanted=4)
    second = limiter.take(key, rate=20, wanted=1)
    between = time.monotonic() - started
    assert first.slots == 4
    # The second slot starts 4/20 s after the first; each delay counts from its own call,
    # and a busy machine may take a while between the two calls.
    assert 4 / 20 - between - 0.005 <= second.delay - first.delay <= 4 / 20 + 0.005


def test_a_pause_holds_every_slot_back(limiter):
    key = f"test:{id(limiter)}:pause"
    paused_at = time.monotonic()
    limiter.pause(key, 2.0)
    grant = limiter.take(key, rate=30, wanted=1)
    between = time.monotonic() - paused_at
    assert 2.0 - between - 0.005 <= grant.delay <= 2.0 + 0.005
    assert limiter.take(key, rate=30, wanted=5, horizon=0.25).slots == 0


def _claim_slots(key: str, count: int, done) -> None:
    connections.close_all()
    limiter = get_limiter()
    granted = sum(limiter.take(key, rate=100, wanted=1).slots for _ in range(count))
    done.put(granted)


def test_processes_sharing_a_key_never_get_the_same_slot(limiter):
    """Four processes claim 25 slots each at once. Had any two been given the same slot,
    the key's timeline would have moved less than 100 slots."""
    key = f"test:{id(limiter)}:processes"
    pausing = time.monotonic()
    limiter.pause(key, 10.0)
    paused = time.monotonic()
    context = multiprocessing.get_context("fork")
    done = context.Queue()
    workers = [context.Process(target=_claim_slots, args=(key, 25, done)) for _ in range(4)]
    for worker in workers:
        worker.start()
    granted = sum(done.get(timeout=30) for _ in workers)
    for worker in workers:
        worker.join(10)

    taking = time.monotonic()
    delay = limiter.take(key, rate=100, wanted=1).delay
    taken = time.monotonic()
    assert granted == 100
    # The next free slot is 10 s + 100 slots of 10 ms after the pause, give or take how long the calls took.
    assert pausing + 11.0 - 0.005 <= taken + delay
    assert taking + delay <= paused + 11.0 + 0.005
