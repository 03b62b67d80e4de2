"""The TTS backend interface."""

from __future__ import annotations

import threading
from abc import ABC, abstractmethod
from collections.abc import Iterator
from dataclasses import dataclass, field

import numpy as np


@dataclass
class VoiceSpec:
    """A voice the backend can speak with."""

    name: str
    languages: list[str]
    sample_rate_hz: int


@dataclass
class Synthesis:
    """Result of synthesizing one phrase: audio (float32 mono), or audio tokens, or mel frames [n, bins]."""

    audio: np.ndarray | None = None
    sample_rate_hz: int = 22050
    audio_tokens: list[int] = field(default_factory=list)
    mel: np.ndarray | None = None


class TtsBackend(ABC):
    """Text to speech for one phrase at a time."""

    #: Output kinds supported (values of stepaudio.tts.v1.OutputKind).
    output_kinds: tuple[int, ...] = (1,)

    @abstractmethod
    def voices(self) -> list[VoiceSpec]:
        """Registered voices."""

    @abstractmethod
    def synthesize(self, text: str, voice: str, style: str, speed: float, output_kind: int) -> Synthesis:
        """Speak one phrase (blocking; called from a worker thread). Raise InvalidArgument/NotFound on bad input."""

    def synthesize_stream(
        self, text: str, voice: str, style: str, speed: float, output_kind: int,
        cancel: threading.Event | None = None,
    ) -> Iterator[Synthesis]:
        """Speak one phrase as pieces, each yielded as soon as it is ready (blocking; run it in a worker thread).

        Pieces of one phrase concatenate to the whole phrase. ``cancel``, once set, asks the backend to stop
        early (checked between generation steps where the backend can). Callers close the iterator when they
        stop early. The default yields :meth:`synthesize` once: one piece per phrase.
        """
        if cancel is not None and cancel.is_set():
            return
        yield self.synthesize(text, voice, style, speed, output_kind)

    def dependencies_down(self) -> list[str]:
        """Required dependencies that are down now (health is NOT_SERVING while any is named)."""
        return []

    def warmup(self) -> None:
        v = self.voices()[0].name
        self.synthesize("Hello.", v, "", 1.0, self.output_kinds[0])
