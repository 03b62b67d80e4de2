"""Per-tenant quotas shared by every gateway pod (Redis), or per process without Redis.

* concurrent sessions per tenant: a sorted set of live session refs scored by lease expiry (a pod that dies frees
  its leases after ``lease_s``; live sessions renew theirs);
* requests per minute (sessions opened, text turns, feedback) and audio seconds per minute: fixed one-minute
  windows.

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

    @staticmethod
    def _window() -> tuple[int, float]:
        now = time.time()
        return int(now // 60), 60 - now % 60  # the minute, and the seconds left in it

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
            minute, left = self._window()
            if await self._add(f"req:{tenant}:{minute}", 1) > self.requests_per_min:
                raise exhausted(f"tenant {tenant!r} is over {self.requests_per_min} requests per minute", left)

    async def audio(self, tenant: str, seconds: float) -> None:
        if self.audio_s_per_min:
            minute, left = self._window()
            if await self._add(f"audio:{tenant}:{minute}", seconds) > self.audio_s_per_min:
                raise exhausted(f"tenant {tenant!r} is over {self.audio_s_per_min:g} s of audio per minute", left)

    @abstractmethod
    async def _acquire(self, tenant: str, ref: str) -> tuple[bool, float]: ...

    @abstractmethod
    async def close_session(self, tenant: str, ref: str) -> None: ...

    @abstractmethod
    async def _add(self, key: str, amount: float) -> float: ...

    async def close(self) -> None:
        return None


class MemoryQuotas(Quotas):
    """One process's quotas (no Redis): right for one gateway, per pod with several."""

    def __init__(self, max_sessions: int, requests_per_min: int, audio_s_per_min: float) -> None:
        super().__init__(max_sessions, requests_per_min, audio_s_per_min)
        self._sessions: dict[str, dict[str, float]] = {}
        self._counters: dict[str, float] = {}

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

    async def _add(self, key: str, amount: float) -> float:
        minute = key.rsplit(":", 1)[1]
        for k in [k for k in self._counters if not k.endswith(minute)]:
            del self._counters[k]  # only the current minute is kept
        self._counters[key] = self._counters.get(key, 0.0) + amount
        return self._counters[key]


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

    async def _add(self, key: str, amount: float) -> float:
        k = f"stepaudio:quota:{key}"
        pipe = self._redis.pipeline()
        pipe.incrbyfloat(k, amount)
        pipe.expire(k, 120)
        total, _ = await pipe.execute()
        return float(total)

    async def close(self) -> None:
        await self._redis.aclose()


def create_quotas(redis_url: str, max_sessions: int, requests_per_min: int, audio_s_per_min: float) -> Quotas:
    if redis_url:
        return RedisQuotas(redis_url, max_sessions, requests_per_min, audio_s_per_min)
    return MemoryQuotas(max_sessions, requests_per_min, audio_s_per_min)
