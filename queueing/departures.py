"""When each message of a bot actually left, shared by every process on every machine.

The limiter's slots (queueing.ratelimit) space sends 1/rate apart, but a send leaves when its
process gets to it: a reply that waited for its slot, then for the database, leaves late, and
more than `limit` sends of the bot then reach Telegram within one second (answered 429).
Telegram counts in sliding one-second windows, so every sender records when its messages
actually leave, and a message leaves only when fewer than `limit` of the bot's messages
left within the last `window` seconds (one second plus a small slack), checked and recorded
in one atomic step.

Replies and broadcast sends (broadcasts.sending.Departures) alike check and record each
departure with `leave`: one Redis script or one short transaction, at most the bot's rate
times a second."""

import math
import time
from functools import cache

from django.conf import settings
from django.db import transaction

from queueing.models import Departure, RateLimitBucket

# The share of TELEGRAM_RATE_MARGIN by which the window is longer than a second, as slack for
# a message that reaches Telegram a little later after leaving than the one that closes the
# window does. The rest of the margin is what a late sender catches up with: were the window
# as long as `limit` slots, a sender once late would stay late.
WINDOW_SLACK = 0.25
REPLIES = "replies"  # the sender of every reply, whichever process sends it


def window(limit: float, margin: float) -> tuple[int, float]:
    """How many messages may leave within how many seconds, for Telegram's `limit` a second."""
    burst = max(1, math.floor(limit))
    return burst, burst / (limit * (1 - margin * WINDOW_SLACK))


def wait_for_room(times: list[float], now: float, limit: int, window: float) -> float:
    """Seconds until fewer than `limit` of `times` (sorted) are within `window` before now; 0 if already."""
    inside = [t for t in times if t > now - window]
    if len(inside) < limit:
        return 0.0
    return max(inside[len(inside) - limit] + window - now, 1e-6)


class DepartureLog:
    def leave(self, key: str, sender: str, limit: int, window: float) -> float:
        """Record a departure of `sender` now if fewer than `limit` departures of `key` are
        within the last `window` seconds, and return 0; else record nothing and return how
        long until there is room."""
        raise NotImplementedError


class DatabaseDepartureLog(DepartureLog):
    """One row per departure, written under the key's RateLimitBucket row lock (PostgreSQL)
    or SQLite's write lock (taken at BEGIN). `clock`: Unix time, or a test's."""

    def __init__(self, clock=time.time):
        self.clock = clock

    def leave(self, key: str, sender: str, limit: int, window: float) -> float:
        with transaction.atomic():
            RateLimitBucket.objects.bulk_create([RateLimitBucket(key=key)], ignore_conflicts=True)
            RateLimitBucket.objects.select_for_update().get(key=key)
            now = self.clock()
            Departure.objects.filter(key=key, at__lte=now - window).delete()
            times = Departure.objects.filter(key=key).order_by("at").values_list("at", flat=True)
            wait = wait_for_room(list(times), now, limit, window)
            if not wait:
                Departure.objects.create(key=key, sender=sender, at=now)
        return wait


# Redis's clock, not each machine's. KEYS[1]: a sorted set of departures (member
# "serial:sender", score the time); KEYS[2]: the serial.
_LEAVE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local limit = tonumber(ARGV[2])
local window = tonumber(ARGV[3])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - window)
local inside = redis.call('ZCARD', KEYS[1])
if inside >= limit then
  local oldest = redis.call('ZRANGE', KEYS[1], inside - limit, inside - limit, 'WITHSCORES')
  return tostring(math.max(tonumber(oldest[2]) + window - now, 0.000001))
end
local serial = redis.call('INCR', KEYS[2])
redis.call('ZADD', KEYS[1], now, serial .. ':' .. ARGV[1])
local expiry = math.ceil(window) + 1
redis.call('EXPIRE', KEYS[1], expiry)
redis.call('EXPIRE', KEYS[2], expiry)
return '0'
"""


class RedisDepartureLog(DepartureLog):
    PREFIX = "departures:"

    def __init__(self, url: str):
        import redis

        self._leave = redis.Redis.from_url(url).register_script(_LEAVE)

    def leave(self, key: str, sender: str, limit: int, window: float) -> float:
        keys = [self.PREFIX + key, self.PREFIX + key + ":serial"]
        return float(self._leave(keys=keys, args=[sender, limit, window]))


@cache
def get_departure_log() -> DepartureLog:
    """Redis when configured, else the database: picked in this one place."""
    if settings.REDIS_URL:
        return RedisDepartureLog(settings.REDIS_URL)
    return DatabaseDepartureLog()
