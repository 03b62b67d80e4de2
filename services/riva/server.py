"""Riva ASR and TTS servicers on the platform's stages: Recognize / StreamingRecognize (interim results) onto the
tokenizer's Transcribe, Synthesize / SynthesizeOnline onto the TTS's Synthesize, and the two config RPCs.

StreamingRecognize ends an utterance where the VAD stage hears ``EndpointingConfig.stop_history`` ms of silence
(``stop_history_ms`` when the client sets none), as a Riva server does: one final result per utterance on one long
stream (what Pipecat's and LiveKit's Riva STT expect), interim results in between.

Riva's wire contract as the nvidia-riva-client package (2.28) generates it; SynthesizeOnline takes a stream of
requests there, which is also what an older client's single request looks like on the wire. Audio: LINEAR_PCM
(raw PCM16, or a WAV file whose header gives rate and channels) at 8/16/22.05/24/44.1/48 kHz; other encodings are
INVALID_ARGUMENT with what to send.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import grpc
import numpy as np
from riva.client.proto import riva_asr_pb2, riva_asr_pb2_grpc, riva_audio_pb2, riva_tts_pb2, riva_tts_pb2_grpc

from services.kit.audio import SUPPORTED_RATES, StreamResampler, float_to_pcm16, pcm16_to_float, resample
from services.kit.clients import channel
from services.kit.errors import InvalidArgument, StageError
from services.kit.wavio import decode_wav, wav_stream_head
from services.riva.settings import RivaSettings
from stepaudio.common.v1 import audio_pb2
from stepaudio.tokenizer.v1 import tokenizer_pb2, tokenizer_pb2_grpc
from stepaudio.tts.v1 import tts_pb2, tts_pb2_grpc
from stepaudio.vad.v1 import vad_pb2, vad_pb2_grpc

ASR_SERVICE = riva_asr_pb2.DESCRIPTOR.services_by_name["RivaSpeechRecognition"].full_name
TTS_SERVICE = riva_tts_pb2.DESCRIPTOR.services_by_name["RivaSpeechSynthesis"].full_name
LINEAR_PCM = riva_audio_pb2.AudioEncoding.LINEAR_PCM
ASR_MODEL = "stepaudio-whisper-asr-en-US"


def _stage(e: grpc.aio.AioRpcError, stage: str) -> StageError:
    return StageError(f"{stage}: {e.details() or e.code().name}", e.code())


def pcm_of(audio: bytes, config: Any) -> tuple[bytes, int]:
    """PCM16 mono bytes and their rate from a Riva RecognitionConfig and its audio (raw PCM or a WAV file)."""
    if config.encoding not in (riva_audio_pb2.AudioEncoding.ENCODING_UNSPECIFIED, LINEAR_PCM):
        name = riva_audio_pb2.AudioEncoding.Name(config.encoding)
        raise InvalidArgument(f"encoding {name} is not supported: send LINEAR_PCM (PCM16) audio")
    if audio[:4] == b"RIFF":
        x, rate = decode_wav(audio)
        return float_to_pcm16(x), rate
    rate = config.sample_rate_hertz or 16000
    channels = config.audio_channel_count or 1
    if len(audio) % (2 * channels):
        raise InvalidArgument(f"{len(audio)} bytes is not a whole number of PCM16 frames of {channels} channel(s)")
    x = pcm16_to_float(audio)
    if channels > 1:
        x = x.reshape(-1, channels).mean(axis=1)
    if rate not in SUPPORTED_RATES:
        _check_rate(rate)
        x, rate = resample(x, rate, 16000), 16000
    return float_to_pcm16(np.asarray(x, np.float32)), rate


def _check_rate(rate: int) -> None:
    if not 4000 <= rate <= 192000:
        raise InvalidArgument(f"sample_rate_hertz={rate} is not a usable rate")


def _language(code: str) -> str:
    return code or "en-US"


async def _one(audio: AsyncIterator[bytes]) -> AsyncIterator[AsyncIterator[bytes]]:
    yield audio


async def _stream_head(requests: AsyncIterator[Any], limit: int = 65536) -> bytes:
    """The stream's first audio bytes: the first chunk, or, when it opens a WAV header, enough chunks to hold the
    whole header (``limit`` bytes at most)."""
    head = b""
    async for req in requests:
        head += bytes(req.audio_content)
        if not head:
            continue
        if head[:4] != b"RIFF" and len(head) >= 4:
            break
        at = head.find(b"data", 12)
        if (at >= 0 and len(head) >= at + 8) or len(head) >= limit:
            break
    return head


async def _audio(head: bytes, requests: AsyncIterator[Any]) -> AsyncIterator[bytes]:
    """The stream's audio bytes: ``head`` (what :func:`_stream_head` read), then each request's."""
    yield head
    async for req in requests:
        yield bytes(req.audio_content)


class _Segment:
    """One utterance's audio as it arrives; ``decided`` once the VAD heard speech in it or it ended without."""

    def __init__(self) -> None:
        self.audio: asyncio.Queue[bytes | None] = asyncio.Queue()
        self.spoken = False
        self.decided = asyncio.Event()

    def close(self) -> None:
        self.audio.put_nowait(None)
        self.decided.set()

    async def chunks(self) -> AsyncIterator[bytes]:
        while (data := await self.audio.get()) is not None:
            yield data


