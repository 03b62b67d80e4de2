"""Vocoder service settings (env prefix ``STEPAUDIO_VOCODER_``)."""

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from services.kit.settings import ServiceSettings


class VocoderSettings(ServiceSettings):
    """Settings of the vocoder service."""

    model_config = SettingsConfigDict(env_prefix="STEPAUDIO_VOCODER_", extra="ignore")

    port: int = Field(50057, description="gRPC port.")
    griffin_lim_iters: int = Field(32, description="Embedded profile: Griffin-Lim iterations per block.")
    max_frames: int = Field(20000, description="Most mel frames accepted in one stream (about 4 minutes).")
    model_dir: str = Field("", description="CosyVoice directory with hift.pt (stepaudio profile).")
    device: str = Field("auto", description="torch device for HiFT: auto, cpu or cuda.")
