"""When each message of a bot actually left, shared by every process on every machine.

The limiter's slots (queueing.ratelimit) space sends 1/rate apart, but a send leaves when its
process gets to it: a reply that waited for its slot, then for the database, leaves late, and
more than `limit` sends of the bot then reach Telegram within one second (answered 429).
Telegram counts in sliding one-second windows, so every sender records when its messages
actually leave, and a message leaves only when fewer than `limit` of the bot's messages
left within the last `window` seconds (one second plus a small slack), checked and recorded
in one atomic step.

A message recorded by `leave` may reach Telegram later than it left: a busy machine holds
the request back, or the process is killed with it on its way. So it counts as reaching
Telegram as late as it could (UNANSWERED_LATE) until its sender says when the answer came
back (`arrived`, or with its next `leave`): a reply as late as its answer came, a
broadcast's send likewise. Counted at its record instead, a message that reached Telegram
late left room in the window that the message closing it took, and both arrived within one
second (a reply's 429 in the two-machine e2e test at load 8; corrected only once answered,
a correction written after the closing message checked the window came too late). The
correction names the departure `leave` recorded, not the sender's latest: a sender with
several requests on their way (a broadcast) learns that an earlier one was late after
later ones have left.

A broadcast sender, up to the bot's rate from one process, records its departures in
batches (`record`) and holds places in the window for those it makes before the next batch,
so that a reply counts them before they are recorded; the batch also tells it when another
sender last sent or waited. While others send or wait, each of its sends checks the window
too, and it holds no places (broadcasts.sending.Departures). Why that is enough: a broadcast
send that leaves between two batches without looking at the log is covered by a held place
that every reply since the last batch counted, and the batch before it saw every earlier
reply. A reply that finds no room says so, so that the sender holding places gives them up
at its next batch: replies, which take the limiter's slots first, are never starved by
places held for sends that were never made."""

import itertools
import math
import time
from collections.abc import Sequence
from functools import cache

import redis
from django.conf import settings
from django.db import transaction
from django.db.models import F, Max

from queueing.models import Departure, RateLimitBucket

# The share of TELEGRAM_RATE_MARGIN by which the window is longer than a second, as slack for
# a message that reaches Telegram a little later after leaving than the one that closes the
# window does. The rest of the margin is what a late sender catches up with: were the window
# as long as `limit` slots, a sender once late would stay late.
WINDOW_SLACK = 0.25
# Departures are kept this long, so that a sender can tell whether others sent lately.
KEEP = 5.0
MOST_HELD = 100  # places one sender may hold in the window
# How late after leaving a message recorded by `leave` counts until its answer is known;
# while the window is full up to one of those, a sender asks again this often.
UNANSWERED_LATE = 1.0
UNANSWERED_POLL = 0.005


def window(limit: float, margin: float) -> tuple[int, float]:
    """How many messages may leave within how many seconds, for Telegram's `limit` a second."""
    burst = max(1, math.floor(limit))
    return burst, burst / (limit * (1 - margin * WINDOW_SLACK))


class Room(float):
    """What `leave` answers: the seconds to wait for room, 0.0 when the departure was recorded;
    `departure` then names it for `arrived`."""

    departure: str

    def __new__(cls, wait: float, departure: str = "") -> "Room":
        room = super().__new__(cls, wait)
        room.departure = departure
        return room


def wait_for_room(times: list[float], now: float, limit: int, window: float) -> float:
    """Seconds until fewer than `limit` of `times` (sorted) are within `window` before now; 0 if already.
    A time after now is a message still unanswered: ask again soon."""
    inside = [t for t in times if t > now - window]
    if len(inside) < limit:
        return 0.0
    oldest = inside[len(inside) - limit]
    return UNANSWERED_POLL if oldest > now else max(oldest + window - now, 1e-6)


Answered = tuple[str, float]  # a departure `leave` named, and how late it counts: see `arrived`


