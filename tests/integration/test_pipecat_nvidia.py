"""Pipecat 1.14's NVIDIA Riva services, unmodified, in a real Pipecat pipeline pointed at the Riva-compatible
server (services/riva) on the stack's stages: NvidiaTTSService speaks through SynthesizeOnline,
NvidiaSTTService (Pipecat's default Riva STT) streams one long StreamingRecognize and gets a final at each pause,
and NvidiaSegmentedSTTService transcribes each VAD segment through Recognize."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from speech_match import says

from stepaudio.client import read_wav

# Not in the dev extra: pipecat-ai 1.14 pins soxr~=1.0.0, whose resampling makes Whisper tiny.en hear words in
# tests/integration/test_real_speech.py's real noise clip. `pip install "pipecat-ai[nvidia]==1.14.0"` runs these.
pytest.importorskip("pipecat.services.nvidia.tts", reason='needs `pip install "pipecat-ai[nvidia]==1.14.0"`')

from pipecat.frames.frames import (  # noqa: E402
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
from pipecat.pipeline.pipeline import Pipeline  # noqa: E402
from pipecat.pipeline.runner import PipelineRunner  # noqa: E402
from pipecat.pipeline.task import PipelineParams, PipelineTask  # noqa: E402
from pipecat.processors.frame_processor import FrameDirection, FrameProcessor  # noqa: E402
from pipecat.services.nvidia.stt import NvidiaSegmentedSTTService, NvidiaSTTService  # noqa: E402
from pipecat.services.nvidia.tts import NvidiaTTSService  # noqa: E402

DATA = Path(__file__).parents[1] / "data"
QUESTION = (DATA / "question.txt").read_text().strip()


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


def _frames(pcm: bytes, rate: int) -> list[Frame]:
    step = rate // 50 * 2  # 20 ms frames, as a transport delivers them
    return [InputAudioRawFrame(audio=pcm[i:i + step], sample_rate=rate, num_channels=1)
            for i in range(0, len(pcm), step)]


def _voice(addr: str) -> str:
    """The first voice the server lists (GetRivaSynthesisConfig), as a Pipecat user would pick one."""
    import riva.client

    tts = riva.client.SpeechSynthesisService(riva.client.Auth(uri=addr))
    config = tts.stub.GetRivaSynthesisConfig(riva.client.proto.riva_tts_pb2.RivaSynthesisConfigRequest())
    return str(config.model_config[0].parameters["voice_name"])


def test_pipecat_nvidia_tts_speaks_through_the_platform(riva_addr: str) -> None:
    tts = NvidiaTTSService(server=riva_addr, use_ssl=False, sample_rate=22050,
                           settings=NvidiaTTSService.Settings(voice=_voice(riva_addr)))
    frames = asyncio.run(run_pipeline(tts, [TTSSpeakFrame("Hello from the platform. This is a second sentence.")],
                                      22050))
    errors = [f for f in frames if isinstance(f, ErrorFrame)]
    audio = b"".join(f.audio for f in frames if isinstance(f, TTSAudioRawFrame))
    assert not errors, errors
    assert len(audio) / 2 / 22050 > 1.5, f"{len(audio)} bytes of audio"


def test_pipecat_nvidia_streaming_stt_gets_a_final_at_the_pause(riva_addr: str) -> None:
    pcm, rate = read_wav(DATA / "question.wav")
    stt = NvidiaSTTService(server=riva_addr, use_ssl=False)
    frames = asyncio.run(run_pipeline(stt, _frames(pcm + b"\0\0" * rate, rate), rate, end_after_transcript=True))
    errors = [f for f in frames if isinstance(f, ErrorFrame)]
    texts = [f.text for f in frames if isinstance(f, TranscriptionFrame)]
    assert not errors, errors
    assert len(texts) == 1 and says(texts[0], QUESTION), texts


def test_pipecat_nvidia_segmented_stt_transcribes_through_the_platform(riva_addr: str) -> None:
    pcm, rate = read_wav(DATA / "question.wav")
    stt = NvidiaSegmentedSTTService(server=riva_addr, use_ssl=False)
    frames = asyncio.run(run_pipeline(stt, [VADUserStartedSpeakingFrame(), *_frames(pcm, rate),
                                            VADUserStoppedSpeakingFrame()], rate))
    errors = [f for f in frames if isinstance(f, ErrorFrame)]
    texts = [f.text for f in frames if isinstance(f, TranscriptionFrame)]
    assert not errors, errors
    assert len(texts) == 1 and says(texts[0], QUESTION), texts
