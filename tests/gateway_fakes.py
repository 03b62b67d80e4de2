"""The gateway in one process: in-process fake stages and an event loop with virtual time.

``run_virtual(coro)`` runs a coroutine on a loop whose clock only moves when every task waits: a 20 ms
``asyncio.sleep`` takes no real time, and the same test gives the same timings on any machine. The fakes never use
threads or sockets, so virtual time is the only time there is.

* ``FakeVad``: the real hysteresis (``SpeechDetector``) over an energy detector: a frame is speech when its RMS is
  above 0.01, so a test writes speech as a tone and silence as zeros.
* ``FakeAsr``: the final transcript says how much voiced audio it heard ("heard 1200 ms"); partials likewise
  (with ``asr_partials``).
* ``FakeTokenizer``: one dual token per 40 ms of voiced audio it got.
* ``FakeLlm``: replies with a scripted text, one word per ``token_s``; a script may call a tool first.
* ``FakeTts``: a phrase per flush or sentence end; 250 ms of non-silent audio per word after ``latency_s``.
* ``FakeTools``: ``wait`` sleeps ``seconds``; every call is recorded.
"""

from __future__ import annotations

import asyncio
import json
import re
import selectors
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

import grpc
import numpy as np

from services.gateway.stages import Stages
from services.kit.audio import float_to_pcm16, pcm16_to_float
from services.kit.errors import StageError
from services.vad.backends.base import VadBackend, VadStream
from services.vad.detector import DetectorConfig, SpeechDetector
from services.vad.server import VadServicer
from stepaudio.common.v1 import audio_pb2, tokens_pb2
from stepaudio.llm.v1 import llm_pb2
from stepaudio.tokenizer.v1 import tokenizer_pb2
from stepaudio.tools.v1 import tools_pb2
from stepaudio.tts.v1 import tts_pb2
from stepaudio.vad.v1 import vad_pb2

T = TypeVar("T")
RATE = 16000
TTS_RATE = 22050


# ---- virtual time ---------------------------------------------------------------------------------------------


class _InstantSelector(selectors.BaseSelector):
    """Never blocks: when nothing is ready, the loop's clock jumps to the next timer instead."""

    def __init__(self, loop: VirtualTimeLoop) -> None:
        self._loop = loop
        self._sel = selectors.DefaultSelector()

    def register(self, fileobj: Any, events: int, data: Any = None) -> selectors.SelectorKey:
        return self._sel.register(fileobj, events, data)

    def unregister(self, fileobj: Any) -> selectors.SelectorKey:
        return self._sel.unregister(fileobj)

    def modify(self, fileobj: Any, events: int, data: Any = None) -> selectors.SelectorKey:
        return self._sel.modify(fileobj, events, data)

    def select(self, timeout: float | None = None) -> list[tuple[selectors.SelectorKey, int]]:
        ready = self._sel.select(0)
        if ready or timeout == 0:
            return ready
        if timeout is None:
            raise RuntimeError("deadlock: every task waits and no timer is set")
        self._loop.advance(timeout)
        return []

    def get_map(self) -> Any:
        return self._sel.get_map()

    def close(self) -> None:
        self._sel.close()


class VirtualTimeLoop(asyncio.SelectorEventLoop):
    def __init__(self) -> None:
        self._now = 1000.0
        super().__init__(selector=_InstantSelector(self))

    def time(self) -> float:
        return self._now

    def advance(self, seconds: float) -> None:
        self._now += seconds


def run_virtual(main: Callable[[], Awaitable[T]], limit_s: float = 600.0) -> T:
    """Run ``main()`` on a virtual-time loop; fails if it takes more than ``limit_s`` of virtual time."""
    loop = VirtualTimeLoop()
    try:
        return loop.run_until_complete(asyncio.wait_for(main(), limit_s))
    finally:
        left = asyncio.all_tasks(loop)
        for task in left:
            task.cancel()

        async def settle() -> None:
            await asyncio.gather(*left, return_exceptions=True)

        loop.run_until_complete(settle())
        loop.run_until_complete(loop.shutdown_asyncgens())
        loop.close()


# ---- audio ----------------------------------------------------------------------------------------------------