class DepartureLog:
    def leave(self, key: str, sender: str, limit: int, window: float, answered: Sequence[Answered] = ()) -> Room:
        """Record a departure of `sender` now, counted UNANSWERED_LATE later, if fewer than
        `limit` departures (and held places) of `key` count within the last `window` seconds,
        and return 0 (with the departure's name); else record that it waits and return how
        long until there is room. `answered`: earlier departures of this sender whose answers
        came back, as for `arrived`, counted first."""
        raise NotImplementedError

    def arrived(self, key: str, departure: str, seconds: float) -> None:
        """The `departure` (as `leave` named it) may have reached Telegram up to `seconds`
        after it left (at most UNANSWERED_LATE), as its sender judges from the answer: it
        counts as that much later than it left."""
        raise NotImplementedError

    def record(self, key: str, sender: str, ages: list[float], reserve: int, until: float) -> float | None:
        """Record departures of `sender` that happened `ages` seconds ago (ages, not times:
        each machine's clock differs from the log's), and hold `reserve` places in the window
        for the departures it makes in the next `until` seconds, in place of those it held.
        Returns how many seconds ago another sender last sent or waited, or None if none did
        within KEEP seconds."""
        raise NotImplementedError


class DatabaseDepartureLog(DepartureLog):
    """One row per departure, held place or wait, written under the key's RateLimitBucket row
    lock (PostgreSQL) or SQLite's write lock (taken at BEGIN). `clock`: Unix time, or a test's."""

    def __init__(self, clock=time.time):
        self.clock = clock

    def leave(self, key: str, sender: str, limit: int, window: float, answered: Sequence[Answered] = ()) -> Room:
        with transaction.atomic():
            now = self._locked(key, max(KEEP, window))
            for departure, seconds in answered:
                self._count_as_late(key, departure, seconds)
            inside = Departure.objects.filter(key=key, at__gt=now - window).exclude(kind=Departure.Kind.WAITING)
            wait = wait_for_room(list(inside.order_by("at").values_list("at", flat=True)), now, limit, window)
            if wait:
                Departure.objects.create(key=key, sender=sender, kind=Departure.Kind.WAITING, at=now)
                return Room(wait)
            row = Departure.objects.create(key=key, sender=sender, at=now + UNANSWERED_LATE)
        return Room(0.0, str(row.pk))

    def arrived(self, key: str, departure: str, seconds: float) -> None:
        with transaction.atomic():
            self._locked(key, KEEP)
            self._count_as_late(key, departure, seconds)

    def _count_as_late(self, key: str, departure: str, seconds: float) -> None:
        late = min(seconds, UNANSWERED_LATE) - UNANSWERED_LATE
        Departure.objects.filter(key=key, pk=int(departure)).update(at=F("at") + late)

    def record(self, key: str, sender: str, ages: list[float], reserve: int, until: float) -> float | None:
        with transaction.atomic():
            now = self._locked(key, KEEP)
            Departure.objects.filter(key=key, sender=sender, kind=Departure.Kind.HELD).delete()
            Departure.objects.bulk_create(
                [Departure(key=key, sender=sender, at=now - age) for age in ages]
                + [Departure(key=key, sender=sender, kind=Departure.Kind.HELD, at=now + until) for _ in range(reserve)]
            )
            others = Departure.objects.filter(key=key).exclude(sender=sender).exclude(kind=Departure.Kind.HELD)
            last = others.aggregate(last=Max("at"))["last"]
        return None if last is None else now - last

    def _locked(self, key: str, keep: float) -> float:
        """Lock the key, forget what is older than `keep` seconds and return the time now."""
        RateLimitBucket.objects.bulk_create([RateLimitBucket(key=key)], ignore_conflicts=True)
        RateLimitBucket.objects.select_for_update().get(key=key)
        now = self.clock()
        Departure.objects.filter(key=key, at__lte=now - keep).delete()
        return now


# Redis's clock, not each machine's. KEYS[1]: a sorted set of departures and held places
# (members "serial:sender" and "held:sender:i", scores their times); KEYS[2]: a hash, when
# each sender last left or waited, and the serial.
_NOW = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - tonumber(ARGV[1]))
redis.call('EXPIRE', KEYS[1], math.ceil(ARGV[1]) + 1)
redis.call('EXPIRE', KEYS[2], math.ceil(ARGV[1]) + 1)
local function seen(sender, at)
  local last = tonumber(redis.call('HGET', KEYS[2], sender) or '0')
  redis.call('HSET', KEYS[2], sender, string.format('%.6f', math.max(last, at)))
end
local function depart(sender, at)
  local entry = redis.call('HINCRBY', KEYS[2], 'serial', 1) .. ':' .. sender
  redis.call('ZADD', KEYS[1], at, entry)
  seen(sender, math.min(at, now))
  return entry
