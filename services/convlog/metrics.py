"""Prometheus metrics of the conversation logger (process-wide; shared by every ConversationLogger)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge

SPOOL_BYTES = Gauge("stepaudio_convlog_spool_bytes", "Bytes of spool segments on disk.")
SPOOL_PENDING = Gauge("stepaudio_convlog_spool_pending_events", "Spooled events not yet acknowledged by Kafka.")
SPOOL_FULL = Gauge(
    "stepaudio_convlog_spool_full", "ALARM: 1 while the spool is at max_spool_bytes and events are being dropped."
)
DROPPED = Counter("stepaudio_convlog_dropped_events_total", "Events lost before reaching the spool.", ["reason"])
CORRUPT = Counter("stepaudio_convlog_spool_corrupt_records_total", "Torn or corrupt spool records skipped.")
EMITTED = Counter("stepaudio_convlog_emitted_events_total", "Events accepted by emit().")
SPOOLED = Counter("stepaudio_convlog_spooled_events_total", "Events written to the spool.")
DELIVERED = Counter("stepaudio_convlog_delivered_events_total", "Events acknowledged by Kafka (acks=all).")
SEND_ERRORS = Counter("stepaudio_convlog_send_errors_total", "Failed Kafka sends (they are retried from the spool).")
QUEUE_DEPTH = Gauge("stepaudio_convlog_queue_depth", "Events waiting in memory between emit() and the spool.")
KAFKA_UP = Gauge("stepaudio_convlog_kafka_connected",
                 "1 while Kafka acknowledges events; 0 when it is unreachable or has acknowledged nothing pending "
                 "for request_timeout_ms.")
DELIVERY_LAG = Gauge("stepaudio_convlog_delivery_lag_seconds",
                     "Seconds since Kafka last acknowledged an event while events are pending (0 when none are).")
CUT = Counter("stepaudio_convlog_cut_events_total", "Events whose long texts were cut to fit max_event_bytes.")
SPOOL_WRITE_FAILING = Gauge("stepaudio_convlog_spool_write_failing",
                            "ALARM: 1 while the spool refuses writes (disk full): events are held in memory.")
