"""Settings of the RLHF preference collector (env prefix ``STEPAUDIO_RLHF_``)."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from services.convlog.kafka_security import KafkaSecurity


class RlhfSettings(KafkaSecurity, BaseSettings):
    """Where the collector reads events and writes the preference dataset."""

    model_config = SettingsConfigDict(env_prefix="STEPAUDIO_RLHF_", extra="ignore")

    bootstrap_servers: str = Field(default="127.0.0.1:9092", description="Kafka bootstrap servers, comma-separated.")
    topic: str = Field(default="stepaudio.conversation.v1", description="Topic of ConversationEvent records.")
    dlq_topic: str = Field(
        default="stepaudio.conversation.dlq.v1", description="Dead-letter topic for malformed events."
    )
    group_id: str = Field(default="stepaudio-rlhf", description="Kafka consumer group id.")
    client_id: str = Field(default="stepaudio-rlhf", description="Kafka client id.")
    auto_offset_reset: str = Field(default="earliest", description="Where a new group starts: earliest | latest.")
    dataset_dir: Path = Field(
        default=Path(".run/rlhf/dataset"), description="Dataset directory (shards, manifest, state)."
    )
    poll_timeout_ms: int = Field(default=500, ge=1, description="KafkaConsumer.poll timeout.")
    max_poll_records: int = Field(default=500, ge=1, description="Max records per poll (one dataset transaction).")
    session_timeout_ms: int = Field(default=10_000, ge=1000, description="Consumer group session timeout.")
    heartbeat_interval_ms: int = Field(default=3_000, ge=100, description="Consumer group heartbeat interval.")
    max_poll_interval_ms: int = Field(
        default=300_000, ge=1000, description="Max time between polls before a rebalance."
    )
    shard_max_pairs: int = Field(
        default=10_000, ge=1, description="A shard is written when this many pairs are pending."
    )
    shard_max_age_s: float = Field(default=60.0, ge=0, description="...or when the oldest pending pair is this old.")
    finalize_after_s: float = Field(
        default=3600.0,
        ge=0,
        description="A turn is finalized (pairs built) at its SessionEnded event, or when the newest "
        "event time seen is this much later than the turn's last event.",
    )
    deaf_confidence: float = Field(
        default=0.8,
        ge=0,
        le=1,
        description="Transcript confidence from which audio counts as clearly heard "
        "(a 'did not hear you' reply to it is rejected: deaf hacking).",
    )
    require_consent: bool = Field(default=True, description="Only consented turns go into the dataset.")
