"""ConversationLogger: non-blocking conversation-event logging to a durable spool and Kafka.

Gateway API (every call returns at once, in microseconds; nothing here blocks the event loop)::

    from services.convlog import ConversationLogger, ConvlogSettings, AudioClip

    log = ConversationLogger(ConvlogSettings())      # or ConversationLogger() to read STEPAUDIO_CONVLOG_* env
    log.start()                                       # starts the writer/sender threads (idempotent)
    log.turn_recorded(session_id=..., turn_id=..., user_transcript="...", transcript_confidence=0.93,
                      reply_text="...", user_audio=AudioClip(pcm16_bytes, 16000),
                      reply_audio=AudioClip(pcm, 22050), tool_calls=[{"name": "weather", "arguments": {...},
                      "result": {...}, "latency_ms": 80}], interruption=(1200, "played text"),
                      latencies={"first_audio_ms": 420, "total_ms": 2100}, consent=True,
                      tenant="acme", model_version="...", prompt_version="...")    -> event_id
    log.feedback(session_id=..., turn_id=..., rating=4, thumbs=logs_pb2.THUMBS_UP, regenerate=False, comment="",
                 alternative_index=0, consent=True)                                  -> event_id
    log.reply_regenerated(session_id=..., turn_id=..., reply_text="...", alternative_index=1,
                          reply_audio=None, consent=True)                            -> event_id
    log.session_ended(session_id=..., reason=logs_pb2.SESSION_END_REASON_USER_HANGUP, turn_count=3,
                      duration_ms=60000)  -> event_id
    log.emit(event)          # a ready ConversationEvent; event_id/schema_version/emitted_at filled when empty
    log.flush(timeout_s)     # tests/shutdown: wait until spooled (and delivered when Kafka is configured)
    log.close(timeout_s)     # flush what can be flushed in time, stop threads; the spool keeps the rest

How it works: ``emit``/the helpers only append to an in-memory deque (bounded by ``queue_max_events``; beyond it
the event is dropped and counted, never blocking). A writer thread builds the events (PII redaction, consent,
audio store writes happen here, off the caller's thread), appends them to the spool (``spool.py``) and wakes the
sender thread, which reads the spool from the delivered position and sends with kafka-python
``KafkaProducer(enable_idempotence=True, acks="all")`` keyed by ``session_id``. Acknowledged records advance the
spool's ack position and fully delivered segments are deleted. When Kafka is down, sends fail or time out, the
sender rewinds to the ack position and retries with backoff: the spool grows (bounded, see spool.py) and drains
when Kafka is back. Delivery is at-least-once; consumers dedupe on ``event_id``. With no
``bootstrap_servers`` the spool alone is the sink (segments are kept; read them with ``Spool.read``).

Consent (``consent=False``, the default): no audio is stored, the user transcript and feedback comment become
``[REDACTED]`` (redaction kind NO_CONSENT). PII redaction (e-mail, phone, card) applies to every text always.
"""

from __future__ import annotations

import collections
import json
import logging
import struct
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import datetime
from typing import Any

from google.protobuf import timestamp_pb2

from services.convlog import metrics
from services.convlog.audio_store import AudioClip, AudioStore, LocalAudioStore
from services.convlog.redact import CARD, EMAIL, NO_CONSENT, PHONE, redact
from services.convlog.settings import ConvlogSettings
from services.convlog.spool import Spool
from stepaudio.logs.v1 import logs_pb2

log = logging.getLogger(__name__)

SCHEMA_VERSION = 1
REDACTED = "[REDACTED]"
_KEYLEN = struct.Struct(">H")
_KIND = {
    EMAIL: logs_pb2.REDACTION_KIND_EMAIL,
    PHONE: logs_pb2.REDACTION_KIND_PHONE,
    CARD: logs_pb2.REDACTION_KIND_CARD,
    NO_CONSENT: logs_pb2.REDACTION_KIND_NO_CONSENT,
}
_HEADERS = [
    ("content-type", b"application/x-protobuf"),
    ("schema", b"stepaudio.logs.v1.ConversationEvent"),
    ("schema-version", str(SCHEMA_VERSION).encode()),
]


def encode_record(key: bytes, value: bytes) -> bytes:
    """Spool record payload: 2-byte key length, key, value."""
    return _KEYLEN.pack(len(key)) + key + value


