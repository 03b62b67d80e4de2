"""Riva-compatible service settings (env prefix ``STEPAUDIO_RIVA_``)."""

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from services.kit.settings import ServiceSettings


class RivaSettings(ServiceSettings):
    """Settings of the Riva-compatible service."""

    model_config = SettingsConfigDict(env_prefix="STEPAUDIO_RIVA_", extra="ignore")

    port: int = Field(50060, description="gRPC port (Riva's own default is 50051, the gateway's here).")
    tokenizer_addr: str = Field("127.0.0.1:50053", description="Tokenizer service (ASR) host:port.")
    tts_addr: str = Field("127.0.0.1:50056", description="TTS service host:port.")
    vad_addr: str = Field("127.0.0.1:50052", description="VAD service host:port: where StreamingRecognize ends an "
                          "utterance (one final result per pause). Empty: one final result when the stream ends.")
    stop_history_ms: int = Field(800, ge=100, le=10000, description="Silence that ends an utterance when the client's "
                                 "EndpointingConfig has no stop_history, in ms.")
    stage_token: str = Field("", description="Credential presented to the stages.")
    max_audio_s: float = Field(600.0, gt=0, description="Longest audio one recognition takes, in seconds.")
    max_text_chars: int = Field(5000, gt=0, description="Longest text one synthesis takes.")
    request_timeout_s: float = Field(120.0, gt=0, description="Deadline of each call to a stage.")
