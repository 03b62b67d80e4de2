"""Every service answers grpc.health.v1 (SERVING after warm-up) and server reflection."""

from __future__ import annotations

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from stepaudio.stack import SERVICES, Stack

FULL_NAMES = {
    "gateway": "stepaudio.conversation.v1.ConversationService",
    "vad": "stepaudio.vad.v1.VadService",
    "tokenizer": "stepaudio.tokenizer.v1.TokenizerService",
    "llm": "stepaudio.llm.v1.LlmService",
    "tools": "stepaudio.tools.v1.ToolsService",
    "tts": "stepaudio.tts.v1.TtsService",
    "vocoder": "stepaudio.vocoder.v1.VocoderService",
}


@pytest.mark.parametrize("name", SERVICES)
def test_health_and_reflection(stack: Stack, name: str) -> None:
    with grpc.insecure_channel(stack.addr(name)) as ch:
        health = health_pb2_grpc.HealthStub(ch)
        for svc in ("", FULL_NAMES[name]):
            resp = health.Check(health_pb2.HealthCheckRequest(service=svc), timeout=5)
            assert resp.status == health_pb2.HealthCheckResponse.SERVING
        refl = reflection_pb2_grpc.ServerReflectionStub(ch)
        responses = list(refl.ServerReflectionInfo(iter([reflection_pb2.ServerReflectionRequest(list_services="")]),
                                                   timeout=5))
        names = {s.name for s in responses[0].list_services_response.service}
        assert FULL_NAMES[name] in names
        assert "grpc.health.v1.Health" in names
