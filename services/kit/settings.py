"""Typed settings: every service subclasses :class:`ServiceSettings` and sets its own env prefix."""

from __future__ import annotations

from typing import Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

Profile = Literal["embedded", "stepaudio"]


class ServiceSettings(BaseSettings):
    """Settings every gRPC service has. Env vars: ``<PREFIX><FIELD>``, e.g. ``STEPAUDIO_VAD_PORT``."""

    model_config = SettingsConfigDict(env_prefix="STEPAUDIO_", extra="ignore")

    host: str = Field("0.0.0.0", description="Address the gRPC server binds to.")
    port: int = Field(0, description="gRPC port; 0 picks a free port (tests).")
    metrics_port: int = Field(0, description="Prometheus /metrics HTTP port; 0 disables it.")
    profile: Profile = Field("embedded", description="Model profile: embedded (CPU, small models) or stepaudio (GPU).")
    log_level: str = Field("INFO", description="Log level for the JSON logs.")
    log_json: bool = Field(True, description="Write logs as JSON lines (false: human-readable console).")
    otlp_endpoint: str = Field(
        "", description="OTLP/gRPC endpoint for traces and metrics, e.g. http://otel-collector:4317; empty disables."
    )
    max_message_bytes: int = Field(8 * 1024 * 1024, description="Largest gRPC message accepted or sent, in bytes.")
    drain_grace_s: float = Field(10.0, description="On SIGTERM: seconds live RPCs get to finish before the stop.")
    auth_token: str = Field("", description="Shared secret: if set, every RPC must carry a service credential signed "
                                            "with it (services.kit.credentials; the secret never travels).")
    tls_cert_file: str = Field("", description="PEM certificate chain: serve TLS on the port (with tls_key_file).")
    tls_key_file: str = Field("", description="PEM private key of tls_cert_file.")
    health_port: int = Field(-1, description="Plaintext port serving grpc.health.v1 only (for probes that cannot "
                                             "speak TLS); -1 = none, 0 = any free port when TLS is on.")
    model_threads: int = Field(1, description="CPU threads a model may use (keep the sum under the core count).")
