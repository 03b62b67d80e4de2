"""gRPC transport for the VAD stage (logic in detector.py)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import grpc

from services.kit.audio import check_format, pcm16_to_float
from services.kit.errors import InvalidArgument
from services.kit.streams import config_first
from services.vad.backends import VadBackend
from services.vad.detector import DetectorConfig, SpeechDetector
from services.vad.hysteresis import Hysteresis
from services.vad.settings import VadSettings
from stepaudio.vad.v1 import vad_pb2, vad_pb2_grpc

SERVICE_NAME = vad_pb2.DESCRIPTOR.services_by_name["VadService"].full_name


class VadServicer(vad_pb2_grpc.VadServiceServicer):
    """StreamDetect: config first, then audio; one response per audio chunk with new events."""

    def __init__(self, backend: VadBackend, settings: VadSettings) -> None:
        self.backend = backend
        self.settings = settings

    async def StreamDetect(  # noqa: N802 - gRPC method name
        self, request_iterator: AsyncIterator[vad_pb2.StreamDetectRequest], context: grpc.aio.ServicerContext
    ) -> AsyncIterator[vad_pb2.StreamDetectResponse]:
        config, rest = await config_first(request_iterator)
        rate = check_format(config.format.sample_rate_hz, config.format.encoding, config.format.channels)
        try:
            h = Hysteresis.resolve(config.start_threshold, config.stop_threshold, self.settings.start_threshold)
        except ValueError as e:
            raise InvalidArgument(str(e)) from None
        detector = SpeechDetector(
            self.backend,
            rate,
            DetectorConfig(
                start_threshold=h.start,
                stop_threshold=h.stop,
                min_speech_ms=config.min_speech_ms or self.settings.min_speech_ms,
                min_silence_ms=config.min_silence_ms or self.settings.min_silence_ms,
            ),
        )
        async for _kind, chunk in rest:
            if not chunk.data:
                raise InvalidArgument("empty audio chunk: send at least one PCM16 sample per chunk")
            events, probs = await asyncio.to_thread(detector.push, pcm16_to_float(chunk.data))
            yield self._response(detector, events, probs, config.send_probabilities)
        events, probs = await asyncio.to_thread(detector.push, pcm16_to_float(b""), True)
        yield self._response(detector, events, probs, config.send_probabilities)

    @staticmethod
    def _response(
        detector: SpeechDetector, events: list, probs: list[tuple[int, float]], send_probs: bool
    ) -> vad_pb2.StreamDetectResponse:
        resp = vad_pb2.StreamDetectResponse(audio_processed_ms=detector.processed_ms,
                                            frame_duration_ms=detector.frame_ms)
        for ev in events:
            resp.events.add(
                type=vad_pb2.SPEECH_EVENT_TYPE_STARTED if ev.started else vad_pb2.SPEECH_EVENT_TYPE_STOPPED,
                audio_offset_ms=ev.offset_ms,
            )
        if send_probs:
            for off, p in probs:
                resp.probabilities.add(audio_offset_ms=off, probability=p)
        return resp
