"""gRPC transport for the tokenizer stage."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import grpc
import numpy as np

from services.kit.audio import StreamResampler, check_format, pcm16_to_float
from services.kit.errors import InvalidArgument, Unimplemented, invalid_argument_on
from services.kit.streams import config_first
from services.tokenizer.backends import AsrBackend, DualTokenizerBackend
from services.tokenizer.settings import TokenizerSettings
from stepaudio.common.v1 import tokens_pb2
from stepaudio.tokenizer.v1 import tokenizer_pb2, tokenizer_pb2_grpc

SERVICE_NAME = tokenizer_pb2.DESCRIPTOR.services_by_name["TokenizerService"].full_name
TOKENS_PER_SECOND = 1000 / 24  # 2 linguistic + 3 semantic per 120 ms group: 41.67 tokens/s


class TokenizerServicer(tokenizer_pb2_grpc.TokenizerServiceServicer):
    """Transcribe (Whisper, incremental partials) and Tokenize (Step-Audio dual tokens, stepaudio profile)."""

    def __init__(self, asr: AsrBackend, dual: DualTokenizerBackend | None, settings: TokenizerSettings) -> None:
        self.asr = asr
        self.dual = dual
        self.settings = settings
        self._slots = asyncio.Semaphore(max(settings.workers, 1))

    async def _transcribe(self, audio: np.ndarray, language: str, full: bool) -> tuple[str, float, float]:
        async with self._slots:
            t0 = time.perf_counter()
            res = await asyncio.to_thread(self.asr.transcribe, audio, language, full)
            return res.text, res.confidence, (time.perf_counter() - t0) * 1000

    async def Transcribe(  # noqa: N802
        self, request_iterator: AsyncIterator[tokenizer_pb2.TranscribeRequest], context: grpc.aio.ServicerContext
    ) -> AsyncIterator[tokenizer_pb2.TranscribeResponse]:
        config, rest = await config_first(request_iterator)
        rate = check_format(config.format.sample_rate_hz, config.format.encoding, config.format.channels)
        with invalid_argument_on():
            self.asr.check_language(config.language)
        resampler = StreamResampler(rate, self.asr.sample_rate)
        interval = (config.partial_interval_ms or self.settings.partial_interval_ms) / 1000 * self.asr.sample_rate
        max_samples = int(self.settings.max_audio_s * self.asr.sample_rate)
        parts: list[np.ndarray] = []
        total = 0
        last_partial = 0
        partial_task: asyncio.Task | None = None
        async for _kind, chunk in rest:
            if not chunk.data:
                raise InvalidArgument("empty audio chunk: send at least one PCM16 sample per chunk")
            samples = resampler(pcm16_to_float(chunk.data))
            parts.append(samples)
            total += len(samples)
            if total > max_samples:
                raise InvalidArgument(
                    f"audio longer than max_audio_s={self.settings.max_audio_s}: split it into several streams"
                )
            if partial_task is not None and partial_task.done():
                text, conf, ms = partial_task.result()
                partial_task = None
                yield tokenizer_pb2.TranscribeResponse(
                    text=text, confidence=conf, audio_processed_ms=int(last_partial / 16), processing_ms=ms
                )
            # Partials re-read the buffer in the background; at most one runs at a time, so they use idle CPU
            # while the user talks and never queue up behind the final.
            if config.partial_results and partial_task is None and total - last_partial >= interval:
                last_partial = total
                partial_task = asyncio.create_task(
                    self._transcribe(np.concatenate(parts), config.language, config.full_window))
        if partial_task is not None:
            partial_task.cancel()
        parts.append(resampler(np.zeros(0, np.float32), last=True))
        audio = np.concatenate(parts) if parts else np.zeros(0, np.float32)
        if audio.size == 0:
            raise InvalidArgument("no audio received: send audio chunks after the config")
        text, conf, ms = await self._transcribe(audio, config.language, config.full_window)
        yield tokenizer_pb2.TranscribeResponse(
            text=text, is_final=True, confidence=conf, audio_processed_ms=int(audio.size * 1000 / 16000),
            processing_ms=ms,
        )

    async def Tokenize(  # noqa: N802
        self, request_iterator: AsyncIterator[tokenizer_pb2.TokenizeRequest], context: grpc.aio.ServicerContext
    ) -> AsyncIterator[tokenizer_pb2.TokenizeResponse]:
        if self.dual is None:
            raise Unimplemented(
                "Tokenize (Step-Audio dual tokens) needs the stepaudio profile: set STEPAUDIO_TOKENIZER_PROFILE="
                "stepaudio and STEPAUDIO_TOKENIZER_MODEL_DIR to the Step-Audio-Tokenizer directory; "
                "use Transcribe for text"
            )
        config, rest = await config_first(request_iterator)
        rate = check_format(config.format.sample_rate_hz, config.format.encoding, config.format.channels)
        resampler = StreamResampler(rate, self.dual.sample_rate)
        stream = self.dual.new_stream()
        emitted = 0
        processed = 0
        async for _kind, chunk in rest:
            if not chunk.data:
                raise InvalidArgument("empty audio chunk: send at least one PCM16 sample per chunk")
            samples = resampler(pcm16_to_float(chunk.data))
            processed += len(samples)
            ids = await asyncio.to_thread(stream.push, samples)
            if ids:
                yield self._tokens(ids, emitted, processed, False)
                emitted += len(ids)
        await asyncio.to_thread(stream.push, resampler(np.zeros(0, np.float32), last=True), True)
        # The final pass over the whole utterance replaces the provisional streamed tokens.
        ids = await asyncio.to_thread(stream.final)
        yield self._tokens(ids, 0, processed, True, replaces=True)

    @staticmethod
    def _tokens(ids: list[int], emitted: int, processed: int, final: bool,
                replaces: bool = False) -> tokenizer_pb2.TokenizeResponse:
        return tokenizer_pb2.TokenizeResponse(
            tokens=tokens_pb2.AudioTokens(ids=ids, offset_ms=int(emitted * 1000 / TOKENS_PER_SECOND)),
            is_final=final,
            audio_processed_ms=int(processed * 1000 / 16000),
            replaces_previous=replaces,
        )
