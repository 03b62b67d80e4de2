"""Tenant quotas over gRPC: two gateways share them through a real redis-server; the refusal carries RetryInfo.

The gateways are real gRPC servers on loopback with the in-process fake stages (the quotas do not depend on the
models), so the status, its message and its details are what a client really receives.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import grpc
import pytest
from gateway_fakes import FakeStages
from google.rpc import error_details_pb2, status_pb2

from services.gateway.quotas import RedisQuotas
from services.gateway.server import SERVICE_NAME, ConversationServicer
from services.gateway.settings import GatewaySettings
from services.gateway.store import MemoryStore
from services.kit.server import GrpcServer, ServiceSpec
from stepaudio.client import Conversation, session_config
from stepaudio.conversation.v1 import conversation_pb2_grpc


async def start(quotas: RedisQuotas) -> GrpcServer:
    settings = GatewaySettings(port=0, host="127.0.0.1", log_json=False, log_level="WARNING",
                               conversation_log=False, tenant_max_sessions=1, tenant_requests_per_min=3)
    servicer = ConversationServicer(FakeStages(), MemoryStore(), settings, None, quotas)
    server = GrpcServer("gateway-quota-test", settings, [ServiceSpec(
        SERVICE_NAME, conversation_pb2_grpc.add_ConversationServiceServicer_to_server, servicer)])
    await server.start()
    return server


def retry_delay(e: grpc.aio.AioRpcError) -> float:
    raw = dict(e.trailing_metadata() or ()).get("grpc-status-details-bin")
    assert raw, "no status details"
    status = status_pb2.Status.FromString(raw)
    info = error_details_pb2.RetryInfo()
    assert status.details[0].Unpack(info)
    return info.retry_delay.seconds + info.retry_delay.nanos / 1e9


@pytest.fixture()
async def gateways(redis_url: str) -> AsyncIterator[tuple[str, str]]:
    a, b = RedisQuotas(redis_url, 1, 3, 0), RedisQuotas(redis_url, 1, 3, 0)
    servers = [await start(a), await start(b)]
    yield f"127.0.0.1:{servers[0].port}", f"127.0.0.1:{servers[1].port}"
    for s in servers:
        await s.stop(0)
    await a.close()
    await b.close()


async def test_tenant_sessions_and_requests_are_limited_across_gateways(gateways: tuple[str, str]) -> None:
    first, second = gateways
    async with grpc.aio.insecure_channel(first) as ch1, grpc.aio.insecure_channel(second) as ch2:
        live = Conversation(ch1, session_config(16000, tenant="acme"))  # holds acme's one session slot
        deadline = time.monotonic() + 30
        while not live.result.session_id:
            assert time.monotonic() < deadline, "no session started"
            await asyncio.sleep(0.02)
        other = Conversation(ch2, session_config(16000, tenant="acme"))  # on the other gateway
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await other.finish(10)
        assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED and "live sessions" in info.value.details()
        assert 1.0 <= retry_delay(info.value) <= 60.0
        globex = Conversation(ch2, session_config(16000, tenant="globex"))  # another tenant is not affected
        globex.send_text("Hi.")
        await globex.wait_turns(1, 30)
        await globex.finish(10)
        await live.finish(10)
        # acme's slot is free again; its requests per minute (3: the two sessions opened and this one) run out next
        again = Conversation(ch2, session_config(16000, tenant="acme"))
        again.send_text("One more?")
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await again.finish(10)
        assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED and "per minute" in info.value.details()
        # a sliding minute: this minute's requests still count, fading, through the next one (at most 120 s)
        assert 0 < retry_delay(info.value) <= 120.0
