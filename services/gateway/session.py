"""The per-session controller: Silence -> UserSpeaking -> UserPaused -> BotReplying, driven by VAD events.

One ``Session`` per Converse stream. Audio goes to a VAD stream (one per listening window, so each turn is one
trace) and, while the user speaks, to an incremental Transcribe stream. At the pause (``pause_ms`` of silence) a
speculative reply starts (final transcript -> LLM -> TTS) with its output held back; at the endpoint
(``endpoint_ms``) it is committed and its events flow; if the user resumes first it is cancelled everywhere and
counted as discarded. Without speculation the same reply starts at the endpoint (the sequential cascade).

Reply audio leaves at real-time pace (``output_lead_ms`` ahead of playback), so a barge-in really stops it: user
speech during a reply pauses the audio at once; speech longer than ``min_interruption_ms`` cancels the reply (gRPC
cancellation reaches LLM, TTS and tools) and history keeps only the played part; shorter speech is a false
interruption and the reply resumes.
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import enum
import json
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import grpc
import structlog
from opentelemetry import context as otel_context
from opentelemetry import trace

from services.gateway.settings import GatewaySettings
from services.gateway.stages import Stages
from services.gateway.store import SessionStore, StoredSession
from services.kit.audio import SUPPORTED_RATES
from services.kit.errors import InvalidArgument
from services.kit.telemetry import meter, tracer
from stepaudio.common.v1 import audio_pb2
from stepaudio.conversation.v1 import conversation_pb2 as pb
from stepaudio.llm.v1 import llm_pb2
from stepaudio.tokenizer.v1 import tokenizer_pb2
from stepaudio.tools.v1 import tools_pb2
from stepaudio.tts.v1 import tts_pb2
from stepaudio.vad.v1 import vad_pb2

log = structlog.get_logger("stepaudio.gateway")

_ttfa = meter().create_histogram("stepaudio.turn.time_to_first_audio", unit="s",
                                 description="End of user speech to first reply audio")
_stage_hist = meter().create_histogram("stepaudio.turn.stage", unit="s", description="Per-stage turn timings")
_spec = meter().create_counter("stepaudio.speculative.replies", description="Speculative replies by outcome")
_interruptions = meter().create_counter("stepaudio.interruptions", description="Barge-ins by kind (true/false)")


_LOG_LATENCY = {"time_to_first_audio_ms": "first_audio_ms"}  # turn timing name -> logs.v1 TurnLatencies field


class State(enum.Enum):
    SILENCE = "silence"
    USER_SPEAKING = "user_speaking"
    USER_PAUSED = "user_paused"
    BOT_REPLYING = "bot_replying"


@dataclass
class TurnParams:
    """Turn detection settings of a session (session config over gateway defaults)."""

    start_threshold: float
    stop_threshold: float
    min_speech_ms: int
    pause_ms: int
    endpoint_ms: int
    prefix_padding_ms: int
    min_interruption_ms: int
    speculative: bool

    @classmethod
    def resolve(cls, td: pb.TurnDetection, s: GatewaySettings, has_td: bool) -> TurnParams:
        start = td.start_threshold or s.start_threshold
        p = cls(
            start_threshold=start,
            stop_threshold=td.stop_threshold or max(start - 0.15, 0.01),
            min_speech_ms=td.min_speech_ms or s.min_speech_ms,
            pause_ms=td.pause_ms or s.pause_ms,
            endpoint_ms=td.endpoint_ms or s.endpoint_ms,
            prefix_padding_ms=td.prefix_padding_ms or s.prefix_padding_ms,
            min_interruption_ms=td.min_interruption_ms or s.min_interruption_ms,
            speculative=td.speculative if has_td else s.speculative,
        )
        if not 0 < p.stop_threshold <= p.start_threshold <= 1:
            raise InvalidArgument("turn_detection: need 0 < stop_threshold <= start_threshold <= 1")
        if p.endpoint_ms < p.pause_ms:
            raise InvalidArgument(f"turn_detection: endpoint_ms={p.endpoint_ms} must be >= pause_ms={p.pause_ms}")
        if min(p.min_speech_ms, p.pause_ms, p.prefix_padding_ms, p.min_interruption_ms) < 0:
            raise InvalidArgument("turn_detection: durations must not be negative")
        return p


class AsrStream:
    """One incremental Transcribe stream: feed audio, get partials via callback, ``finish`` for the final."""

    def __init__(self, stages: Stages, config: tokenizer_pb2.TranscribeConfig, on_partial: Any) -> None:
        self._queue: asyncio.Queue[bytes | None] = asyncio.Queue()
        self._final: asyncio.Future[tokenizer_pb2.TranscribeResponse] = asyncio.get_running_loop().create_future()
        self._call = stages.tokenizer.Transcribe(self._requests(config))
        self._task = asyncio.create_task(self._read(on_partial))

    async def _requests(self, config: tokenizer_pb2.TranscribeConfig) -> AsyncIterator[tokenizer_pb2.TranscribeRequest]:
        yield tokenizer_pb2.TranscribeRequest(config=config)
        while (data := await self._queue.get()) is not None:
            yield tokenizer_pb2.TranscribeRequest(audio=audio_pb2.AudioChunk(data=data))

    async def _read(self, on_partial: Any) -> None:
        try:
            async for resp in self._call:
                if resp.is_final:
                    self._final.set_result(resp)
                elif on_partial is not None:
                    on_partial(resp)
            if not self._final.done():
                self._final.set_exception(RuntimeError("transcription ended without a final result"))
        except BaseException as e:  # noqa: BLE001 - surfaced through finish()
            if not self._final.done():
                self._final.set_exception(e)

    def feed(self, data: bytes) -> None:
        if data:
            self._queue.put_nowait(data)

    async def finish(self) -> tokenizer_pb2.TranscribeResponse:
        self._queue.put_nowait(None)
        return await self._final

    def cancel(self) -> None:
        self._call.cancel()
        self._task.cancel()
        if not self._final.done():
            self._final.cancel()


@dataclass
class Reply:
    """One reply attempt for a turn; speculative until committed."""

    turn_id: str
    span_ctx: otel_context.Context
    speech_end_wall: float
    committed: asyncio.Event = field(default_factory=asyncio.Event)
    held: list[pb.ConverseResponse] = field(default_factory=list)
    task: asyncio.Task | None = None
    user_text: str = ""
    confidence: float = 0.0
    text: str = ""
    phrases: list[tuple[str, float, float]] = field(default_factory=list)
    sent_ms: float = 0.0
    play_start: float = 0.0
    paused_since: float = 0.0
    paused_total: float = 0.0
    resume: asyncio.Event = field(default_factory=asyncio.Event)
    timings: dict[str, float] = field(default_factory=dict)
    tool_calls: list[dict[str, Any]] = field(default_factory=list)
    outcome: Any = pb.TURN_OUTCOME_COMPLETED
    speculative: bool = False
    endpoint_wall: float = 0.0
    started_at: float = field(default_factory=time.monotonic)
    user_audio: bytes = b""
    audio_out: bytearray = field(default_factory=bytearray)
    out_rate: int = 22050
    discards: int = 0
    wasted_ms: float = 0.0

    def played_ms(self, now: float) -> float:
        if not self.play_start:
            return 0.0
        paused = self.paused_total + (now - self.paused_since if self.paused_since else 0.0)
        return max(0.0, min(self.sent_ms, (now - self.play_start - paused) * 1000))

    def played_text(self, played_ms: float) -> str:
        """The reply text whose audio was played: whole phrases, plus the played share of the current one."""
        out = []
        for text, start, end in self.phrases:
            if end <= played_ms:
                out.append(text)
            elif start < played_ms:
                words = text.split()
                n = int(len(words) * (played_ms - start) / max(end - start, 1.0))
                if n:
                    out.append(" ".join(words[:n]))
                break
        return " ".join(out)


class Session:
    """Controller of one conversation session."""

    def __init__(
        self,
        session_id: str,
        config: pb.SessionConfig,
        stored: StoredSession,
        stages: Stages,
        store: SessionStore,
        settings: GatewaySettings,
        convlog: Any = None,
    ) -> None:
        self.id = session_id
        self.config = config
        self.stored = stored
        self.stages = stages
        self.store = store
        self.settings = settings
        self.convlog = convlog
        self.rate = config.input_format.sample_rate_hz or 16000
        self.out_rate = config.output_format.sample_rate_hz or 0
        self.params = TurnParams.resolve(config.turn_detection, settings, config.HasField("turn_detection"))
        self.out: asyncio.Queue[pb.ConverseResponse | None] = asyncio.Queue()
        self.state = State.SILENCE
        self.in_bytes = 0
        self.arrivals: list[tuple[float, float]] = []  # (end offset ms, wall time) per input chunk
        self.window: _Window | None = None
        self.replies: list[Reply] = []  # committed replies still running (normally one)
        self.pending: Reply | None = None  # speculative reply not yet committed
        self.asr: AsrStream | None = None
        self.utt_start_ms = 0.0
        self.pause_at_ms = -1.0
        self.last_voice_ms = -1.0  # end of the last frame at or above the start threshold (speech or not yet)
        self.barge: tuple[Reply, float] | None = None  # reply paused by a possible interruption, speech start ms
        self.tentative: tuple[Reply, float] | None = None  # reply paused on a single speech frame, frame offset
        self.last_turn_user_text = ""
        self.window_discards = 0
        self.window_wasted_ms = 0.0
        self.background: set[asyncio.Task] = set()  # tool calls that survive a barge-in
        self.tools = self._tool_defs()
        self._reply_tasks: set[asyncio.Task] = set()

    # ---- helpers ---------------------------------------------------------------------------------------------

    def emit(self, event: pb.ConverseResponse) -> None:
        self.out.put_nowait(event)

    def error(self, code: grpc.StatusCode, message: str, turn_id: str = "") -> None:
        self.emit(pb.ConverseResponse(error=pb.Error(code=code.name, message=message, turn_id=turn_id)))

    @property
    def in_ms(self) -> float:
        return self.in_bytes * 500.0 / self.rate

    def wall_at(self, offset_ms: float) -> float:
        """Wall time at which input audio up to ``offset_ms`` had arrived."""
        i = bisect.bisect_left(self.arrivals, (offset_ms, 0.0))
        if i >= len(self.arrivals):
            return time.monotonic()
        return self.arrivals[i][1]

    def _tool_defs(self) -> list[llm_pb2.ToolDefinition]:
        allowed = set(self.config.allowed_tools)
        specs = self.stages.tool_specs.values()
        chosen = list(specs) if "*" in allowed else [t for t in specs if t.name in allowed]
        return [llm_pb2.ToolDefinition(name=t.name, description=t.description,
                                       parameters_json_schema=t.parameters_json_schema) for t in chosen]

    # ---- input ----------------------------------------------------------------------------------------------

    async def on_audio(self, chunk: audio_pb2.AudioChunk) -> None:
        data = chunk.data
        if not data:
            self.error(grpc.StatusCode.INVALID_ARGUMENT, "empty audio chunk ignored: send at least one PCM16 sample")
            return
        if len(data) % 2:
            self.error(grpc.StatusCode.INVALID_ARGUMENT,
                       f"audio chunk of {len(data)} bytes ignored: PCM16 needs an even number of bytes")
            return
        if self.window is None:
            self.open_window()
        assert self.window is not None
        self.in_bytes += len(data)
        self.arrivals.append((self.in_ms, time.monotonic()))
        if len(self.arrivals) > 4096:
            del self.arrivals[:2048]
        self.window.feed(data)
        self.window.audio += data
        if self.state in (State.USER_SPEAKING, State.USER_PAUSED):
            if self.asr is not None:
                self.asr.feed(data)
        elif len(self.window.audio) > self.rate * 2 * 60:
            # A long silence: keep the last 10 s (VAD reports lag the audio a little).
            drop = len(self.window.audio) - self.rate * 2 * 10
            del self.window.audio[:drop]
            self.window.audio_start_ms += drop * 500.0 / self.rate

    @property
    def utterance_audio(self) -> bytes:
        """The current utterance's audio (from speech start minus the prefix padding) in the window."""
        if self.window is None:
            return b""
        skip = int(max(self.utt_start_ms - self.window.audio_start_ms, 0) * self.rate / 1000) * 2
        return bytes(self.window.audio[skip:])

    def open_window(self) -> None:
        """Start a listening window: a new turn id, a new trace, a new VAD stream."""
        turn_id = uuid.uuid4().hex[:12]
        span = tracer().start_span("turn", context=otel_context.Context(),
                                   attributes={"stepaudio.session_id": self.id, "stepaudio.turn_id": turn_id})
        self.window = _Window(self, turn_id, span, self.in_ms)

    def close_window(self, end_span: bool) -> None:
        if self.window is not None:
            self.window.close(end_span)
            self.window = None

    async def on_text(self, text: str) -> None:
        if not text.strip():
            self.error(grpc.StatusCode.INVALID_ARGUMENT, "text input is empty: send the words of the user's turn")
            return
        self.interrupt_replies(None, "text input")
        turn_id = uuid.uuid4().hex[:12]
        span = tracer().start_span("turn", context=otel_context.Context(),
                                   attributes={"stepaudio.session_id": self.id, "stepaudio.turn_id": turn_id,
                                               "stepaudio.input": "text"})
        reply = Reply(turn_id, trace.set_span_in_context(span), time.monotonic(), user_text=text)
        reply.endpoint_wall = reply.speech_end_wall
        self.start_reply(reply, asr=None, audio=b"", span=span)
        self.commit(reply)

    def on_interrupt(self, played_ms: int) -> None:
        self.interrupt_replies(played_ms or None, "client interrupt")

    async def on_feedback(self, fb: pb.Feedback) -> None:
        if fb.rating and not 1 <= fb.rating <= 5:
            self.error(grpc.StatusCode.INVALID_ARGUMENT, f"rating={fb.rating}: use 1 (bad) to 5 (good), or 0")
            return
        if self.convlog is not None:
            self.convlog.feedback(session_id=self.id, turn_id=fb.turn_id, rating=fb.rating,
                                  thumbs={1: "up", -1: "down"}.get(fb.thumbs, ""), regenerate=fb.regenerate,
                                  comment=fb.comment, consent=self.config.consent)
        if fb.regenerate and self.last_turn_user_text:
            # Drop the last exchange from history and answer the same user text again.
            hist = self.stored.history
            if len(hist) >= 2 and hist[-1]["role"] == "assistant":
                del hist[-2:]
            await self.on_text(self.last_turn_user_text)

    def on_playback(self, pos: pb.PlaybackPosition) -> None:
        for r in self.replies:
            if r.turn_id == pos.turn_id and r.play_start:
                # Re-anchor the playback clock on the client's report.
                r.play_start = time.monotonic() - pos.played_ms / 1000 - r.paused_total

    async def end_of_input(self) -> None:
        """The client half-closed: whatever the user said so far is the turn; wait for the replies."""
        if self.window is not None:
            await self.window.finish()
        if self.state in (State.USER_SPEAKING, State.USER_PAUSED):
            self.endpoint(self.pause_at_ms if self.pause_at_ms >= 0 else self.in_ms, reopen=False)
        self.close_window(end_span=True)
        while self._reply_tasks:
            await asyncio.gather(*list(self._reply_tasks), return_exceptions=True)

    # ---- VAD-driven controller ------------------------------------------------------------------------------

    def _playing(self) -> Reply | None:
        if self.state in (State.BOT_REPLYING, State.SILENCE):
            return next((r for r in self.replies if r.committed.is_set() and r.task and not r.task.done()), None)
        return None

    def pause_reply(self, reply: Reply) -> None:
        if not reply.paused_since:
            reply.paused_since = time.monotonic()
        reply.resume.clear()

    def on_speech_frame(self, offset_ms: float) -> None:
        """A single frame above the start threshold while the bot talks: hold the audio at once (barge-in)."""
        if self.barge is None and self.tentative is None:
            active = self._playing()
            if active is not None:
                self.pause_reply(active)
                self.tentative = (active, offset_ms)

    def on_speech_started(self, offset_ms: float) -> None:
        self.tentative = None
        active = self._playing()
        if active is not None and self.barge is None:
            self.pause_reply(active)
            self.barge = (active, offset_ms)
        if self.state == State.USER_PAUSED:
            # The user resumed before the endpoint: drop the speculative reply, keep transcribing the utterance.
            if self.pending is not None:
                self.discard(self.pending)
            self.state = State.USER_SPEAKING
            self.pause_at_ms = -1
            self.restart_asr()
            return
        if self.state in (State.SILENCE, State.BOT_REPLYING):
            self.state = State.USER_SPEAKING
            assert self.window is not None
            self.utt_start_ms = max(offset_ms - self.params.prefix_padding_ms, self.window.audio_start_ms)
            self.emit(pb.ConverseResponse(speech_started=pb.SpeechStarted(audio_offset_ms=int(offset_ms))))
            self.restart_asr()

    def on_speech_stopped(self, offset_ms: float) -> None:
        if self.state != State.USER_SPEAKING:
            return
        if self.barge is not None:
            reply, start = self.barge
            if offset_ms - start < self.params.min_interruption_ms:
                # False interruption: too short to be a barge-in; resume the reply where it paused.
                _interruptions.add(1, {"kind": "false"})
                self.resume_reply(reply)
                self.barge = None
                self.state = State.BOT_REPLYING
                self.drop_utterance()
                return
        self.state = State.USER_PAUSED
        self.pause_at_ms = offset_ms
        if self.params.speculative:
            self.begin_reply(speculative=True)

    def on_progress(self, processed_ms: float) -> None:
        if self.tentative is not None:
            reply, at = self.tentative
            if processed_ms - at > self.params.min_speech_ms + 150:
                # The frame did not grow into speech: noise. Play on.
                self.tentative = None
                self.resume_reply(reply)
        if self.barge is not None and self.state == State.USER_SPEAKING:
            reply, start = self.barge
            if processed_ms - start >= self.params.min_interruption_ms:
                self.barge = None
                _interruptions.add(1, {"kind": "true"})
                self.interrupt_replies(None, "barge-in", at_ms=start)
        # The endpoint needs endpoint_ms of silence since the pause AND since the last voiced frame: a resumption
        # that VAD has not confirmed yet (min_speech_ms) must not end the turn under the user.
        quiet_since = max(self.pause_at_ms, self.last_voice_ms)
        if self.state == State.USER_PAUSED and processed_ms >= quiet_since + self.params.endpoint_ms:
            self.endpoint(self.pause_at_ms)

    def endpoint(self, speech_end_ms: float, reopen: bool = True) -> None:
        """The user's turn is over: commit (or start) the reply and open the next listening window."""
        self.emit(pb.ConverseResponse(speech_stopped=pb.SpeechStopped(audio_offset_ms=int(speech_end_ms))))
        if self.pause_at_ms < 0:
            self.pause_at_ms = speech_end_ms
        reply = self.pending
        if reply is None:
            reply = self.begin_reply(speculative=False)
        self.pending = None
        if reply is not None:
            reply.endpoint_wall = time.monotonic()
            self.commit(reply)
        self.state = State.BOT_REPLYING
        self.barge = None
        self.asr = None
        self.pause_at_ms = -1
        self.close_window(end_span=False)  # the reply ends the turn's span
        if reopen:
            self.open_window()

    def restart_asr(self) -> None:
        if self.asr is not None:
            self.asr.cancel()
            self.asr = None
        if not self.settings.incremental_asr or self.window is None:
            return
        window = self.window

        def on_partial(resp: tokenizer_pb2.TranscribeResponse) -> None:
            if resp.text:
                self.emit(pb.ConverseResponse(transcript=pb.Transcript(
                    turn_id=window.turn_id, text=resp.text, is_final=False, confidence=resp.confidence)))

        with trace.use_span(window.span, end_on_exit=False):
            self.asr = AsrStream(self.stages, self.transcribe_config(partials=True), on_partial)
        self.asr.feed(self.utterance_audio)

    def drop_utterance(self) -> None:
        if self.asr is not None:
            self.asr.cancel()
            self.asr = None

    # ---- replies ----------------------------------------------------------------------------------------------

    def begin_reply(self, speculative: bool) -> Reply | None:
        assert self.window is not None
        window = self.window
        end_ms = self.pause_at_ms if self.pause_at_ms >= 0 else self.in_ms
        reply = Reply(window.turn_id, trace.set_span_in_context(window.span), self.wall_at(end_ms),
                      speculative=speculative, user_audio=self.utterance_audio)
        asr, self.asr = self.asr, None
        audio = self.utterance_audio if asr is None else b""
        if speculative:
            self.pending = reply
            # Keep feeding a fresh ASR stream in case the user resumes (restart_asr re-reads the utterance).
        self.start_reply(reply, asr, audio, window.span)
        return reply

    def start_reply(self, reply: Reply, asr: AsrStream | None, audio: bytes, span: Any) -> None:
        task = asyncio.create_task(self.run_reply(reply, asr, audio, span))
        reply.task = task
        self._reply_tasks.add(task)
        task.add_done_callback(self._reply_tasks.discard)

    def commit(self, reply: Reply) -> None:
        reply.discards, reply.wasted_ms = self.window_discards, self.window_wasted_ms
        self.window_discards, self.window_wasted_ms = 0, 0.0
        if reply.speculative:
            _spec.add(1, {"outcome": "committed"})
        self.replies.append(reply)
        for ev in reply.held:
            self.emit(ev)
        reply.held.clear()
        reply.committed.set()
        reply.resume.set()

    def discard(self, reply: Reply) -> None:
        self.window_discards += 1
        self.window_wasted_ms += (time.monotonic() - reply.started_at) * 1000
        _spec.add(1, {"outcome": "discarded"})
        self.pending = None
        if reply.task is not None:
            reply.task.cancel()

    def resume_reply(self, reply: Reply) -> None:
        if reply.paused_since:
            reply.paused_total += time.monotonic() - reply.paused_since
            reply.paused_since = 0.0
        reply.resume.set()

    def interrupt_replies(self, played_ms: float | None, why: str, at_ms: float | None = None) -> None:
        for reply in list(self.replies):
            if reply.task is None or reply.task.done():
                continue
            played = reply.played_ms(time.monotonic()) if played_ms is None else float(played_ms)
            reply.outcome = pb.TURN_OUTCOME_INTERRUPTED
            reply.timings["played_ms"] = played
            reply.task.cancel()
            log.info("interrupted", turn_id=reply.turn_id, why=why, played_ms=round(played))

    def reply_emit(self, reply: Reply, event: pb.ConverseResponse) -> None:
        if reply.committed.is_set():
            self.emit(event)
        else:
            reply.held.append(event)

    async def run_reply(self, reply: Reply, asr: AsrStream | None, audio: bytes, span: Any) -> None:
        token = otel_context.attach(reply.span_ctx)
        t0 = time.monotonic()
        try:
            with tracer().start_as_current_span("reply", attributes={"stepaudio.speculative": reply.speculative}):
                if not reply.user_text:
                    if asr is not None:
                        final = await asr.finish()
                    else:
                        final = await self.transcribe_once(audio)
                    reply.user_text, reply.confidence = final.text.strip(), final.confidence
                    reply.timings["asr_ms"] = (time.monotonic() - t0) * 1000
                    self.reply_emit(reply, pb.ConverseResponse(transcript=pb.Transcript(
                        turn_id=reply.turn_id, text=reply.user_text, is_final=True, confidence=reply.confidence)))
                    if not reply.user_text:
                        reply.outcome = pb.TURN_OUTCOME_COMPLETED
                        return
                await self.generate_and_speak(reply)
        except asyncio.CancelledError:
            if reply.outcome != pb.TURN_OUTCOME_INTERRUPTED:
                reply.outcome = -1  # discarded speculation: nothing to report
        except grpc.aio.AioRpcError as e:
            reply.outcome = pb.TURN_OUTCOME_FAILED
            self.reply_emit(reply, pb.ConverseResponse(error=pb.Error(
                code=e.code().name, message=f"turn failed: {e.details()}", turn_id=reply.turn_id)))
            log.warning("turn failed", turn_id=reply.turn_id, code=e.code().name, details=e.details())
        except Exception as e:  # noqa: BLE001 - one failed turn must not end the session
            reply.outcome = pb.TURN_OUTCOME_FAILED
            self.reply_emit(reply, pb.ConverseResponse(error=pb.Error(
                code="INTERNAL", message=f"turn failed: {e!r}", turn_id=reply.turn_id)))
            log.exception("turn failed", turn_id=reply.turn_id)
        finally:
            otel_context.detach(token)
            if reply.outcome != -1:
                await reply.committed.wait()  # a speculative reply reports only once committed
                await self.finish_turn(reply, t0)
                if span is not None:
                    span.end()
            if reply in self.replies:
                self.replies.remove(reply)
            if not self.replies and self.state == State.BOT_REPLYING:
                self.state = State.SILENCE

    def transcribe_config(self, partials: bool) -> tokenizer_pb2.TranscribeConfig:
        interval = self.settings.partial_interval_ms if partials else 0
        return tokenizer_pb2.TranscribeConfig(
            format=audio_pb2.AudioFormat(sample_rate_hz=self.rate), language=self.config.language,
            partial_results=interval > 0, partial_interval_ms=interval, full_window=self.settings.asr_full_window)

    async def transcribe_once(self, audio: bytes) -> tokenizer_pb2.TranscribeResponse:
        async def requests() -> AsyncIterator[tokenizer_pb2.TranscribeRequest]:
            yield tokenizer_pb2.TranscribeRequest(config=self.transcribe_config(partials=False))
            for i in range(0, len(audio), 64000):
                yield tokenizer_pb2.TranscribeRequest(audio=audio_pb2.AudioChunk(data=audio[i:i + 64000]))

        final = None
        async for resp in self.stages.tokenizer.Transcribe(requests()):
            if resp.is_final:
                final = resp
        if final is None:
            raise RuntimeError("no final transcript")
        return final

    def messages(self, user_text: str) -> list[llm_pb2.ChatMessage]:
        roles = {"user": llm_pb2.ROLE_USER, "assistant": llm_pb2.ROLE_ASSISTANT}
        msgs = [llm_pb2.ChatMessage(role=llm_pb2.ROLE_SYSTEM, content=[llm_pb2.ContentPart(
            text=self.config.system_prompt or self.settings.system_prompt)])]
        for m in self.stored.history[-self.settings.max_history_messages:]:
            msgs.append(llm_pb2.ChatMessage(role=roles[m["role"]], content=[llm_pb2.ContentPart(text=m["text"])]))
        msgs.append(llm_pb2.ChatMessage(role=llm_pb2.ROLE_USER, content=[llm_pb2.ContentPart(text=user_text)]))
        return msgs

    async def generate_and_speak(self, reply: Reply) -> None:
        text_q: asyncio.Queue[tts_pb2.TextPiece | None] = asyncio.Queue()

        async def tts_requests() -> AsyncIterator[tts_pb2.SynthesizeStreamRequest]:
            yield tts_pb2.SynthesizeStreamRequest(config=tts_pb2.SynthesisConfig(
                voice=self.config.voice, style=self.config.style, sample_rate_hz=self.out_rate))
            while (piece := await text_q.get()) is not None:
                yield tts_pb2.SynthesizeStreamRequest(text=piece)

        tts_call = self.stages.tts.SynthesizeStream(tts_requests())
        speaker = asyncio.create_task(self.speak(reply, tts_call))
        t_text = 0.0
        first_flushed = self.settings.first_phrase_words <= 0
        try:
            messages = self.messages(reply.user_text)
            for _round in range(self.settings.max_tool_rounds + 1):
                calls: list[llm_pb2.ToolCall] = []
                t_llm = time.monotonic()
                request = llm_pb2.GenerateRequest(
                    messages=messages, tools=self.tools, session_id=self.id,
                    sampling=llm_pb2.SamplingParams(max_tokens=self.config.max_reply_tokens or
                                                    self.settings.max_reply_tokens,
                                                    greedy=self.settings.greedy,
                                                    temperature=self.settings.temperature,
                                                    repetition_penalty=self.settings.repetition_penalty))
                round_text = ""
                async for r in self.stages.llm.Generate(request):
                    kind = r.WhichOneof("event")
                    if kind == "text_delta" and r.text_delta:
                        if "llm_first_token_ms" not in reply.timings:
                            reply.timings["llm_first_token_ms"] = (time.monotonic() - t_llm) * 1000
                        if not t_text:
                            t_text = time.monotonic()
                            reply.timings.setdefault("_tts_start", t_text)
                        if (not first_flushed and r.text_delta[:1].isspace()
                                and self._first_phrase_ready(reply.text)):
                            # A word just ended: speak the opening words now rather than wait for the sentence.
                            text_q.put_nowait(tts_pb2.TextPiece(flush=True))
                            first_flushed = True
                        round_text += r.text_delta
                        reply.text += r.text_delta
                        text_q.put_nowait(tts_pb2.TextPiece(text=r.text_delta))
                        self.reply_emit(reply, pb.ConverseResponse(reply_text_delta=pb.ReplyTextDelta(
                            turn_id=reply.turn_id, delta=r.text_delta)))
                    elif kind == "tool_call":
                        calls.append(r.tool_call)
                    elif kind == "finish":
                        reply.timings["llm_completion_tokens"] = r.finish.usage.completion_tokens
                if not calls:
                    break
                messages.append(llm_pb2.ChatMessage(role=llm_pb2.ROLE_ASSISTANT, tool_calls=calls,
                                                    content=[llm_pb2.ContentPart(text=round_text)] if round_text
                                                    else []))
                if self.settings.tool_filler:
                    text_q.put_nowait(tts_pb2.TextPiece(text=" " + self.settings.tool_filler + " ", flush=True))
                results = await asyncio.gather(*(self.run_tool(reply, c) for c in calls))
                for call, result in zip(calls, results, strict=True):
                    messages.append(llm_pb2.ChatMessage(role=llm_pb2.ROLE_TOOL, tool_call_id=call.id,
                                                        content=[llm_pb2.ContentPart(text=result)]))
            text_q.put_nowait(None)
            await speaker
        finally:
            if not speaker.done():
                speaker.cancel()
                tts_call.cancel()
                with contextlib.suppress(BaseException):
                    await speaker

    def _first_phrase_ready(self, text: str) -> bool:
        """Whether the reply's opening words (complete words only) can be spoken: a clause ended, or enough words."""
        words = text.split()
        return bool(words) and (words[-1][-1] in ",;:.!?" or len(words) >= self.settings.first_phrase_words)

    async def run_tool(self, reply: Reply, call: llm_pb2.ToolCall) -> str:
        call_id = call.id or uuid.uuid4().hex[:8]
        self.reply_emit(reply, pb.ConverseResponse(tool_call_started=pb.ToolCallStarted(
            turn_id=reply.turn_id, call_id=call_id, name=call.name, arguments_json=call.arguments_json)))
        t0 = time.monotonic()
        result_json, error = "", ""
        spec = self.stages.tool_specs.get(call.name)
        try:
            if call.name not in {t.name for t in self.tools} or spec is None:
                raise InvalidArgument(f"tool {call.name!r} is not allowed in this session")
            timeout = max(self.settings.tool_timeout_s, spec.default_timeout.ToMilliseconds() / 1000)
            execute = asyncio.ensure_future(self.stages.tools.ExecuteTool(
                tools_pb2.ExecuteToolRequest(name=call.name, arguments_json=call.arguments_json, call_id=call_id),
                timeout=timeout))
            if spec.survives_interruption:
                # A barge-in cancels the reply but not this call; its result joins the history when it arrives.
                self.background.add(execute)
                try:
                    resp = await asyncio.shield(execute)
                except asyncio.CancelledError:
                    execute.add_done_callback(lambda f: self._late_tool_result(f, call.name))
                    raise
                finally:
                    if execute.done():
                        self.background.discard(execute)
            else:
                resp = await execute
            result_json = resp.result_json
        except grpc.aio.AioRpcError as e:
            error = f"{e.code().name}: {e.details()}"
        except InvalidArgument as e:
            error = e.message
        ms = (time.monotonic() - t0) * 1000
        self.reply_emit(reply, pb.ConverseResponse(tool_call_finished=pb.ToolCallFinished(
            turn_id=reply.turn_id, call_id=call_id, name=call.name, result_json=result_json, error=error,
            duration_ms=ms)))
        reply.tool_calls.append({"name": call.name, "arguments": call.arguments_json, "result": result_json,
                                 "error": error, "latency_ms": ms})
        return result_json or json.dumps({"error": error})

    def _late_tool_result(self, fut: asyncio.Future, name: str) -> None:
        self.background.discard(fut)
        if fut.cancelled() or fut.exception() is not None:
            return
        self.stored.history.append({"role": "assistant", "text": f"(result of {name}: {fut.result().result_json})"})

    async def speak(self, reply: Reply, tts_call: Any) -> None:
        """Send TTS audio to the client at real-time pace once the reply is committed."""
        lead = self.settings.output_lead_ms / 1000
        async for resp in tts_call:
            chunk = resp.chunk
            if chunk.WhichOneof("content") != "audio" or not chunk.audio.data:
                continue
            rate = chunk.sample_rate_hz
            if "tts_first_chunk_ms" not in reply.timings and "_tts_start" in reply.timings:
                reply.timings["tts_first_chunk_ms"] = (time.monotonic() - reply.timings["_tts_start"]) * 1000
            await reply.committed.wait()
            data = chunk.audio.data
            step = max(int(rate * 0.1) * 2, 2)  # 100 ms pieces, so a barge-in stops audio within one piece
            for i in range(0, len(data), step):
                piece = data[i:i + step]
                dur = len(piece) * 500.0 / rate
                while True:
                    await reply.resume.wait()
                    now = time.monotonic()
                    if not reply.play_start:
                        reply.play_start = now
                        reply.timings["time_to_first_audio_ms"] = (now - reply.speech_end_wall) * 1000
                    ahead = reply.sent_ms / 1000 - (now - reply.play_start - reply.paused_total)
                    if ahead <= lead:
                        break
                    await asyncio.sleep(min(ahead - lead, 0.05))
                reply.audio_out += piece
                reply.out_rate = rate
                if i == 0:
                    reply.phrases.append((chunk.text, reply.sent_ms, reply.sent_ms + len(data) * 500.0 / rate))
                self.emit(pb.ConverseResponse(audio_out=pb.AudioOut(
                    turn_id=reply.turn_id, text=chunk.text if i == 0 else "",
                    audio=audio_pb2.AudioChunk(data=piece, offset_ms=int(reply.sent_ms)))))
                reply.sent_ms += dur

    async def finish_turn(self, reply: Reply, t0: float) -> None:
        now = time.monotonic()
        interrupted = reply.outcome == pb.TURN_OUTCOME_INTERRUPTED
        played = reply.timings.get("played_ms", reply.sent_ms)
        spoken = reply.played_text(played) if interrupted else reply.text.strip()
        if reply.user_text:
            self.stored.history.append({"role": "user", "text": reply.user_text})
            if spoken:
                self.stored.history.append({"role": "assistant", "text": spoken})
            self.last_turn_user_text = reply.user_text
            try:
                await self.store.save(self.stored)
            except Exception:  # noqa: BLE001 - a store outage must not break the conversation
                log.exception("session store save failed")
        t = dict(reply.timings)
        t.pop("_tts_start", None)
        t.pop("played_ms", None)
        t.pop("llm_completion_tokens", None)
        if reply.endpoint_wall:
            t["endpoint_ms"] = (reply.endpoint_wall - reply.speech_end_wall) * 1000
        t["total_ms"] = (now - reply.speech_end_wall) * 1000
        if "time_to_first_audio_ms" in t:
            _ttfa.record(t["time_to_first_audio_ms"] / 1000, {"speculative": str(reply.speculative)})
        span = trace.get_current_span(reply.span_ctx)
        for k, v in t.items():
            span.set_attribute(f"stepaudio.{k}", v)
            _stage_hist.record(v / 1000, {"stage": k.removesuffix("_ms")})
        done = pb.TurnCompleted(turn_id=reply.turn_id, user_text=reply.user_text, reply_text=spoken,
                                outcome=reply.outcome, reply_audio_ms=int(reply.sent_ms),
                                speculative=reply.speculative, speculative_discards=reply.discards,
                                wasted_ms=reply.wasted_ms)
        for k, v in t.items():
            done.timings.add(name=k.removesuffix("_ms"), duration_ms=v)
        self.reply_emit(reply, pb.ConverseResponse(turn_completed=done))
        if self.convlog is not None and reply.user_text:
            from services.convlog import AudioClip

            self.convlog.turn_recorded(
                session_id=self.id, turn_id=reply.turn_id, user_transcript=reply.user_text,
                transcript_confidence=reply.confidence, reply_text=spoken, tool_calls=reply.tool_calls,
                user_audio=AudioClip(reply.user_audio, self.rate) if reply.user_audio else None,
                reply_audio=AudioClip(bytes(reply.audio_out), reply.out_rate) if reply.audio_out else None,
                interruption=(int(played), spoken) if interrupted else None,
                latencies={_LOG_LATENCY.get(k, k): int(v) for k, v in t.items()}, consent=self.config.consent,
                tenant=self.config.tenant or None)


