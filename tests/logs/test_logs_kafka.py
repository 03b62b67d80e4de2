"""End-to-end tests against a real Apache Kafka broker (started by the session fixture in conftest.py)."""

from __future__ import annotations

import json
import subprocess
import sys
import time
import uuid
from collections import Counter
from datetime import UTC, datetime, timedelta

import pytest
from kafka import KafkaProducer
from logs_helpers import ROOT_HINT, emit_session, logger, read_topic, rlhf_settings

from services.rlhf.collector import Collector
from stepaudio.logs.v1 import logs_pb2

pytestmark = [pytest.mark.integration, pytest.mark.timeout(600)]


def _finalized(n: int):
    return lambda c: c.store.counters().get("turns_finalized", 0) >= n


def _pairs_by_turn(col: Collector) -> Counter:
    return Counter((p["session_id"], p["turn_id"]) for p in col.store.shard_lines())


def test_broker_outage_every_event_once_in_dataset(kafka, tmp_path):
    topic, dlq = kafka.topics()
    log = logger(tmp_path, kafka.bootstrap, topic)
    expected: set[str] = set()
    turns = 0
    for i in range(10):
        ids, n = emit_session(log, f"a{i}")
        expected |= ids
        turns += n
    assert log.flush(30), log.stats()

    kafka.stop()  # broker down mid-way: the rest goes to the spool
    try:
        for i in range(10, 20):
            ids, n = emit_session(log, f"a{i}")
            expected |= ids
            turns += n
        assert log.flush(2) is False  # nothing can be delivered now
        assert log.stats()["spool_pending"] > 0
    finally:
        kafka.start()
    assert log.flush(60), log.stats()
    assert log.stats()["spool_pending"] == 0
    log.close()

    col = Collector(rlhf_settings(tmp_path, kafka.bootstrap, topic, dlq, "g-" + uuid.uuid4().hex))
    try:
        col.run(until=_finalized(turns), timeout_s=180)
        by_turn = _pairs_by_turn(col)
        assert len(by_turn) == turns and set(by_turn.values()) == {1}, (col.store.counters(), col.rejoins)
        source_ids = Counter(i for p in col.store.shard_lines() for i in p["source_event_ids"])
        assert set(source_ids) == expected and set(source_ids.values()) == {1}
        m = json.loads((tmp_path / "dataset" / "manifest.json").read_text())
        assert m["counts"]["pairs"] == turns
        assert m["counts"]["events"] == len(expected) + 20  # + one SessionEnded per session
        assert m["counts"]["by_reason"] == {"rating": 40, "deaf_hacking": 20}
        deaf = [p for p in col.store.shard_lines() if p["reason"] == "deaf_hacking"]
        assert all("didn't catch" in p["rejected"]["text"] and "chosen" not in p for p in deaf)
    finally:
        col.close()

    # export a time range with the CLI
    now = datetime.now(UTC)
    out = tmp_path / "export"
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "services.rlhf",
            "export",
            "--dataset",
            str(tmp_path / "dataset"),
            "--since",
            (now - timedelta(hours=1)).isoformat(),
            "--until",
            (now + timedelta(hours=1)).isoformat(),
            "--out",
            str(out),
        ],
        cwd=ROOT_HINT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert r.returncode == 0, r.stderr
    em = json.loads((out / "manifest.json").read_text())
    assert em["counts"]["pairs"] == turns and all(len(s["sha256"]) == 64 for s in em["shards"])
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "services.rlhf",
            "export",
            "--dataset",
            str(tmp_path / "dataset"),
            "--since",
            "2001-01-01T00:00:00Z",
            "--until",
            "2001-01-02T00:00:00Z",
            "--out",
            str(tmp_path / "empty"),
        ],
        cwd=ROOT_HINT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert r.returncode == 0 and json.loads((tmp_path / "empty" / "manifest.json").read_text())["counts"]["pairs"] == 0


class CrashBeforeCommit(Collector):
    """Dies (in effect) after the dataset transaction and before the offset commit, every batch."""

    def commit_offsets(self) -> None:
        pass


