"""Preference pairs from real traffic: the gateway -> Kafka -> the collector -> the dataset, through SIGKILLs.

Real everything: the stack's stage services, an in-process gateway whose conversation log goes to a real Kafka
broker, and the collector as its own process (``python -m services.rlhf run``). Each session asks a question, rates
the reply 1 and asks to regenerate it, then rates the new reply 5 (rating-only feedback, no thumbs): one pair per
session, the regenerated reply chosen. Mid-run the collector is SIGKILLed, then the broker; both come back. Every
expected pair must be in the dataset exactly once.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections import Counter
from pathlib import Path

import grpc
import pytest
from logs_helpers import FAST_GROUP, ROOT_HINT, read_topic

from services.gateway.__main__ import build as build_gateway
from services.gateway.settings import GatewaySettings
from services.rlhf.store import DatasetStore
from stepaudio.client import Conversation, session_config
from stepaudio.conversation.v1 import conversation_pb2 as pb
from stepaudio.stack import Stack

pytestmark = [pytest.mark.integration, pytest.mark.timeout(600)]
QUESTIONS = ["Name a fruit.", "Name a colour.", "Name a planet.", "Name an animal.", "Name a river.",
             "Name a city."]


def start_collector(env: dict[str, str], log: Path) -> subprocess.Popen:
    with open(log, "ab") as out:
        return subprocess.Popen([sys.executable, "-m", "services.rlhf", "run"], cwd=ROOT_HINT, env=env, stdout=out,
                                stderr=subprocess.STDOUT, start_new_session=True)


async def one_session(addr: str, question: str) -> str:
    """Ask, rate 1 + regenerate, rate the new reply 5; returns the turn id the pair belongs to."""
    async with grpc.aio.insecure_channel(addr) as ch:
        conv = Conversation(ch, session_config(16000, consent=True))
        conv.send_text(question)
        await conv.wait_turns(1, 60)
        first = conv.result.turns[0].turn_id
        conv.send(pb.ConverseRequest(feedback=pb.Feedback(turn_id=first, rating=1, regenerate=True)))
        await conv.wait_turns(2, 60)
        conv.send(pb.ConverseRequest(feedback=pb.Feedback(turn_id=conv.result.turns[1].turn_id, rating=5)))
        result = await conv.finish(60)
    assert not result.errors, result.errors
    return first


async def test_pairs_from_gateway_traffic_survive_collector_and_broker_kills(
    stack: Stack, kafka, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    topic, dlq = kafka.topics()
    monkeypatch.setenv("STEPAUDIO_CONVLOG_BOOTSTRAP_SERVERS", kafka.bootstrap)
    monkeypatch.setenv("STEPAUDIO_CONVLOG_TOPIC", topic)
    monkeypatch.setenv("STEPAUDIO_CONVLOG_SPOOL_DIR", str(tmp_path / "spool"))
    monkeypatch.setenv("STEPAUDIO_CONVLOG_AUDIO_DIR", str(tmp_path / "audio"))
    monkeypatch.setenv("STEPAUDIO_CONVLOG_RECONNECT_BACKOFF_S", "0.3")
    env = {**os.environ, "PYTHONPATH": ROOT_HINT, "STEPAUDIO_RLHF_BOOTSTRAP_SERVERS": kafka.bootstrap,
           "STEPAUDIO_RLHF_TOPIC": topic, "STEPAUDIO_RLHF_DLQ_TOPIC": dlq,
           "STEPAUDIO_RLHF_GROUP_ID": "g-" + uuid.uuid4().hex, "STEPAUDIO_RLHF_DATASET_DIR": str(tmp_path / "ds"),
           **{f"STEPAUDIO_RLHF_{k.upper()}": str(v) for k, v in FAST_GROUP.items()},
           "STEPAUDIO_RLHF_SHARD_MAX_AGE_S": "3600"}  # no shard until the collector stops: the manifest must keep up
    gw = build_gateway(GatewaySettings(
        port=0, host="127.0.0.1", log_json=False, log_level="WARNING", conversation_log=True, max_reply_tokens=24,
        vad_addr=stack.addr("vad"), tokenizer_addr=stack.addr("tokenizer"), llm_addr=stack.addr("llm"),
        tools_addr=stack.addr("tools"), tts_addr=stack.addr("tts")))
    await gw.start()
    convlog = gw.specs[0].servicer.convlog
    addr = f"127.0.0.1:{gw.port}"
    collector = start_collector(env, tmp_path / "collector.log")
    turns: list[str] = []
    try:
        for q in QUESTIONS[:2]:
            turns.append(await one_session(addr, q))
        collector.send_signal(signal.SIGKILL)  # mid-run, whatever it was doing
        collector.wait(10)
        turns.append(await one_session(addr, QUESTIONS[2]))
        broker_pid = int((kafka.data / "kafka.pid").read_text())
        os.kill(broker_pid, signal.SIGKILL)
        for _ in range(100):
            try:
                os.kill(broker_pid, 0)
            except ProcessLookupError:
                break
            await asyncio.sleep(0.1)
        for q in QUESTIONS[3:5]:  # the broker is gone: these go to the spool
            turns.append(await one_session(addr, q))
        kafka.start()
        collector = start_collector(env, tmp_path / "collector.log")
        turns.append(await one_session(addr, QUESTIONS[5]))
        assert await asyncio.to_thread(convlog.flush, 120), convlog.stats()
        sent = convlog.stats()["enqueued"]
        # The manifest is current while no shard is written: it shows every turn finalized before any shard.
        deadline = time.monotonic() + 120
        manifest: dict = {}
        while time.monotonic() < deadline:
            path = tmp_path / "ds" / "manifest.json"
            manifest = json.loads(path.read_text()) if path.exists() else {}
            if manifest.get("counts", {}).get("turns_finalized", 0) >= len(turns):
                break
            await asyncio.sleep(0.5)
        assert manifest["counts"]["turns_finalized"] >= len(turns) and manifest["counts"]["shards"] == 0, manifest
        assert manifest["counts"]["events"] == sent
    finally:
        collector.terminate()  # SIGTERM: the collector writes the pending pairs as a shard on the way out
        collector.wait(20)
        await gw.stop(0)
    store = DatasetStore(tmp_path / "ds")
    try:
        lines = store.shard_lines()
        counters = store.counters()
    finally:
        store.close()
    by_turn = Counter(p["turn_id"] for p in lines)
    from stepaudio.logs.v1 import logs_pb2

    in_topic = [logs_pb2.ConversationEvent.FromString(r.value).event_id
                for r in await asyncio.to_thread(read_topic, kafka.bootstrap, topic)]
    print(f"\nevents sent {sent}, records in topic {len(in_topic)} ({len(set(in_topic))} distinct), events in "
          f"dataset {counters.get('events')}, duplicates dropped {counters.get('duplicates', 0)}, pairs "
          f"{len(lines)} for {len(turns)} expected turns, missing {len(set(turns) - set(by_turn))}")
    assert len(set(in_topic)) == sent
    assert set(by_turn) == set(turns) and set(by_turn.values()) == {1}, by_turn
    assert {p["reason"] for p in lines} == {"rating"}
    assert all(p["chosen"].get("alternative_index", 0) == 1 and p["rejected"].get("alternative_index", 0) == 0
               for p in lines)
    assert counters.get("events") == sent  # every event the gateway logged, once

    # The trainer-ready export: TRL's DPO layout as JSONL and Parquet, for the run's time range.
    import pyarrow.parquet as pq

    out = tmp_path / "dpo"
    r = await asyncio.to_thread(
        subprocess.run, [sys.executable, "-m", "services.rlhf", "export", "--format", "dpo", "--dataset",
                         str(tmp_path / "ds"), "--since", "2000-01-01T00:00:00Z", "--until", "2100-01-01T00:00:00Z",
                         "--out", str(out)], cwd=ROOT_HINT, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    table = pq.read_table(out / "dpo.parquet").to_pylist()
    assert len(table) == len(turns)
    for row in table:
        assert row["prompt"][0]["role"] == "user" and row["prompt"][0]["content"] in QUESTIONS
        assert row["chosen"][0]["role"] == row["rejected"][0]["role"] == "assistant"
        assert row["chosen"][0]["content"] and row["rejected"][0]["content"]
    assert len((out / "dpo.jsonl").read_text().splitlines()) == len(turns)
