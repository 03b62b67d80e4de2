"""Per-tenant quotas shared by every gateway pod (Redis), or per process without Redis.

* concurrent sessions per tenant: a sorted set of live session refs scored by lease expiry (a pod that dies frees
  its leases after ``lease_s``; live sessions renew theirs);
* requests per minute (sessions opened, text turns, feedback) and audio seconds per minute: a sliding minute,
  estimated from two one-minute counters (the last minute's total weighted by how much of it the sliding minute
  still covers, plus this minute's). A fixed window would let a tenant send twice its quota across a minute
  boundary, and would forget a burst the moment the clock turns a minute.

Going over a quota is RESOURCE_EXHAUSTED with the time to wait in the status details (google.rpc.RetryInfo).
A limit of 0 means unlimited.
"""

from __future__ import annotations

import time
from abc import ABC, abstractmethod

import grpc

from services.kit.errors import StageError

LEASE_S = 60.0

# KEYS[1] = the tenant's session set; ARGV = now, lease expiry, limit, member. Returns 1 if admitted, else the
# earliest expiry among the live leases (when a slot frees at the latest).
_ACQUIRE = """
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', ARGV[1])
local n = redis.call('ZCARD', KEYS[1])
if redis.call('ZSCORE', KEYS[1], ARGV[4]) or n < tonumber(ARGV[3]) then
  redis.call('ZADD', KEYS[1], ARGV[2], ARGV[4])
  redis.call('EXPIRE', KEYS[1], 3600)
  return {1, 0}
end
local first = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
return {0, first[2]}
"""


def sliding_minute(previous: float, current: float, into_s: float, limit: float) -> tuple[float, float]:
    """The use over the last 60 s, and the seconds until it is back under ``limit``.

    ``previous`` and ``current`` are the totals of the last and of this calendar minute, ``into_s`` how far this
    minute has run. The last minute counts for the part of it the sliding minute still covers.
    """
    weight = 1.0 - into_s / 60.0
    used = previous * weight + current
    if used <= limit:
        return used, 0.0
    left = 60.0 - into_s
    if current >= limit or previous <= 0:
        # this minute alone is over: the next minute still carries it at full weight, so wait until its share
        # of the next minute has decayed below the limit
        return used, left + (60.0 * (1.0 - limit / current) if current > limit else 0.0)
    # the last minute's share decays linearly: it is back under the limit when previous * w + current == limit
    return used, max(0.0, (weight - (limit - current) / previous) * 60.0)


def exhausted(what: str, retry_after_s: float) -> StageError:
    return StageError(f"{what}; retry in {retry_after_s:.0f} s", grpc.StatusCode.RESOURCE_EXHAUSTED,
                      retry_after_s=max(retry_after_s, 1.0))


