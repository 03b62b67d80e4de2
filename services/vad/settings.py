"""VAD service settings (env prefix ``STEPAUDIO_VAD_``)."""

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from services.kit.settings import ServiceSettings


class VadSettings(ServiceSettings):
    """Settings of the VAD service."""

    model_config = SettingsConfigDict(env_prefix="STEPAUDIO_VAD_", extra="ignore")

    port: int = Field(50052, description="gRPC port.")
    start_threshold: float = Field(0.5, description="Default speech probability that starts speech.")
    min_speech_ms: int = Field(100, description="Default speech needed before SPEECH_STARTED, in ms.")
    min_silence_ms: int = Field(200, description="Default silence needed before SPEECH_STOPPED, in ms.")
    model_path: str = Field("", description="Silero VAD ONNX file; empty uses the one in the silero-vad package.")
