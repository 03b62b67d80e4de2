"""The OpenAI-style endpoints' logic (the aiohttp routes are in server.py): requests checked and mapped onto the
tokenizer's Transcribe and the TTS's Synthesize; stage failures mapped onto OpenAI-shaped errors."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import grpc
import numpy as np

from services.httpapi.settings import HttpApiSettings
from services.kit.audio import float_to_pcm16
from services.kit.clients import channel
from services.kit.errors import InvalidArgument, StageError
from services.kit.wavio import decode_wav
from stepaudio.common.v1 import audio_pb2
from stepaudio.tokenizer.v1 import tokenizer_pb2, tokenizer_pb2_grpc
from stepaudio.tts.v1 import tts_pb2, tts_pb2_grpc

#: model ids served, with the OpenAI names clients already send
ASR_MODELS = ("stepaudio-asr", "whisper-1", "gpt-4o-transcribe", "gpt-4o-mini-transcribe")
TTS_MODELS = ("stepaudio-tts", "tts-1", "tts-1-hd", "gpt-4o-mini-tts")
OPENAI_VOICES = ("alloy", "ash", "ballad", "coral", "echo", "fable", "nova", "onyx", "sage", "shimmer", "verse")
TRANSCRIPT_FORMATS = ("json", "text", "verbose_json")
SPEECH_FORMATS = {"wav": "audio/wav", "pcm": "audio/pcm"}  # pcm: raw 16-bit LE mono at 24 kHz, as OpenAI's
PCM_RATE = 24000
_HTTP = {grpc.StatusCode.INVALID_ARGUMENT: 400, grpc.StatusCode.NOT_FOUND: 404, grpc.StatusCode.UNAUTHENTICATED: 401,
         grpc.StatusCode.PERMISSION_DENIED: 403, grpc.StatusCode.RESOURCE_EXHAUSTED: 429,
         grpc.StatusCode.FAILED_PRECONDITION: 400, grpc.StatusCode.UNIMPLEMENTED: 501,
         grpc.StatusCode.DEADLINE_EXCEEDED: 504, grpc.StatusCode.UNAVAILABLE: 503}


@dataclass
class ApiError(Exception):
    """An error in OpenAI's shape: ``{"error": {"message", "type", "param", "code"}}``."""

    status: int
    message: str
    param: str | None = None
    code: str | None = None

    @property
    def type(self) -> str:
        return "invalid_request_error" if self.status < 500 else "server_error"

    def body(self) -> dict[str, Any]:
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}

    @classmethod
    def of(cls, e: StageError, stage: str) -> ApiError:
        status = _HTTP.get(e.code, 500)
        return cls(status, f"{stage}: {e.message}" if status >= 500 else e.message,
                   code=e.code.name.lower())


def _stage_error(e: grpc.aio.AioRpcError, stage: str) -> ApiError:
    return ApiError.of(StageError(e.details() or e.code().name, e.code()), stage)


