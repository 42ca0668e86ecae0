"""The shared send-slot limiter, on whichever backend the settings pick (Redis or the database)."""

import bisect
import heapq
import math
import multiprocessing
import random
import time
import types

import pytest
import redis
from django.db import connections

from queueing.departures import (
    UNANSWERED_LATE,
    UNANSWERED_POLL,
    DatabaseDepartureLog,
    get_departure_log,
    wait_for_room,
    window,
)
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


def forking():
    """A fork context, with this process's database connections closed first: a child that
    closed an inherited connection would end this process's session on the server."""
    connections.close_all()
    return multiprocessing.get_context("fork")


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
    context = forking()
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


# --- The shared record of actual departures (queueing.departures) ------------------------------

LIMIT, MARGIN = 30, 0.005
RATE = LIMIT * (1 - MARGIN)


def most_in_one_second(times: list[float]) -> int:
    """Telegram's count: the most sends in any sliding one-second window."""
    times = sorted(times)
    return max(bisect.bisect_left(times, start + 1.0) - i for i, start in enumerate(times))


def test_room_in_the_window_comes_when_the_oldest_of_the_limit_drops_out():
    times = [10.0, 10.2, 10.4, 10.6]
    assert wait_for_room(times, now=10.7, limit=5, window=1.0) == 0.0
    assert wait_for_room(times, now=10.7, limit=4, window=1.0) == pytest.approx(0.3)
    assert wait_for_room(times, now=10.7, limit=2, window=1.0) == pytest.approx(0.7)
    assert wait_for_room(times, now=11.05, limit=4, window=1.0) == 0.0  # 10.0 is out


def late_departures(count: int, seed: int = 7) -> list[float]:
    """When `count` sends of one bot would leave: each at its slot of the shared timeline
    (replies and broadcasts alike), plus up to 30 ms of a busy worker (a handler's database
    work, a late wake-up)."""
    jitter = random.Random(seed)
    tat, times = 0.0, []
    for _ in range(count):
        tat, grant = _claim(tat, now=1000.0, rate=RATE, wanted=1, horizon=math.inf)
        times.append(1000.0 + grant.delay + jitter.uniform(0, 0.03))
    return times


def test_sends_that_leave_late_off_their_slots_stay_under_the_limit_only_with_the_shared_record(db):
    intended = late_departures(600)
    assert most_in_one_second(intended) > LIMIT, "slots alone: late senders crowd a second"

    clock = SimulatedClock()
    log = DatabaseDepartureLog(clock=clock)
    limit, seconds = window(LIMIT, MARGIN)
    due = [(at, i) for i, at in enumerate(intended)]
    heapq.heapify(due)
    left = {}
    while due:
        clock.now, i = heapq.heappop(due)
        if wait := log.leave("bot:sim", "replies", limit, seconds):
            heapq.heappush(due, (clock.now + wait, i))
        else:
            log.arrived("bot:sim", wait.departure, 0.0)  # answered: see the test after the next
            left[i] = clock.now

    assert len(left) == len(intended)
    assert most_in_one_second(list(left.values())) <= LIMIT
    # Waiting for room costs little: nobody waits longer than the jitter it makes up for.
    assert max(left[i] - at for i, at in enumerate(intended)) < 0.05


class SimulatedClock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _leave_repeatedly(key: str, sender: str, tries: int, done) -> None:
    connections.close_all()
    log = get_departure_log()
    done.put(sum(1 for _ in range(tries) if not log.leave(key, sender, limit=40, window=600.0)))


def test_processes_checking_the_window_at_once_never_let_more_than_the_limit_leave(transactional_db):
    """Four processes try 20 departures each within a window none of them outlives: exactly
    the limit may leave. Were the check and the record two steps, more would."""
    key = f"test:{time.time_ns()}:departures"
    context = forking()
    done = context.Queue()
    workers = [context.Process(target=_leave_repeatedly, args=(key, f"p{n}", 20, done)) for n in range(4)]
    for worker in workers:
        worker.start()
    left = sum(done.get(timeout=60) for _ in workers)
    for worker in workers:
        worker.join(10)

    assert left == 40
    assert get_departure_log().leave(key, "late", limit=40, window=600.0) > 0


