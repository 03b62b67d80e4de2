"""The per-session controller: maps turn decisions to reply operations; ``run_turn`` is one reply, top to bottom.

One ``Session`` per Converse stream. Input audio goes to a VAD stream (one per listening window, so each turn is
one trace) and, while the user speaks, to an incremental ASR stream. The turn detector (``turns.py``, pure) turns
VAD output into decisions; this module acts on them:

* at the pause a speculative reply starts with its output held back; the endpoint commits it; if the user resumes
  first it is cancelled everywhere and counted as discarded (without speculation the reply starts at the endpoint);
* reply audio leaves at real-time pace (``playout.py``), so a barge-in really stops it: a voiced frame during a
  reply holds its audio at once; speech longer than ``min_interruption_ms`` cancels the reply (gRPC cancellation
  reaches LLM, TTS and tools) and history keeps only the played part; shorter speech lets it play on.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import uuid
from collections.abc import AsyncGenerator
from dataclasses import dataclass
from typing import Any, TypeVar

import grpc
import numpy as np
import structlog
from opentelemetry import context as otel_context
from opentelemetry import trace

from services.gateway import report
from services.gateway.config import tool_definitions
from services.gateway.history import History
from services.gateway.listen import AsrStream, AudioBuffer, InputClock, TokenStream, VadStream, transcribe_once
from services.gateway.playout import Playout
from services.gateway.quotas import Quotas
from services.gateway.reply import Outcome, Reply, ToolRecord
from services.gateway.report import ConversationReport, Regeneration
from services.gateway.settings import GatewaySettings
from services.gateway.stages import Stages
from services.gateway.store import SessionStore, session_ref
from services.gateway.turns import (
    BargeIn,
    Decision,
    EndOfTurnModel,
    Endpoint,
    HoldReply,
    ResumeReply,
    State,
    TurnDetector,
    TurnParams,
    UserPaused,
    UserResumed,
    UserStarted,
    VadUpdate,
    pause_verdict,
)
from services.kit.errors import InvalidArgument, StageError
from services.kit.streams import queue_stream
from services.kit.telemetry import tracer
from stepaudio.common.v1 import audio_pb2, tokens_pb2
from stepaudio.conversation.v1 import conversation_pb2 as pb
from stepaudio.llm.v1 import llm_pb2
from stepaudio.tokenizer.v1 import tokenizer_pb2
from stepaudio.tools.v1 import tools_pb2
from stepaudio.tts.v1 import tts_pb2
from stepaudio.vad.v1 import vad_pb2

log = structlog.get_logger("stepaudio.gateway")
T = TypeVar("T")


def now() -> float:
    return asyncio.get_running_loop().time()


AUDIBLE = 0.01 * 32768  # a sample above -40 dBFS counts as heard


def first_audible(pcm: bytes) -> int | None:
    """Index of the first sample of PCM16 ``pcm`` above the audible level, None if it is all silence."""
    x = np.abs(np.frombuffer(pcm, dtype="<i2").astype(np.int32))
    loud = np.flatnonzero(x > AUDIBLE)
    return int(loud[0]) if loud.size else None


async def stall_guard(stream: AsyncGenerator[T, None], stall_s: float, stage: str) -> AsyncGenerator[T, None]:
    """``stream``, but a gap of more than ``stall_s`` between items ends it with DEADLINE_EXCEEDED."""
    async with contextlib.aclosing(stream):
        while True:
            try:
                async with asyncio.timeout(stall_s):  # not wait_for: on Python 3.11 it can swallow a cancel
                    item = await anext(stream)
            except StopAsyncIteration:
                return
            except TimeoutError:
                raise StageError(f"{stage}: nothing for {stall_s:g} s", grpc.StatusCode.DEADLINE_EXCEEDED) from None
            yield item


@dataclass
class Window:
    """One listening window: a turn id, the turn's span, and the VAD stream that listens for it."""

    turn_id: str
    span: Any
    vad: VadStream


# Words a phrase cannot end on without halting mid-thought (articles, prepositions, conjunctions, auxiliaries,
# possessives): the first phrase runs on to the next word instead.
_DANGLING = frozenset(
    "a an the of to in on at for with from by about into over under and or but nor so if than as that this these "
    "those is are was were be been am has have had do does did will would can could shall should may might must "
    "my your his her its our their not no very".split())


def first_phrase_ready(text: str, min_words: int) -> bool:
    """Whether a reply's opening words make a first phrase worth speaking now: a clause mark ends it, or it has
    ``min_words`` words and its last word can end a phrase ("Tokyo is currently", not "The capital of")."""
    words = text.split()
    if not words or min_words <= 0:
        return False
    if words[-1][-1] in ",;:.!?":
        return True
    return len(words) >= min_words and words[-1].lower().strip("\"'()") not in _DANGLING


