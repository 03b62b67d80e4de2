"""Tokenizer backends, picked by profile."""

from services.tokenizer.backends.base import AsrBackend, DualTokenizerBackend
from services.tokenizer.settings import TokenizerSettings


def create_asr(settings: TokenizerSettings) -> AsrBackend:
    """Whisper tiny.en (faster-whisper) transcribes history in both profiles."""
    from services.tokenizer.backends.whisper import WhisperAsr

    return WhisperAsr(settings)


def create_dual_tokenizer(settings: TokenizerSettings) -> DualTokenizerBackend | None:
    """The Step-Audio dual tokenizer in the stepaudio profile; None in the embedded profile."""
    if settings.profile != "stepaudio":
        return None
    from services.tokenizer.backends.stepaudio import StepAudioDualTokenizer

    return StepAudioDualTokenizer(settings)


__all__ = ["AsrBackend", "DualTokenizerBackend", "create_asr", "create_dual_tokenizer"]
