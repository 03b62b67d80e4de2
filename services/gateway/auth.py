"""Who is calling: API keys (stored hashed) and JWTs (verified offline against a JWKS file) at the gateway.

With neither configured the gateway is open (the embedded default on a laptop) and the tenant is whatever the
session config says. With either, every Converse and ListVoices call must carry ``authorization: Bearer <token>``;
the tenant comes from the credential, never from the client's config (a config naming another tenant is
PERMISSION_DENIED).

* API keys file (JSON): ``[{"tenant": "acme", "sha256": "<hex sha256 of the key>", "name": "web app"}]``. Keys
  are never stored in clear; a presented key is hashed and looked up, and the digests compared in constant time.
* JWKS (RFC 7517) from a file, or from a URL (fetched off the event loop, cached for ``jwks_cache_s``): tokens
  signed by one of its keys (RS256/ES256/EdDSA), with ``exp``, the configured ``aud`` and ``iss``; the tenant is
  the ``jwt_tenant_claim`` claim (default ``tenant``).
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc

from services.gateway.settings import GatewaySettings
from services.kit.errors import StageError

_ALGORITHMS = ["RS256", "RS384", "RS512", "ES256", "ES384", "EdDSA"]


@dataclass(frozen=True)
class Identity:
    """An authenticated caller."""

    tenant: str
    subject: str  # key name or JWT subject (for logs; never the secret)


def unauthenticated(message: str) -> StageError:
    return StageError(message, grpc.StatusCode.UNAUTHENTICATED)


class Authenticator:
    """Checks the bearer credential of a call; ``None`` identity when auth is off."""

    def __init__(self, settings: GatewaySettings) -> None:
        self.settings = settings
        self._keys: dict[str, tuple[str, str]] = {}  # sha256 hex -> (tenant, name)
        if settings.api_keys_file:
            for entry in json.loads(Path(settings.api_keys_file).read_text()):
                digest = str(entry["sha256"]).lower()
                if len(digest) != 64:
                    raise ValueError(f"{settings.api_keys_file}: sha256 of key {entry.get('name', '?')!r} is not "
                                     "64 hex characters")
                self._keys[digest] = (str(entry["tenant"]), str(entry.get("name", digest[:8])))
        self._jwks: dict[str, Any] = {}
        self._jwks_client: Any = None
        if settings.jwks_file:
            import jwt

            for jwk in json.loads(Path(settings.jwks_file).read_text())["keys"]:
                self._jwks[jwk.get("kid", "")] = jwt.PyJWK(jwk)
        if settings.jwks_url:
            import jwt

            self._jwks_client = jwt.PyJWKClient(settings.jwks_url, cache_keys=True, lifespan=settings.jwks_cache_s,
                                                timeout=5)

    @property
    def enabled(self) -> bool:
        return bool(self._keys or self._jwks or self._jwks_client)

    async def identify(self, metadata: Iterable[tuple[str, Any]] | None) -> Identity | None:
        """The caller's identity from ``authorization: Bearer``; raises UNAUTHENTICATED with what to fix."""
        if not self.enabled:
            return None
        header = next((str(v) for k, v in (metadata or ()) if k.lower() == "authorization"), "")
        if not header.startswith("Bearer ") or not header[7:].strip():
            raise unauthenticated("send 'authorization: Bearer <API key or JWT>'")
        token = header[7:].strip()
        if token.count(".") == 2 and (self._jwks or self._jwks_client):
            key = await self._signing_key(token)
            return self._jwt(token, key)
        return self._api_key(token)

    async def _signing_key(self, token: str) -> Any:
        import jwt

        try:
            kid = jwt.get_unverified_header(token).get("kid", "")
            if kid in self._jwks or (len(self._jwks) == 1 and self._jwks_client is None):
                return self._jwks.get(kid) or next(iter(self._jwks.values()))
            if self._jwks_client is not None:
                return await asyncio.to_thread(self._jwks_client.get_signing_key_from_jwt, token)
        except jwt.PyJWKClientError as e:
            raise unauthenticated(f"JWT key not found ({e})") from None
        except jwt.PyJWTError as e:
            raise unauthenticated(f"invalid JWT: {e}") from None
        raise unauthenticated("JWT signed by an unknown key (kid)")

    def _api_key(self, key: str) -> Identity:
        digest = hashlib.sha256(key.encode()).hexdigest()
        match = None
        for known, who in self._keys.items():  # every digest compared, in constant time each
            if hmac.compare_digest(known, digest):
                match = who
        if match is None:
            raise unauthenticated("unknown API key")
        return Identity(tenant=match[0], subject=match[1])

    def _jwt(self, token: str, key: Any) -> Identity:
        import jwt

        s = self.settings
        try:
            claims = jwt.decode(token, key=key.key, algorithms=_ALGORITHMS, audience=s.jwt_audience or None,
                                issuer=s.jwt_issuer or None, options={"require": ["exp"]})
        except jwt.PyJWTError as e:
            raise unauthenticated(f"invalid JWT: {e}") from None
        tenant = claims.get(s.jwt_tenant_claim)
        if not isinstance(tenant, str) or not tenant:
            raise unauthenticated(f"JWT has no {s.jwt_tenant_claim!r} claim")
        return Identity(tenant=tenant, subject=str(claims.get("sub", "")))


def key_digest(key: str) -> str:
    """What to put in the API keys file for ``key``."""
    return hashlib.sha256(key.encode()).hexdigest()
