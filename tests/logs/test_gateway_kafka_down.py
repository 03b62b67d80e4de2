"""A live session while Kafka is down: its audio is not slowed, and its events reach Kafka after recovery.

Real everything: the stack's stage services, an in-process gateway whose conversation logger points at a real
Apache Kafka broker that is stopped for the session and started again afterwards.
"""

from __future__ import annotations

import asyncio
import statistics
import time
from pathlib import Path

import grpc
import numpy as np
import pytest
from logs_helpers import read_topic
from speech_match import says

from services.gateway.__main__ import build as build_gateway
from services.gateway.settings import GatewaySettings
from services.kit.audio import float_to_pcm16, read_wav, resample
from stepaudio.client import Conversation, session_config
from stepaudio.logs.v1 import logs_pb2
from stepaudio.stack import Stack

DATA = Path(__file__).parents[1] / "data"
RATE = 16000


async def realtime_turn(addr: str, audio: np.ndarray, speech_end_s: float) -> float:
    """Stream at real-time pace; return seconds from the last speech sample sent to the first reply audio."""
    pcm = float_to_pcm16(audio)
    step = RATE // 50 * 2
    async with grpc.aio.insecure_channel(addr) as ch:
        conv = Conversation(ch, session_config(RATE, consent=True))
        t0 = time.monotonic()
        sent_end = 0.0
        for i, off in enumerate(range(0, len(pcm), step)):
            conv.send_audio(pcm[off:off + step])
            if not sent_end and off / 2 / RATE >= speech_end_s:
                sent_end = time.monotonic()
            await asyncio.sleep(max(t0 + (i + 1) * 0.02 - time.monotonic(), 0))
        await conv.wait_turns(1, 60)
        result = await conv.finish()
    assert result.audio, result.errors
    return result.last.first_audio_at - sent_end


async def test_session_with_kafka_down_is_not_slowed_and_events_arrive_later(
    stack: Stack, kafka, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    topic, _dlq = kafka.topics()
    kafka.stop()
    monkeypatch.setenv("STEPAUDIO_CONVLOG_BOOTSTRAP_SERVERS", kafka.bootstrap)
    monkeypatch.setenv("STEPAUDIO_CONVLOG_TOPIC", topic)
    monkeypatch.setenv("STEPAUDIO_CONVLOG_SPOOL_DIR", str(tmp_path / "spool"))
    monkeypatch.setenv("STEPAUDIO_CONVLOG_AUDIO_DIR", str(tmp_path / "audio"))
    common = dict(port=0, host="127.0.0.1", log_json=False, log_level="WARNING", vad_addr=stack.addr("vad"),
                  tokenizer_addr=stack.addr("tokenizer"), llm_addr=stack.addr("llm"), tools_addr=stack.addr("tools"),
                  tts_addr=stack.addr("tts"))
    logged = build_gateway(GatewaySettings(**common, conversation_log=True))
    plain = build_gateway(GatewaySettings(**common, conversation_log=False))
    await logged.start()
    await plain.start()
    convlog = logged.specs[0].servicer.convlog
    x, sr = read_wav(DATA / "question.wav")
    audio = resample(x, sr, RATE)
    speech_end_s = (len(audio) - RATE) / RATE  # the clip ends with 1 s of silence
    try:
        down, off = [], []
        for _ in range(2):
            down.append(await realtime_turn(f"127.0.0.1:{logged.port}", audio, speech_end_s))
            off.append(await realtime_turn(f"127.0.0.1:{plain.port}", audio, speech_end_s))
        assert convlog.stats()["delivered"] == 0  # nothing could reach Kafka
        # Not slowed: a producer that blocked on the dead broker (metadata waits, a full buffer) would cost seconds
        # per turn; scheduling noise on two shared cores costs tens of milliseconds either way, so the bound is 1 s.
        # bench/bench_convlog.py measures the emit cost itself (microseconds).
        assert statistics.median(down) <= statistics.median(off) + 1.0, (down, off)
    finally:
        await plain.stop(0)
        kafka.start()
        assert await asyncio.to_thread(convlog.flush, 90), convlog.stats()
        await logged.stop(0)

    records = await asyncio.to_thread(read_topic, kafka.bootstrap, topic)
    events = [logs_pb2.ConversationEvent.FromString(r.value) for r in records]
    turns = [e for e in events if e.WhichOneof("payload") == "turn_recorded"]
    assert len(turns) == 2, [e.WhichOneof("payload") for e in events]
    assert len({e.event_id for e in events}) == len(events), "an event arrived twice"
    for t in turns:
        assert says(t.turn_recorded.user_transcript, (DATA / "question.txt").read_text())
        assert t.turn_recorded.user_audio.sha256 and t.turn_recorded.reply_audio.sha256
