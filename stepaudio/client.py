"""Client SDK for ConversationService: stream audio or text in, collect transcripts, reply text, audio, timings.

    result = asyncio.run(converse_file("127.0.0.1:50051", "question.wav"))
    print(result.transcript, result.reply_text, result.timings)

    async for event in conv.events():          # typed events as they arrive (Transcript, Audio, TurnDone, ...)
        ...
    conv = await conv.resume(new_channel)      # after a dropped connection: same session, history kept

    with SyncConversation("127.0.0.1:50051", session_config(16000)) as conv:   # no asyncio needed
        conv.send_text("What is the capital of France?")
        turn = conv.wait_turn()

Only grpcio and the generated ``stepaudio.*.v1`` code are needed (no server dependencies).
"""

from __future__ import annotations

import asyncio
import time
import wave
from collections.abc import AsyncIterator, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import grpc

from stepaudio.common.v1 import audio_pb2
from stepaudio.conversation.v1 import conversation_pb2 as pb
from stepaudio.conversation.v1 import conversation_pb2_grpc

SUPPORTED_RATES = (8000, 16000, 22050, 24000, 44100, 48000)


@dataclass
class Turn:
    """Everything the server said about one turn."""

    turn_id: str = ""
    transcript: str = ""
    partials: list[str] = field(default_factory=list)
    reply_text: str = ""
    audio: bytearray = field(default_factory=bytearray)
    timings: dict[str, float] = field(default_factory=dict)
    tool_calls: list[pb.ToolCallFinished] = field(default_factory=list)
    outcome: str = ""
    spoken_text: str = ""
    first_audio_at: float = 0.0


@dataclass
class SessionResult:
    """The outcome of a Converse session."""

    session_id: str = ""
    sample_rate_hz: int = 22050
    turns: list[Turn] = field(default_factory=list)
    errors: list[pb.Error] = field(default_factory=list)
    events: list[pb.ConverseResponse] = field(default_factory=list)

    @property
    def last(self) -> Turn:
        return self.turns[-1] if self.turns else Turn()

    @property
    def transcript(self) -> str:
        return self.last.transcript

    @property
    def reply_text(self) -> str:
        return self.last.reply_text

    @property
    def audio(self) -> bytes:
        return bytes(self.last.audio)

    @property
    def timings(self) -> dict[str, float]:
        return self.last.timings


def read_wav(path: str | Path) -> tuple[bytes, int]:
    """PCM16 mono bytes and rate of a WAV file (first channel of a stereo file)."""
    with wave.open(str(path), "rb") as w:
        if w.getsampwidth() != 2:
            raise ValueError(f"{path}: only 16-bit PCM WAV files are supported")
        rate, channels, frames = w.getframerate(), w.getnchannels(), w.readframes(w.getnframes())
    if channels > 1:
        import numpy as np

        frames = np.frombuffer(frames, "<i2").reshape(-1, channels)[:, 0].tobytes()
    if rate not in SUPPORTED_RATES:
        raise ValueError(f"{path}: {rate} Hz is not supported; convert to one of {SUPPORTED_RATES}")
    return frames, rate


def write_wav(path: str | Path, pcm: bytes, rate: int) -> None:
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(pcm)


def session_config(rate: int = 16000, **kwargs: object) -> pb.SessionConfig:
    """A SessionConfig for PCM16 mono input at ``rate``; kwargs set other fields (voice, allowed_tools, ...)."""
    td = kwargs.pop("turn_detection", None)
    cfg = pb.SessionConfig(input_format=audio_pb2.AudioFormat(sample_rate_hz=rate), **kwargs)  # type: ignore[arg-type]
    if td is not None:
        cfg.turn_detection.CopyFrom(td)  # type: ignore[arg-type]
    return cfg


@dataclass(frozen=True)
class SpeechStarted:
    offset_ms: int


@dataclass(frozen=True)
class SpeechStopped:
    offset_ms: int


@dataclass(frozen=True)
class TranscriptEvent:
    turn_id: str
    text: str
    final: bool


@dataclass(frozen=True)
class ReplyText:
    turn_id: str
    delta: str


@dataclass(frozen=True)
class AudioEvent:
    turn_id: str
    pcm: bytes
    offset_ms: int


@dataclass(frozen=True)
class ToolCall:
    turn_id: str
    name: str
    arguments_json: str
    result_json: str | None  # None: started, not finished yet


@dataclass(frozen=True)
class TurnDone:
    turn_id: str
    outcome: str  # TURN_OUTCOME_COMPLETED | _INTERRUPTED | _FAILED
    user_text: str
    reply_text: str
    timings: dict[str, float]


@dataclass(frozen=True)
class ErrorEvent:
    code: str
    message: str
    turn_id: str


Event = SpeechStarted | SpeechStopped | TranscriptEvent | ReplyText | AudioEvent | ToolCall | TurnDone | ErrorEvent


