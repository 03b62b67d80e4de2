"""TTS backends, picked by profile."""

from services.tts.backends.base import Synthesis, TtsBackend, VoiceSpec
from services.tts.settings import TtsSettings


def create_backend(settings: TtsSettings) -> TtsBackend:
    """Piper (embedded) or Step-Audio-TTS-3B + flow matching (stepaudio)."""
    if settings.profile == "stepaudio":
        from services.tts.backends.stepaudio import StepAudioTts

        return StepAudioTts(settings)
    from services.tts.backends.piper import PiperTts

    return PiperTts(settings)


__all__ = ["Synthesis", "TtsBackend", "VoiceSpec", "create_backend"]
