"""Kafka client security settings (TLS / SASL) shared by the conversation-log producer and the RLHF collector."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, Field


class KafkaSecurity(BaseModel):
    """Mixed into a settings class; env names follow its prefix, e.g. ``STEPAUDIO_CONVLOG_KAFKA_SASL_USERNAME``."""

    kafka_security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = Field(
        default="PLAINTEXT", description="Kafka security protocol."
    )
    kafka_ssl_cafile: str = Field(default="", description="CA certificate file for TLS; empty uses the system CAs.")
    kafka_sasl_mechanism: str = Field(default="", description="SASL mechanism, e.g. SCRAM-SHA-512 or PLAIN.")
    kafka_sasl_username: str = Field(default="", description="SASL user name.")
    kafka_sasl_password: str = Field(default="", description="SASL password (mount it from a Secret).")

    def kafka_client_kwargs(self) -> dict[str, Any]:
        """Keyword arguments for kafka-python clients."""
        kw: dict[str, Any] = {"security_protocol": self.kafka_security_protocol}
        if self.kafka_ssl_cafile:
            kw["ssl_cafile"] = self.kafka_ssl_cafile
        if self.kafka_security_protocol.startswith("SASL"):
            kw.update(sasl_mechanism=self.kafka_sasl_mechanism or "PLAIN",
                      sasl_plain_username=self.kafka_sasl_username, sasl_plain_password=self.kafka_sasl_password)
        return kw