class Quotas(ABC):
    """Tenant quotas; every method raises RESOURCE_EXHAUSTED (with RetryInfo) when one is over."""

    def __init__(self, max_sessions: int, requests_per_min: int, audio_s_per_min: float) -> None:
        self.max_sessions = max_sessions
        self.requests_per_min = requests_per_min
        self.audio_s_per_min = audio_s_per_min

    @property
    def enabled(self) -> bool:
        return bool(self.max_sessions or self.requests_per_min or self.audio_s_per_min)

    async def open_session(self, tenant: str, ref: str) -> None:
        await self.request(tenant)
        if self.max_sessions:
            admitted, free_at = await self._acquire(tenant, ref)
            if not admitted:
                raise exhausted(f"tenant {tenant!r} has {self.max_sessions} live sessions (its quota)",
                                free_at - time.time())

    async def renew_session(self, tenant: str, ref: str) -> None:
        if self.max_sessions:
            await self._acquire(tenant, ref)

    async def request(self, tenant: str) -> None:
        if self.requests_per_min:
            await self._charge(f"req:{tenant}", 1, self.requests_per_min,
                               f"tenant {tenant!r} is over {self.requests_per_min} requests per minute")

    async def audio(self, tenant: str, seconds: float) -> None:
        if self.audio_s_per_min:
            await self._charge(f"audio:{tenant}", seconds, self.audio_s_per_min,
                               f"tenant {tenant!r} is over {self.audio_s_per_min:g} s of audio per minute")

    async def _charge(self, key: str, amount: float, limit: float, what: str) -> None:
        now = time.time()
        minute = int(now // 60)
        previous, current = await self._add(key, minute, amount)
        used, retry_s = sliding_minute(previous, current, now % 60, limit)
        if used > limit:
            # a refused request is not charged: the advised wait stays exact for a client that honours it, and
            # a client hammering while refused does not push its own wait further out
            await self._add(key, minute, -amount)
            raise exhausted(what, sliding_minute(previous, current - amount, now % 60, max(limit - amount, 0.0))[1])

    @abstractmethod
    async def _acquire(self, tenant: str, ref: str) -> tuple[bool, float]: ...

    @abstractmethod
    async def close_session(self, tenant: str, ref: str) -> None: ...

    @abstractmethod
    async def _add(self, key: str, minute: int, amount: float) -> tuple[float, float]:
        """Adds ``amount`` to ``key``'s counter for ``minute``; returns (the last minute's total, this minute's)."""

    async def close(self) -> None:
        return None


class MemoryQuotas(Quotas):
    """One process's quotas (no Redis): right for one gateway, per pod with several."""

    def __init__(self, max_sessions: int, requests_per_min: int, audio_s_per_min: float) -> None:
        super().__init__(max_sessions, requests_per_min, audio_s_per_min)
        self._sessions: dict[str, dict[str, float]] = {}
        self._counters: dict[tuple[str, int], float] = {}

    async def _acquire(self, tenant: str, ref: str) -> tuple[bool, float]:
        now = time.time()
        live = {r: t for r, t in self._sessions.get(tenant, {}).items() if t > now}
        self._sessions[tenant] = live
        if ref in live or len(live) < self.max_sessions:
            live[ref] = now + LEASE_S
            return True, 0.0
        return False, min(live.values())

    async def close_session(self, tenant: str, ref: str) -> None:
        self._sessions.get(tenant, {}).pop(ref, None)

    async def _add(self, key: str, minute: int, amount: float) -> tuple[float, float]:
        for k in [k for k in self._counters if k[1] < minute - 1]:
            del self._counters[k]  # only this minute and the last are kept
        self._counters[(key, minute)] = self._counters.get((key, minute), 0.0) + amount
        return self._counters.get((key, minute - 1), 0.0), self._counters[(key, minute)]


class RedisQuotas(Quotas):
    """Quotas shared by every gateway pod through Redis (atomic per operation)."""

    def __init__(self, url: str, max_sessions: int, requests_per_min: int, audio_s_per_min: float) -> None:
        super().__init__(max_sessions, requests_per_min, audio_s_per_min)
        import redis.asyncio as aioredis

        self._redis = aioredis.from_url(url)
        self._script = self._redis.register_script(_ACQUIRE)

    async def _acquire(self, tenant: str, ref: str) -> tuple[bool, float]:
        now = time.time()
        ok, first = await self._script(keys=[f"stepaudio:quota:{tenant}:sessions"],
                                       args=[now, now + LEASE_S, self.max_sessions, ref])
        return bool(int(ok)), float(first or 0)

    async def close_session(self, tenant: str, ref: str) -> None:
        if self.max_sessions:
            await self._redis.zrem(f"stepaudio:quota:{tenant}:sessions", ref)

    async def _add(self, key: str, minute: int, amount: float) -> tuple[float, float]:
        k = f"stepaudio:quota:{key}"
        pipe = self._redis.pipeline(transaction=True)
        pipe.get(f"{k}:{minute - 1}")
        pipe.incrbyfloat(f"{k}:{minute}", amount)
        pipe.expire(f"{k}:{minute}", 180)  # kept while it can still be the last minute
        previous, total, _ = await pipe.execute()
        return float(previous or 0), float(total)

    async def close(self) -> None:
        await self._redis.aclose()


def create_quotas(redis_url: str, max_sessions: int, requests_per_min: int, audio_s_per_min: float) -> Quotas:
    if redis_url:
        return RedisQuotas(redis_url, max_sessions, requests_per_min, audio_s_per_min)
    return MemoryQuotas(max_sessions, requests_per_min, audio_s_per_min)