class Api:
    """Holds the stage channels; one instance per server."""

    def __init__(self, settings: HttpApiSettings) -> None:
        self.s = settings
        self._keys = {k.strip().lower() for k in settings.api_key_sha256.split(",") if k.strip()}
        self._channels: list[grpc.aio.Channel] = []
        self._asr: Any = None
        self._tts: Any = None

    def connect(self) -> None:
        if self._channels:
            return
        asr, tts = channel(self.s.tokenizer_addr), channel(self.s.tts_addr)
        self._channels = [asr, tts]
        self._asr = tokenizer_pb2_grpc.TokenizerServiceStub(asr)
        self._tts = tts_pb2_grpc.TtsServiceStub(tts)

    async def close(self) -> None:
        for ch in self._channels:
            await ch.close()
        self._channels = []

    # ---- auth ----------------------------------------------------------------------------------------------

    def check_key(self, authorization: str | None) -> None:
        if not self._keys:
            return
        key = (authorization or "").removeprefix("Bearer ").strip()
        digest = hashlib.sha256(key.encode()).hexdigest()
        if not key or not any(hmac.compare_digest(digest, k) for k in self._keys):
            raise ApiError(401, "Incorrect API key provided: send Authorization: Bearer YOUR_KEY",
                           code="invalid_api_key")

    # ---- models ----------------------------------------------------------------------------------------------

    @staticmethod
    def models() -> dict[str, Any]:
        return {"object": "list", "data": [{"id": m, "object": "model", "created": 0, "owned_by": "stepaudio"}
                                           for m in (*ASR_MODELS, *TTS_MODELS)]}

    @staticmethod
    def model(model_id: str) -> dict[str, Any]:
        if model_id not in (*ASR_MODELS, *TTS_MODELS):
            raise ApiError(404, f"The model '{model_id}' does not exist", param="model", code="model_not_found")
        return {"id": model_id, "object": "model", "created": 0, "owned_by": "stepaudio"}

    # ---- transcriptions --------------------------------------------------------------------------------------

    async def transcribe(self, file: bytes | None, model: str, language: str, response_format: str
                         ) -> tuple[dict[str, Any] | str, float]:
        """(OpenAI response body, audio seconds)."""
        if file is None:
            raise ApiError(400, "'file' is required: a multipart field with the audio file", param="file")
        if model not in ASR_MODELS:
            raise ApiError(404 if model else 400, f"model '{model}' does not transcribe; use one of "
                           f"{', '.join(ASR_MODELS)}", param="model", code="model_not_found" if model else None)
        if not isinstance(response_format, str) or response_format not in TRANSCRIPT_FORMATS:
            raise ApiError(400, f"response_format '{response_format}' is not supported; use one of "
                           f"{', '.join(TRANSCRIPT_FORMATS)}", param="response_format")
        if len(file) > self.s.max_upload_bytes:
            raise ApiError(413, f"the file is {len(file)} bytes; the limit is {self.s.max_upload_bytes}", param="file")
        try:  # off the event loop: a long file must not stall the other requests
            audio, rate = await asyncio.to_thread(decode_wav, file, self.s.max_audio_s)
        except InvalidArgument as e:
            raise ApiError(400, e.message, param="file", code="unsupported_format") from None
        seconds = audio.size / rate
        text = await self._transcribe(audio, rate, language)
        if response_format == "text":
            return text, seconds
        if response_format == "verbose_json":
            return {"task": "transcribe", "language": language or "english", "duration": round(seconds, 3),
                    "text": text, "segments": []}, seconds
        return {"text": text}, seconds

    async def _transcribe(self, audio: np.ndarray, rate: int, language: str) -> str:
        self.connect()
        pcm = float_to_pcm16(audio)

        async def requests() -> AsyncIterator[tokenizer_pb2.TranscribeRequest]:
            yield tokenizer_pb2.TranscribeRequest(config=tokenizer_pb2.TranscribeConfig(
                format=audio_pb2.AudioFormat(sample_rate_hz=rate), language=language))
            step = rate * 2  # one second a message
            for off in range(0, len(pcm), step):
                yield tokenizer_pb2.TranscribeRequest(audio=audio_pb2.AudioChunk(data=pcm[off:off + step]))

        try:
            async for resp in self._asr.Transcribe(requests(), timeout=self.s.request_timeout_s):
                if resp.is_final:
                    return str(resp.text)
        except grpc.aio.AioRpcError as e:
            raise _stage_error(e, "transcription") from None
        raise ApiError(502, "transcription: the ASR stage ended without a final transcript")

    # ---- speech ----------------------------------------------------------------------------------------------

    def speech_request(self, body: Any) -> tuple[tts_pb2.SynthesizeRequest, str]:
        """Check a speech request body; (the TTS request, response format)."""
        if not isinstance(body, dict):
            raise ApiError(400, "the body must be a JSON object with model, input and voice")
        model, text, voice = body.get("model"), body.get("input"), body.get("voice")
        fmt, speed = body.get("response_format", "wav"), body.get("speed", 1.0)
        instructions = body.get("instructions", "")
        if not isinstance(model, str) or model not in TTS_MODELS:
            raise ApiError(400 if not model else 404, f"model {model!r} does not speak; use one of "
                           f"{', '.join(TTS_MODELS)}", param="model")
        if not isinstance(text, str) or not text.strip():
            raise ApiError(400, "'input' must be non-empty text", param="input")
        if len(text) > self.s.max_speech_chars:
            raise ApiError(400, f"'input' has {len(text)} characters; the limit is {self.s.max_speech_chars}",
                           param="input")
        if not isinstance(voice, str) or not voice:
            raise ApiError(400, "'voice' is required: a voice of this server or an OpenAI voice name", param="voice")
        if not isinstance(fmt, str) or fmt not in SPEECH_FORMATS:
            raise ApiError(400, f"response_format {fmt!r} is not supported; use one of {', '.join(SPEECH_FORMATS)} "
                           "(wav is the default here)", param="response_format")
        if isinstance(speed, bool) or not isinstance(speed, (int, float)) or not 0.25 <= float(speed) <= 4.0:
            raise ApiError(400, "'speed' must be a number from 0.25 to 4.0", param="speed")
        if not isinstance(instructions, str):
            raise ApiError(400, "'instructions' must be text", param="instructions")
        name = self.s.default_voice if voice in OPENAI_VOICES else voice
        config = tts_pb2.SynthesisConfig(voice=name, speed=float(speed),
                                         sample_rate_hz=PCM_RATE if fmt == "pcm" else 0)
        return tts_pb2.SynthesizeRequest(text=text, config=config), fmt

    async def speech(self, request: tts_pb2.SynthesizeRequest) -> AsyncIterator[tuple[bytes, int]]:
        """(PCM16 bytes, sample rate) as the TTS streams them. Errors before the first chunk raise ApiError."""
        self.connect()
        call = self._tts.Synthesize(request, timeout=self.s.request_timeout_s)
        try:
            async for resp in call:
                c = resp.chunk
                if c.WhichOneof("content") == "audio" and c.audio.data:
                    yield bytes(c.audio.data), int(c.sample_rate_hz or 22050)
        except grpc.aio.AioRpcError as e:
            raise _stage_error(e, "speech") from None
        finally:
            call.cancel()