def tone(ms: int, rate: int = RATE) -> np.ndarray:
    t = np.arange(rate * ms // 1000) / rate
    return (0.3 * np.sin(2 * np.pi * 220 * t)).astype(np.float32)


def silence(ms: int, rate: int = RATE) -> np.ndarray:
    return np.zeros(rate * ms // 1000, np.float32)


def voiced_ms(pcm: bytes, rate: int = RATE) -> int:
    x = pcm16_to_float(pcm)
    frame = rate // 100
    n = len(x) // frame
    if not n:
        return 0
    rms = np.sqrt(np.mean(x[: n * frame].reshape(n, frame) ** 2, axis=1))
    return int(np.sum(rms > 0.01)) * 10


# ---- fake stages ----------------------------------------------------------------------------------------------


class _EnergyStream(VadStream):
    def probabilities(self, frames: np.ndarray) -> np.ndarray:
        return (np.sqrt(np.mean(frames**2, axis=1)) > 0.01).astype(np.float32)


class EnergyVad(VadBackend):
    def new_stream(self) -> VadStream:
        return _EnergyStream()


async def _config_then(requests: AsyncIterator[Any]) -> tuple[Any, AsyncIterator[Any]]:
    it = requests.__aiter__()
    return await it.__anext__(), it


@dataclass
class LlmScript:
    """What the fake LLM says: ``reply`` (word by word); first calling ``tool`` with ``tool_args`` if set."""

    reply: str = "The capital of France is Paris."
    tool: str = ""
    tool_args: dict = field(default_factory=dict)
    fail: StageError | None = None


class FakeStages(Stages):
    def __init__(self, script: LlmScript | None = None, token_s: float = 0.02, asr_s: float = 0.05,
                 tts_latency_s: float = 0.08) -> None:
        super().__init__()
        self.script = script or LlmScript()
        self.token_s, self.asr_s, self.tts_latency_s = token_s, asr_s, tts_latency_s
        self.tts_hang = False  # the TTS takes text and never answers (a stopped process)
        self.tts_lead_silence_ms = 0  # silence the TTS puts before each phrase
        self.llm_hang_after = -1  # the LLM stops after this many words (-1: never)
        self.vad_failures = 0  # this many VAD streams fail with UNAVAILABLE (a killed process) before one works
        self.vad_streams = 0
        self.eot_probability: float | None = None  # the end-of-turn model's verdict (None: the gateway has none)
        self.eot_s = 0.03
        self.eot_calls: list[float] = []  # ms of utterance audio judged
        self.eot_text: dict[str, float] | None = None  # the text end-of-turn model: P(end) by transcript (None: none)
        self.eot_texts: list[str] = []  # transcripts judged
        self.llm_requests: list[llm_pb2.GenerateRequest] = []
        self.asr_partials = False  # Transcribe streams send partials ("heard N ms" so far) as the config asks
        self.tool_calls: list[tools_pb2.ExecuteToolRequest] = []
        self.tts_texts: list[str] = []
        self.tool_specs = {
            "wait": tools_pb2.Tool(name="wait", description="Wait some seconds.",
                                   parameters_json_schema=json.dumps({"type": "object"})),
        }
        self.voices = {"joe": tts_pb2.VoiceInfo(name="joe", languages=["en"], sample_rate_hz=TTS_RATE)}

    async def refresh_catalogs(self, deadline_s: float = 10.0) -> None:
        return None

    async def detect(self, requests: AsyncIterator[vad_pb2.StreamDetectRequest]
                     ) -> AsyncGenerator[vad_pb2.StreamDetectResponse, None]:
        self.vad_streams += 1
        if self.vad_failures > 0:
            self.vad_failures -= 1
            await asyncio.sleep(0.01)
            raise StageError("vad: connection refused", grpc.StatusCode.UNAVAILABLE)
        first, rest = await _config_then(requests)
        c = first.config
        det = SpeechDetector(EnergyVad(), c.format.sample_rate_hz, DetectorConfig(
            start_threshold=c.start_threshold, stop_threshold=c.stop_threshold, min_speech_ms=c.min_speech_ms,
            min_silence_ms=c.min_silence_ms))
        async for req in rest:
            events, probs = det.push(pcm16_to_float(req.audio.data))
            yield VadServicer._response(det, events, probs, c.send_probabilities)
        events, probs = det.push(np.zeros(0, np.float32), last=True)
        yield VadServicer._response(det, events, probs, c.send_probabilities)

    async def transcribe(self, requests: AsyncIterator[tokenizer_pb2.TranscribeRequest]
                         ) -> AsyncGenerator[tokenizer_pb2.TranscribeResponse, None]:
        first, rest = await _config_then(requests)
        rate = first.config.format.sample_rate_hz
        every = first.config.partial_interval_ms * rate // 1000 * 2 if self.asr_partials else 0
        audio = bytearray()
        said = 0
        async for req in rest:
            audio += req.audio.data
            if every and first.config.partial_results and len(audio) - said >= every:
                said = len(audio)
                yield tokenizer_pb2.TranscribeResponse(text=f"heard {voiced_ms(bytes(audio), rate)} ms")
        await asyncio.sleep(self.asr_s)
        yield tokenizer_pb2.TranscribeResponse(text=f"heard {voiced_ms(bytes(audio), rate)} ms", is_final=True,
                                               confidence=0.9)

    async def tokenize(self, requests: AsyncIterator[tokenizer_pb2.TokenizeRequest]
                       ) -> AsyncGenerator[tokenizer_pb2.TokenizeResponse, None]:
        """One dual token per 40 ms of voiced audio (ids 0, 1, 2, ...), all in the final response."""
        first, rest = await _config_then(requests)
        audio = bytearray()
        async for req in rest:
            audio += req.audio.data
        await asyncio.sleep(self.asr_s / 2)
        n = voiced_ms(bytes(audio), first.config.format.sample_rate_hz) // 40
        yield tokenizer_pb2.TokenizeResponse(tokens=tokens_pb2.AudioTokens(ids=list(range(n))), is_final=True)

    async def generate(self, request: llm_pb2.GenerateRequest, timeout_s: float
                       ) -> AsyncGenerator[llm_pb2.GenerateResponse, None]:
        self.llm_requests.append(request)
        s = self.script
        if s.fail is not None:
            await asyncio.sleep(self.token_s)
            raise s.fail
        if s.tool and not any(m.role == llm_pb2.ROLE_TOOL for m in request.messages):
            await asyncio.sleep(self.token_s)
            yield llm_pb2.GenerateResponse(text_delta="Let me check.")
            yield llm_pb2.GenerateResponse(tool_call=llm_pb2.ToolCall(id="c1", name=s.tool,
                                                                      arguments_json=json.dumps(s.tool_args)))
            yield llm_pb2.GenerateResponse(finish=llm_pb2.Finish(reason=llm_pb2.FINISH_REASON_TOOL_CALLS))
            return
        for i, word in enumerate(s.reply.split()):
            await asyncio.sleep(self.token_s)
            if i == self.llm_hang_after:
                await asyncio.Event().wait()
            yield llm_pb2.GenerateResponse(text_delta=word if i == 0 else " " + word)
        yield llm_pb2.GenerateResponse(finish=llm_pb2.Finish(reason=llm_pb2.FINISH_REASON_STOP))

    async def synthesize(self, requests: AsyncIterator[tts_pb2.SynthesizeStreamRequest]
                         ) -> AsyncGenerator[tts_pb2.SynthesizeStreamResponse, None]:
        _first, rest = await _config_then(requests)
        pending = ""

        async def speak(text: str) -> tts_pb2.SynthesizeStreamResponse:
            self.tts_texts.append(text)
            if self.tts_hang:
                await asyncio.Event().wait()
            await asyncio.sleep(self.tts_latency_s)
            n = len(text.split()) * TTS_RATE // 4
            lead = np.zeros(TTS_RATE * self.tts_lead_silence_ms // 1000, np.float32)
            pcm = float_to_pcm16(np.concatenate([lead, 0.2 * np.ones(n, np.float32)]))
            return tts_pb2.SynthesizeStreamResponse(chunk=tts_pb2.SpeechChunk(
                audio=audio_pb2.AudioChunk(data=pcm), text=text, sample_rate_hz=TTS_RATE))

        async for req in rest:
            pending += req.text.text
            if req.text.flush or re.search(r"[.!?]\s*$", pending):
                if pending.strip():
                    yield await speak(pending.strip())
                pending = ""
        if pending.strip():
            yield await speak(pending.strip())

    async def end_of_turn(self, pcm16: bytes, rate: int) -> float:
        """``eot_probability`` after ``eot_s`` (the model's compute); None: no model (as the base class)."""
        self.eot_calls.append(len(pcm16) * 500 / rate)
        if self.eot_probability is None:
            return await super().end_of_turn(pcm16, rate)
        await asyncio.sleep(self.eot_s)
        return self.eot_probability

    @property
    def reads_turn_text(self) -> bool:
        return self.eot_text is not None

    async def end_of_turn_text(self, text: str) -> float:
        """``eot_text[text]`` (1.0 for a text it does not list) after ``eot_s``."""
        if self.eot_text is None:
            return await super().end_of_turn_text(text)
        self.eot_texts.append(text)
        await asyncio.sleep(self.eot_s)
        return self.eot_text.get(text, 1.0)

    async def execute_tool(self, request: tools_pb2.ExecuteToolRequest, timeout_s: float
                           ) -> tools_pb2.ExecuteToolResponse:
        self.tool_calls.append(request)
        seconds = float(json.loads(request.arguments_json or "{}").get("seconds", 0))
        await asyncio.sleep(seconds)
        return tools_pb2.ExecuteToolResponse(result_json=json.dumps({"waited": seconds}))


class FakeConvlog:
    """Records what the gateway logs, call by call."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, dict]] = []

    def __getattr__(self, name: str) -> Callable[..., str]:
        def record(**kwargs: Any) -> str:
            self.calls.append((name, kwargs))
            return str(len(self.calls))

        return record

    def of(self, name: str) -> list[dict]:
        return [kw for n, kw in self.calls if n == name]
