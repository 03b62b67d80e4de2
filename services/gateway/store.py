"""Session store: the text history of a session, behind one interface (memory or Redis)."""

from __future__ import annotations

import hashlib
import json
import time
from abc import ABC, abstractmethod
from dataclasses import asdict, dataclass, field


def session_ref(session_id: str) -> str:
    """A stable, non-secret stand-in for a session id in logs, spans, Kafka and LLM requests (the id itself is the
    credential that resumes the session, so it is never written anywhere else)."""
    return hashlib.sha256(session_id.encode()).hexdigest()[:16]


@dataclass
class StoredSession:
    """What survives a gateway restart: the text history (a resuming client sends its config again)."""

    session_id: str
    tenant: str = ""  # the tenant that owns the session; another tenant cannot resume it
    history: list[dict[str, str]] = field(default_factory=list)
    updated_at: float = field(default_factory=time.time)

    def to_json(self) -> str:
        return json.dumps(asdict(self), ensure_ascii=False)

    @classmethod
    def from_json(cls, raw: str | bytes) -> StoredSession:
        data = json.loads(raw)
        return cls(session_id=data["session_id"], tenant=data.get("tenant", ""), history=data.get("history", []),
                   updated_at=data.get("updated_at", time.time()))


class SessionStore(ABC):
    """Load and save sessions by id."""

    @abstractmethod
    async def load(self, session_id: str) -> StoredSession | None: ...

    @abstractmethod
    async def save(self, session: StoredSession) -> None: ...

    async def close(self) -> None:
        return None


class MemoryStore(SessionStore):
    """In-process store: the embedded default when no Redis is configured (lost on restart)."""

    def __init__(self, ttl_s: int = 86400) -> None:
        self.ttl_s = ttl_s
        self._data: dict[str, str] = {}

    async def load(self, session_id: str) -> StoredSession | None:
        raw = self._data.get(session_id)
        if raw is None:
            return None
        s = StoredSession.from_json(raw)
        if time.time() - s.updated_at > self.ttl_s:
            self._data.pop(session_id, None)
            return None
        return s

    async def save(self, session: StoredSession) -> None:
        session.updated_at = time.time()
        self._data[session.session_id] = session.to_json()


class RedisStore(SessionStore):
    """Redis store: one JSON value per session under ``stepaudio:session:<id>`` with a sliding TTL."""

    def __init__(self, url: str, ttl_s: int = 86400) -> None:
        import redis.asyncio as aioredis

        self.ttl_s = ttl_s
        self._redis = aioredis.from_url(url)

    @staticmethod
    def _key(session_id: str) -> str:
        return f"stepaudio:session:{session_id}"

    async def load(self, session_id: str) -> StoredSession | None:
        raw = await self._redis.get(self._key(session_id))
        return None if raw is None else StoredSession.from_json(raw)

    async def save(self, session: StoredSession) -> None:
        session.updated_at = time.time()
        await self._redis.set(self._key(session.session_id), session.to_json(), ex=self.ttl_s)

    async def close(self) -> None:
        await self._redis.aclose()


def create_store(redis_url: str, ttl_s: int) -> SessionStore:
    return RedisStore(redis_url, ttl_s) if redis_url else MemoryStore(ttl_s)
