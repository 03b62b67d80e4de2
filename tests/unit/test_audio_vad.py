"""Audio helpers and the VAD detector on real speech at every supported rate."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from services.kit.audio import SUPPORTED_RATES, StreamResampler, check_format, float_to_pcm16, pcm16_to_float, read_wav
from services.kit.errors import InvalidArgument
from services.vad.backends.silero import SileroVad
from services.vad.detector import DetectorConfig, SpeechDetector

DATA = Path(__file__).parents[1] / "data"


def test_pcm_roundtrip_and_errors() -> None:
    x = np.linspace(-1, 1, 101, dtype=np.float32)
    assert np.allclose(pcm16_to_float(float_to_pcm16(x)), x, atol=1e-4)
    with pytest.raises(InvalidArgument, match="even number"):
        pcm16_to_float(b"\x00\x01\x02")
    with pytest.raises(InvalidArgument, match="11025"):
        check_format(11025)
    with pytest.raises(InvalidArgument, match="mono"):
        check_format(16000, 1, 2)


@pytest.fixture(scope="module")
def vad() -> SileroVad:
    return SileroVad()


@pytest.mark.parametrize("rate", SUPPORTED_RATES)
def test_detector_finds_the_question_at_every_rate(vad: SileroVad, rate: int) -> None:
    x, sr = read_wav(DATA / "question.wav")
    audio = StreamResampler(sr, rate)(x, last=True)
    det = SpeechDetector(vad, rate, DetectorConfig())
    events = []
    step = rate // 50  # 20 ms chunks
    for i in range(0, len(audio), step):
        ev, _ = det.push(audio[i:i + step])
        events += ev
    ev, _ = det.push(np.zeros(0, np.float32), last=True)
    events += ev
    starts = [e.offset_ms for e in events if e.started]
    stops = [e.offset_ms for e in events if not e.started]
    assert starts and 350 <= starts[0] <= 700, events  # the question starts after 0.5 s of silence
    assert stops and stops[-1] > starts[0] + 1000


def test_detector_ignores_silence_and_validates(vad: SileroVad) -> None:
    det = SpeechDetector(vad, 16000, DetectorConfig())
    events, probs = det.push(np.zeros(16000, np.float32))
    assert not events and len(probs) == 31
    with pytest.raises(InvalidArgument):
        SpeechDetector(vad, 16000, DetectorConfig(start_threshold=0.3, stop_threshold=0.5))
