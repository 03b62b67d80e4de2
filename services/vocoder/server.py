"""gRPC transport for the vocoder stage."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import grpc
import numpy as np

from services.kit.audio import check_format, float_to_pcm16, resample
from services.kit.errors import InvalidArgument
from services.kit.streams import config_first
from services.vocoder.backends import VocoderBackend
from services.vocoder.settings import VocoderSettings
from stepaudio.common.v1 import audio_pb2
from stepaudio.vocoder.v1 import vocoder_pb2, vocoder_pb2_grpc

SERVICE_NAME = vocoder_pb2.DESCRIPTOR.services_by_name["VocoderService"].full_name


class VocoderServicer(vocoder_pb2_grpc.VocoderServiceServicer):
    """Vocode: config, then mel blocks; one waveform chunk per block."""

    def __init__(self, backend: VocoderBackend, settings: VocoderSettings) -> None:
        self.backend = backend
        self.settings = settings

    async def Vocode(  # noqa: N802
        self, request_iterator: AsyncIterator[vocoder_pb2.VocodeRequest], context: grpc.aio.ServicerContext
    ) -> AsyncIterator[vocoder_pb2.VocodeResponse]:
        config, rest = await config_first(request_iterator)
        bins = config.num_bins or self.backend.num_bins
        if bins != self.backend.num_bins:
            raise InvalidArgument(f"num_bins={bins}; this vocoder takes {self.backend.num_bins}-bin mel")
        rate = check_format(config.sample_rate_hz, what="output sample rate") if config.sample_rate_hz else 0
        rate = rate or self.backend.sample_rate
        frames_seen = 0
        offset_ms = 0.0
        async for _kind, block in rest:
            n = len(block.values)
            if n == 0 or n % bins:
                raise InvalidArgument(f"mel block has {n} values; send a positive multiple of num_bins={bins}")
            frames_seen += n // bins
            if frames_seen > self.settings.max_frames:
                raise InvalidArgument(f"more than max_frames={self.settings.max_frames} mel frames in one stream")
            mel = np.asarray(block.values, dtype=np.float32).reshape(-1, bins)
            if not np.isfinite(mel).all():
                raise InvalidArgument("mel block contains NaN or infinite values")
            audio = await asyncio.to_thread(self.backend.vocode, mel, config.music)
            audio = resample(audio, self.backend.sample_rate, rate)
            yield vocoder_pb2.VocodeResponse(
                audio=audio_pb2.AudioChunk(data=float_to_pcm16(audio), offset_ms=int(offset_ms)), sample_rate_hz=rate
            )
            offset_ms += 1000.0 * len(audio) / rate