def test_collector_restart_resumes_without_duplicates(kafka, tmp_path):
    topic, dlq = kafka.topics()
    group = "g-" + uuid.uuid4().hex
    log = logger(tmp_path, kafka.bootstrap, topic)
    n_events = 0
    turns = 0
    for i in range(5):
        ids, n = emit_session(log, f"b{i}")
        n_events += len(ids) + 1
        turns += n
    assert log.flush(30)

    col = CrashBeforeCommit(rlhf_settings(tmp_path, kafka.bootstrap, topic, dlq, group))
    col.run(until=_finalized(turns), timeout_s=180)
    col.close()

    # restart: no offsets were committed, so everything is replayed, and skipped as already present
    col = Collector(rlhf_settings(tmp_path, kafka.bootstrap, topic, dlq, group))
    col.run(until=lambda c: c.totals.duplicates >= n_events, timeout_s=180)
    assert col.totals.duplicates == n_events and col.totals.events == 0 and col.totals.pairs == 0
    col.close()

    # more traffic, then a restart that resumes from the committed offsets: only new records are read
    for i in range(5, 8):
        ids, n = emit_session(log, f"b{i}")
        turns += n
        n_events += len(ids) + 1
    assert log.flush(30)
    log.close()
    col = Collector(rlhf_settings(tmp_path, kafka.bootstrap, topic, dlq, group))
    col.run(until=_finalized(turns), timeout_s=180)
    assert col.totals.duplicates == 0
    col.close()
    col = Collector(rlhf_settings(tmp_path, kafka.bootstrap, topic, dlq, group))
    col.run(timeout_s=3)
    assert col.totals.records == 0  # nothing left behind the committed offsets
    by_turn = _pairs_by_turn(col)
    assert len(by_turn) == turns and set(by_turn.values()) == {1}
    assert col.store.counters()["events"] == n_events
    col.close()


def test_malformed_event_goes_to_dead_letter_and_collector_goes_on(kafka, tmp_path):
    topic, dlq = kafka.topics()
    raw = KafkaProducer(bootstrap_servers=kafka.bootstrap, acks="all")
    bad_version = logs_pb2.ConversationEvent(
        event_id="x", session_id="s", schema_version=99, session_ended=logs_pb2.SessionEnded()
    ).SerializeToString()
    raw.send(topic, key=b"c0", value=b"\xff\x00 definitely not protobuf").get(timeout=30)
    raw.send(topic, key=b"c0", value=bad_version).get(timeout=30)
    raw.close()
    log = logger(tmp_path, kafka.bootstrap, topic)
    _ids, turns = emit_session(log, "c0")
    assert log.flush(30)
    log.close()

    col = Collector(rlhf_settings(tmp_path, kafka.bootstrap, topic, dlq, "g-" + uuid.uuid4().hex))
    try:
        col.run(until=_finalized(turns), timeout_s=180)
        assert col.totals.dead_lettered == 2
        assert len(_pairs_by_turn(col)) == turns
    finally:
        col.close()
    msgs = read_topic(kafka.bootstrap, dlq)
    assert len(msgs) == 2
    errors = sorted(dict(m.headers)["error"].decode() for m in msgs)
    assert errors[0].startswith("not a ConversationEvent") and "schema_version 99" in errors[1]
    assert dict(msgs[0].headers)["source-topic"].decode() == topic


def test_emit_does_not_block_while_kafka_is_down(kafka, tmp_path):
    topic, _dlq = kafka.topics()
    kafka.stop()
    try:
        log = logger(tmp_path, kafka.bootstrap, topic)
        lat = []
        ids = set()
        for i in range(3000):
            t0 = time.perf_counter()
            ids.add(
                log.turn_recorded(
                    session_id=f"d{i % 50}",
                    turn_id=f"t{i}",
                    user_transcript="hello",
                    transcript_confidence=0.9,
                    reply_text="hi there",
                    consent=True,
                )
            )
            lat.append(time.perf_counter() - t0)
            if i % 100 == 99:
                time.sleep(0.005)  # like a server: other work between emits
        lat.sort()
        p50, p99 = lat[len(lat) // 2], lat[int(len(lat) * 0.99)]
        print(f"emit while Kafka is down: p50 {p50 * 1e6:.1f} us, p99 {p99 * 1e6:.1f} us")
        assert p99 < 1e-3
        time.sleep(1.0)
        assert log.stats()["spool_pending"] == 3000 and log.stats()["delivered"] == 0
    finally:
        kafka.start()
    assert log.flush(60), log.stats()
    log.close()
    got = Counter(logs_pb2.ConversationEvent.FromString(m.value).event_id for m in read_topic(kafka.bootstrap, topic))
    assert set(got) == ids  # at-least-once on the wire; the collector dedupes on event_id