def typed(ev: pb.ConverseResponse) -> Event | None:
    """The typed form of one ConverseResponse (None for session_started, which fills ``result``)."""
    kind = ev.WhichOneof("event")
    if kind == "speech_started":
        return SpeechStarted(ev.speech_started.audio_offset_ms)
    if kind == "speech_stopped":
        return SpeechStopped(ev.speech_stopped.audio_offset_ms)
    if kind == "transcript":
        return TranscriptEvent(ev.transcript.turn_id, ev.transcript.text, ev.transcript.is_final)
    if kind == "reply_text_delta":
        return ReplyText(ev.reply_text_delta.turn_id, ev.reply_text_delta.delta)
    if kind == "audio_out":
        return AudioEvent(ev.audio_out.turn_id, bytes(ev.audio_out.audio.data), ev.audio_out.audio.offset_ms)
    if kind == "tool_call_started":
        t = ev.tool_call_started
        return ToolCall(t.turn_id, t.name, t.arguments_json, None)
    if kind == "tool_call_finished":
        f = ev.tool_call_finished
        return ToolCall(f.turn_id, f.name, "", f.result_json)
    if kind == "turn_completed":
        tc = ev.turn_completed
        return TurnDone(tc.turn_id, pb.TurnOutcome.Name(tc.outcome), tc.user_text, tc.reply_text,
                        {x.name: x.duration_ms for x in tc.timings})
    if kind == "error":
        return ErrorEvent(ev.error.code, ev.error.message, ev.error.turn_id)
    return None


class Conversation:
    """A live Converse stream: ``send_*`` to talk, events are collected into ``result`` and offered typed by
    :meth:`events`."""

    def __init__(self, channel: grpc.aio.Channel, config: pb.SessionConfig, metadata: Sequence[tuple[str, str]] = ()):
        self.config, self.metadata = config, tuple(metadata)
        self._typed: asyncio.Queue[Event | None] = asyncio.Queue()
        self._queue: asyncio.Queue[pb.ConverseRequest | None] = asyncio.Queue()
        self._queue.put_nowait(pb.ConverseRequest(config=config))
        self.result = SessionResult()
        self.turn_done = asyncio.Condition()
        self._stub = conversation_pb2_grpc.ConversationServiceStub(channel)
        self._call = self._stub.Converse(self._requests(), metadata=tuple(metadata) or None)
        self._reader = asyncio.create_task(self._read())
        self.speech_started: list[float] = []
        self.arrivals: list[float] = []  # monotonic arrival time of each event in result.events

    async def _requests(self) -> AsyncIterator[pb.ConverseRequest]:
        while (msg := await self._queue.get()) is not None:
            yield msg

    def send_audio(self, pcm: bytes) -> None:
        self._queue.put_nowait(pb.ConverseRequest(audio=audio_pb2.AudioChunk(data=pcm)))

    def send_text(self, text: str) -> None:
        self._queue.put_nowait(pb.ConverseRequest(text=pb.TextInput(text=text)))

    def send(self, request: pb.ConverseRequest) -> None:
        self._queue.put_nowait(request)

    def close(self) -> None:
        """Half-close: the server finishes the current turn and ends the stream."""
        self._queue.put_nowait(None)

    def cancel(self) -> None:
        self._call.cancel()

    def _turn(self, turn_id: str) -> Turn:
        for t in reversed(self.result.turns):
            if t.turn_id == turn_id:
                return t
        t = Turn(turn_id=turn_id)
        self.result.turns.append(t)
        return t

    async def events(self) -> AsyncIterator[Event]:
        """Typed events as they arrive, until the stream ends (each event is delivered once)."""
        while (ev := await self._typed.get()) is not None:
            yield ev

    async def resume(self, channel: grpc.aio.Channel) -> Conversation:
        """A new stream on ``channel`` that continues this session (its history is kept by the server); use it
        after the connection dropped or the gateway was replaced."""
        if not self.result.session_id:
            raise RuntimeError("no session to resume: the server never confirmed one")
        self.cancel()
        config = pb.SessionConfig()
        config.CopyFrom(self.config)
        config.session_id = self.result.session_id
        return Conversation(channel, config, self.metadata)

    async def _read(self) -> None:
        try:
            await self._read_events()
        finally:
            self._typed.put_nowait(None)

    async def _read_events(self) -> None:
        r = self.result
        async for ev in self._call:
            r.events.append(ev)
            self.arrivals.append(time.monotonic())
            if (event := typed(ev)) is not None:
                self._typed.put_nowait(event)
            kind = ev.WhichOneof("event")
            if kind == "session_started":
                r.session_id = ev.session_started.session_id
                r.sample_rate_hz = ev.session_started.output_sample_rate_hz
            elif kind == "speech_started":
                self.speech_started.append(time.monotonic())
            elif kind == "transcript":
                t = self._turn(ev.transcript.turn_id)
                if ev.transcript.is_final:
                    t.transcript = ev.transcript.text
                else:
                    t.partials.append(ev.transcript.text)
            elif kind == "reply_text_delta":
                self._turn(ev.reply_text_delta.turn_id).reply_text += ev.reply_text_delta.delta
            elif kind == "tool_call_finished":
                self._turn(ev.tool_call_finished.turn_id).tool_calls.append(ev.tool_call_finished)
            elif kind == "audio_out":
                t = self._turn(ev.audio_out.turn_id)
                if not t.audio:
                    t.first_audio_at = time.monotonic()
                t.audio += ev.audio_out.audio.data
            elif kind == "turn_completed":
                tc = ev.turn_completed
                t = self._turn(tc.turn_id)
                t.timings = {x.name: x.duration_ms for x in tc.timings}
                t.outcome = pb.TurnOutcome.Name(tc.outcome)
                t.spoken_text = tc.reply_text
                if not t.transcript:
                    t.transcript = tc.user_text
                async with self.turn_done:
                    self.turn_done.notify_all()
            elif kind == "error":
                r.errors.append(ev.error)

    async def wait_turns(self, n: int, timeout: float = 60.0) -> None:
        """Wait until ``n`` turns have completed."""
        async def done() -> None:
            async with self.turn_done:
                await self.turn_done.wait_for(lambda: sum(1 for t in self.result.turns if t.outcome) >= n)

        await asyncio.wait_for(done(), timeout)

    async def finish(self, timeout: float = 120.0) -> SessionResult:
        """Half-close and wait for the server to end the stream; raises the stream's error status."""
        self.close()
        await asyncio.wait_for(self._reader, timeout)
        return self.result


