"""gRPC transport for the TTS stage (phrase chunking in chunker.py, synthesis in the backend)."""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import dataclasses
import threading
from collections.abc import AsyncGenerator, AsyncIterator

import grpc
import numpy as np

from models.stepaudio.style import parse_style, split_tags
from services.kit.audio import check_format, float_to_pcm16, resample
from services.kit.errors import InvalidArgument, NotFound, invalid_argument_on
from services.kit.streams import config_first
from services.tts.backends import Synthesis, TtsBackend
from services.tts.chunker import PhraseChunker, split_phrases
from services.tts.seams import SeamTrimmer
from services.tts.settings import TtsSettings
from stepaudio.common.v1 import audio_pb2, tokens_pb2
from stepaudio.tts.v1 import tts_pb2, tts_pb2_grpc

SERVICE_NAME = tts_pb2.DESCRIPTOR.services_by_name["TtsService"].full_name


class _Output:
    """Turns backend results into SpeechChunks with running offsets and the requested sample rate."""

    def __init__(self, rate: int) -> None:
        self.rate = rate
        self.offset_ms = 0.0

    def chunk(self, text: str, syn: Synthesis) -> tts_pb2.SpeechChunk:
        if syn.audio is not None:
            rate = self.rate or syn.sample_rate_hz
            audio = resample(syn.audio, syn.sample_rate_hz, rate)
            out = tts_pb2.SpeechChunk(
                audio=audio_pb2.AudioChunk(data=float_to_pcm16(audio), offset_ms=int(self.offset_ms)),
                text=text, sample_rate_hz=rate,
            )
            self.offset_ms += 1000.0 * len(audio) / rate
            return out
        if syn.mel is not None:
            mel = np.asarray(syn.mel, dtype=np.float32)
            return tts_pb2.SpeechChunk(
                mel=tts_pb2.Mel(num_bins=mel.shape[1], values=mel.reshape(-1).tolist(), sample_rate_hz=22050,
                                hop_length=256),
                text=text,
            )
        return tts_pb2.SpeechChunk(audio_tokens=tokens_pb2.AudioTokens(ids=syn.audio_tokens), text=text)


