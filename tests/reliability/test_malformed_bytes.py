"""Malformed protobuf bytes at the gRPC layer: each stream fails on its own, the gateway serves the next one."""

from __future__ import annotations

import random

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from stepaudio.client import Conversation, session_config
from stepaudio.conversation.v1 import conversation_pb2 as pb
from stepaudio.stack import Stack

METHOD = "/stepaudio.conversation.v1.ConversationService/Converse"


async def test_garbage_bytes_do_not_hurt_the_gateway(stack: Stack) -> None:
    rng = random.Random(7)
    garbage = [bytes(rng.getrandbits(8) for _ in range(n)) for n in (1, 7, 64, 4096)]
    garbage += [b"\x0a\xff\xff\xff\xff\x0f", b"\x12\x05abc"]  # a length past the end; a truncated field
    async with grpc.aio.insecure_channel(stack.gateway_addr) as ch:
        call = ch.stream_stream(METHOD, request_serializer=None, response_deserializer=None)
        codes = []
        for blob in garbage:
            stream = call(iter([blob]))
            try:
                async for _ in stream:
                    pass
                codes.append(grpc.StatusCode.OK)
            except grpc.aio.AioRpcError as e:
                codes.append(e.code())
        assert all(c != grpc.StatusCode.OK for c in codes), codes
        status = await health_pb2_grpc.HealthStub(ch).Check(health_pb2.HealthCheckRequest(), timeout=5)
        assert status.status == health_pb2.HealthCheckResponse.SERVING
        conv = Conversation(ch, session_config(16000))
        conv.send_text("Hello.")
        await conv.wait_turns(1, 60)
        result = await conv.finish()
    assert [e.turn_completed.outcome for e in result.events if e.WhichOneof("event") == "turn_completed"] == [
        pb.TURN_OUTCOME_COMPLETED]
