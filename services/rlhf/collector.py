"""Kafka consumer that turns conversation events into preference pairs (see store.py for the protocol)."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from google.protobuf.message import DecodeError

from services.rlhf.rules import build_pairs
from services.rlhf.settings import RlhfSettings
from services.rlhf.store import DatasetStore, pair_json
from stepaudio.logs.v1 import logs_pb2

log = logging.getLogger(__name__)

KNOWN_SCHEMA_VERSIONS = {1}
_TURN_KINDS = ("turn_recorded", "feedback_given", "reply_regenerated")


class MalformedEvent(ValueError):
    """A record that is not a valid ConversationEvent of a known schema version."""


def parse_event(value: bytes | None) -> logs_pb2.ConversationEvent:
    """Decode and validate one record value."""
    if not value:
        raise MalformedEvent("empty record value")
    try:
        ev = logs_pb2.ConversationEvent.FromString(value)
    except DecodeError as exc:
        raise MalformedEvent(f"not a ConversationEvent: {exc}") from exc
    if ev.schema_version not in KNOWN_SCHEMA_VERSIONS:
        raise MalformedEvent(f"unknown schema_version {ev.schema_version}")
    if not ev.event_id or not ev.session_id:
        raise MalformedEvent("event_id and session_id are required")
    kind = ev.WhichOneof("payload")
    if kind is None:
        raise MalformedEvent("no payload")
    if kind in _TURN_KINDS and not ev.turn_id:
        raise MalformedEvent(f"{kind} without turn_id")
    return ev


class AssignmentWatch:
    """When a group member that holds no partition should leave and rejoin its group.

    kafka-python can join while the topic's partitions have no leader yet (the broker has just restarted): the
    leader assigns nothing and the member never rejoins, so the collector consumes nothing, forever, without an
    error. A member still without partitions ``first_s`` after it last had some (or started) rejoins; each further
    try waits twice as long, up to ``max_s``, so a spare member of a group larger than the topic's partition count
    costs a rebalance only now and then.
    """

    def __init__(self, first_s: float = 15.0, max_s: float = 600.0) -> None:
        self.first_s, self.max_s = first_s, max_s
        self._since: float | None = None
        self._wait = first_s

    def due(self, assigned: bool, now: float) -> bool:
        if assigned:
            self._since, self._wait = None, self.first_s
            return False
        if self._since is None:
            self._since = now
            return False
        if now - self._since < self._wait:
            return False
        self._since, self._wait = now, min(self._wait * 2, self.max_s)
        return True


@dataclass
class BatchResult:
    """What one batch did."""

    records: int = 0
    events: int = 0
    duplicates: int = 0
    dead_lettered: int = 0
    pairs: int = 0


class Collector:
    """Consumer-group member that builds the preference dataset with exactly-once effect."""

    def __init__(self, settings: RlhfSettings | None = None) -> None:
        self._manifest_at = 0.0
        self._manifest_dirty = False
        self.settings = s = settings or RlhfSettings()
        self.store = DatasetStore(s.dataset_dir)
        self._stop = threading.Event()
        self.consumer: Any = None
        self.dlq: Any = None
        self.totals = BatchResult()
        self._assignment = AssignmentWatch()
        self.rejoins = 0  # times this member left and rejoined its group for want of partitions

    # ------------------------------------------------------------------ Kafka plumbing
    def connect(self) -> None:
        """Create the consumer (group member, manual commits) and the dead-letter producer."""
        from kafka import KafkaConsumer, KafkaProducer

        s = self.settings
        servers = [b.strip() for b in s.bootstrap_servers.split(",") if b.strip()]
        self.consumer = KafkaConsumer(
            s.topic,
            bootstrap_servers=servers,
            group_id=s.group_id,
            client_id=s.client_id,
            enable_auto_commit=False,
            auto_offset_reset=s.auto_offset_reset,
            **s.kafka_client_kwargs(),
            max_poll_records=s.max_poll_records,
            session_timeout_ms=s.session_timeout_ms,
            heartbeat_interval_ms=s.heartbeat_interval_ms,
            max_poll_interval_ms=s.max_poll_interval_ms,
        )
        self.dlq = KafkaProducer(
            bootstrap_servers=servers, client_id=s.client_id + "-dlq", acks="all", enable_idempotence=True,
            **s.kafka_client_kwargs(),
        )

    def commit_offsets(self) -> None:
        """Commit the consumer positions (step 4 of the protocol)."""
        try:
            self.consumer.commit()
        except Exception as exc:  # rebalance in progress etc.: the batch will be replayed and deduplicated
            log.warning("rlhf: offset commit failed (%s); the batch may be replayed (deduplicated)", exc)

    def close(self) -> None:
        """Close Kafka clients and the store."""
        for c in (self.consumer, self.dlq):
            if c is not None:
                try:
                    c.close()
                except Exception:
                    pass
        self.consumer = self.dlq = None
        self.store.close()

    def stop(self) -> None:
        """Ask run() to return after the current batch."""
        self._stop.set()

    # ------------------------------------------------------------------ processing
    def _send_dlq(self, bad: list[tuple[Any, str]]) -> None:
        futs = []
        for r, why in bad:
            headers = [
                ("error", why.encode()[:1000]),
                ("source-topic", r.topic.encode()),
                ("source-partition", str(r.partition).encode()),
                ("source-offset", str(r.offset).encode()),
            ]
            futs.append(self.dlq.send(self.settings.dlq_topic, key=r.key, value=r.value or b"", headers=headers))
        self.dlq.flush()
        for f in futs:
            f.get(timeout=30)  # raises: then nothing is committed and the batch is retried

    def process(self, records: list[Any]) -> BatchResult:
        """Steps 1-2 of the protocol for one batch of ConsumerRecords."""
        res = BatchResult(records=len(records))
        db = self.store.db
        good: list[tuple[Any, logs_pb2.ConversationEvent]] = []
        bad: list[tuple[Any, str]] = []
        seen_dlq = set()
        for r in records:
            try:
                good.append((r, parse_event(r.value)))
            except MalformedEvent as exc:
                if (
                    db.execute(
                        "SELECT 1 FROM dlq WHERE topic=? AND part=? AND off=?", (r.topic, r.partition, r.offset)
                    ).fetchone()
                    is None
                ):
                    bad.append((r, str(exc)))
                seen_dlq.add((r.topic, r.partition, r.offset))
        if bad:
            self._send_dlq(bad)
        db.execute("BEGIN IMMEDIATE")
        try:
            db.executemany("INSERT OR IGNORE INTO dlq VALUES (?, ?, ?)", list(seen_dlq))
            res.dead_lettered = len(bad)
            ended: set[str] = set()
            watermark = 0
            for _r, ev in good:
                kind = ev.WhichOneof("payload")
                t = ev.occurred_at.ToNanoseconds()
                watermark = max(watermark, t)
                cur = db.execute(
                    "INSERT OR IGNORE INTO events VALUES (?, ?, ?, ?, ?, ?)",
                    (ev.event_id, ev.session_id, ev.turn_id, kind, t, ev.SerializeToString()),
                )
                if cur.rowcount == 0:
                    res.duplicates += 1
                    continue
                res.events += 1
                if kind == "session_ended":
                    ended.add(ev.session_id)
                    continue
                row = db.execute(
                    "SELECT finalized FROM turns WHERE session_id=? AND turn_id=?", (ev.session_id, ev.turn_id)
                ).fetchone()
                if row is not None and row[0]:
                    self.store.bump("late")
                    continue
                db.execute(
                    "INSERT INTO turns(session_id, turn_id, last_ns, consent) VALUES (?, ?, ?, ?) "
                    "ON CONFLICT(session_id, turn_id) DO UPDATE SET last_ns = MAX(last_ns, excluded.last_ns),"
                    " consent = MAX(consent, excluded.consent)",
                    (ev.session_id, ev.turn_id, t, int(ev.consent and kind == "turn_recorded")),
                )
            res.pairs = self._finalize(ended, watermark)
            self.store.bump("events", res.events)
            self.store.bump("duplicates", res.duplicates)
            self.store.bump("dlq", res.dead_lettered)
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise
        for k in ("records", "events", "duplicates", "dead_lettered", "pairs"):
            setattr(self.totals, k, getattr(self.totals, k) + getattr(res, k))
        return res

    def _finalize(self, ended: set[str], watermark: int) -> int:
        db = self.store.db
        s = self.settings
        todo = []
        for sid in ended:
            todo += db.execute(
                "SELECT session_id, turn_id, consent FROM turns WHERE session_id=? AND finalized=0", (sid,)
            ).fetchall()
        if watermark:
            todo += db.execute(
                "SELECT session_id, turn_id, consent FROM turns WHERE finalized=0 AND last_ns < ?",
                (watermark - int(s.finalize_after_s * 1e9),),
            ).fetchall()
        pairs = 0
        now = time.time()
        for sid, tid, consent in dict.fromkeys(todo):
            db.execute("UPDATE turns SET finalized=1 WHERE session_id=? AND turn_id=?", (sid, tid))
            self.store.bump("turns_finalized")
            if s.require_consent and not consent:
                self.store.bump("no_consent")
            else:
                events = [
                    logs_pb2.ConversationEvent.FromString(b[0])
                    for b in db.execute(
                        "SELECT blob FROM events WHERE session_id=? AND turn_id=? AND blob IS NOT NULL", (sid, tid)
                    )
                ]
                for p in build_pairs(events, deaf_confidence=s.deaf_confidence):
                    cur = db.execute(
                        "INSERT OR IGNORE INTO pairs VALUES (?, ?, ?, ?, ?, NULL)",
                        (p.pair_id, p.occurred_at.ToNanoseconds(), p.reason, pair_json(p), now),
                    )
                    pairs += cur.rowcount
            # the join state is no longer needed; the id stays for deduplication
            db.execute("UPDATE events SET blob=NULL WHERE session_id=? AND turn_id=?", (sid, tid))
        return pairs

    def maybe_flush_shard(self, force: bool = False) -> str | None:
        """Step 3: write a shard when enough pairs are pending or the oldest is old enough."""
        n, oldest = self.store.pending_pairs()
        if n and (
            force
            or n >= self.settings.shard_max_pairs
            or (oldest is not None and time.time() - oldest >= self.settings.shard_max_age_s)
        ):
            return self.store.flush_shard()
        return None

    def poll_once(self) -> BatchResult:
        """Poll one batch and run the whole protocol for it."""
        polled = self.consumer.poll(timeout_ms=self.settings.poll_timeout_ms)
        records = [r for recs in polled.values() for r in recs]
        if not records:
            self._rejoin_if_stuck()
        res = self.process(records) if records else BatchResult()
        if records:
            self._manifest_dirty = True
        if self.maybe_flush_shard() is not None:
            self._manifest_dirty = False  # flush_shard wrote it
        elif self._manifest_dirty:
            self.maybe_write_manifest()
        if records:
            self.commit_offsets()
        return res

    def _rejoin_if_stuck(self) -> None:
        """Leave and rejoin the group when this member has held no partition for a while although the topic has
        some (see AssignmentWatch)."""
        topic = self.settings.topic
        if not self._assignment.due(bool(self.consumer.assignment()), time.monotonic()):
            return
        if not self.consumer.partitions_for_topic(topic):
            return
        log.warning("rlhf: no partition of %s assigned to this collector; leaving and rejoining the group", topic)
        self.rejoins += 1
        self.consumer.unsubscribe()
        self.consumer.subscribe([topic])

    def maybe_write_manifest(self) -> None:
        """Keep manifest.json current while no shard is written (counts move with every batch), at most once a
        second."""
        if time.monotonic() - self._manifest_at >= 1.0:
            self.store.write_manifest()
            self._manifest_at = time.monotonic()
            self._manifest_dirty = False

    def run(self, until: Callable[[Collector], bool] | None = None, timeout_s: float | None = None) -> BatchResult:
        """Consume until stop(), ``until(self)`` is true, or ``timeout_s``; flushes pending pairs on the way out."""
        if self.consumer is None:
            self.connect()
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        while not self._stop.is_set():
            self.poll_once()
            if until is not None and until(self):
                break
            if deadline is not None and time.monotonic() > deadline:
                break
        self.maybe_flush_shard(force=True)
        return self.totals