class Speaker:
    """A reply's voice: text in as the LLM writes it, TTS audio out to the client at playback pace."""

    def __init__(self, session: Session, reply: Reply) -> None:
        self.s, self.reply = session, reply
        self._text = ""
        self._first_at = 0.0
        self._first_flushed = session.settings.first_phrase_words <= 0
        self._queue: asyncio.Queue[tts_pb2.TextPiece | None] = asyncio.Queue()
        self._owed_since: float | None = None  # text the TTS must speak now (flushed) has waited since then
        self._waiting_at: float | None = None  # the speaker has waited for the TTS's next chunk since then
        self._failure: StageError | None = None
        config = tts_pb2.SynthesisConfig(voice=session.config.voice, style=session.config.style,
                                         sample_rate_hz=session.out_rate)
        requests = queue_stream(tts_pb2.SynthesizeStreamRequest(config=config), self._queue,
                                lambda piece: tts_pb2.SynthesizeStreamRequest(text=piece))
        self._task = asyncio.create_task(self._play(session.stages.synthesize(requests)))
        self._watchdog = asyncio.create_task(self._watch(session.settings.stall_timeout_s))

    def _owe(self) -> None:
        if self._owed_since is None:
            self._owed_since = now()

    async def _watch(self, stall_s: float) -> None:
        """A TTS that owes audio for text it must speak and sends nothing for ``stall_s`` fails the reply."""
        while not self._task.done():
            await asyncio.sleep(min(stall_s / 4, 1.0))
            waiting, owed = self._waiting_at, self._owed_since
            if waiting is not None and owed is not None and now() - max(waiting, owed) > stall_s:
                self._failure = StageError(f"tts: no audio for {stall_s:g} s", grpc.StatusCode.DEADLINE_EXCEEDED)
                self._task.cancel()
                return

    def write(self, delta: str) -> None:
        """LLM text; the opening words go out as soon as a word ends and the first phrase is ready."""
        if not self._first_at:
            self._first_at = now()
        if not self._first_flushed and delta[:1].isspace() and self._first_phrase_ready():
            self._queue.put_nowait(tts_pb2.TextPiece(flush=True))
            self._first_flushed = True
            self._owe()
        self._text += delta
        self._queue.put_nowait(tts_pb2.TextPiece(text=delta))
        if delta.rstrip()[-1:] in (".", "!", "?"):
            self._owe()
            self._first_flushed = True  # a whole first sentence: the TTS speaks it; later text waits for sentences

    def say(self, text: str) -> None:
        """A whole phrase outside the LLM's text (the tool filler), spoken at once."""
        self._queue.put_nowait(tts_pb2.TextPiece(text=f" {text} ", flush=True))
        self._owe()

    def _first_phrase_ready(self) -> bool:
        return first_phrase_ready(self._text, self.s.settings.first_phrase_words)

    async def finish(self) -> None:
        """No more text: wait until all of it was spoken."""
        self._queue.put_nowait(None)
        self._owe()
        try:
            await asyncio.shield(self._task)
        except asyncio.CancelledError:
            if self._failure is not None:
                raise self._failure from None
            raise

    async def cancel(self) -> None:
        self._watchdog.cancel()
        self._task.cancel()
        with contextlib.suppress(BaseException):
            await self._task

    async def _play(self, responses: AsyncGenerator[tts_pb2.SynthesizeStreamResponse, None]) -> None:
        reply, playout = self.reply, self.reply.playout
        async with contextlib.aclosing(responses):
            while True:
                self._waiting_at = now()
                try:
                    resp = await anext(responses)
                except StopAsyncIteration:
                    return
                finally:
                    self._waiting_at = None
                chunk = resp.chunk
                if chunk.WhichOneof("content") != "audio" or not chunk.audio.data:
                    continue
                self._owed_since = None
                if reply.timings.tts_first_chunk_ms is None and self._first_at:
                    reply.timings.tts_first_chunk_ms = (now() - self._first_at) * 1000
                await reply.until_committed()
                data, rate = chunk.audio.data, chunk.sample_rate_hz
                for i, piece in enumerate(playout.pieces(data, rate)):
                    if await playout.wait_slot():
                        reply.timings.time_to_first_audio_ms = (now() - reply.speech_end_at) * 1000
                    offset = playout.sent(piece, rate, chunk.text if i == 0 else None, len(data))
                    if reply.timings.time_to_first_audible_ms is None and (at := first_audible(piece)) is not None:
                        # When that sample plays: the playback clock's start plus its offset in the reply.
                        reply.timings.time_to_first_audible_ms = (
                            (playout.started_at - reply.speech_end_at) * 1000 + offset + at * 1000.0 / rate)
                    self.s.emit(pb.ConverseResponse(audio_out=pb.AudioOut(
                        turn_id=reply.turn_id, text=chunk.text if i == 0 else "",
                        audio=audio_pb2.AudioChunk(data=piece, offset_ms=int(offset)))))


