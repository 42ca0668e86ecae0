"""When each message of a bot actually left, shared by every process on every machine.

The limiter's slots (queueing.ratelimit) space sends 1/rate apart, but a send leaves when its
process gets to it: a reply that waited for its slot, then for the database, leaves late, and
more than `limit` sends of the bot then reach Telegram within one second (answered 429).
Telegram counts in sliding one-second windows, so every sender records when its messages
actually leave, and a message leaves only when fewer than `limit` of the bot's messages
left within the last `window` seconds (one second plus a small slack), checked and recorded
in one atomic step.

Replies check and record each departure (`leave`). A broadcast sender sends up to the
bot's rate from one process: it records its departures in batches (`record`), which also
tells it when another sender last sent; only while others are sending does it check the
shared window before each send (broadcasts.sending.Departures)."""

import time
from functools import cache

from django.conf import settings
from django.db import transaction
from django.db.models import Max

from queueing.models import Departure, RateLimitBucket

# Telegram's window, plus slack for a message that reaches Telegram a little later after its
# departure was recorded than the message that closes the window does.
WINDOW = 1.0 + 0.01
# Departures are kept this long, so that a sender can tell whether others sent lately.
KEEP = 5.0
REPLIES = "replies"  # the sender of every reply, whichever process sends it


def wait_for_room(times: list[float], now: float, limit: int, window: float) -> float:
    """Seconds until fewer than `limit` of `times` (sorted) are within `window` before now; 0 if already."""
    inside = [t for t in times if t >= now - window]
    if len(inside) < limit:
        return 0.0
    return max(inside[len(inside) - limit] + window - now, 1e-6)


class DepartureLog:
    def leave(self, key: str, sender: str, limit: int, window: float = WINDOW) -> float:
        """Record a departure of `sender` now if the window has room, and return 0; else record
        nothing and return how long until it has room."""
        raise NotImplementedError

    def record(self, key: str, sender: str, ages: list[float]) -> float | None:
        """Record departures of `sender` that happened `ages` seconds ago (ages, not times: each
        machine's clock differs from the log's), and return how many seconds ago any other
        sender last sent, or None if none did within KEEP seconds."""
        raise NotImplementedError


class DatabaseDepartureLog(DepartureLog):
    """One row per departure, written under the key's RateLimitBucket row lock (PostgreSQL)
    or SQLite's write lock (taken at BEGIN)."""

    def leave(self, key: str, sender: str, limit: int, window: float = WINDOW) -> float:
        with transaction.atomic():
            now = self._locked(key)
            recent = Departure.objects.filter(key=key, at__gte=now - window).order_by("at")
            wait = wait_for_room(list(recent.values_list("at", flat=True)), now, limit, window)
            if not wait:
                Departure.objects.create(key=key, sender=sender, at=now)
        return wait

    def record(self, key: str, sender: str, ages: list[float]) -> float | None:
        with transaction.atomic():
            now = self._locked(key)
            Departure.objects.bulk_create(Departure(key=key, sender=sender, at=now - age) for age in ages)
            others = Departure.objects.filter(key=key).exclude(sender=sender).aggregate(last=Max("at"))["last"]
        return None if others is None else now - others

    @staticmethod
    def _locked(key: str) -> float:
        """Lock the key, forget its old departures and return the time now."""
        RateLimitBucket.objects.bulk_create([RateLimitBucket(key=key)], ignore_conflicts=True)
        RateLimitBucket.objects.select_for_update().get(key=key)
        now = time.time()
        Departure.objects.filter(key=key, at__lt=now - KEEP).delete()
        return now


# Redis's clock, not each machine's. KEYS[1]: a sorted set of departures (member
# "sender:serial", score the time); KEYS[2]: a hash, sender -> its last departure.
_TRIM = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - tonumber(ARGV[1]))
"""
_LEAVE = (
    _TRIM
    + """
local limit = tonumber(ARGV[3])
local window = tonumber(ARGV[4])
local inside = redis.call('ZCOUNT', KEYS[1], now - window, '+inf')
if inside >= limit then
  local oldest = redis.call('ZRANGEBYSCORE', KEYS[1], now - window, '+inf', 'WITHSCORES', 'LIMIT', inside - limit, 1)
  return tostring(math.max(tonumber(oldest[2]) + window - now, 0.000001))
end
local serial = redis.call('HINCRBY', KEYS[2], 'serial', 1)
redis.call('ZADD', KEYS[1], now, ARGV[2] .. ':' .. serial)
redis.call('HSET', KEYS[2], ARGV[2], tostring(now))
redis.call('EXPIRE', KEYS[1], math.ceil(ARGV[1]))
redis.call('EXPIRE', KEYS[2], math.ceil(ARGV[1]))
return '0'
"""
)
_RECORD = (
    _TRIM
    + """
local sender = ARGV[2]
local latest = nil
for i = 3, #ARGV do
  local at = now - tonumber(ARGV[i])
  local serial = redis.call('HINCRBY', KEYS[2], 'serial', 1)
  redis.call('ZADD', KEYS[1], at, sender .. ':' .. serial)
  latest = math.max(latest or at, at)
end
if latest then
  redis.call('HSET', KEYS[2], sender, tostring(latest))
end
redis.call('EXPIRE', KEYS[1], math.ceil(ARGV[1]))
redis.call('EXPIRE', KEYS[2], math.ceil(ARGV[1]))
local others = nil
local last = redis.call('HGETALL', KEYS[2])
for i = 1, #last, 2 do
  local at = tonumber(last[i + 1])
  if last[i] ~= sender and last[i] ~= 'serial' then
    if at < now - tonumber(ARGV[1]) then
      redis.call('HDEL', KEYS[2], last[i])
    elseif others == nil or at > others then
      others = at
    end
  end
end
if others == nil then
  return false
end
return tostring(now - others)
"""
)


class RedisDepartureLog(DepartureLog):
    PREFIX = "departures:"

    def __init__(self, url: str):
        import redis

        client = redis.Redis.from_url(url)
        self._leave = client.register_script(_LEAVE)
        self._record = client.register_script(_RECORD)

    def _keys(self, key: str) -> list[str]:
        return [self.PREFIX + key, self.PREFIX + key + ":senders"]

    def leave(self, key: str, sender: str, limit: int, window: float = WINDOW) -> float:
        return float(self._leave(keys=self._keys(key), args=[KEEP, sender, limit, window]))

    def record(self, key: str, sender: str, ages: list[float]) -> float | None:
        others = self._record(keys=self._keys(key), args=[KEEP, sender, *ages])
        return None if others is None else float(others)


@cache
def get_departure_log() -> DepartureLog:
    """Redis when configured, else the database: picked in this one place."""
    if settings.REDIS_URL:
        return RedisDepartureLog(settings.REDIS_URL)
    return DatabaseDepartureLog()