end
"""
# ARGV[7..]: pairs of an answered departure and how late it counts (see `_ARRIVED`).
_LEAVE = (
    _NOW
    + """
local sender, limit, window, unanswered = ARGV[2], tonumber(ARGV[3]), tonumber(ARGV[4]), tonumber(ARGV[5])
local unanswered_poll = tonumber(ARGV[6])
for i = 7, #ARGV, 2 do
  local at = redis.call('ZSCORE', KEYS[1], ARGV[i])
  if at then
    redis.call('ZADD', KEYS[1], 'XX', tonumber(at) - unanswered + math.min(tonumber(ARGV[i + 1]), unanswered), ARGV[i])
  end
end
local inside = redis.call('ZCOUNT', KEYS[1], '(' .. string.format('%.6f', now - window), '+inf')
if inside >= limit then
  local first = redis.call('ZRANGEBYSCORE', KEYS[1], '(' .. string.format('%.6f', now - window), '+inf',
                           'WITHSCORES', 'LIMIT', inside - limit, 1)
  seen(sender, now)
  local oldest = tonumber(first[2])
  if oldest > now then
    return {tostring(unanswered_poll), ''}
  end
  return {tostring(math.max(oldest + window - now, 0.000001)), ''}
end
return {'0', depart(sender, now + unanswered)}
"""
)
_RECORD = (
    _NOW
    + """
local sender, reserve, hold, most = ARGV[2], tonumber(ARGV[3]), tonumber(ARGV[4]), tonumber(ARGV[5])
for i = 6, #ARGV do
  depart(sender, now - tonumber(ARGV[i]))
end
for i = 1, most do
  if i <= reserve then
    redis.call('ZADD', KEYS[1], now + hold, 'held:' .. sender .. ':' .. i)
  else
    redis.call('ZREM', KEYS[1], 'held:' .. sender .. ':' .. i)
  end
end
local others = nil
local fields = redis.call('HGETALL', KEYS[2])
for i = 1, #fields, 2 do
  local name, at = fields[i], tonumber(fields[i + 1])
  if name == 'serial' or name == sender then
  elseif at <= now - tonumber(ARGV[1]) then
    redis.call('HDEL', KEYS[2], name)
  elseif others == nil or at > others then
    others = at
  end
end
if others == nil then
  return false
end
return tostring(now - others)
"""
)

# ARGV: the departure, how late it counts, UNANSWERED_LATE.
_ARRIVED = """
local at = redis.call('ZSCORE', KEYS[1], ARGV[1])
if at then
  local unanswered = tonumber(ARGV[3])
  redis.call('ZADD', KEYS[1], 'XX', tonumber(at) - unanswered + math.min(tonumber(ARGV[2]), unanswered), ARGV[1])
end
"""


class RedisDepartureLog(DepartureLog):
    PREFIX = "departures:"

    def __init__(self, url: str):
        client = redis.Redis.from_url(url)
        self._leave = client.register_script(_LEAVE)
        self._record = client.register_script(_RECORD)
        self._arrived = client.register_script(_ARRIVED)

    def _keys(self, key: str) -> list[str]:
        return [self.PREFIX + key, self.PREFIX + key + ":senders"]

    def leave(self, key: str, sender: str, limit: int, window: float, answered: Sequence[Answered] = ()) -> Room:
        args = [max(KEEP, window), sender, limit, window, UNANSWERED_LATE, UNANSWERED_POLL]
        args += itertools.chain.from_iterable(answered)
        wait, departure = self._leave(keys=self._keys(key), args=args)
        return Room(float(wait), departure.decode())

    def arrived(self, key: str, departure: str, seconds: float) -> None:
        self._arrived(keys=self._keys(key)[:1], args=[departure, seconds, UNANSWERED_LATE])

    def record(self, key: str, sender: str, ages: list[float], reserve: int, until: float) -> float | None:
        args = [KEEP, sender, reserve, until, MOST_HELD, *ages]
        others = self._record(keys=self._keys(key), args=args)
        return None if others is None else float(others)


@cache
def get_departure_log() -> DepartureLog:
    """Redis when configured, else the database: picked in this one place."""
    if settings.REDIS_URL:
        return RedisDepartureLog(settings.REDIS_URL)
    return DatabaseDepartureLog()
