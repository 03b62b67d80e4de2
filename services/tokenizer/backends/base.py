"""Tokenizer backend interfaces."""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass

import numpy as np


@dataclass
class AsrResult:
    """A transcript with its confidence (0..1)."""

    text: str
    confidence: float


class AsrBackend(ABC):
    """Speech to text on 16 kHz float32 audio."""

    sample_rate: int = 16000
    languages: frozenset[str] | None = None  # ISO 639-1 codes the model transcribes; None: any

    def check_language(self, language: str) -> None:
        """Raise ValueError for a BCP-47 language this model cannot transcribe (it would answer gibberish)."""
        code = (language or "").split("-")[0].lower()
        if code and self.languages is not None and code not in self.languages:
            raise ValueError(f"language {language!r} is not transcribed by this ASR model (it hears "
                             f"{', '.join(sorted(self.languages))}): leave language empty or use one of those")

    @abstractmethod
    def transcribe(self, samples: np.ndarray, language: str = "", full_window: bool = False) -> AsrResult:
        """Transcribe the whole buffer (blocking; call from a worker thread). ``full_window``: the model's
        standard (slower) input window even for short audio."""

    def warmup(self) -> None:
        self.transcribe(np.zeros(self.sample_rate, dtype=np.float32))


class DualTokenStream(ABC):
    """Per-session streaming state of the dual tokenizer."""

    @abstractmethod
    def push(self, samples: np.ndarray, last: bool = False) -> list[int]:
        """Feed 16 kHz audio; return newly completed interleaved <audio_X> ids (X in 0..5119), provisional."""

    @abstractmethod
    def final(self) -> list[int]:
        """After the last audio: every id of the utterance from the final pass over all of it (replaces the
        provisional ones)."""


class DualTokenizerBackend(ABC):
    """Step-Audio dual tokenizer (linguistic 16.7 Hz + semantic 25 Hz, 2:3 interleave)."""

    sample_rate: int = 16000

    @abstractmethod
    def new_stream(self) -> DualTokenStream:
        """Fresh per-session state."""

    def warmup(self) -> None:
        self.new_stream().push(np.zeros(self.sample_rate, dtype=np.float32), last=True)
