"""HTTP API settings (env prefix ``STEPAUDIO_HTTPAPI_``)."""

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from services.kit.settings import ServiceSettings


class HttpApiSettings(ServiceSettings):
    """Settings of the OpenAI-style HTTP API."""

    model_config = SettingsConfigDict(env_prefix="STEPAUDIO_HTTPAPI_", extra="ignore")

    port: int = Field(8080, description="HTTP port.")
    tokenizer_addr: str = Field("127.0.0.1:50053", description="Tokenizer service (ASR) host:port.")
    tts_addr: str = Field("127.0.0.1:50056", description="TTS service host:port.")
    gateway_addr: str = Field("127.0.0.1:50051", description="Gateway host:port (the realtime WebSocket).")
    gateway_token: str = Field("", description="Credential the realtime WebSocket presents to the gateway.")
    allowed_origins: str = Field("", description="Comma-separated browser origins (https://app.example) allowed to "
                                                 "open the realtime WebSocket besides the page's own.")
    default_voice: str = Field("", description="TTS voice for OpenAI voice names (alloy, nova, ...); empty: the "
                                               "TTS service's default.")
    max_upload_bytes: int = Field(25 * 1024 * 1024, gt=0, description="Largest audio file a transcription takes "
                                                                      "(OpenAI's limit: 25 MB).")
    max_audio_s: float = Field(600.0, gt=0, description="Longest audio a transcription takes, in seconds.")
    max_speech_chars: int = Field(4096, gt=0, description="Longest `input` of a speech request (OpenAI's limit).")
    request_timeout_s: float = Field(120.0, gt=0, description="Deadline of each call to a stage.")
    api_key_sha256: str = Field(
        "", description="Comma-separated SHA-256 hex digests of the accepted API keys (Authorization: Bearer KEY); "
                        "empty: no key needed (a private network only).")