class _Window:
    """One listening window: a VAD stream under the turn's span; events go to the session controller."""

    def __init__(self, session: Session, turn_id: str, span: Any, base_ms: float) -> None:
        self.s = session
        self.turn_id = turn_id
        self.span = span
        self.base_ms = base_ms
        self.audio = bytearray()
        self.audio_start_ms = base_ms
        self.queue: asyncio.Queue[bytes | None] = asyncio.Queue()
        self.closed = False
        p = session.params
        self.config = vad_pb2.DetectConfig(
            format=audio_pb2.AudioFormat(sample_rate_hz=session.rate), start_threshold=p.start_threshold,
            stop_threshold=p.stop_threshold, min_speech_ms=p.min_speech_ms, min_silence_ms=p.pause_ms,
            send_probabilities=True)
        with trace.use_span(span, end_on_exit=False):
            self.task = asyncio.create_task(self.run())

    def feed(self, data: bytes) -> None:
        if not self.closed:
            self.queue.put_nowait(data)

    async def requests(self) -> AsyncIterator[vad_pb2.StreamDetectRequest]:
        yield vad_pb2.StreamDetectRequest(config=self.config)
        while (data := await self.queue.get()) is not None:
            yield vad_pb2.StreamDetectRequest(audio=audio_pb2.AudioChunk(data=data))

    async def run(self) -> None:
        s = self.s
        try:
            async for resp in s.stages.vad.StreamDetect(self.requests()):
                if s.window is not self:
                    continue  # a closed window's late results
                threshold = s.params.start_threshold
                voiced = [fp.audio_offset_ms for fp in resp.probabilities if fp.probability >= threshold]
                if voiced:
                    s.on_speech_frame(self.base_ms + voiced[0])
                    s.last_voice_ms = self.base_ms + voiced[-1] + 32
                for ev in resp.events:
                    off = self.base_ms + ev.audio_offset_ms
                    if ev.type == vad_pb2.SPEECH_EVENT_TYPE_STARTED:
                        s.on_speech_started(off)
                    else:
                        s.on_speech_stopped(off)
                if s.window is self:
                    s.on_progress(self.base_ms + resp.audio_processed_ms)
        except asyncio.CancelledError:
            raise
        except grpc.aio.AioRpcError as e:
            if e.code() != grpc.StatusCode.CANCELLED:
                s.error(e.code(), f"voice activity detection failed: {e.details()}", self.turn_id)
                log.warning("vad stream failed", code=e.code().name, details=e.details())

    async def finish(self) -> None:
        """Half-close the VAD stream and process what it still reports."""
        if not self.closed:
            self.closed = True
            self.queue.put_nowait(None)
        with contextlib.suppress(BaseException):
            await asyncio.wait_for(self.task, 10)

    def close(self, end_span: bool) -> None:
        if not self.closed:
            self.closed = True
            self.queue.put_nowait(None)
        if end_span:
            self.span.end()


