"""Settings of the conversation logger (env prefix ``STEPAUDIO_CONVLOG_``)."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from services.convlog.kafka_security import KafkaSecurity

FsyncPolicy = Literal["always", "interval", "none"]
FullPolicy = Literal["drop_newest", "drop_oldest"]


class ConvlogSettings(KafkaSecurity, BaseSettings):
    """Where conversation-log events go and how durably they are kept on the way."""

    model_config = SettingsConfigDict(env_prefix="STEPAUDIO_CONVLOG_", extra="ignore")

    enabled: bool = Field(default=True, description="Master switch; when false every logger call is a no-op.")
    spool_dir: Path = Field(
        default=Path(".run/convlog/spool"), description="Directory of the local durable spool segments."
    )
    bootstrap_servers: str = Field(
        default="",
        description="Kafka bootstrap servers, comma-separated. Empty: the spool alone is the sink (no Kafka).",
    )
    topic: str = Field(default="stepaudio.conversation.v1", description="Kafka topic for ConversationEvent records.")
    client_id: str = Field(default="stepaudio-convlog", description="Kafka client id of the producer.")
    fsync_policy: FsyncPolicy = Field(
        default="interval",
        description="When spool appends are fsync'ed: 'always' (every record; survives power loss, slowest), "
        "'interval' (at most every fsync_interval_ms; loses at most that window on power loss), "
        "'none' (OS page cache; survives a process crash, not a machine crash).",
    )
    fsync_interval_ms: int = Field(
        default=50, ge=1, description="Max time between fsyncs with fsync_policy='interval'."
    )
    max_spool_bytes: int = Field(
        default=1 << 30, ge=1 << 16, description="Upper bound of the spool size on disk; beyond it full_policy applies."
    )
    segment_bytes: int = Field(default=16 << 20, ge=1 << 12, description="A spool segment is rolled at this size.")
    full_policy: FullPolicy = Field(
        default="drop_newest",
        description="When the spool is full: 'drop_newest' rejects new events (counted, alarm gauge set); "
        "'drop_oldest' deletes the oldest segment (undelivered events in it are lost, counted).",
    )
    queue_max_events: int = Field(
        default=100_000,
        ge=1,
        description="Bound of the in-memory queue between emit() and the spool writer; "
        "beyond it emit() drops the event (counted) instead of blocking.",
    )
    max_event_bytes: int = Field(
        default=900_000,
        ge=4096,
        description="Largest event sent to Kafka (keep below the topic's max.message.bytes, 1 MiB by default); "
        "longer texts in a bigger event are cut (counted), and an event that still does not fit is dropped "
        "(counted) rather than retried forever.",
    )
    max_in_flight: int = Field(default=5_000, ge=1, description="Max events handed to Kafka and not yet acknowledged.")
    delivery_timeout_ms: int = Field(
        default=30_000,
        ge=1000,
        description="kafka-python delivery_timeout_ms; after it a send is retried from the spool.",
    )
    request_timeout_ms: int = Field(default=10_000, ge=100, description="kafka-python request_timeout_ms.")
    linger_ms: int = Field(default=5, ge=0, description="kafka-python linger_ms (batching delay).")
    reconnect_backoff_s: float = Field(
        default=1.0, gt=0, description="Wait between attempts to (re)create the producer."
    )
    ack_flush_interval_ms: int = Field(
        default=200,
        ge=1,
        description="How often the delivered position is persisted (a crash re-sends at most this window; "
        "consumers dedupe on event_id).",
    )
    audio_dir: Path = Field(
        default=Path(".run/convlog/audio"), description="Directory where consented audio is stored."
    )
    audio_base_uri: str = Field(
        default="", description="Where audio_dir is reachable from outside the pod (e.g. s3://bucket/audio, synced "
        "from it, or an HTTP URL that serves it); audio references are then <base>/<sha[:2]>/<sha256>.wav instead of "
        "file:// paths inside the pod.")
    store_reply_audio: bool = Field(
        default=True, description="Also store the assistant reply audio (consented sessions)."
    )
    default_tenant: str = Field(default="default", description="Tenant used when the caller gives none.")
    model_version: str = Field(default="", description="Model version stamped on events when the caller gives none.")
    prompt_version: str = Field(default="", description="Prompt version stamped on events when the caller gives none.")
