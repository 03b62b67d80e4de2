"""A drained gateway leaves nothing behind in memory: the live session's last events are in the spool on disk."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import grpc
import pytest

from services.convlog.producer import read_spooled_events
from services.convlog.spool import Spool
from services.gateway.__main__ import build as build_gateway
from services.gateway.settings import GatewaySettings
from stepaudio.client import Conversation, session_config
from stepaudio.logs.v1 import logs_pb2
from stepaudio.stack import Stack


async def test_drain_flushes_and_closes_the_conversation_log(
    stack: Stack, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("STEPAUDIO_CONVLOG_BOOTSTRAP_SERVERS", "")  # spool only: what a broker outage leaves
    monkeypatch.setenv("STEPAUDIO_CONVLOG_SPOOL_DIR", str(tmp_path / "spool"))
    monkeypatch.setenv("STEPAUDIO_CONVLOG_AUDIO_DIR", str(tmp_path / "audio"))
    gw = build_gateway(GatewaySettings(
        port=0, host="127.0.0.1", log_json=False, log_level="WARNING", conversation_log=True, drain_grace_s=30,
        vad_addr=stack.addr("vad"), tokenizer_addr=stack.addr("tokenizer"), llm_addr=stack.addr("llm"),
        tools_addr=stack.addr("tools"), tts_addr=stack.addr("tts")))
    await gw.start()
    async with grpc.aio.insecure_channel(f"127.0.0.1:{gw.port}") as ch:
        conv = Conversation(ch, session_config(16000, consent=True))
        conv.send_text("Say hello to the team.")
        await conv.wait_turns(1, 60)
        stopping = asyncio.create_task(gw.stop())  # SIGTERM: drain; the client hangs up during the grace period
        await asyncio.sleep(0.3)
        t0 = time.monotonic()
        await conv.finish(30)
    await stopping
    assert time.monotonic() - t0 < 30
    spool = Spool(tmp_path / "spool")
    try:
        kinds = [e.WhichOneof("payload") for e in read_spooled_events(spool)]
    finally:
        spool.close()
    assert kinds.count("turn_recorded") == 1 and kinds[-1] == "session_ended", kinds
    ended = [e for e in read_spooled_events(Spool(tmp_path / "spool")) if e.WhichOneof("payload") == "session_ended"]
    assert ended[0].session_ended.reason == logs_pb2.SESSION_END_REASON_SERVER_SHUTDOWN
    assert ended[0].session_ended.duration_ms > 0
