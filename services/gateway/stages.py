"""How the gateway reaches the stages: one small interface (gRPC in production, in-process fakes in unit tests).

Every method is a stream or a call of one stage, except the end-of-turn models: :meth:`Stages.end_of_turn` (audio,
Smart Turn v3.2, 8 MB) and :meth:`Stages.end_of_turn_text` (SmolLM2-135M on the transcript, about 100 MB) are small
and run in the gateway process, off the event loop. Failures surface as
:class:`StageError` with the stage's gRPC status and a message that names the stage; closing (or cancelling the
consumer of) a stream cancels the call.
"""

from __future__ import annotations

import asyncio
from abc import ABC, abstractmethod
from collections.abc import AsyncGenerator, AsyncIterator
from typing import Any

import grpc
import structlog
from grpc_health.v1 import health_pb2, health_pb2_grpc

from services.gateway.settings import GatewaySettings
from services.kit.audio import pcm16_to_float
from services.kit.clients import channel
from services.kit.errors import FailedPrecondition, StageError
from stepaudio.llm.v1 import llm_pb2, llm_pb2_grpc
from stepaudio.tokenizer.v1 import tokenizer_pb2, tokenizer_pb2_grpc
from stepaudio.tools.v1 import tools_pb2, tools_pb2_grpc
from stepaudio.tts.v1 import tts_pb2, tts_pb2_grpc
from stepaudio.vad.v1 import vad_pb2, vad_pb2_grpc

log = structlog.get_logger("stepaudio.gateway.stages")


class Stages(ABC):
    """The stage calls a conversation makes, plus the tool and voice catalogs (validated against configs)."""

    def __init__(self) -> None:
        self.tool_specs: dict[str, tools_pb2.Tool] = {}
        self.voices: dict[str, tts_pb2.VoiceInfo] = {}

    @abstractmethod
    def detect(self, requests: AsyncIterator[vad_pb2.StreamDetectRequest]
               ) -> AsyncGenerator[vad_pb2.StreamDetectResponse, None]:
        """VAD over a stream of audio (config first)."""

    @abstractmethod
    def transcribe(self, requests: AsyncIterator[tokenizer_pb2.TranscribeRequest]
                   ) -> AsyncGenerator[tokenizer_pb2.TranscribeResponse, None]:
        """ASR over a stream of audio (config first): partials, then one final."""

    @abstractmethod
    def tokenize(self, requests: AsyncIterator[tokenizer_pb2.TokenizeRequest]
                 ) -> AsyncGenerator[tokenizer_pb2.TokenizeResponse, None]:
        """Step-Audio dual tokens over a stream of audio (config first), the last response after half-close."""

    @abstractmethod
    def generate(self, request: llm_pb2.GenerateRequest, timeout_s: float
                 ) -> AsyncGenerator[llm_pb2.GenerateResponse, None]:
        """One LLM generation: text deltas, tool calls, finish."""

    @abstractmethod
    def synthesize(self, requests: AsyncIterator[tts_pb2.SynthesizeStreamRequest]
                   ) -> AsyncGenerator[tts_pb2.SynthesizeStreamResponse, None]:
        """TTS over text as it is generated (config first): one chunk per phrase piece."""

    @abstractmethod
    async def execute_tool(self, request: tools_pb2.ExecuteToolRequest, timeout_s: float
                           ) -> tools_pb2.ExecuteToolResponse:
        """One tool call."""

    @abstractmethod
    async def refresh_catalogs(self, deadline_s: float = 10.0) -> None:
        """Fill ``tool_specs`` and ``voices``."""

    async def end_of_turn(self, pcm16: bytes, rate: int) -> float:
        """P(the user finished the turn) for the utterance so far (PCM16 mono at ``rate``)."""
        raise FailedPrecondition("this gateway has no end-of-turn model")

    @property
    def reads_turn_text(self) -> bool:
        """Whether :meth:`end_of_turn_text` has a model behind it."""
        return False

    async def end_of_turn_text(self, text: str) -> float:
        """P(the words ``text`` end the user's message)."""
        raise FailedPrecondition("this gateway has no text end-of-turn model")

    async def warm_llm(self, request: llm_pb2.GenerateRequest, timeout_s: float) -> None:
        """Run one generation to fill the LLM's prompt cache (warm-up; waits for the LLM to be ready)."""
        async for _ in self.generate(request, timeout_s):
            pass

    async def close(self) -> None:
        return None


def _stage_error(stage: str, e: grpc.aio.AioRpcError) -> StageError:
    return StageError(f"{stage}: {e.details() or e.code().name}", e.code())


async def _stream(stage: str, call: Any) -> AsyncGenerator[Any, None]:
    """A gRPC stream as an async iterator: errors as StageError, closing it cancels the call."""
    try:
        async for response in call:
            yield response
    except grpc.aio.AioRpcError as e:
        raise _stage_error(stage, e) from None
    finally:
        call.cancel()


