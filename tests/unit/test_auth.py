"""Gateway credentials: JWKS fetched from a URL (a local HTTP server), cached, and checked like a file's."""

from __future__ import annotations

import http.server
import json
import threading
import time
from collections.abc import Iterator

import grpc
import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from services.gateway.auth import Authenticator
from services.gateway.settings import GatewaySettings
from services.kit.errors import StageError


@pytest.fixture()
def jwks_server() -> Iterator[tuple[str, object, list[int]]]:
    private = ec.generate_private_key(ec.SECP256R1())
    jwk = json.loads(jwt.algorithms.ECAlgorithm.to_jwk(private.public_key()))
    body = json.dumps({"keys": [{**jwk, "kid": "idp-1", "alg": "ES256", "use": "sig"}]}).encode()
    hits: list[int] = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802
            hits.append(1)
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}/.well-known/jwks.json", private, hits
    server.shutdown()


async def test_jwts_verified_against_a_jwks_url(jwks_server) -> None:
    url, private, hits = jwks_server
    auth = Authenticator(GatewaySettings(jwks_url=url, jwt_issuer="https://idp.example", conversation_log=False))
    assert auth.enabled

    def bearer(**claims: object) -> tuple[tuple[str, str], ...]:
        body = {"tenant": "initech", "sub": "u9", "iss": "https://idp.example", "exp": int(time.time()) + 60,
                **claims}
        return (("authorization", "Bearer " + jwt.encode(body, private, algorithm="ES256",
                                                         headers={"kid": "idp-1"})),)

    who = await auth.identify(bearer())
    assert who is not None and (who.tenant, who.subject) == ("initech", "u9")
    await auth.identify(bearer())
    assert len(hits) == 1  # keys cached
    for bad in (bearer(iss="https://evil.example"), bearer(exp=int(time.time()) - 5), bearer(tenant="")):
        with pytest.raises(StageError) as info:
            await auth.identify(bad)
        assert info.value.code == grpc.StatusCode.UNAUTHENTICATED
