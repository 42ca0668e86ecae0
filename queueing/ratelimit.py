"""Send-slot rate limiting shared by every process on every machine.

Each key (a bot, a chat) has one timeline of send slots, `1/rate` seconds apart (the
generic cell rate algorithm, with no burst: Telegram counts in sliding windows, so a
burst would be answered with 429). `take()` claims consecutive slots; a caller sends
its i-th message at `delay + i / rate` seconds from now.

Replies take one slot with no horizon: they always get the next free slot. Broadcast
senders claim only slots that start within a short horizon, so they never hold more
than a fraction of a second of future capacity: a reply waits at most that long, and a
broadcast uses whatever replies leave. A 429 pushes the key's timeline past
`retry_after`, for every process at once, and is counted where every process counts it
(the key's row, or a Redis hash) for /metrics."""

import math
import time
from dataclasses import dataclass
from functools import cache

import redis
from django.conf import settings
from django.db import transaction

from queueing.models import RateLimitBucket


@dataclass(frozen=True)
class Grant:
    slots: int
    delay: float  # seconds until the first slot; with slots == 0, until it is worth asking again


class RateLimiter:
    def take(self, key: str, rate: float, wanted: int = 1, horizon: float = math.inf) -> Grant:
        raise NotImplementedError

    def pause(self, key: str, seconds: float) -> None:
        """Telegram answered 429 (Too Many Requests): no slot of `key` starts within `seconds`."""
        raise NotImplementedError

    def throttled(self) -> dict[str, int]:
        """key -> 429s paused for so far, by every process."""
        raise NotImplementedError


def _claim(tat: float, now: float, rate: float, wanted: int, horizon: float) -> tuple[float, Grant]:
    """The algorithm both backends run: returns the key's new timeline head and the grant."""
    interval = 1.0 / rate
    start = max(tat, now)
    fit = wanted if math.isinf(horizon) else min(wanted, math.floor((now + horizon - start) / interval) + 1)
    if fit <= 0:
        return tat, Grant(0, start - horizon - now)
    return start + fit * interval, Grant(fit, start - now)


class DatabaseRateLimiter(RateLimiter):
    """One row per key, changed under a row lock (PostgreSQL) or SQLite's write lock."""

    def take(self, key: str, rate: float, wanted: int = 1, horizon: float = math.inf) -> Grant:
        with transaction.atomic():
            bucket = self._locked(key)
            bucket.tat, grant = _claim(bucket.tat, time.time(), rate, wanted, horizon)
            if grant.slots:
                bucket.save(update_fields=["tat"])
        return grant

    def pause(self, key: str, seconds: float) -> None:
        with transaction.atomic():
            bucket = self._locked(key)
            bucket.tat = max(bucket.tat, time.time() + seconds)
            bucket.throttled += 1
            bucket.save(update_fields=["tat", "throttled"])

    def throttled(self) -> dict[str, int]:
        return dict(RateLimitBucket.objects.filter(throttled__gt=0).values_list("key", "throttled"))

    @staticmethod
    def _locked(key: str) -> RateLimitBucket:
        RateLimitBucket.objects.bulk_create([RateLimitBucket(key=key)], ignore_conflicts=True)
        return RateLimitBucket.objects.select_for_update().get(key=key)


# Redis's clock, not each machine's, so every process agrees on where the slots are.
_TAKE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local tat = tonumber(redis.call('GET', KEYS[1]) or '0')
local interval = 1.0 / tonumber(ARGV[1])
local wanted = tonumber(ARGV[2])
local horizon = tonumber(ARGV[3])
local start = math.max(tat, now)
local fit = wanted
if horizon >= 0 then
  fit = math.min(wanted, math.floor((now + horizon - start) / interval) + 1)
end
if fit <= 0 then
  return {0, tostring(start - horizon - now)}
end
redis.call('SET', KEYS[1], tostring(start + fit * interval), 'EX', 3600)
return {fit, tostring(start - now)}
"""
_PAUSE = """
local t = redis.call('TIME')
local until_ = tonumber(t[1]) + tonumber(t[2]) / 1000000 + tonumber(ARGV[1])
local tat = tonumber(redis.call('GET', KEYS[1]) or '0')
redis.call('SET', KEYS[1], tostring(math.max(tat, until_)), 'EX', 3600)
redis.call('HINCRBY', KEYS[2], ARGV[2], 1)
"""


class RedisRateLimiter(RateLimiter):
    PREFIX = "ratelimit:"
    THROTTLED = "ratelimit-429s"  # hash: key -> 429s; no expiry, as a counter must not drop

    def __init__(self, url: str):
        client = redis.Redis.from_url(url)
        self._client = client
        self._take = client.register_script(_TAKE)
        self._pause = client.register_script(_PAUSE)

    def take(self, key: str, rate: float, wanted: int = 1, horizon: float = math.inf) -> Grant:
        slots, delay = self._take(keys=[self.PREFIX + key], args=[rate, wanted, -1 if math.isinf(horizon) else horizon])
        return Grant(int(slots), float(delay))

    def pause(self, key: str, seconds: float) -> None:
        self._pause(keys=[self.PREFIX + key, self.THROTTLED], args=[seconds, key])

    def throttled(self) -> dict[str, int]:
        return {key.decode(): int(n) for key, n in self._client.hgetall(self.THROTTLED).items()}


@cache
def get_limiter() -> RateLimiter:
    """Redis when configured, else the database: picked in this one place."""
    if settings.REDIS_URL:
        return RedisRateLimiter(settings.REDIS_URL)
    return DatabaseRateLimiter()