class GrpcStages(Stages):
    """The stages as gRPC services at the addresses in the gateway settings."""

    def __init__(self, settings: GatewaySettings) -> None:
        super().__init__()
        self.settings = settings
        self._channels: list[grpc.aio.Channel] = []
        self._eot: Any = None
        if settings.end_of_turn_model == "smart_turn_v3":
            from models.turn.smart_turn import SmartTurn

            try:
                self._eot = SmartTurn()
            except (FileNotFoundError, ImportError) as e:
                if settings.turn_policy == "end_of_turn_model":
                    raise  # the default policy needs it: refuse to start without it
                log.warning("end-of-turn model unavailable; sessions asking for it get one FAILED_PRECONDITION "
                            "error event and the silence timer", error=str(e))
        self._text_eot: Any = None
        if settings.end_of_turn_text_model == "smollm2" and self._eot is not None:
            from models.turn.text_turn import TextTurn

            try:
                self._text_eot = TextTurn()
            except (FileNotFoundError, ImportError, RuntimeError) as e:
                log.warning("text end-of-turn model unavailable; the audio model judges pauses alone", error=str(e))

    @property
    def reads_turn_text(self) -> bool:
        return self._text_eot is not None

    async def end_of_turn_text(self, text: str) -> float:
        if self._text_eot is None:
            return await super().end_of_turn_text(text)
        return await asyncio.to_thread(self._text_eot.probability, text)

    async def end_of_turn(self, pcm16: bytes, rate: int) -> float:
        if self._eot is None:
            return await super().end_of_turn(pcm16, rate)
        return await asyncio.to_thread(self._eot.probability, pcm16_to_float(pcm16), rate)

    def connect(self) -> None:
        """Open the channels; call inside the running event loop (aio channels belong to one loop)."""
        if self._channels:
            return
        limit = self.settings.max_message_bytes

        def ch(addr: str) -> grpc.aio.Channel:
            c = channel(addr, limit, token=self.settings.stage_token)
            self._channels.append(c)
            return c

        self._vad = vad_pb2_grpc.VadServiceStub(ch(self.settings.vad_addr))
        self._tokenizer = tokenizer_pb2_grpc.TokenizerServiceStub(ch(self.settings.tokenizer_addr))
        self._llm = llm_pb2_grpc.LlmServiceStub(ch(self.settings.llm_addr))
        self._tools = tools_pb2_grpc.ToolsServiceStub(ch(self.settings.tools_addr))
        self._tts = tts_pb2_grpc.TtsServiceStub(ch(self.settings.tts_addr))

    def detect(self, requests: AsyncIterator[vad_pb2.StreamDetectRequest]
               ) -> AsyncGenerator[vad_pb2.StreamDetectResponse, None]:
        self.connect()
        return _stream("vad", self._vad.StreamDetect(requests))

    def transcribe(self, requests: AsyncIterator[tokenizer_pb2.TranscribeRequest]
                   ) -> AsyncGenerator[tokenizer_pb2.TranscribeResponse, None]:
        self.connect()
        return _stream("asr", self._tokenizer.Transcribe(requests))

    def tokenize(self, requests: AsyncIterator[tokenizer_pb2.TokenizeRequest]
                 ) -> AsyncGenerator[tokenizer_pb2.TokenizeResponse, None]:
        self.connect()
        return _stream("tokenizer", self._tokenizer.Tokenize(requests))

    def generate(self, request: llm_pb2.GenerateRequest, timeout_s: float
                 ) -> AsyncGenerator[llm_pb2.GenerateResponse, None]:
        self.connect()
        return _stream("llm", self._llm.Generate(request, timeout=timeout_s))

    def synthesize(self, requests: AsyncIterator[tts_pb2.SynthesizeStreamRequest]
                   ) -> AsyncGenerator[tts_pb2.SynthesizeStreamResponse, None]:
        self.connect()
        return _stream("tts", self._tts.SynthesizeStream(requests))

    async def execute_tool(self, request: tools_pb2.ExecuteToolRequest, timeout_s: float
                           ) -> tools_pb2.ExecuteToolResponse:
        self.connect()
        try:
            return await self._tools.ExecuteTool(request, timeout=timeout_s)
        except grpc.aio.AioRpcError as e:
            raise _stage_error("tools", e) from None

    async def refresh_catalogs(self, deadline_s: float = 10.0) -> None:
        self.connect()
        try:
            tools = await self._tools.ListTools(tools_pb2.ListToolsRequest(), timeout=deadline_s,
                                                wait_for_ready=True)
            voices = await self._tts.ListVoices(tts_pb2.ListVoicesRequest(), timeout=deadline_s,
                                                wait_for_ready=True)
        except grpc.aio.AioRpcError as e:
            raise _stage_error("catalogs (tools, tts)", e) from None
        self.tool_specs = {t.name: t for t in tools.tools}
        self.voices = {v.name: v for v in voices.voices}

    async def warm_llm(self, request: llm_pb2.GenerateRequest, timeout_s: float) -> None:
        self.connect()
        async for _ in _stream("llm", self._llm.Generate(request, timeout=timeout_s, wait_for_ready=True)):
            pass

    async def down(self, timeout_s: float = 1.0) -> list[str]:
        """The stages whose health is not SERVING (or that do not answer within ``timeout_s``)."""
        self.connect()

        async def check(name: str, ch: grpc.aio.Channel) -> str | None:
            try:
                resp = await health_pb2_grpc.HealthStub(ch).Check(health_pb2.HealthCheckRequest(), timeout=timeout_s)
            except grpc.aio.AioRpcError as e:
                return f"{name}: {e.code().name}"
            return None if resp.status == health_pb2.HealthCheckResponse.SERVING else f"{name}: NOT_SERVING"

        names = ("vad", "tokenizer", "llm", "tools", "tts")
        results = await asyncio.gather(*(check(n, c) for n, c in zip(names, self._channels, strict=True)))
        return [r for r in results if r is not None]

    async def close(self) -> None:
        for c in self._channels:
            await c.close()
        self._channels.clear()
