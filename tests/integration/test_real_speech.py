"""Real recorded human speech (not TTS output): the speaker-test voice clips of alsa-utils (GPL-2; a person saying
"Front Left", "Side Right", ... recorded at 48 kHz; .ci/run installs the package) at 48, 16 and 8 kHz, through the
tokenizer service's Transcribe and through a gateway turn. Short clips are where Whisper loops ("Side Right
Right", "Right. Right. Right."): no transcript may repeat itself."""

from __future__ import annotations

from pathlib import Path

import grpc
import pytest
from speech_match import says

from services.kit.audio import float_to_pcm16, read_wav, resample
from services.tokenizer.backends.whisper import repeats_itself
from stepaudio.client import converse_file
from stepaudio.common.v1 import audio_pb2
from stepaudio.stack import Stack
from stepaudio.tokenizer.v1 import tokenizer_pb2, tokenizer_pb2_grpc

SOUNDS = Path("/usr/share/sounds/alsa")
CLIPS = ["Front_Center", "Front_Left", "Front_Right", "Rear_Center", "Rear_Left", "Rear_Right", "Side_Left",
         "Side_Right"]
RATES = [48000, 16000, 8000]


@pytest.fixture(scope="module")
def recordings() -> dict[str, tuple]:
    if not (SOUNDS / "Front_Left.wav").is_file():
        pytest.fail("the alsa-utils voice clips are missing: apt-get install alsa-utils (.ci/run does)")
    return {name: read_wav(SOUNDS / f"{name}.wav") for name in [*CLIPS, "Noise"]}


async def transcribe(addr: str, pcm: bytes, rate: int) -> str:
    async def requests():  # noqa: ANN202
        yield tokenizer_pb2.TranscribeRequest(config=tokenizer_pb2.TranscribeConfig(
            format=audio_pb2.AudioFormat(sample_rate_hz=rate)))
        step = rate // 10 * 2
        for off in range(0, len(pcm), step):
            yield tokenizer_pb2.TranscribeRequest(audio=audio_pb2.AudioChunk(data=pcm[off:off + step]))

    async with grpc.aio.insecure_channel(addr) as ch:
        stub = tokenizer_pb2_grpc.TokenizerServiceStub(ch)
        finals = [r.text async for r in stub.Transcribe(requests(), timeout=60) if r.is_final]
    assert len(finals) == 1
    return finals[0]


@pytest.mark.parametrize("rate", RATES)
async def test_short_real_commands_are_heard_once(stack: Stack, recordings: dict, rate: int) -> None:
    heard = {}
    for name in CLIPS:
        audio, src = recordings[name]
        heard[name] = await transcribe(stack.addr("tokenizer"), float_to_pcm16(resample(audio, src, rate)), rate)
    assert not [t for t in heard.values() if repeats_itself(t)], heard
    right = [n for n, t in heard.items() if says(t, n.replace("_", " "))]
    assert len(right) >= len(CLIPS) - 1, heard  # tiny.en hears "Rear Right" as "We're right"
    noise, src = recordings["Noise"]
    heard_noise = await transcribe(stack.addr("tokenizer"), float_to_pcm16(resample(noise, src, rate)), rate)
    assert heard_noise == ""  # Whisper alone hears "I'm not going to do it." in it: the speech gate drops it


async def test_a_real_telephone_rate_turn_through_the_gateway(stack: Stack, recordings: dict, tmp_path: Path) -> None:
    from services.kit.audio import write_wav

    audio, src = recordings["Side_Right"]
    wav = tmp_path / "side_right_8k.wav"
    write_wav(wav, resample(audio, src, 8000), 8000)
    result = await converse_file(stack.gateway_addr, wav, realtime=False)
    assert not result.errors, result.errors
    assert says(result.last.transcript, "Side right"), result.last.transcript
    assert not repeats_itself(result.last.transcript)
    assert result.last.audio
