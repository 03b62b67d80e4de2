"""Listening: the session's input audio, its VAD stream (one per listening window) and its ASR stream.

Offsets are milliseconds of session input audio; ``InputClock`` maps them to the loop time at which that audio had
arrived (so a turn's latency counts from when the user really stopped, not from when VAD said so).
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
from collections.abc import AsyncGenerator, Callable

from services.gateway.stages import Stages
from services.gateway.turns import VadUpdate
from services.kit.errors import StageError
from services.kit.streams import queue_stream
from stepaudio.common.v1 import audio_pb2
from stepaudio.tokenizer.v1 import tokenizer_pb2
from stepaudio.vad.v1 import vad_pb2


class InputClock:
    """How much audio arrived, and when each part of it arrived."""

    def __init__(self, rate: int) -> None:
        self.rate = rate
        self.bytes = 0
        self._arrivals: list[tuple[float, float]] = []  # (end offset ms, loop time) per chunk

    @property
    def ms(self) -> float:
        return self.bytes * 500.0 / self.rate

    def arrived(self, nbytes: int, now: float) -> None:
        self.bytes += nbytes
        self._arrivals.append((self.ms, now))
        if len(self._arrivals) > 4096:
            del self._arrivals[:2048]

    def time_at(self, offset_ms: float, now: float) -> float:
        """Loop time at which input audio up to ``offset_ms`` had arrived (``now`` if it has not yet)."""
        i = bisect.bisect_left(self._arrivals, (offset_ms, 0.0))
        return self._arrivals[i][1] if i < len(self._arrivals) else now


class AudioBuffer:
    """The current listening window's audio, trimmed during long silences; read from an offset on."""

    def __init__(self, rate: int, start_ms: float = 0.0) -> None:
        self.rate = rate
        self.start_ms = start_ms
        self._data = bytearray()

    def reset(self, start_ms: float) -> None:
        self.start_ms, self._data = start_ms, bytearray()

    def append(self, data: bytes, keep_silence: bool) -> None:
        self._data += data
        if not keep_silence and len(self._data) > self.rate * 2 * 60:
            # A minute of silence: keep the last 10 s (VAD reports lag the audio a little).
            drop = len(self._data) - self.rate * 2 * 10
            del self._data[:drop]
            self.start_ms += drop * 500.0 / self.rate

    def since(self, offset_ms: float) -> bytes:
        skip = int(max(offset_ms - self.start_ms, 0) * self.rate / 1000) * 2
        return bytes(self._data[skip:])


class VadStream:
    """One listening window's VAD stream: audio in, :class:`VadUpdate` (session offsets) out via ``on_update``."""

    def __init__(self, stages: Stages, config: vad_pb2.DetectConfig, base_ms: float,
                 on_update: Callable[[VadUpdate], None], on_error: Callable[[StageError], None]) -> None:
        self.base_ms = base_ms
        self.start_threshold = config.start_threshold
        self.closed = False
        self._discard = False
        self._waiting_since: float | None = None
        self._queue: asyncio.Queue[bytes | None] = asyncio.Queue()
        requests = queue_stream(vad_pb2.StreamDetectRequest(config=config), self._queue,
                                lambda d: vad_pb2.StreamDetectRequest(audio=audio_pb2.AudioChunk(data=d)))
        self._responses: AsyncGenerator[vad_pb2.StreamDetectResponse, None] = stages.detect(requests)
        self._on_update, self._on_error = on_update, on_error
        self._task = asyncio.create_task(self._run())

    def feed(self, data: bytes) -> None:
        if not self.closed:
            self._queue.put_nowait(data)
            if self._waiting_since is None:
                self._waiting_since = asyncio.get_running_loop().time()

    def stalled(self, now: float, stall_s: float) -> bool:
        """Audio has waited more than ``stall_s`` for any result."""
        return self._waiting_since is not None and now - self._waiting_since > stall_s

    def update(self, resp: vad_pb2.StreamDetectResponse) -> VadUpdate:
        base = self.base_ms
        return VadUpdate(
            voiced_ms=[base + f.audio_offset_ms for f in resp.probabilities if f.probability >= self.start_threshold],
            events=[(e.type == vad_pb2.SPEECH_EVENT_TYPE_STARTED, base + e.audio_offset_ms) for e in resp.events],
            processed_ms=base + resp.audio_processed_ms, frame_ms=resp.frame_duration_ms or 32.0)

    async def _run(self) -> None:
        try:
            async with contextlib.aclosing(self._responses) as responses:
                async for resp in responses:
                    if self._discard:
                        break  # a closed window's late results
                    self._waiting_since = None
                    self._on_update(self.update(resp))
        except StageError as e:
            if not self._discard:
                self._on_error(e)

    def _half_close(self) -> None:
        if not self.closed:
            self.closed = True
            self._queue.put_nowait(None)

    async def finish(self, timeout_s: float = 10.0) -> None:
        """Half-close and process what the detector still reports (end of input)."""
        self._half_close()
        try:
            await asyncio.wait_for(asyncio.shield(self._task), timeout_s)
        except TimeoutError:
            self._task.cancel()

    def close(self) -> None:
        """Stop listening: what the detector still reports is dropped."""
        self._half_close()
        self._discard = True