class SyncConversation:
    """The same conversation for code without asyncio: a loop on a thread of its own runs the stream.

    ``send_audio``/``send_text``/``interrupt`` return at once; ``wait_turn`` blocks for the next completed turn;
    ``events`` yields typed events; ``close`` (or leaving the ``with`` block) ends the session.
    """

    def __init__(self, addr: str, config: pb.SessionConfig, metadata: Sequence[tuple[str, str]] = ()) -> None:
        import threading

        self.loop = asyncio.new_event_loop()
        threading.Thread(target=self.loop.run_forever, name="stepaudio-client", daemon=True).start()

        async def open_() -> tuple[grpc.aio.Channel, Conversation]:
            ch = grpc.aio.insecure_channel(addr)
            return ch, Conversation(ch, config, metadata)

        opened = self._run(open_())
        self._channel: grpc.aio.Channel = opened[0]  # type: ignore[index]
        self.conv: Conversation = opened[1]  # type: ignore[index]
        self._done = 0

    def _run(self, coro: object, timeout: float | None = None) -> object:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)  # type: ignore[arg-type]

    def send_audio(self, pcm: bytes) -> None:
        self.loop.call_soon_threadsafe(self.conv.send_audio, pcm)

    def send_text(self, text: str) -> None:
        self.loop.call_soon_threadsafe(self.conv.send_text, text)

    def interrupt(self) -> None:
        self.loop.call_soon_threadsafe(self.conv.send, pb.ConverseRequest(interrupt=pb.Interrupt()))

    def wait_turn(self, timeout: float = 120.0) -> Turn:
        """Block until one more turn completes; returns it."""
        self._done += 1
        self._run(self.conv.wait_turns(self._done, timeout))
        return [t for t in self.conv.result.turns if t.outcome][self._done - 1]

    def events(self, timeout: float = 120.0) -> Iterator[Event]:
        """Typed events as they arrive (blocking), until the stream ends."""
        it = self.conv.events().__aiter__()
        while True:
            try:
                yield self._run(anext(it), timeout)  # type: ignore[misc]
            except StopAsyncIteration:
                return

    @property
    def result(self) -> SessionResult:
        return self.conv.result

    def close(self, timeout: float = 120.0) -> SessionResult:
        try:
            return self._run(self.conv.finish(timeout), timeout + 5)  # type: ignore[return-value]
        finally:
            self._run(self._channel.close(), 10)
            self.loop.call_soon_threadsafe(self.loop.stop)

    def __enter__(self) -> SyncConversation:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


async def stream_audio(conv: Conversation, pcm: bytes, rate: int, chunk_ms: int = 20, realtime: bool = True) -> None:
    """Send ``pcm`` in ``chunk_ms`` chunks, paced at real time when ``realtime``."""
    step = rate * chunk_ms // 1000 * 2
    t0 = time.monotonic()
    for i, off in enumerate(range(0, len(pcm), step)):
        conv.send_audio(pcm[off:off + step])
        if realtime:
            delay = t0 + (i + 1) * chunk_ms / 1000 - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)


async def converse_file(
    addr: str, wav: str | Path, realtime: bool = False, timeout: float = 120.0, **config: object
) -> SessionResult:
    """Send a WAV file as one spoken turn and collect the reply."""
    pcm, rate = read_wav(wav)
    async with grpc.aio.insecure_channel(addr) as ch:
        conv = Conversation(ch, session_config(rate, **config))
        await stream_audio(conv, pcm, rate, realtime=realtime)
        if realtime:
            await conv.wait_turns(1, timeout)
        return await conv.finish(timeout)
