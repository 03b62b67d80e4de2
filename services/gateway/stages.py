"""How the gateway reaches the stages: one object holding a client per stage (gRPC in production and tests)."""

from __future__ import annotations

import grpc

from services.gateway.settings import GatewaySettings
from services.kit.clients import channel
from stepaudio.llm.v1 import llm_pb2_grpc
from stepaudio.tokenizer.v1 import tokenizer_pb2_grpc
from stepaudio.tools.v1 import tools_pb2, tools_pb2_grpc
from stepaudio.tts.v1 import tts_pb2, tts_pb2_grpc
from stepaudio.vad.v1 import vad_pb2_grpc


class Stages:
    """gRPC clients of every stage the gateway calls."""

    def __init__(self, settings: GatewaySettings) -> None:
        self.settings = settings
        self._channels: list[grpc.aio.Channel] = []
        self.tool_specs: dict[str, tools_pb2.Tool] = {}
        self.voices: dict[str, tts_pb2.VoiceInfo] = {}

    def connect(self) -> None:
        """Open the channels; call inside the running event loop (aio channels belong to one loop)."""
        if self._channels:
            return
        limit = self.settings.max_message_bytes

        def ch(addr: str) -> grpc.aio.Channel:
            c = channel(addr, limit)
            self._channels.append(c)
            return c

        self.vad = vad_pb2_grpc.VadServiceStub(ch(self.settings.vad_addr))
        self.tokenizer = tokenizer_pb2_grpc.TokenizerServiceStub(ch(self.settings.tokenizer_addr))
        self.llm = llm_pb2_grpc.LlmServiceStub(ch(self.settings.llm_addr))
        self.tools = tools_pb2_grpc.ToolsServiceStub(ch(self.settings.tools_addr))
        self.tts = tts_pb2_grpc.TtsServiceStub(ch(self.settings.tts_addr))

    async def refresh_catalogs(self, deadline_s: float = 10.0) -> None:
        """Cache the tool and voice catalogs (validated against session configs)."""
        self.connect()
        tools = await self.tools.ListTools(tools_pb2.ListToolsRequest(), timeout=deadline_s, wait_for_ready=True)
        self.tool_specs = {t.name: t for t in tools.tools}
        voices = await self.tts.ListVoices(tts_pb2.ListVoicesRequest(), timeout=deadline_s, wait_for_ready=True)
        self.voices = {v.name: v for v in voices.voices}

    async def close(self) -> None:
        for c in self._channels:
            await c.close()
        self._channels.clear()
