"""Service credentials for internal calls: short-lived tokens signed with a shared secret (HMAC-SHA256).

The secret itself never travels: a caller sends ``authorization: Bearer v1.<expiry>.<signature>``, valid for a few
minutes; a server holding the same secret checks the signature in constant time and the expiry. A leaked token
expires on its own; rotating the secret (one Secret in the chart) revokes every token.
"""

from __future__ import annotations

import hashlib
import hmac
import time

TTL_S = 300  # what a caller signs for
MAX_TTL_S = 900  # the furthest expiry a server accepts (bounds the damage of a token minted with a skewed clock)


def _signature(secret: str, payload: str) -> str:
    return hmac.new(secret.encode(), payload.encode(), hashlib.sha256).hexdigest()


def sign(secret: str, now: float | None = None, ttl_s: int = TTL_S) -> str:
    """A token for ``secret`` that expires ``ttl_s`` from ``now``."""
    exp = int((time.time() if now is None else now) + ttl_s)
    payload = f"v1.{exp}"
    return f"{payload}.{_signature(secret, payload)}"


def verify(secret: str, token: str, now: float | None = None) -> bool:
    """Whether ``token`` was signed with ``secret`` and is within its validity."""
    parts = token.split(".")
    if len(parts) != 3 or parts[0] != "v1" or not parts[1].isdigit():
        return False
    now = time.time() if now is None else now
    exp = int(parts[1])
    if not now < exp <= now + MAX_TTL_S:
        return False
    return hmac.compare_digest(parts[2], _signature(secret, f"v1.{parts[1]}"))