class AsrStream:
    """One incremental Transcribe stream: feed audio, partials via ``on_partial``, ``finish()`` for the final."""

    def __init__(self, stages: Stages, config: tokenizer_pb2.TranscribeConfig,
                 on_partial: Callable[[tokenizer_pb2.TranscribeResponse], None] | None) -> None:
        self._queue: asyncio.Queue[bytes | None] = asyncio.Queue()
        self._final: asyncio.Future[tokenizer_pb2.TranscribeResponse] = asyncio.get_running_loop().create_future()
        requests = queue_stream(tokenizer_pb2.TranscribeRequest(config=config), self._queue,
                                lambda d: tokenizer_pb2.TranscribeRequest(audio=audio_pb2.AudioChunk(data=d)))
        self._responses = stages.transcribe(requests)
        self._task = asyncio.create_task(self._read(on_partial))

    async def _read(self, on_partial: Callable[[tokenizer_pb2.TranscribeResponse], None] | None) -> None:
        try:
            async for resp in self._responses:
                if resp.is_final:
                    self._final.set_result(resp)
                elif on_partial is not None:
                    on_partial(resp)
            if not self._final.done():
                self._final.set_exception(StageError("asr: the stream ended without a final transcript"))
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
        if not self._final.done():
            self._final.cancel()
        if not self._task.done():
            self._task.cancel()


class TokenStream:
    """One Tokenize stream over an utterance: feed audio; ``finish()`` half-closes and returns every token id."""

    def __init__(self, stages: Stages, rate: int) -> None:
        self._queue: asyncio.Queue[bytes | None] = asyncio.Queue()
        config = tokenizer_pb2.TokenizeConfig(format=audio_pb2.AudioFormat(sample_rate_hz=rate))
        requests = queue_stream(tokenizer_pb2.TokenizeRequest(config=config), self._queue,
                                lambda d: tokenizer_pb2.TokenizeRequest(audio=audio_pb2.AudioChunk(data=d)))
        self._task = asyncio.create_task(self._collect(stages.tokenize(requests)))

    @staticmethod
    async def _collect(responses: AsyncGenerator[tokenizer_pb2.TokenizeResponse, None]) -> list[int]:
        ids: list[int] = []
        async with contextlib.aclosing(responses):
            async for resp in responses:
                if resp.replaces_previous:  # the final pass over the whole utterance
                    ids = list(resp.tokens.ids)
                else:
                    ids.extend(resp.tokens.ids)
                if resp.is_final:
                    return ids
        raise StageError("tokenizer: the stream ended without its final tokens")

    def feed(self, data: bytes) -> None:
        if data:
            self._queue.put_nowait(data)

    async def finish(self) -> list[int]:
        self._queue.put_nowait(None)
        return await asyncio.shield(self._task)

    def cancel(self) -> None:
        if not self._task.done():
            self._task.cancel()


async def transcribe_once(stages: Stages, config: tokenizer_pb2.TranscribeConfig,
                          audio: bytes) -> tokenizer_pb2.TranscribeResponse:
    """The final transcript of a whole utterance (no partials)."""
    asr = AsrStream(stages, config, None)
    for i in range(0, len(audio), 64000):
        asr.feed(audio[i:i + 64000])
    try:
        return await asr.finish()
    finally:
        asr.cancel()  # no-op once the final arrived; stops the stream when the caller gave up
