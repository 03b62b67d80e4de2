"""Pipecat 1.14's NVIDIA Riva services, unmodified, in a real Pipecat pipeline pointed at a Riva server.

Runs in the Pipecat environment (`make pipecat`: `.cache/pipecat`, `requirements/pipecat.txt`), not in the project's
venv: pipecat-ai pins soxr~=1.0.0, whose resampling makes Whisper tiny.en hear words in a real noise recording, so
the two never share site-packages. tests/integration/test_pipecat_nvidia.py runs it as a client process and judges
what it prints (one JSON object):

    python pipecat_riva.py tts ADDR TEXT              NvidiaTTSService (SynthesizeOnline)
    python pipecat_riva.py stt-stream ADDR WAV        NvidiaSTTService (one long StreamingRecognize, final at a pause)
    python pipecat_riva.py stt-segmented ADDR WAV     NvidiaSegmentedSTTService (Recognize per VAD segment)
"""

from __future__ import annotations

import asyncio
import json
import sys
import wave

import riva.client
from pipecat.frames.frames import (
    EndFrame,
    ErrorFrame,
    Frame,
    InputAudioRawFrame,
    TranscriptionFrame,
    TTSAudioRawFrame,
    TTSSpeakFrame,
    VADUserStartedSpeakingFrame,
    VADUserStoppedSpeakingFrame,
)
from pipecat.pipeline.pipeline import Pipeline
from pipecat.pipeline.runner import PipelineRunner
from pipecat.pipeline.task import PipelineParams, PipelineTask
from pipecat.processors.frame_processor import FrameDirection, FrameProcessor
from pipecat.services.nvidia.stt import NvidiaSegmentedSTTService, NvidiaSTTService
from pipecat.services.nvidia.tts import NvidiaTTSService


class Collect(FrameProcessor):
    """The pipeline's last processor: keeps every frame that reaches it."""

    def __init__(self) -> None:
        super().__init__()
        self.frames: list[Frame] = []
        self.transcribed = asyncio.Event()

    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        await super().process_frame(frame, direction)
        self.frames.append(frame)
        if isinstance(frame, TranscriptionFrame):
            self.transcribed.set()
        await self.push_frame(frame, direction)


async def run_pipeline(service: FrameProcessor, frames: list[Frame], rate: int,
                       end_after_transcript: bool = False) -> list[Frame]:
    sink = Collect()
    task = PipelineTask(Pipeline([service, sink]),
                        params=PipelineParams(audio_in_sample_rate=rate, audio_out_sample_rate=rate))
    runner = asyncio.create_task(PipelineRunner(handle_sigint=False).run(task))
    await task.queue_frames(frames)
    if end_after_transcript:  # a live transport never ends its stream: the final has to come at the pause
        await asyncio.wait_for(sink.transcribed.wait(), 120)
    await task.queue_frame(EndFrame())
    await asyncio.wait_for(runner, 180)
    return sink.frames


def read_wav(path: str) -> tuple[bytes, int]:
    with wave.open(path, "rb") as w:
        if w.getsampwidth() != 2 or w.getnchannels() != 1:
            raise SystemExit(f"{path}: mono PCM16 expected")
        return w.readframes(w.getnframes()), w.getframerate()


def audio_frames(pcm: bytes, rate: int) -> list[Frame]:
    step = rate // 50 * 2  # 20 ms frames, as a transport delivers them
    return [InputAudioRawFrame(audio=pcm[i:i + step], sample_rate=rate, num_channels=1)
            for i in range(0, len(pcm), step)]


def first_voice(addr: str) -> str:
    """The first voice the server lists (GetRivaSynthesisConfig), as a Pipecat user would pick one."""
    tts = riva.client.SpeechSynthesisService(riva.client.Auth(uri=addr))
    config = tts.stub.GetRivaSynthesisConfig(riva.client.proto.riva_tts_pb2.RivaSynthesisConfigRequest())
    return str(config.model_config[0].parameters["voice_name"])


def report(frames: list[Frame], rate: int) -> dict:
    audio = b"".join(f.audio for f in frames if isinstance(f, TTSAudioRawFrame))
    return {"errors": [str(f.error) for f in frames if isinstance(f, ErrorFrame)],
            "texts": [f.text for f in frames if isinstance(f, TranscriptionFrame)],
            "audio_s": len(audio) / 2 / rate}


def main(argv: list[str]) -> int:
    mode, addr, arg = argv
    if mode == "tts":
        rate = 22050
        service: FrameProcessor = NvidiaTTSService(server=addr, use_ssl=False, sample_rate=rate,
                                                   settings=NvidiaTTSService.Settings(voice=first_voice(addr)))
        frames = asyncio.run(run_pipeline(service, [TTSSpeakFrame(arg)], rate))
    elif mode == "stt-stream":
        pcm, rate = read_wav(arg)
        service = NvidiaSTTService(server=addr, use_ssl=False)
        frames = asyncio.run(run_pipeline(service, audio_frames(pcm + b"\0\0" * rate, rate), rate,
                                          end_after_transcript=True))
    elif mode == "stt-segmented":
        pcm, rate = read_wav(arg)
        service = NvidiaSegmentedSTTService(server=addr, use_ssl=False)
        frames = asyncio.run(run_pipeline(service, [VADUserStartedSpeakingFrame(), *audio_frames(pcm, rate),
                                                    VADUserStoppedSpeakingFrame()], rate))
    else:
        raise SystemExit(f"unknown mode {mode!r}: tts, stt-stream or stt-segmented")
    print(json.dumps(report(frames, rate)))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