class RivaAsr(riva_asr_pb2_grpc.RivaSpeechRecognitionServicer):
    """Recognize, StreamingRecognize, GetRivaSpeechRecognitionConfig."""

    def __init__(self, settings: RivaSettings) -> None:
        self.s = settings
        self._stub: Any = None
        self._vad: Any = None

    @property
    def stub(self) -> Any:
        if self._stub is None:  # aio channels belong to the running loop: opened on first use
            self._stub = tokenizer_pb2_grpc.TokenizerServiceStub(
                channel(self.s.tokenizer_addr, token=self.s.stage_token))
        return self._stub

    @property
    def vad(self) -> Any:
        if self._vad is None:
            self._vad = vad_pb2_grpc.VadServiceStub(channel(self.s.vad_addr, token=self.s.stage_token))
        return self._vad

    def _check(self, config: Any) -> None:
        # max_alternatives > 1 gets one alternative (Riva's own servers return fewer than asked when they have fewer)
        if config.language_code and not config.language_code.lower().startswith("en"):
            raise InvalidArgument(f"language_code {config.language_code!r}: this server recognizes English (en-US)")

    async def _transcribe(self, chunks: AsyncIterator[bytes], rate: int, language: str, interim: bool
                          ) -> AsyncIterator[tokenizer_pb2.TranscribeResponse]:
        async def requests() -> AsyncIterator[tokenizer_pb2.TranscribeRequest]:
            yield tokenizer_pb2.TranscribeRequest(config=tokenizer_pb2.TranscribeConfig(
                format=audio_pb2.AudioFormat(sample_rate_hz=rate), language=language, partial_results=interim,
                partial_interval_ms=500 if interim else 0))
            total = 0
            async for data in chunks:
                total += len(data)
                if total / 2 / rate > self.s.max_audio_s:
                    raise InvalidArgument(f"more than {self.s.max_audio_s:g} s of audio in one recognition")
                yield tokenizer_pb2.TranscribeRequest(audio=audio_pb2.AudioChunk(data=data))

        try:
            async for resp in self.stub.Transcribe(requests(), timeout=self.s.request_timeout_s):
                yield resp
        except grpc.aio.AioRpcError as e:
            raise _stage(e, "asr") from None

    async def Recognize(self, request: Any, context: grpc.aio.ServicerContext) -> Any:  # noqa: N802
        self._check(request.config)
        pcm, rate = pcm_of(bytes(request.audio), request.config)
        if not pcm:
            raise InvalidArgument("no audio: send the recording in `audio`")

        async def chunks() -> AsyncIterator[bytes]:
            for off in range(0, len(pcm), rate * 2):
                yield pcm[off:off + rate * 2]

        text, conf = "", 0.0
        async for resp in self._transcribe(chunks(), rate, request.config.language_code, False):
            if resp.is_final:
                text, conf = resp.text, resp.confidence
        alt = riva_asr_pb2.SpeechRecognitionAlternative(transcript=text, confidence=conf,
                                                        language_code=_language(request.config.language_code))
        result = riva_asr_pb2.SpeechRecognitionResult(alternatives=[alt], audio_processed=len(pcm) / 2 / rate)
        return riva_asr_pb2.RecognizeResponse(results=[result] if text else [], id=request.id)

    async def StreamingRecognize(  # noqa: N802
        self, request_iterator: AsyncIterator[Any], context: grpc.aio.ServicerContext
    ) -> AsyncIterator[Any]:
        requests = aiter(request_iterator)
        first = await anext(requests, None)
        if first is None or not first.HasField("streaming_config"):
            raise InvalidArgument("the first StreamingRecognizeRequest must carry streaming_config")
        sc = first.streaming_config
        self._check(sc.config)
        if sc.config.encoding not in (riva_audio_pb2.AudioEncoding.ENCODING_UNSPECIFIED, LINEAR_PCM):
            pcm_of(b"", sc.config)  # raises with the message
        head = await _stream_head(requests)
        rate, channels = sc.config.sample_rate_hertz or 16000, sc.config.audio_channel_count or 1
        if head[:4] == b"RIFF":  # a WAV file streamed whole (transcribe_file.py): its header gives the format
            rate, channels, offset = wav_stream_head(head)
            head = head[offset:]
        elif rate not in SUPPORTED_RATES:
            _check_rate(rate)
        out_rate = rate if rate in SUPPORTED_RATES else 16000
        resampler = StreamResampler(rate, out_rate)
        frame = 2 * channels
        processed = 0.0

        async def chunks() -> AsyncIterator[bytes]:
            nonlocal processed
            carry = b""
            async for data in _audio(head, requests):
                data = carry + data
                whole = len(data) // frame * frame  # chunks need not end on a sample: the rest waits
                data, carry = data[:whole], data[whole:]
                if not data:
                    continue
                processed += len(data) / frame / rate
                if channels == 1 and rate == out_rate:
                    yield data
                    continue
                x = pcm16_to_float(data)
                x = resampler(x.reshape(-1, channels).mean(axis=1) if channels > 1 else x)
                if x.size:
                    yield float_to_pcm16(x)
            if rate != out_rate and (tail := resampler(np.zeros(0, np.float32), last=True)).size:
                yield float_to_pcm16(tail)

        stop_ms = sc.config.endpointing_config.stop_history if sc.config.HasField("endpointing_config") else 0
        segments = self._utterances(chunks(), out_rate, stop_ms if stop_ms > 0 else self.s.stop_history_ms) \
            if self.s.vad_addr else _one(chunks())
        async for segment in segments:
            async for resp in self._transcribe(segment, out_rate, sc.config.language_code, sc.interim_results):
                if not resp.text:
                    continue  # nothing said in this stretch (silence between utterances, or at the end)
                alt = riva_asr_pb2.SpeechRecognitionAlternative(transcript=resp.text, confidence=resp.confidence,
                                                                language_code=_language(sc.config.language_code))
                result = riva_asr_pb2.StreamingRecognitionResult(
                    alternatives=[alt], is_final=resp.is_final, stability=1.0 if resp.is_final else 0.5,
                    audio_processed=processed)
                yield riva_asr_pb2.StreamingRecognizeResponse(results=[result], id=first.id)

    async def _utterances(self, audio: AsyncIterator[bytes], rate: int, stop_ms: int
                          ) -> AsyncIterator[AsyncIterator[bytes]]:
        """Split one audio stream into utterances where the VAD hears ``stop_ms`` of silence. The cut is placed by
        the VAD's own audio offsets (audio arrives faster than the VAD decides), ``stop_ms`` into the silence. Each
        utterance is an iterator of its audio, offered once the VAD hears speech in it (stretches of silence alone
        are dropped, so Whisper never transcribes them); the audio after the last pause is the last one."""
        segments: asyncio.Queue[_Segment | None] = asyncio.Queue()
        current = _Segment()
        await segments.put(current)
        to_vad: asyncio.Queue[bytes | None] = asyncio.Queue()
        pending = bytearray()  # audio not yet placed in a segment; it starts at byte `released` of the stream
        released = 0

        def release(upto_ms: int) -> None:
            nonlocal released
            n = max(0, min(len(pending), upto_ms * rate // 1000 * 2 - released))
            if n:
                current.audio.put_nowait(bytes(pending[:n]))
                del pending[:n]
                released += n

        async def vad_requests() -> AsyncIterator[vad_pb2.StreamDetectRequest]:
            yield vad_pb2.StreamDetectRequest(config=vad_pb2.DetectConfig(
                format=audio_pb2.AudioFormat(sample_rate_hz=rate), min_silence_ms=stop_ms))
            while (data := await to_vad.get()) is not None:
                yield vad_pb2.StreamDetectRequest(audio=audio_pb2.AudioChunk(data=data))

        async def feed() -> None:
            try:
                async for data in audio:
                    pending.extend(data)
                    to_vad.put_nowait(data)
            finally:
                to_vad.put_nowait(None)

        async def endpoints() -> None:
            nonlocal current
            try:
                async for resp in self.vad.StreamDetect(vad_requests(), timeout=self.s.max_audio_s + 60):
                    for e in sorted(resp.events, key=lambda e: e.audio_offset_ms):
                        if e.type == vad_pb2.SPEECH_EVENT_TYPE_STARTED:
                            current.spoken = True
                            current.decided.set()
                        elif e.type == vad_pb2.SPEECH_EVENT_TYPE_STOPPED:
                            release(min(e.audio_offset_ms + stop_ms, resp.audio_processed_ms))
                            current.close()
                            current = _Segment()
                            segments.put_nowait(current)
                    release(resp.audio_processed_ms)
            except grpc.aio.AioRpcError as e:
                raise _stage(e, "vad") from None

        feeder, detector = asyncio.create_task(feed()), asyncio.create_task(endpoints())

        async def finish() -> None:
            try:
                await feeder
                await detector  # the last endpoint decisions, then the audio after them is the last utterance
            finally:
                if pending:
                    current.audio.put_nowait(bytes(pending))
                current.close()
                segments.put_nowait(None)

        finisher = asyncio.create_task(finish())
        try:
            while (segment := await segments.get()) is not None:
                await segment.decided.wait()
                if segment.spoken:
                    yield segment.chunks()
            await finisher  # raises what the audio stream or the VAD raised
        finally:
            for t in (feeder, detector, finisher):
                t.cancel()
                with contextlib.suppress(BaseException):
                    await t

    async def GetRivaSpeechRecognitionConfig(self, request: Any, context: grpc.aio.ServicerContext) -> Any:  # noqa: N802
        cfg = riva_asr_pb2.RivaSpeechRecognitionConfigResponse.Config(
            model_name=ASR_MODEL, parameters={"language_code": "en-US", "type": "online", "streaming": "true",
                                              "offline": "true", "sample_rates": ",".join(map(str, SUPPORTED_RATES))})
        if request.model_name and request.model_name != ASR_MODEL:
            return riva_asr_pb2.RivaSpeechRecognitionConfigResponse()
        return riva_asr_pb2.RivaSpeechRecognitionConfigResponse(model_config=[cfg])


class RivaTts(riva_tts_pb2_grpc.RivaSpeechSynthesisServicer):
    """Synthesize, SynthesizeOnline, GetRivaSynthesisConfig."""

    def __init__(self, settings: RivaSettings) -> None:
        self.s = settings
        self._stub: Any = None

    @property
    def stub(self) -> Any:
        if self._stub is None:
            self._stub = tts_pb2_grpc.TtsServiceStub(channel(self.s.tts_addr, token=self.s.stage_token))
        return self._stub

    def _config(self, request: Any) -> tts_pb2.SynthesisConfig:
        if request.encoding not in (riva_audio_pb2.AudioEncoding.ENCODING_UNSPECIFIED, LINEAR_PCM):
            name = riva_audio_pb2.AudioEncoding.Name(request.encoding)
            raise InvalidArgument(f"encoding {name} is not supported: ask for LINEAR_PCM")
        rate = request.sample_rate_hz or 0
        if rate and rate not in SUPPORTED_RATES:
            raise InvalidArgument(f"sample_rate_hz={rate} is not supported; use one of "
                                  f"{', '.join(map(str, SUPPORTED_RATES))}")
        if request.HasField("zero_shot_data"):
            raise InvalidArgument("zero-shot voice prompts are not served here: register a voice with the TTS")
        return tts_pb2.SynthesisConfig(voice=request.voice_name.split(".")[-1] if request.voice_name else "",
                                       sample_rate_hz=rate)

    async def _speak(self, text: str, config: tts_pb2.SynthesisConfig) -> AsyncIterator[bytes]:
        if not text.strip():
            raise InvalidArgument("text is empty")
        if len(text) > self.s.max_text_chars:
            raise InvalidArgument(f"text has {len(text)} characters; the limit is {self.s.max_text_chars}")
        try:
            async for resp in self.stub.Synthesize(tts_pb2.SynthesizeRequest(text=text, config=config),
                                                   timeout=self.s.request_timeout_s):
                if resp.chunk.audio.data:
                    yield bytes(resp.chunk.audio.data)
        except grpc.aio.AioRpcError as e:
            raise _stage(e, "tts") from None

    async def Synthesize(self, request: Any, context: grpc.aio.ServicerContext) -> Any:  # noqa: N802
        config = self._config(request)
        audio = b"".join([pcm async for pcm in self._speak(request.text, config)])
        return riva_tts_pb2.SynthesizeSpeechResponse(audio=audio, id=request.id)

    async def SynthesizeOnline(  # noqa: N802
        self, request_iterator: AsyncIterator[Any], context: grpc.aio.ServicerContext
    ) -> AsyncIterator[Any]:
        config = None
        async for request in request_iterator:
            config = config or self._config(request)
            async for pcm in self._speak(request.text, config):
                yield riva_tts_pb2.SynthesizeSpeechResponse(audio=pcm, id=request.id)
        if config is None:
            raise InvalidArgument("no SynthesizeSpeechRequest received")

    async def GetRivaSynthesisConfig(self, request: Any, context: grpc.aio.ServicerContext) -> Any:  # noqa: N802
        try:
            voices = await self.stub.ListVoices(tts_pb2.ListVoicesRequest(), timeout=10)
        except grpc.aio.AioRpcError as e:
            raise _stage(e, "tts") from None
        return riva_tts_pb2.RivaSynthesisConfigResponse(model_config=[
            riva_tts_pb2.RivaSynthesisConfigResponse.Config(
                model_name=f"stepaudio-tts-{v.name}",
                parameters={"voice_name": v.name, "language_code": (list(v.languages) or ["en-US"])[0],
                            "sample_rate_hz": str(v.sample_rate_hz or 22050), "subvoices": v.name})
            for v in voices.voices])