def decode_record(payload: bytes) -> tuple[bytes, bytes]:
    """Inverse of ``encode_record``."""
    (n,) = _KEYLEN.unpack_from(payload)
    return payload[2 : 2 + n], payload[2 + n :]


def _ts(when: datetime | float | None) -> timestamp_pb2.Timestamp:
    ts = timestamp_pb2.Timestamp()
    if when is None:
        ts.FromNanoseconds(time.time_ns())
    elif isinstance(when, datetime):
        ts.FromDatetime(when)
    else:
        ts.FromNanoseconds(int(when * 1e9))
    return ts


class ConversationLogger:
    """Non-blocking producer of ConversationEvent records (see the module docstring for the API)."""

    def __init__(
        self,
        settings: ConvlogSettings | None = None,
        *,
        producer_factory: Callable[..., Any] | None = None,
    ) -> None:
        self.settings = s = settings or ConvlogSettings()
        self._producer_factory = producer_factory
        self._queue: collections.deque[Any] = collections.deque()
        self._wake_writer = threading.Event()
        self._wake_sender = threading.Event()
        self._stop = threading.Event()
        self._enqueued = 0
        self._written = 0
        self._threads: list[threading.Thread] = []
        self._lock = threading.Lock()
        self.spool: Spool | None = None
        self.audio: AudioStore = LocalAudioStore(s.audio_dir, base_uri=s.audio_base_uri)
        self.delivered = 0
        self.send_errors = 0
        self._kafka = bool(s.bootstrap_servers.strip()) and s.enabled
        self._errors: collections.deque[tuple[int, BaseException]] = collections.deque()

    # ------------------------------------------------------------------ lifecycle
    def start(self) -> ConversationLogger:
        """Open the spool and start the background threads (idempotent)."""
        with self._lock:
            if self._threads or not self.settings.enabled:
                return self
            s = self.settings
            self.spool = Spool(
                s.spool_dir,
                fsync_policy=s.fsync_policy,
                fsync_interval_ms=s.fsync_interval_ms,
                max_bytes=s.max_spool_bytes,
                segment_bytes=s.segment_bytes,
                full_policy=s.full_policy,
                ack_persist_interval_ms=s.ack_flush_interval_ms,
            )
            self._stop.clear()
            self._threads = [threading.Thread(target=self._writer_loop, name="convlog-writer", daemon=True)]
            if self._kafka:
                self._threads.append(threading.Thread(target=self._sender_loop, name="convlog-sender", daemon=True))
            for t in self._threads:
                t.start()
        return self

    def __enter__(self) -> ConversationLogger:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    def flush(self, timeout_s: float = 10.0) -> bool:
        """Wait until everything emitted is spooled and, with Kafka, acknowledged. True when done in time."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self._written >= self._enqueued and (not self._kafka or (self.spool and self.spool.pending == 0)):
                return True
            self._wake_writer.set()
            time.sleep(0.005)
        return False

    def close(self, timeout_s: float = 5.0) -> None:
        """Flush for at most ``timeout_s``, stop the threads, close the spool (undelivered data stays in it)."""
        if not self._threads:
            return
        self.flush(timeout_s)
        self._stop.set()
        self._wake_writer.set()
        self._wake_sender.set()
        for t in self._threads:
            t.join(timeout=max(1.0, timeout_s))
        self._threads = []
        if self.spool:
            self.spool.close()

    def stats(self) -> dict[str, Any]:
        """Counters for tests and the bench."""
        return {
            "enqueued": self._enqueued,
            "written": self._written,
            "delivered": self.delivered,
            "send_errors": self.send_errors,
            "queue_depth": len(self._queue),
            "spool_pending": self.spool.pending if self.spool else 0,
            "spool_bytes": self.spool.total_bytes() if self.spool else 0,
        }

    # ------------------------------------------------------------------ caller side (never blocks)
    def _enqueue(self, item: Any) -> bool:
        if len(self._queue) >= self.settings.queue_max_events:
            metrics.DROPPED.labels("queue_full").inc()
            return False
        self._queue.append(item)
        self._enqueued += 1
        if not self._wake_writer.is_set():
            self._wake_writer.set()
        return True

    def emit(self, event: logs_pb2.ConversationEvent) -> str:
        """Queue a ready event; returns its event_id. Never blocks (drops and counts when the queue is full)."""
        if not event.event_id:
            event.event_id = str(uuid.uuid4())
        if not self.settings.enabled:
            return event.event_id
        if not event.schema_version:
            event.schema_version = SCHEMA_VERSION
        if not event.HasField("emitted_at"):
            event.emitted_at.FromNanoseconds(time.time_ns())
        self._enqueue(event)
        metrics.EMITTED.inc()
        return event.event_id

    def _submit(self, build: Callable[[logs_pb2.ConversationEvent], None], **env: Any) -> str:
        event_id = str(uuid.uuid4())
        if not self.settings.enabled:
            return event_id
        now = time.time_ns()
        self._enqueue((event_id, now, build, env))
        metrics.EMITTED.inc()
        return event_id

    def turn_recorded(
        self,
        *,
        session_id: str,
        turn_id: str,
        user_transcript: str,
        reply_text: str,
        transcript_confidence: float = 0.0,
        user_audio: AudioClip | None = None,
        reply_audio: AudioClip | None = None,
        tool_calls: Iterable[Mapping[str, Any]] = (),
        interruption: tuple[int, str] | None = None,
        latencies: Mapping[str, int] | None = None,
        consent: bool = False,
        tenant: str | None = None,
        model_version: str | None = None,
        prompt_version: str | None = None,
        occurred_at: datetime | float | None = None,
    ) -> str:
        """Log a completed turn. tool_calls items: name, call_id, arguments, result, error, latency_ms."""
        calls = [dict(c) for c in tool_calls]
        lat = dict(latencies or {})

        def build(ev: logs_pb2.ConversationEvent) -> None:
            t = ev.turn_recorded
            t.user_transcript = self._text(ev, user_transcript, consent, personal=True)
            t.transcript_confidence = transcript_confidence
            t.reply_text = self._text(ev, reply_text, consent)
            ref = self.audio.put_if_consented(consent, user_audio)
            if ref is not None:
                t.user_audio.CopyFrom(ref)
            if self.settings.store_reply_audio:
                ref = self.audio.put_if_consented(consent, reply_audio)
                if ref is not None:
                    t.reply_audio.CopyFrom(ref)
            for i, c in enumerate(calls):
                args, res = c.get("arguments", ""), c.get("result", "")
                t.tool_calls.add(
                    call_id=str(c.get("call_id", i)),
                    name=str(c.get("name", "")),
                    arguments_json=self._text(ev, args if isinstance(args, str) else json.dumps(args), consent),
                    result_json=self._text(ev, res if isinstance(res, str) else json.dumps(res), consent),
                    error=str(c.get("error", "")),
                    latency_ms=int(c.get("latency_ms", 0)),
                )
            if interruption is not None:
                t.interruption.audio_offset_ms = int(interruption[0])
                t.interruption.played_text = self._text(ev, interruption[1], consent)
            if lat:
                known = t.latencies.DESCRIPTOR.fields_by_name
                for k, v in lat.items():
                    if k in known:  # unknown names are dropped, never fatal to the event
                        setattr(t.latencies, k, max(int(v), 0))

        return self._submit(
            build,
            session_id=session_id,
            turn_id=turn_id,
            consent=consent,
            tenant=tenant,
            model_version=model_version,
            prompt_version=prompt_version,
            occurred_at=occurred_at,
        )

    def feedback(
        self,
        *,
        session_id: str,
        turn_id: str,
        rating: int = 0,
        thumbs: int = logs_pb2.THUMBS_UNSPECIFIED,
        regenerate: bool = False,
        comment: str = "",
        alternative_index: int = 0,
        consent: bool = False,
        tenant: str | None = None,
        occurred_at: datetime | float | None = None,
    ) -> str:
        """Log feedback on a turn's reply (rating 1-5 or 0, thumbs or THUMBS_UNSPECIFIED, regenerate request)."""
        if not 0 <= rating <= 5:
            raise ValueError("rating must be 0 (none) or 1..5")

        def build(ev: logs_pb2.ConversationEvent) -> None:
            f = ev.feedback_given
            f.target_turn_id = turn_id
            f.rating = rating
            f.thumbs = thumbs  # type: ignore[assignment]
            f.regenerate_requested = regenerate
            f.comment = self._text(ev, comment, consent, personal=True)
            f.target_alternative_index = alternative_index

        return self._submit(
            build, session_id=session_id, turn_id=turn_id, consent=consent, tenant=tenant, occurred_at=occurred_at
        )

    def reply_regenerated(
        self,
        *,
        session_id: str,
        turn_id: str,
        reply_text: str,
        alternative_index: int,
        reply_audio: AudioClip | None = None,
        rating: int = 0,
        consent: bool = False,
        tenant: str | None = None,
        model_version: str | None = None,
        occurred_at: datetime | float | None = None,
    ) -> str:
        """Log a regenerated reply (alternative_index 1, 2, ...) for a turn."""

        def build(ev: logs_pb2.ConversationEvent) -> None:
            r = ev.reply_regenerated
            r.target_turn_id = turn_id
            r.alternative_index = alternative_index
            r.reply_text = self._text(ev, reply_text, consent)
            r.rating = rating
            if self.settings.store_reply_audio:
                ref = self.audio.put_if_consented(consent, reply_audio)
                if ref is not None:
                    r.reply_audio.CopyFrom(ref)

        return self._submit(
            build,
            session_id=session_id,
            turn_id=turn_id,
            consent=consent,
            tenant=tenant,
            model_version=model_version,
            occurred_at=occurred_at,
        )

    def session_ended(
        self,
        *,
        session_id: str,
        reason: int = logs_pb2.SESSION_END_REASON_USER_HANGUP,
        turn_count: int = 0,
        duration_ms: int = 0,
        consent: bool = False,
        tenant: str | None = None,
        occurred_at: datetime | float | None = None,
    ) -> str:
        """Log the end of a session (reason: a logs.v1 SessionEndReason)."""

        def build(ev: logs_pb2.ConversationEvent) -> None:
            e = ev.session_ended
            e.reason = reason  # type: ignore[assignment]
            e.turn_count = turn_count
            e.duration_ms = duration_ms

        return self._submit(
            build, session_id=session_id, turn_id="", consent=consent, tenant=tenant, occurred_at=occurred_at
        )

    # ------------------------------------------------------------------ writer thread
    def _text(self, ev: logs_pb2.ConversationEvent, text: str, consent: bool, personal: bool = False) -> str:
        if personal and not consent and text:
            if logs_pb2.REDACTION_KIND_NO_CONSENT not in ev.redactions:
                ev.redactions.append(logs_pb2.REDACTION_KIND_NO_CONSENT)
            return REDACTED
        out, kinds = redact(text)
        for k in kinds:
            if _KIND[k] not in ev.redactions:
                ev.redactions.append(_KIND[k])
        return out

    def _build(self, item: Any) -> logs_pb2.ConversationEvent:
        if isinstance(item, logs_pb2.ConversationEvent):
            return item
        event_id, now_ns, build, env = item
        s = self.settings
        ev = logs_pb2.ConversationEvent(
            event_id=event_id,
            schema_version=SCHEMA_VERSION,
            session_id=env["session_id"],
            turn_id=env["turn_id"],
            tenant=env["tenant"] or s.default_tenant,
            consent=env["consent"],
            model_version=env.get("model_version") or s.model_version,
            prompt_version=env.get("prompt_version") or s.prompt_version,
        )
        ev.emitted_at.FromNanoseconds(now_ns)
        occ = env.get("occurred_at")
        ev.occurred_at.CopyFrom(_ts(occ) if occ is not None else ev.emitted_at)
        build(ev)
        return ev

    def _writer_loop(self) -> None:
        """Build events and append them to the spool. A failing disk (full, read-only) keeps the built records and
        retries them with backoff; meanwhile new events wait in the bounded memory queue (emit() never blocks; past
        queue_max_events it drops and counts). Nothing accepted is dropped unless the logger is closed first."""
        assert self.spool is not None
        spool = self.spool
        wait_s = spool.fsync_interval_s if spool.fsync_policy == "interval" else 0.1
        unwritten: list[bytes] = []  # built records the spool refused, in order
        unwritten_items = 0
        backoff = 0.0
        while True:
            self._wake_writer.wait(timeout=backoff or wait_s)
            self._wake_writer.clear()
            if unwritten:
                try:
                    spool.append_many(unwritten)
                except OSError as exc:
                    backoff = min(max(backoff * 2, 0.25), 5.0)
                    if self._stop.is_set():
                        log.error("convlog: spool still failing at close (%s); %d events dropped", exc, len(unwritten))
                        metrics.DROPPED.labels("spool_error").inc(len(unwritten))
                        return
                    continue
                log.info("convlog: spool writable again; %d held events written", len(unwritten))
                metrics.SPOOL_WRITE_FAILING.set(0)
                self._written += unwritten_items
                unwritten, unwritten_items, backoff = [], 0, 0.0
                self._wake_sender.set()
            while self._queue and not unwritten:
                batch: list[Any] = []
                while self._queue and len(batch) < 256:
                    batch.append(self._queue.popleft())
                payloads = []
                for i, item in enumerate(batch):
                    if i % 16 == 15:
                        time.sleep(0)  # hand the GIL to a waiting emit() caller instead of holding it for 5 ms
                    try:
                        ev = self._build(item)
                        limit = self.settings.max_event_bytes
                        if ev.ByteSize() > limit and not _fit(ev, limit):
                            log.error("convlog: event %s is over max_event_bytes even cut; dropped", ev.event_id)
                            metrics.DROPPED.labels("too_large").inc()
                            continue
                        payloads.append(encode_record(ev.session_id.encode(), ev.SerializeToString()))
                    except Exception:  # a bad event must not stop logging
                        log.exception("convlog: could not build event; dropped")
                        metrics.DROPPED.labels("build_error").inc()
                try:
                    spool.append_many(payloads)
                except OSError as exc:  # disk full or failing: hold these, retry, never drop what was accepted
                    log.error("convlog: spool write failed (%s); holding %d events and retrying", exc, len(payloads))
                    metrics.SPOOL_WRITE_FAILING.set(1)
                    unwritten, unwritten_items, backoff = payloads, len(batch), 0.25
                    break
                self._written += len(batch)
                metrics.QUEUE_DEPTH.set(len(self._queue))
                self._wake_sender.set()
            spool.maybe_sync()
            if self._stop.is_set() and not self._queue and not unwritten:
                return

    # ------------------------------------------------------------------ sender thread
    def _make_producer(self) -> Any:
        s = self.settings
        kwargs = dict(
            bootstrap_servers=[b.strip() for b in s.bootstrap_servers.split(",") if b.strip()],
            client_id=s.client_id,
            enable_idempotence=True,
            acks="all",
            linger_ms=s.linger_ms,
            request_timeout_ms=s.request_timeout_ms,
            delivery_timeout_ms=s.delivery_timeout_ms,
            max_block_ms=max(1000, s.request_timeout_ms),
            reconnect_backoff_max_ms=2000,
            **s.kafka_client_kwargs(),
        )
        if self._producer_factory is not None:
            return self._producer_factory(**kwargs)
        from kafka import KafkaProducer

        return KafkaProducer(**kwargs)

    def _sender_loop(self) -> None:
        assert self.spool is not None
        spool, s = self.spool, self.settings
        producer: Any = None
        gen = 0
        inflight: collections.deque[list[Any]] = collections.deque()
        cursor = spool.acked_position()
        progress_at = time.monotonic()  # last ack, or when the spool last had nothing pending

        def reset(why: BaseException | str) -> None:
            nonlocal producer, gen, cursor
            self.send_errors += 1
            metrics.SEND_ERRORS.inc()
            metrics.KAFKA_UP.set(0)
            log.warning("convlog: Kafka send failed (%s); retrying from the spool", why)
            if producer is not None:
                try:
                    producer.close(timeout=0)
                except Exception:
                    pass
            producer = None
            gen += 1
            inflight.clear()
            self._errors.clear()
            cursor = spool.acked_position()

        while not (self._stop.is_set() and (producer is None or not inflight)):
            if producer is None:
                try:
                    producer = self._make_producer()
                except Exception as exc:
                    metrics.KAFKA_UP.set(0)
                    log.info("convlog: Kafka not reachable (%s); spooling", exc)
                    self._stop.wait(s.reconnect_backoff_s)
                    continue
            if self._errors:
                g, err = self._errors.popleft()
                if g == gen:
                    reset(err)
                    self._stop.wait(s.reconnect_backoff_s)
                    continue
            # advance the ack position over the contiguous acknowledged prefix
            n, last = 0, None
            while inflight and inflight[0][1]:
                last = inflight.popleft()[0]
                n += 1
            if last is not None:
                spool.ack(last, n)
                self.delivered += n
                metrics.DELIVERED.inc(n)
                metrics.KAFKA_UP.set(1)
            if last is not None or not spool.pending:
                progress_at = time.monotonic()
            lag = time.monotonic() - progress_at
            metrics.DELIVERY_LAG.set(lag if spool.pending else 0.0)
            if spool.pending and lag * 1000 > s.request_timeout_ms:
                metrics.KAFKA_UP.set(0)  # buffered sends are not the same as a live broker
            spool.maybe_sync()
            room = s.max_in_flight - len(inflight)
            recs = spool.read(cursor, min(500, room)) if room > 0 and not self._stop.is_set() else []
            if not recs:
                self._wake_sender.wait(timeout=0.02 if inflight else 0.2)
                self._wake_sender.clear()
                continue
            try:
                for payload, nxt, _seg in recs:
                    entry: list[Any] = [nxt, False]
                    if not payload:  # corrupt record skipped by the spool
                        entry[1] = True
                    else:
                        key, value = decode_record(payload)
                        try:
                            fut = producer.send(s.topic, key=key, value=value, headers=_HEADERS)
                        except _PERMANENT as exc:  # this record can never be sent: skip it, never retry forever
                            _skip(entry, exc)
                        else:
                            fut.add_callback(self._on_ok, entry)
                            fut.add_errback(self._on_err, gen, entry)
                    inflight.append(entry)
                    cursor = nxt
            except Exception as exc:  # metadata timeout (broker down), buffer full, closed producer ...
                reset(exc)
                self._stop.wait(s.reconnect_backoff_s)
        if producer is not None:
            try:
                producer.close(timeout=1)
            except Exception:
                pass

    @staticmethod
    def _on_ok(entry: list[Any], _metadata: Any) -> None:
        entry[1] = True

    def _on_err(self, gen: int, entry: list[Any], exc: BaseException) -> None:
        if isinstance(exc, _PERMANENT):
            _skip(entry, exc)  # the broker refused this record for good (too large): the rest goes on
        else:
            self._errors.append((gen, exc))