def test_a_late_arrival_moves_the_departure_that_was_late_not_the_senders_latest(db):
    """A broadcast has two sends on their way when the first one's answer says it reached
    Telegram 0.3 s late. Counted at its departure, it would be out of the window when the
    message that closes it leaves, and Telegram would see four in one second."""
    clock = SimulatedClock()
    log = DatabaseDepartureLog(clock=clock)
    limit, seconds = 3, 1.0
    left = {}
    for at, name, sender in [(1000.0, "first", "broadcast"), (1000.1, "second", "broadcast"), (1000.2, "r", "replies")]:
        clock.now = at
        room = log.leave("bot:sim", sender, limit, seconds)
        assert room == 0.0
        left[name] = room.departure
    log.arrived("bot:sim", left["first"], 0.3)  # it reached Telegram at 1000.3
    log.arrived("bot:sim", left["second"], 0.0)
    log.arrived("bot:sim", left["r"], 0.0)

    clock.now = 1001.05  # 1.05 s after the first left, 0.75 s after it arrived
    assert log.leave("bot:sim", "replies", limit, seconds) == pytest.approx(0.05), "three within the last second"


def test_a_departure_counts_as_late_as_it_could_be_until_its_answer_comes_back(db):
    """A message on its way when its process stalls or dies may reach Telegram long after it
    left: counted at its record, the message closing its window would arrive within the same
    second. Until answered it counts UNANSWERED_LATE after leaving; others ask again shortly
    instead of waiting that out."""
    clock = SimulatedClock()
    log = DatabaseDepartureLog(clock=clock)
    limit, seconds = 2, 1.0
    clock.now = 1000.0
    answered = log.leave("bot:sim", "replies", limit, seconds)
    log.arrived("bot:sim", answered.departure, 0.01)
    clock.now = 1000.1
    on_its_way = log.leave("bot:sim", "broadcast", limit, seconds)
    assert (answered, on_its_way) == (0.0, 0.0)

    clock.now = 1001.05  # the first is out of the window; the second left 0.95 s ago
    assert log.leave("bot:sim", "replies", limit, seconds) == 0.0, "room for one"
    assert log.leave("bot:sim", "replies", limit, seconds) == UNANSWERED_POLL, "full until the second is answered"

    log.arrived("bot:sim", on_its_way.departure, 0.3)  # it reached Telegram by 1000.4
    assert log.leave("bot:sim", "replies", limit, seconds) == pytest.approx(0.35)


def test_each_backend_moves_the_departure_named_not_another(transactional_db):
    """The same on Redis, whose clock cannot be simulated: read back when each counts."""
    from django.conf import settings

    from queueing.departures import RedisDepartureLog
    from queueing.models import Departure

    log = get_departure_log()
    key = f"test:{time.time_ns()}:late"
    first, second = (log.leave(key, "broadcast", limit=10, window=1.0) for _ in range(2))

    def counted_at(room) -> float:
        if isinstance(log, RedisDepartureLog):
            return redis.Redis.from_url(settings.REDIS_URL).zscore(RedisDepartureLog.PREFIX + key, room.departure)
        return Departure.objects.get(pk=int(room.departure)).at

    before = counted_at(first), counted_at(second)
    log.arrived(key, first.departure, 0.3)

    assert (counted_at(first), counted_at(second)) == pytest.approx((before[0] - UNANSWERED_LATE + 0.3, before[1]))
    log.leave(key, "broadcast", limit=10, window=1.0, answered=[(second.departure, 0.2)])
    assert counted_at(second) == pytest.approx(before[1] - UNANSWERED_LATE + 0.2), "told with the next departure"


def test_a_reply_counts_in_the_record_as_late_as_its_answer_came_back(monkeypatch):
    """Even a process's fastest reply reaches Telegram milliseconds after the log recorded it
    (the circuit's database check, python-telegram-bot), while a broadcast's send leaves at
    once: counted at its record, or only as late as its round trip beyond the fastest, the
    broadcast send closing its window reached Telegram within the same second."""
    from bots import pacing
    from queueing.departures import Room

    class Log:
        def __init__(self):
            self.counted_late = []

        def leave(self, key, sender, limit, window):
            return Room(0.0, "the reply")

        def arrived(self, key, departure, seconds):
            self.counted_late.append((departure, seconds))

    log, clock = Log(), SimulatedClock()
    monkeypatch.setattr(pacing, "get_departure_log", lambda: log)
    monkeypatch.setattr(pacing.telegram_api, "ready", lambda bot: None)
    monkeypatch.setattr(pacing, "time", types.SimpleNamespace(monotonic=clock, sleep=None))

    with pacing.departing(types.SimpleNamespace(pk=1, send_limit=lambda: 30)):
        clock.now += 0.008  # its request, and Telegram's answer

    assert log.counted_late == [("the reply", pytest.approx(0.008))]
