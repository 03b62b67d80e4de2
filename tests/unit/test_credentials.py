"""Service credentials: signed, short-lived, the secret never on the wire."""

from __future__ import annotations

from services.kit.credentials import MAX_TTL_S, sign, verify


def test_signed_tokens_verify_only_with_the_secret_and_within_their_life() -> None:
    now = 1_700_000_000.0
    token = sign("s3cret", now)
    assert "s3cret" not in token
    assert verify("s3cret", token, now) and verify("s3cret", token, now + 299)
    assert not verify("s3cret", token, now + 301)  # expired
    assert not verify("other", token, now)  # another secret
    assert not verify("s3cret", "s3cret", now)  # the raw secret is not a credential
    forged = token.rsplit(".", 1)[0].replace(str(int(now) + 300), str(int(now) + 800)) + "." + token.rsplit(".")[-1]
    assert not verify("s3cret", forged, now)  # a pushed-out expiry breaks the signature
    assert not verify("s3cret", sign("s3cret", now, ttl_s=MAX_TTL_S + 60), now)  # too far in the future
    assert not verify("s3cret", "v1.x.y", now) and not verify("s3cret", "", now)
