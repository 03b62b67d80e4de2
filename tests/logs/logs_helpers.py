"""Shared helpers for tests/logs."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from services.convlog import ConversationLogger, ConvlogSettings
from services.rlhf.settings import RlhfSettings

ROOT_HINT = str(Path(__file__).resolve().parents[2])
FAST_GROUP = dict(
    session_timeout_ms=6000,
    heartbeat_interval_ms=500,
    max_poll_interval_ms=30000,
    poll_timeout_ms=200,
    shard_max_age_s=0.0,
)


def read_topic(bootstrap: str, topic: str, timeout_s: float = 60.0) -> list[Any]:
    """Every record in ``topic`` up to its end offsets now, in partition order.

    A consumer that simply iterates until it has seen nothing for a few seconds reads nothing at all when the broker
    has just restarted (its partitions have no leader yet for a moment): this one waits for the partitions, takes
    their end offsets and reads up to them, or fails after ``timeout_s``.
    """
    from kafka import KafkaConsumer, TopicPartition

    consumer = KafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False, group_id=None)
    try:
        deadline = time.monotonic() + timeout_s
        while not (parts := consumer.partitions_for_topic(topic)):
            assert time.monotonic() < deadline, f"no partitions for {topic}"
            time.sleep(0.2)
        tps = [TopicPartition(topic, p) for p in sorted(parts)]
        consumer.assign(tps)
        consumer.seek_to_beginning(*tps)
        end = consumer.end_offsets(tps)
        records: dict[TopicPartition, list[Any]] = {tp: [] for tp in tps}
        while any(consumer.position(tp) < end[tp] for tp in tps):
            assert time.monotonic() < deadline, f"only {sum(map(len, records.values()))} records of {topic} read"
            for tp, batch in consumer.poll(timeout_ms=500).items():
                records[tp].extend(batch)
        return [r for tp in tps for r in records[tp]]
    finally:
        consumer.close()


def logger(tmp, bootstrap: str = "", topic: str = "stepaudio.conversation.v1", **kw: Any) -> ConversationLogger:
    s = ConvlogSettings(
        spool_dir=tmp / "spool",
        audio_dir=tmp / "audio",
        bootstrap_servers=bootstrap,
        topic=topic,
        delivery_timeout_ms=10000,
        request_timeout_ms=3000,
        reconnect_backoff_s=0.3,
        **kw,
    )
    return ConversationLogger(s).start()


def rlhf_settings(tmp, bootstrap: str, topic: str, dlq: str, group: str, **kw: Any) -> RlhfSettings:
    return RlhfSettings(
        bootstrap_servers=bootstrap,
        topic=topic,
        dlq_topic=dlq,
        group_id=group,
        dataset_dir=tmp / "dataset",
        **{**FAST_GROUP, **kw},
    )


def emit_session(log: ConversationLogger, sid: str, turns: int = 3) -> tuple[set[str], int]:
    """One consented session; every turn yields exactly one pair. Returns (turn-level event ids, pairs expected)."""
    ids: set[str] = set()
    for t in range(turns):
        tid = f"{sid}-t{t}"
        if t % 3 == 2:  # deaf hacking: clear audio, "didn't catch that" reply, no alternative
            ids.add(
                log.turn_recorded(
                    session_id=sid,
                    turn_id=tid,
                    user_transcript="what is the capital of France",
                    transcript_confidence=0.97,
                    reply_text="Sorry, I didn't catch that.",
                    consent=True,
                )
            )
            continue
        ids.add(
            log.turn_recorded(
                session_id=sid,
                turn_id=tid,
                user_transcript=f"question {t}",
                transcript_confidence=0.9,
                reply_text=f"weak answer {t}",
                consent=True,
            )
        )
        ids.add(log.feedback(session_id=sid, turn_id=tid, rating=2, regenerate=True, consent=True))
        ids.add(
            log.reply_regenerated(
                session_id=sid, turn_id=tid, reply_text=f"better answer {t}", alternative_index=1, consent=True
            )
        )
        ids.add(log.feedback(session_id=sid, turn_id=tid, rating=5, alternative_index=1, consent=True))
    log.session_ended(session_id=sid, turn_count=turns, consent=True)
    return ids, turns
