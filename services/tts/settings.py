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
    seam_word_gap_ms: float = Field(
        30.0, ge=0, description="Streaming: silence kept at a seam where a sentence was cut mid-way (end of one "
                                "phrase and start of the next); Piper's gaps between words are 40-70 ms.")
    seam_comma_pause_ms: float = Field(
        220.0, ge=0, description="Streaming: most silence kept after a phrase cut at , ; : (Piper's own pause at a "
                                 "comma, measured: 220-310 ms).")
    model_dir: str = Field("", description="Step-Audio-TTS-3B + CosyVoice directory (stepaudio profile).")