def _permanent_errors() -> tuple[type[BaseException], ...]:
    try:
        from kafka import errors
    except ImportError:  # pragma: no cover - kafka-python is a dependency of the serve extra
        return ()
    return tuple(getattr(errors, n) for n in ("MessageSizeTooLargeError", "RecordTooLargeError",
                                                "InvalidRecordError") if hasattr(errors, n))


_PERMANENT = _permanent_errors()


def _skip(entry: list[Any], exc: BaseException) -> None:
    log.error("convlog: Kafka refused a record for good (%s); skipped", exc)
    metrics.DROPPED.labels("too_large").inc()
    entry[1] = True


def _repeated(fd: Any) -> bool:
    """Whether a field is repeated (``is_repeated`` from protobuf 6 on; ``label`` before, deprecated since)."""
    flag = getattr(fd, "is_repeated", None)
    return bool(flag) if flag is not None else fd.label == fd.LABEL_REPEATED


def _fit(ev: logs_pb2.ConversationEvent, limit: int) -> bool:
    """Cut the event's longest texts until it serializes within ``limit`` bytes; False if it cannot."""
    from google.protobuf.descriptor import FieldDescriptor

    def strings(msg: Any) -> list[tuple[Any, Any]]:
        out = []
        for fd, value in msg.ListFields():
            if fd.type == FieldDescriptor.TYPE_STRING and not _repeated(fd):
                out.append((msg, fd))
            elif fd.type == FieldDescriptor.TYPE_MESSAGE:
                for m in value if _repeated(fd) else [value]:
                    out.extend(strings(m))
        return out

    cut = False
    while ev.ByteSize() > limit:
        fields = [(m, fd) for m, fd in strings(ev) if len(getattr(m, fd.name)) > 256]
        if not fields:
            return False
        msg, fd = max(fields, key=lambda f: len(getattr(f[0], f[1].name)))
        text = getattr(msg, fd.name)
        setattr(msg, fd.name, text[: len(text) // 2] + " [cut]")
        cut = True
    if cut:
        metrics.CUT.inc()
    return True


def read_spooled_events(spool: Spool) -> Sequence[logs_pb2.ConversationEvent]:
    """Decode every undelivered event in a spool (for spool-only deployments and tests)."""
    out: list[logs_pb2.ConversationEvent] = []
    pos = spool.acked_position()
    while True:
        recs = spool.read(pos, 10_000)
        if not recs:
            return out
        for payload, _nxt, _seg in recs:
            if payload:
                out.append(logs_pb2.ConversationEvent.FromString(decode_record(payload)[1]))
        pos = recs[-1][1]