class TtsServicer(tts_pb2_grpc.TtsServiceServicer):
    """Synthesize (whole text, one chunk per phrase), SynthesizeStream (text as generated), ListVoices."""

    def __init__(self, backend: TtsBackend, settings: TtsSettings) -> None:
        self.backend = backend
        self.settings = settings
        self._voice_names = {v.name for v in backend.voices()}

    def _check_config(self, config: tts_pb2.SynthesisConfig) -> tuple[str, str]:
        voice = config.voice or self.settings.default_voice
        if voice not in self._voice_names:
            raise NotFound(f"unknown voice {voice!r}; available voices: {', '.join(sorted(self._voice_names))}")
        with invalid_argument_on():
            parse_style(config.style)
        if config.output_kind and config.output_kind not in self.backend.output_kinds:
            kinds = ", ".join(tts_pb2.OutputKind.Name(k) for k in self.backend.output_kinds)
            raise InvalidArgument(f"output_kind {tts_pb2.OutputKind.Name(config.output_kind)} not served by the "
                                  f"{self.settings.profile} profile; use one of {kinds}")
        if config.sample_rate_hz:
            check_format(config.sample_rate_hz, what="output sample rate")
        return voice, config.style

    async def _speak(self, text: str, config: tts_pb2.SynthesisConfig, voice: str) -> AsyncGenerator[Synthesis, None]:
        """The phrase's pieces as the backend yields them (one for backends that do not stream within a phrase).

        The backend iterator runs in its own thread and hands pieces to the event loop; when the consumer stops
        (client cancel, error), the thread is told through ``cancel`` and closes the iterator itself.
        """
        with invalid_argument_on():
            tags, body = split_tags(text)
        style = config.style + tags.prefix()
        if not body.strip():
            yield Synthesis(audio=np.zeros(0, np.float32))
            return
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[object] = asyncio.Queue()
        cancel = threading.Event()
        done = object()

        def put(item: object) -> None:
            with contextlib.suppress(RuntimeError):  # the loop is gone: nobody is listening
                loop.call_soon_threadsafe(queue.put_nowait, item)

        def work() -> None:
            it = None
            try:
                it = self.backend.synthesize_stream(
                    body, voice, style, config.speed or 1.0, config.output_kind or 1, cancel=cancel
                )
                for syn in it:
                    if cancel.is_set():
                        break
                    put(syn)
            except BaseException as e:  # noqa: BLE001 - re-raised on the event loop
                put(e)
            finally:
                if it is not None and hasattr(it, "close"):
                    with contextlib.suppress(Exception):
                        it.close()
                put(done)

        ctx = contextvars.copy_context()  # as asyncio.to_thread does: trace/log context reaches the backend
        threading.Thread(target=ctx.run, args=(work,), name="tts-synthesize", daemon=True).start()
        try:
            while (item := await queue.get()) is not done:
                if isinstance(item, BaseException):
                    raise item
                yield item  # type: ignore[misc]  # a Synthesis: the queue also carries errors and `done`
        finally:
            cancel.set()

    async def Synthesize(  # noqa: N802
        self, request: tts_pb2.SynthesizeRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[tts_pb2.SynthesizeResponse]:
        voice, _ = self._check_config(request.config)
        if not request.text.strip():
            raise InvalidArgument("text is empty: send the text to speak")
        if len(request.text) > self.settings.max_text_chars:
            raise InvalidArgument(f"text has {len(request.text)} characters; the limit is "
                                  f"{self.settings.max_text_chars}: split it")
        out = _Output(request.config.sample_rate_hz)
        for phrase in split_phrases(request.text, self.settings.min_phrase_chars, self.settings.max_phrase_chars):
            async with contextlib.aclosing(self._speak(phrase, request.config, voice)) as pieces:
                first = True
                async for syn in pieces:
                    yield tts_pb2.SynthesizeResponse(chunk=out.chunk(phrase if first else "", syn))
                    first = False

    async def SynthesizeStream(  # noqa: N802
        self, request_iterator: AsyncIterator[tts_pb2.SynthesizeStreamRequest], context: grpc.aio.ServicerContext
    ) -> AsyncIterator[tts_pb2.SynthesizeStreamResponse]:
        config, rest = await config_first(request_iterator)
        voice, _ = self._check_config(config)
        chunker = PhraseChunker(self.settings.min_phrase_chars, self.settings.max_phrase_chars)
        phrases: asyncio.Queue[str | None | BaseException] = asyncio.Queue()

        async def read() -> None:
            # Reads text while earlier phrases are being synthesized, so synthesis never waits on the network.
            try:
                total = 0
                async for _kind, piece in rest:
                    total += len(piece.text)
                    if total > self.settings.max_text_chars:
                        raise InvalidArgument(f"more than {self.settings.max_text_chars} characters in one stream")
                    for p in chunker.push(piece.text):
                        phrases.put_nowait(p)
                    if piece.flush:
                        for p in chunker.flush():
                            phrases.put_nowait(p)
                for p in chunker.flush():
                    phrases.put_nowait(p)
                phrases.put_nowait(None)
            except BaseException as e:  # noqa: BLE001 - handed to the writer, which re-raises it
                phrases.put_nowait(e)

        reader = asyncio.create_task(read())
        out = _Output(config.sample_rate_hz)
        seams: SeamTrimmer | None = None  # audio only: phrase seams inside a sentence sound like word gaps
        try:
            while (item := await phrases.get()) is not None:
                if isinstance(item, BaseException):
                    raise item
                if seams is not None:
                    seams.start(item)
                async with contextlib.aclosing(self._speak(item, config, voice)) as pieces:
                    first = True
                    last: Synthesis | None = None
                    async for syn in pieces:
                        if syn.audio is not None:
                            if seams is None:
                                seams = SeamTrimmer(syn.sample_rate_hz, self.settings.seam_word_gap_ms,
                                                    self.settings.seam_comma_pause_ms)
                                seams.start(item)
                            last = syn
                            syn = dataclasses.replace(syn, audio=seams.push(syn.audio))
                            if syn.audio is not None and not syn.audio.size:
                                continue  # silence held back until the phrase's end
                        yield tts_pb2.SynthesizeStreamResponse(chunk=out.chunk(item if first else "", syn))
                        first = False
                if seams is not None and last is not None:
                    tail = seams.end()
                    if tail.size or first:
                        yield tts_pb2.SynthesizeStreamResponse(
                            chunk=out.chunk(item if first else "", dataclasses.replace(last, audio=tail)))
        finally:
            reader.cancel()
            with contextlib.suppress(BaseException):
                await reader

    async def ListVoices(  # noqa: N802
        self, request: tts_pb2.ListVoicesRequest, context: grpc.aio.ServicerContext
    ) -> tts_pb2.ListVoicesResponse:
        return tts_pb2.ListVoicesResponse(
            voices=[tts_pb2.VoiceInfo(name=v.name, languages=v.languages, sample_rate_hz=v.sample_rate_hz)
                    for v in self.backend.voices()]
        )