class Session:
    """Controller of one conversation session."""

    def __init__(self, session_id: str, config: pb.SessionConfig, params: TurnParams, history: History,
                 stages: Stages, store: SessionStore, settings: GatewaySettings, convlog: Any = None,
                 quotas: Quotas | None = None) -> None:
        self.id = session_id
        self.ref = session_ref(session_id)  # what logs, spans and other services see
        self.tenant = config.tenant or "default"
        self.quotas = quotas
        self._audio_unbilled_ms = 0.0
        self.config = config
        self.params = params
        self.history = history
        self.stages = stages
        self.store = store
        self.settings = settings
        self.rate = config.input_format.sample_rate_hz or 16000
        self.out_rate = config.output_format.sample_rate_hz or 0
        self.report = ConversationReport(convlog, self.ref, config, self.rate)
        self.turns = TurnDetector(params)
        self.out: asyncio.Queue[pb.ConverseResponse | None] = asyncio.Queue()
        self.input = InputClock(self.rate)
        self.buffer = AudioBuffer(self.rate)
        self.window: Window | None = None
        self.asr: AsrStream | None = None
        self.tokens: TokenStream | None = None  # the utterance's dual tokens (llm_input=audio_tokens)
        self.hears_tokens = settings.llm_input == "audio_tokens"
        self.utterance_start_ms = 0.0
        self.pending: Reply | None = None  # speculative reply not yet committed
        self.replies: list[Reply] = []  # committed replies still running (normally one)
        self.tasks: set[asyncio.Task] = set()  # every reply's task
        self.held: Reply | None = None  # reply whose audio a possible interruption holds
        self.discards, self.wasted_ms = 0, 0.0  # speculative replies discarded in this listening window
        self.background: set[asyncio.Future] = set()  # tool calls that survive a barge-in
        self.tools = tool_definitions(config, stages.tool_specs)
        self.regenerations: dict[str, Regeneration] = {}  # reply turn id -> the turn it answers again
        self.last_turn_id = ""
        self.started_at = now()
        self.overflowed = False
        self._vad_failed_at = -1e9  # when the last VAD stream failed (reopened at most once a second)
        self._eot_failed = False  # the end-of-turn model failed once in this session (said once)
        self.judges: set[asyncio.Task] = set()  # end-of-turn verdicts being computed
        self._prefill: asyncio.Task | None = None  # the LLM reading the words heard so far (one at a time)

    # ---- output -------------------------------------------------------------------------------------------

    def emit(self, event: pb.ConverseResponse) -> None:
        if self.overflowed:
            return
        if self.out.qsize() >= self.settings.max_pending_events:
            # The client stopped reading: end the session rather than hold its events without bound.
            self.overflowed = True
            self.out.put_nowait(None)
            return
        self.out.put_nowait(event)

    def error(self, code: grpc.StatusCode, message: str, turn_id: str = "") -> None:
        self.emit(pb.ConverseResponse(error=pb.Error(code=code.name, message=message, turn_id=turn_id)))

    # ---- input --------------------------------------------------------------------------------------------

    async def on_audio(self, chunk: audio_pb2.AudioChunk) -> None:
        data = chunk.data
        if not data:
            self.error(grpc.StatusCode.INVALID_ARGUMENT, "empty audio chunk ignored: send at least one PCM16 sample")
            return
        if len(data) % 2:
            self.error(grpc.StatusCode.INVALID_ARGUMENT,
                       f"audio chunk of {len(data)} bytes ignored: PCM16 needs an even number of bytes")
            return
        self.check_rate(len(data))
        if self.quotas is not None and self.quotas.audio_s_per_min:
            self._audio_unbilled_ms += len(data) * 500.0 / self.rate
            if self._audio_unbilled_ms >= 1000:  # charged a second at a time
                seconds, self._audio_unbilled_ms = self._audio_unbilled_ms / 1000, 0.0
                await self.quotas.audio(self.tenant, seconds)
        if self.window is None:
            if now() - self._vad_failed_at < 1.0:
                return  # the VAD just failed: its audio is not heard until the stream reopens
            self.open_window()
        assert self.window is not None
        self.input.arrived(len(data), now())
        if self.window.vad.stalled(now(), self.settings.stall_timeout_s):
            self.vad_failed(StageError(f"vad: no result for {self.settings.stall_timeout_s:g} s",
                                       grpc.StatusCode.DEADLINE_EXCEEDED), self.window.turn_id)
            return
        self.window.vad.feed(data)
        listening = self.turns.state in (State.USER_SPEAKING, State.USER_PAUSED)
        self.buffer.append(data, keep_silence=listening)
        if listening and self.asr is not None:
            self.asr.feed(data)
        if listening and self.tokens is not None:
            self.tokens.feed(data)
        if listening and self.input.ms - self.utterance_start_ms > self.settings.max_utterance_ms:
            self.end_turn_here(reopen=True)  # the longest utterance the gateway holds: the turn ends here

    def check_rate(self, nbytes: int) -> None:
        """Refuse audio that arrives faster than the real-time factor allows (after the burst)."""
        s = self.settings
        allowed_ms = s.max_audio_burst_ms + (now() - self.started_at) * 1000 * s.max_realtime_factor
        if self.input.ms + nbytes * 500.0 / self.rate > allowed_ms:
            raise StageError(f"audio arrives faster than {s.max_realtime_factor:g}x real time (more than "
                             f"{s.max_audio_burst_ms / 1000:g} s ahead): send it at real-time pace",
                             grpc.StatusCode.RESOURCE_EXHAUSTED)

    async def on_text(self, text: str, regeneration: Regeneration | None = None) -> None:
        if self.quotas is not None and regeneration is None:
            await self.quotas.request(self.tenant)
        if not text.strip():
            self.error(grpc.StatusCode.INVALID_ARGUMENT, "text input is empty: send the words of the user's turn")
            return
        if len(text) > self.settings.max_text_chars:
            self.error(grpc.StatusCode.INVALID_ARGUMENT, f"text input has {len(text)} characters; the limit is "
                       f"{self.settings.max_text_chars}")
            return
        self.interrupt_replies(None, "text input")
        turn_id = uuid.uuid4().hex[:12]
        span = tracer().start_span("turn", context=otel_context.Context(), attributes={
            "stepaudio.session_ref": self.ref, "stepaudio.turn_id": turn_id, "stepaudio.input": "text"})
        if regeneration is not None:
            self.regenerations[turn_id] = regeneration
        reply = Reply(turn_id, span, now(), Playout(self.settings.output_lead_ms), user_text=text,
                      started_at=now())
        reply.timings.endpoint_ms = 0.0
        self.start(reply, None, None, b"")
        self.commit(reply)

    def on_interrupt(self, played_ms: int) -> None:
        self.interrupt_replies(played_ms or None, "client interrupt")

    async def on_feedback(self, fb: pb.Feedback) -> None:
        if self.quotas is not None:
            await self.quotas.request(self.tenant)
        if fb.rating and not 1 <= fb.rating <= 5:
            self.error(grpc.StatusCode.INVALID_ARGUMENT, f"rating={fb.rating}: use 1 (bad) to 5 (good), or 0")
            return
        if len(fb.comment) > self.settings.max_text_chars:
            self.error(grpc.StatusCode.INVALID_ARGUMENT, f"feedback comment has {len(fb.comment)} characters; the "
                       f"limit is {self.settings.max_text_chars}")
            return
        if fb.thumbs not in (-1, 0, 1):
            self.error(grpc.StatusCode.INVALID_ARGUMENT, f"thumbs={fb.thumbs}: use 1 (up), -1 (down) or 0")
            return
        turn_id = fb.turn_id or self.last_turn_id  # no turn id: the last answered turn
        target = self.regenerations.get(turn_id, Regeneration(turn_id, 0))
        self.report.feedback(fb, target)
        if not fb.regenerate:
            return
        if fb.turn_id and fb.turn_id != self.last_turn_id:
            self.error(grpc.StatusCode.INVALID_ARGUMENT, f"regenerate: turn {fb.turn_id!r} is not the last "
                       f"answered turn ({self.last_turn_id or 'none yet'}); only the last one can be answered again")
            return
        user_text = self.history.drop_last_reply()
        if user_text:
            alternative = 1 + max((r.alternative_index for r in self.regenerations.values()
                                   if r.target_turn_id == target.target_turn_id), default=0)
            await self.on_text(user_text, Regeneration(target.target_turn_id, alternative))

    def on_playback(self, pos: pb.PlaybackPosition) -> None:
        for r in self.replies:
            if r.turn_id == pos.turn_id:
                r.playout.reanchor(pos.played_ms)

    async def end_of_input(self) -> None:
        """The client half-closed: whatever the user said so far is the turn; wait for the replies."""
        if self.window is not None:
            await self.window.vad.finish()
        self.end_turn_here(reopen=False)
        self.close_window(end_span=True)
        ends_at = now() + self.settings.end_of_input_timeout_s
        while self.tasks:
            _done, running = await asyncio.wait(list(self.tasks), timeout=max(ends_at - now(), 0.0))
            if running and now() >= ends_at:
                for task in running:  # a stuck stage or a lost cancel: say where, then end the session anyway
                    where = " > ".join(f"{f.f_code.co_name}:{f.f_lineno}" for f in task.get_stack())
                    log.error("reply still running at the end of input; cancelled", session=self.ref,
                              waited_s=self.settings.end_of_input_timeout_s, at=where)
                    task.cancel()
                await asyncio.wait(running, timeout=5.0)
                return

    async def close(self, reason: int) -> None:
        """The stream ended: stop listening and replying, log the session's end."""
        self.drop_asr()
        self.close_window(end_span=True)
        for task in [*self.tasks, *self.judges, *([self._prefill] if self._prefill else [])]:
            task.cancel()
        self.report.session_ended(reason, self.history.turns, (now() - self.started_at) * 1000)

    # ---- listening ------------------------------------------------------------------------------------------

    def open_window(self) -> None:
        """Start a listening window: a new turn id, a new trace, a new VAD stream."""
        turn_id = uuid.uuid4().hex[:12]
        span = tracer().start_span("turn", context=otel_context.Context(),
                                   attributes={"stepaudio.session_ref": self.ref, "stepaudio.turn_id": turn_id})
        p = self.params
        config = vad_pb2.DetectConfig(
            format=audio_pb2.AudioFormat(sample_rate_hz=self.rate), start_threshold=p.start_threshold,
            stop_threshold=p.stop_threshold, min_speech_ms=p.min_speech_ms, min_silence_ms=p.pause_ms,
            send_probabilities=True)

        with trace.use_span(span, end_on_exit=False):
            vad = VadStream(self.stages, config, self.input.ms, self.on_vad, lambda e: self.vad_failed(e, turn_id))
        self.buffer.reset(self.input.ms)
        self.window = Window(turn_id, span, vad)

    def vad_failed(self, e: StageError, turn_id: str) -> None:
        """The VAD stream failed or hung: say so once, drop the window; the next audio reopens it (a second on)."""
        if self.window is None or self.window.turn_id != turn_id:
            return
        if now() - self._vad_failed_at > 5.0:
            self.error(e.code, f"voice activity detection failed: {e.message}", turn_id)
        log.warning("vad stream failed", code=e.code.name, details=e.message)
        self._vad_failed_at = now()
        self.drop_asr()
        self.end_turn_here(reopen=False)  # what the user said so far is the turn
        self.close_window(end_span=True)

    def end_turn_here(self, reopen: bool) -> None:
        """No more audio for this turn: what the user said so far is it, and a reply held for a possible
        interruption is settled; ``reopen``: listen for the next turn."""
        for decision in self.turns.end_of_input(self.input.ms):
            if isinstance(decision, Endpoint):
                self.endpoint(decision.speech_end_ms, reopen=reopen)
            else:
                self.apply(decision)

    def close_window(self, end_span: bool) -> None:
        if self.window is not None:
            self.window.vad.close()
            if end_span:
                self.window.span.end()
            self.window = None

    def on_vad(self, update: VadUpdate) -> None:
        for decision in self.turns.on_vad(update, playing=self.playing() is not None):
            self.apply(decision)

    def apply(self, decision: Decision) -> None:
        """Act on one turn decision."""
        match decision:
            case HoldReply():
                if self.held is None and (active := self.playing()) is not None:
                    active.playout.hold()
                    self.held = active
            case ResumeReply(reason=reason):
                if self.held is not None:
                    self.held.playout.release()
                    self.held = None
                if reason == "false_interruption":
                    report.interruption("false")
                    self.drop_asr()
                if not self.replies:
                    self.turns.replies_done()
            case BargeIn():
                self.held = None
                report.interruption("true")
                self.interrupt_replies(None, "barge-in")
            case UserStarted(offset_ms=offset):
                self.utterance_start_ms = max(offset - self.params.prefix_padding_ms, self.buffer.start_ms)
                self.emit(pb.ConverseResponse(speech_started=pb.SpeechStarted(audio_offset_ms=int(offset))))
                self.restart_asr()
            case UserResumed():
                if self.pending is not None:
                    self.discard(self.pending)
                self.restart_asr()
            case UserPaused(offset_ms=offset):
                reply = self.begin_reply(offset, speculative=True) if self.params.speculative else None
                if isinstance(self.turns.policy, EndOfTurnModel):
                    self.judge_turn(self.turns.policy, offset, reply)
            case Endpoint(speech_end_ms=end):
                self.endpoint(end, reopen=True)

    def judge_turn(self, policy: EndOfTurnModel, pause_at_ms: float, reply: Reply | None) -> None:
        """Ask the end-of-turn models about the utterance up to this pause: the audio model on its sound, the text
        model on the transcript of the speculative ``reply`` (when there is one and a text model); the verdict
        reaches the policy, which the next VAD update consults (audio keeps arriving, so within a frame)."""
        # The model looks at the last 8 s only: send no more than that (plus a little) however long the utterance.
        audio = self.buffer.since(max(self.utterance_start_ms, self.input.ms - 8500))

        def failed(e: StageError, which: str) -> None:
            if not self._eot_failed:
                self._eot_failed = True
                self.error(e.code, f"{which}: {e.message}; the silence timer decides instead")

        async def by_sound() -> float | None:
            try:
                return await self.stages.end_of_turn(audio, self.rate)
            except StageError as e:
                failed(e, "end-of-turn model")
                return None

        async def by_words() -> float | None:
            if reply is None or not self.stages.reads_turn_text:
                return None
            await reply.heard.wait()  # the reply's transcript (set even when the reply ends without one)
            if not reply.user_text:
                return None
            # The reply's LLM reads its prompt first: on a small CPU the two would share the cores at that moment,
            # and the reply is what the user waits for. Its audio (a phrase of decoding, then the TTS) comes later
            # than this verdict, so the commit does not wait for it.
            await reply.prompt_read.wait()
            try:
                return await self.stages.end_of_turn_text(reply.user_text)
            except StageError as e:
                failed(e, "text end-of-turn model")
                return None

        async def judge() -> None:
            t0 = now()
            audio_p, text_p = await asyncio.gather(by_sound(), by_words())
            policy.judge(pause_at_ms, pause_verdict(audio_p, text_p, self.settings.end_of_turn_text_threshold,
                                                    policy.threshold))
            log.debug("end of turn judged", audio=audio_p, text=text_p, ms=round((now() - t0) * 1000, 1))
            for decision in self.turns.reconsider():
                self.apply(decision)

        policy.asked(pause_at_ms)
        task = asyncio.create_task(judge())
        self.judges.add(task)
        task.add_done_callback(self.judges.discard)

    def playing(self) -> Reply | None:
        return next((r for r in self.replies if r.committed.is_set() and r.running), None)

    def endpoint(self, speech_end_ms: float, reopen: bool) -> None:
        """The user's turn is over: commit (or start) the reply and open the next listening window."""
        self.emit(pb.ConverseResponse(speech_stopped=pb.SpeechStopped(audio_offset_ms=int(speech_end_ms))))
        reply = self.pending or self.begin_reply(speech_end_ms, speculative=False)
        self.pending = None
        reply.timings.endpoint_ms = (now() - reply.speech_end_at) * 1000
        self.commit(reply)
        self.asr = None
        self.close_window(end_span=False)  # the reply ends the turn's span
        if reopen:
            self.open_window()

    def transcribe_config(self, partials: bool) -> tokenizer_pb2.TranscribeConfig:
        interval = self.settings.partial_interval_ms if partials else 0
        return tokenizer_pb2.TranscribeConfig(
            format=audio_pb2.AudioFormat(sample_rate_hz=self.rate), language=self.config.language,
            partial_results=interval > 0, partial_interval_ms=interval, full_window=self.settings.asr_full_window)

    def restart_asr(self) -> None:
        """Fresh listening streams over the utterance so far: incremental ASR (partials go to the client) and, when
        the LLM hears audio, the Tokenize stream."""
        self.drop_asr()
        if self.hears_tokens:
            self.tokens = TokenStream(self.stages, self.rate)
            self.tokens.feed(self.buffer.since(self.utterance_start_ms))
        if not self.settings.incremental_asr or self.window is None:
            return
        window = self.window

        def on_partial(resp: tokenizer_pb2.TranscribeResponse) -> None:
            if resp.text:
                self.emit(pb.ConverseResponse(transcript=pb.Transcript(
                    turn_id=window.turn_id, text=resp.text, is_final=False, confidence=resp.confidence)))
                self.prefill(resp.text)

        with trace.use_span(window.span, end_on_exit=False):
            self.asr = AsrStream(self.stages, self.transcribe_config(partials=True), on_partial)
        self.asr.feed(self.buffer.since(self.utterance_start_ms))

    def prefill(self, words: str) -> None:
        """Have the LLM read the turn's prompt with the words heard so far (a partial transcript) while the user
        speaks: its prompt cache keeps what it read, so at the end of the turn only the last words are left to read
        (on a 2-core machine that takes the reply's first token from about 250 ms to about 100 ms). One at a
        time; a later partial replaces none that is running (the next one comes soon)."""
        if (not self.settings.llm_prefill_partials or self.hears_tokens or not words.strip()
                or (self._prefill is not None and not self._prefill.done())):
            return
        request = self.llm_request(llm_pb2.ContentPart(text=words.strip()), max_tokens=1)

        async def read() -> None:
            with contextlib.suppress(StageError):  # only a head start: the reply reads the prompt itself anyway
                async with contextlib.aclosing(self.stages.generate(request, self.settings.stall_timeout_s)) as events:
                    async for _ in events:
                        pass

        self._prefill = asyncio.create_task(read())

    def llm_request(self, user: llm_pb2.ContentPart, max_tokens: int = 0) -> llm_pb2.GenerateRequest:
        """The LLM request of a turn whose user message is ``user``: system prompt, history, tools, sampling."""
        s = self.settings
        messages = self.history.prompt(self.config.system_prompt or s.system_prompt, user, s.max_history_messages)
        sampling = llm_pb2.SamplingParams(max_tokens=max_tokens or self.config.max_reply_tokens or s.max_reply_tokens,
                                          greedy=s.greedy, temperature=s.temperature,
                                          repetition_penalty=s.repetition_penalty)
        return llm_pb2.GenerateRequest(messages=messages, tools=self.tools, session_id=self.ref, sampling=sampling)

    def drop_asr(self) -> None:
        if self.asr is not None:
            self.asr.cancel()
            self.asr = None
        if self.tokens is not None:
            self.tokens.cancel()
            self.tokens = None

    # ---- replies ------------------------------------------------------------------------------------------

    def begin_reply(self, speech_end_ms: float, speculative: bool) -> Reply:
        assert self.window is not None
        audio = self.buffer.since(self.utterance_start_ms)
        reply = Reply(self.window.turn_id, self.window.span, self.input.time_at(speech_end_ms, now()),
                      Playout(self.settings.output_lead_ms), speculative=speculative, user_audio=audio,
                      started_at=now())
        # The reply takes the listening streams; a resumption starts fresh ones over the whole utterance.
        asr, self.asr = self.asr, None
        tokens, self.tokens = self.tokens, None
        if speculative:
            self.pending = reply
        self.start(reply, asr, tokens, audio)
        return reply

    def start(self, reply: Reply, asr: AsrStream | None, tokens: TokenStream | None, audio: bytes) -> None:
        reply.task = asyncio.create_task(self.run_turn(reply, asr, tokens, audio))
        self.tasks.add(reply.task)
        reply.task.add_done_callback(self.tasks.discard)

    def commit(self, reply: Reply) -> None:
        reply.discards, reply.wasted_ms = self.discards, self.wasted_ms
        self.discards, self.wasted_ms = 0, 0.0
        if reply.speculative:
            report.speculation("committed")
        self.replies.append(reply)
        reply.commit(self.emit)

    def discard(self, reply: Reply) -> None:
        self.discards += 1
        self.wasted_ms += (now() - reply.started_at) * 1000
        report.speculation("discarded")
        self.pending = None
        reply.cancel(Outcome.DISCARDED)

    def interrupt_replies(self, played_ms: float | None, why: str) -> None:
        for reply in list(self.replies):
            if reply.running:
                reply.cancel(Outcome.INTERRUPTED, played_ms)
                log.info("interrupted", turn_id=reply.turn_id, why=why, played_ms=round(reply.played_ms_at_cut or 0))

    async def run_turn(self, reply: Reply, asr: AsrStream | None, tokens: TokenStream | None, audio: bytes) -> None:
        """One reply, top to bottom: hear the user, think (LLM and tools), speak (TTS at playback pace), report."""
        token = otel_context.attach(trace.set_span_in_context(reply.span))
        try:
            with tracer().start_as_current_span("reply", attributes={"stepaudio.speculative": reply.speculative}):
                if not reply.user_text and self.hears_tokens:
                    # The LLM hears the audio itself; the transcript (client, history, logs) is made meanwhile.
                    reply.transcribing = asyncio.create_task(self.hear(reply, asr, audio))
                    await self.tokenize(reply, tokens, audio)
                elif not reply.user_text:
                    await self.hear(reply, asr, audio)
                if reply.user_text or reply.user_tokens:
                    speaker = Speaker(self, reply)
                    try:
                        await self.think(reply, speaker)
                        await speaker.finish()
                    finally:
                        await speaker.cancel()
        except asyncio.CancelledError:
            if reply.transcribing is not None:
                reply.transcribing.cancel()
            if reply.outcome != Outcome.INTERRUPTED:
                reply.outcome = Outcome.DISCARDED  # a discarded speculation, or the session ended
        except StageError as e:
            reply.outcome = Outcome.FAILED
            reply.emit(pb.ConverseResponse(error=pb.Error(code=e.code.name, message=f"turn failed: {e.message}",
                                                          turn_id=reply.turn_id)), self.emit)
            log.warning("turn failed", turn_id=reply.turn_id, code=e.code.name, details=e.message)
        except Exception:  # noqa: BLE001 - one failed turn must not end the session
            reply.outcome = Outcome.FAILED
            reply.emit(pb.ConverseResponse(error=pb.Error(code="INTERNAL", message="turn failed: internal error "
                                                          "(see the gateway log)", turn_id=reply.turn_id)), self.emit)
            log.exception("turn failed", turn_id=reply.turn_id)
        finally:
            reply.heard.set()  # whoever waits for the transcript stops waiting (it may be empty)
            reply.prompt_read.set()
            otel_context.detach(token)
            await self.finish(reply)

    async def hear(self, reply: Reply, asr: AsrStream | None, audio: bytes) -> None:
        """The final transcript of the user's turn."""
        t0 = now()
        final_ = asr.finish() if asr is not None else transcribe_once(
            self.stages, self.transcribe_config(partials=False), audio)
        try:
            async with asyncio.timeout(self.settings.asr_timeout_s):
                final = await final_
        except TimeoutError:
            if asr is not None:
                asr.cancel()
            raise StageError(f"asr: no final transcript within {self.settings.asr_timeout_s:g} s",
                             grpc.StatusCode.DEADLINE_EXCEEDED) from None
        reply.user_text, reply.confidence = final.text.strip(), final.confidence
        reply.heard.set()
        reply.timings.asr_ms = (now() - t0) * 1000
        reply.emit(pb.ConverseResponse(transcript=pb.Transcript(
            turn_id=reply.turn_id, text=reply.user_text, is_final=True, confidence=reply.confidence)), self.emit)

    async def tokenize(self, reply: Reply, tokens: TokenStream | None, audio: bytes) -> None:
        """The user's turn as dual tokens: the stream that ran while they spoke, or one over the utterance now."""
        t0 = now()
        if tokens is None:
            tokens = TokenStream(self.stages, self.rate)
            tokens.feed(audio)
        try:
            async with asyncio.timeout(self.settings.asr_timeout_s):
                reply.user_tokens = await tokens.finish()
        except TimeoutError:
            tokens.cancel()
            raise StageError(f"tokenizer: no final tokens within {self.settings.asr_timeout_s:g} s",
                             grpc.StatusCode.DEADLINE_EXCEEDED) from None
        reply.timings.tokenize_ms = (now() - t0) * 1000

    async def think(self, reply: Reply, speaker: Speaker) -> None:
        """LLM rounds: text goes to the speaker as it is written; tool calls run, their results feed the next."""
        s = self.settings
        user = (llm_pb2.ContentPart(audio_tokens=tokens_pb2.AudioTokens(ids=reply.user_tokens))
                if reply.user_tokens else llm_pb2.ContentPart(text=reply.user_text))
        request = self.llm_request(user)
        t0 = now()
        for _round in range(s.max_tool_rounds + 1):
            calls: list[llm_pb2.ToolCall] = []
            round_text = ""
            async with contextlib.aclosing(stall_guard(self.stages.generate(request, s.llm_timeout_s),
                                                       s.stall_timeout_s, "llm")) as events:
                async for r in events:
                    reply.prompt_read.set()
                    kind = r.WhichOneof("event")
                    if kind == "text_delta" and r.text_delta:
                        if reply.timings.llm_first_token_ms is None:
                            reply.timings.llm_first_token_ms = (now() - t0) * 1000
                        speaker.write(r.text_delta)
                        round_text += r.text_delta
                        reply.text += r.text_delta
                        reply.emit(pb.ConverseResponse(reply_text_delta=pb.ReplyTextDelta(
                            turn_id=reply.turn_id, delta=r.text_delta)), self.emit)
                    elif kind == "tool_call":
                        calls.append(r.tool_call)
                    elif kind == "finish":
                        reply.completion_tokens += r.finish.usage.completion_tokens
            if not calls:
                break
            request.messages.append(llm_pb2.ChatMessage(role=llm_pb2.ROLE_ASSISTANT, tool_calls=calls, content=[
                llm_pb2.ContentPart(text=round_text)] if round_text else []))
            if s.tool_filler:
                speaker.say(s.tool_filler)
            results = await asyncio.gather(*(self.run_tool(reply, c) for c in calls))
            for call, result in zip(calls, results, strict=True):
                request.messages.append(llm_pb2.ChatMessage(role=llm_pb2.ROLE_TOOL, tool_call_id=call.id,
                                                            content=[llm_pb2.ContentPart(text=result)]))
        reply.timings.llm_total_ms = (now() - t0) * 1000

    async def run_tool(self, reply: Reply, call: llm_pb2.ToolCall) -> str:
        """One tool call, reported to the client; its result (or error) as JSON for the LLM."""
        call_id = call.id or uuid.uuid4().hex[:8]
        reply.emit(pb.ConverseResponse(tool_call_started=pb.ToolCallStarted(
            turn_id=reply.turn_id, call_id=call_id, name=call.name, arguments_json=call.arguments_json)), self.emit)
        t0 = now()
        result_json, error = "", ""
        spec = self.stages.tool_specs.get(call.name)
        try:
            if call.name not in {t.name for t in self.tools} or spec is None:
                raise InvalidArgument(f"tool {call.name!r} is not allowed in this session")
            timeout = max(self.settings.tool_timeout_s, spec.default_timeout.ToMilliseconds() / 1000)
            execute = asyncio.ensure_future(self.stages.execute_tool(tools_pb2.ExecuteToolRequest(
                name=call.name, arguments_json=call.arguments_json, call_id=call_id), timeout))
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
        except StageError as e:
            error = f"{e.code.name}: {e.message}"
        ms = (now() - t0) * 1000
        reply.emit(pb.ConverseResponse(tool_call_finished=pb.ToolCallFinished(
            turn_id=reply.turn_id, call_id=call_id, name=call.name, result_json=result_json, error=error,
            duration_ms=ms)), self.emit)
        reply.tool_calls.append(ToolRecord(call_id, call.name, call.arguments_json, result_json, error, ms))
        return result_json or json.dumps({"error": error})

    def _late_tool_result(self, fut: asyncio.Future, name: str) -> None:
        self.background.discard(fut)
        if not fut.cancelled() and fut.exception() is None:
            self.history.add_note(f"(result of {name}: {fut.result().result_json})")

    async def finish(self, reply: Reply) -> None:
        """Report a reply that ended: history, TurnCompleted, spans, metrics, conversation log."""
        try:
            if reply.outcome != Outcome.DISCARDED:
                await reply.until_committed()  # a speculative reply reports only once committed
                if reply.transcribing is not None:  # the transcript made beside the LLM call: history and logs
                    with contextlib.suppress(Exception):
                        await reply.transcribing
                reply.timings.total_ms = (now() - reply.speech_end_at) * 1000
                if reply.user_text:
                    self.history.add_exchange(reply.user_text, reply.spoken_text())
                    self.last_turn_id = reply.turn_id
                    try:
                        await self.store.save(self.history.stored)
                    except Exception:  # noqa: BLE001 - a store outage must not break the conversation
                        log.exception("session store save failed")
                self.emit(pb.ConverseResponse(turn_completed=report.turn_completed(reply)))
                self.report.turn(reply, self.regenerations.get(reply.turn_id))
                reply.span.end()
        finally:
            if reply in self.replies:
                self.replies.remove(reply)
            if self.held is reply:
                self.held = None
            if not self.replies:
                self.turns.replies_done()
