"""Vocoder backends, picked by profile."""

from services.vocoder.backends.base import VocoderBackend
from services.vocoder.settings import VocoderSettings


def create_backend(settings: VocoderSettings) -> VocoderBackend:
    """Griffin-Lim (embedded, no weights) or HiFT (stepaudio, hift.pt)."""
    if settings.profile == "stepaudio":
        from services.vocoder.backends.hift import HiftVocoder

        return HiftVocoder(settings)
    from services.vocoder.backends.griffinlim import GriffinLimVocoder

    return GriffinLimVocoder(settings)


__all__ = ["VocoderBackend", "create_backend"]
