"""TTS service settings (env prefix ``STEPAUDIO_TTS_``)."""

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from services.kit.settings import ServiceSettings


class TtsSettings(ServiceSettings):
    """Settings of the TTS service."""

    model_config = SettingsConfigDict(env_prefix="STEPAUDIO_TTS_", extra="ignore")

    port: int = Field(50056, description="gRPC port.")
    default_voice: str = Field("joe", description="Voice used when a request names none.")
    min_phrase_chars: int = Field(
        12, description="Streaming: a phrase ends at , ; : only after this many characters (sentence ends always)."
    )
    max_phrase_chars: int = Field(160, description="Streaming: speak a phrase once it is this long, even mid-clause.")
    max_text_chars: int = Field(5000, description="Longest text accepted in one request.")
    model_dir: str = Field("", description="Step-Audio-TTS-3B + CosyVoice directory (stepaudio profile).")
