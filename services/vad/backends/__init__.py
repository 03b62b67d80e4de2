"""VAD backends: one interface, picked by profile."""

from services.vad.backends.base import VadBackend, VadStream
from services.vad.settings import VadSettings


def create_backend(settings: VadSettings) -> VadBackend:
    """Both profiles use Silero VAD (Step-Audio ships no VAD model); the stepaudio profile may run it on GPU later."""
    from services.vad.backends.silero import SileroVad

    return SileroVad(settings.model_path or None, threads=settings.model_threads)


__all__ = ["VadBackend", "VadStream", "create_backend"]