def validate_config(config: pb.SessionConfig, stages: Stages) -> None:
    """Check a SessionConfig; raises InvalidArgument / NotFound with what to fix."""
    from services.kit.errors import NotFound
    from services.tts.style import parse_style

    fmt = config.input_format
    rate = fmt.sample_rate_hz or 16000
    if rate not in SUPPORTED_RATES:
        raise InvalidArgument(f"input_format.sample_rate_hz={rate} is not supported; use one of "
                              f"{', '.join(map(str, SUPPORTED_RATES))}")
    if fmt.encoding not in (0, audio_pb2.AUDIO_ENCODING_LINEAR_PCM16) or fmt.channels not in (0, 1):
        raise InvalidArgument("input_format: send mono AUDIO_ENCODING_LINEAR_PCM16")
    out = config.output_format.sample_rate_hz
    if out and out not in SUPPORTED_RATES:
        raise InvalidArgument(f"output_format.sample_rate_hz={out} is not supported; use 0 (native 22050) or one "
                              f"of {', '.join(map(str, SUPPORTED_RATES))}")
    if config.voice and stages.voices and config.voice not in stages.voices:
        raise NotFound(f"unknown voice {config.voice!r}; available voices: {', '.join(sorted(stages.voices))}")
    for name in config.allowed_tools:
        if name != "*" and name not in stages.tool_specs:
            raise NotFound(f"unknown tool {name!r} in allowed_tools; registered tools: "
                           f"{', '.join(sorted(stages.tool_specs)) or 'none'}")
    parse_style(config.style)
    if config.max_reply_tokens < 0:
        raise InvalidArgument("max_reply_tokens must not be negative")
