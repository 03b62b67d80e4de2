"""LLM service settings (env prefix ``STEPAUDIO_LLM_``)."""

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from services.kit.settings import ServiceSettings


class LlmSettings(ServiceSettings):
    """Settings of the LLM service."""

    model_config = SettingsConfigDict(env_prefix="STEPAUDIO_LLM_", extra="ignore")

    port: int = Field(default=50054, description="gRPC port.")
    triton_urls: str = Field(
        default="127.0.0.1:8001",
        description="Triton gRPC endpoints, comma-separated host:port; round robin, failing over to the next.",
    )
    model: str = Field(
        default="", description="Triton model; empty: embedded_llm (embedded profile) or step_audio_chat."
    )
    template: str = Field(
        default="", description="Chat template: smollm2 | step1; empty: by profile (embedded -> smollm2)."
    )
    system_prompt: str | None = Field(
        default=None, description="System prompt used when the request has none; unset: the template's default."
    )
    default_max_tokens: int = Field(default=256, description="max_tokens when the request leaves it 0.")
    max_tokens_limit: int = Field(default=2048, description="Largest max_tokens a request may ask for.")
    default_temperature: float = Field(default=0.7, description="Temperature when the request leaves it 0.")
    default_top_p: float = Field(default=0.9, description="top_p when the request leaves it 0.")
    request_timeout_s: float = Field(
        default=120.0, description="Upper bound for one generation, when the caller sets no deadline."
    )
    first_token_timeout_s: float = Field(
        default=30.0, description="UNAVAILABLE if Triton sends no first response in this time."
    )
    endpoint_cooldown_s: float = Field(
        default=2.0,
        description="After a connection failure an endpoint is skipped this long (tried anyway if all are down).",
    )
    warmup_wait_s: float = Field(
        default=0.0,
        description="At start, wait up to this long for the model to be ready on an endpoint (0: do not wait).",
    )
