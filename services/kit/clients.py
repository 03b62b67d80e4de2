"""Client channels for calling other stages: tracing interceptor, message limits, keepalive, retries."""

from __future__ import annotations

import json

import grpc

from services.kit.interceptors import client_tracing_interceptors

_RETRY_POLICY = json.dumps(
    {
        "methodConfig": [
            {
                "name": [{}],
                "waitForReady": False,
                "retryPolicy": {
                    "maxAttempts": 3,
                    "initialBackoff": "0.05s",
                    "maxBackoff": "0.5s",
                    "backoffMultiplier": 2,
                    "retryableStatusCodes": ["UNAVAILABLE"],
                },
            }
        ]
    }
)


def channel(target: str, max_message_bytes: int = 8 * 1024 * 1024, token: str = "") -> grpc.aio.Channel:
    """An aio channel to ``host:port`` (in-cluster, plaintext) that propagates the trace context and sends the
    service credential ``token`` (``authorization: Bearer``) when one is set."""
    return grpc.aio.insecure_channel(
        target,
        interceptors=client_tracing_interceptors(token),
        options=[
            ("grpc.max_receive_message_length", max_message_bytes),
            ("grpc.max_send_message_length", max_message_bytes),
            ("grpc.keepalive_time_ms", 20000),
            ("grpc.enable_retries", 1),
            ("grpc.service_config", _RETRY_POLICY),
            # A restarted stage is found again within a second or two (gRPC's default backoff grows to 120 s).
            ("grpc.initial_reconnect_backoff_ms", 250),
            ("grpc.max_reconnect_backoff_ms", 2000),
        ],
    )
