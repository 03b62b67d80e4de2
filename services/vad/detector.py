"""Speech detection over a stream: resample to the model rate, frame, score, and apply hysteresis.

Events: STARTED once ``min_speech_ms`` of frames score at or above ``start_threshold`` (reported at the first of
those frames), STOPPED once ``min_silence_ms`` of frames score below ``stop_threshold`` (reported at the first
silent frame). Offsets are milliseconds of input audio.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from services.kit.audio import StreamResampler
from services.kit.errors import InvalidArgument
from services.vad.backends.base import VadBackend
from services.vad.hysteresis import Hysteresis


@dataclass
class DetectorConfig:
    """Hysteresis settings (all validated)."""

    start_threshold: float = 0.5
    stop_threshold: float = 0.35
    min_speech_ms: int = 100
    min_silence_ms: int = 200

    def validate(self) -> DetectorConfig:
        try:
            Hysteresis.resolve(self.start_threshold, self.stop_threshold)
        except ValueError as e:
            raise InvalidArgument(str(e)) from None
        if self.min_speech_ms < 0 or self.min_silence_ms < 0:
            raise InvalidArgument("min_speech_ms and min_silence_ms must not be negative")
        return self


@dataclass
class Event:
    """A speech state change: ``started`` True for speech start, False for speech stop."""

    started: bool
    offset_ms: int


class SpeechDetector:
    """Incremental detector for one stream."""

    def __init__(self, backend: VadBackend, input_rate: int, config: DetectorConfig) -> None:
        self.cfg = config.validate()
        self.backend = backend
        self.stream = backend.new_stream()
        self.resampler = StreamResampler(input_rate, backend.sample_rate)
        self.frame = backend.frame_samples
        self.frame_ms = 1000.0 * self.frame / backend.sample_rate
        self._buf = np.zeros(0, dtype=np.float32)
        self._frames_done = 0
        self.speaking = False
        self._run_ms = 0.0
        self._run_start_ms = 0.0

    @property
    def processed_ms(self) -> int:
        return int(self._frames_done * self.frame_ms)

    def push(self, samples: np.ndarray, last: bool = False) -> tuple[list[Event], list[tuple[int, float]]]:
        """Feed input samples; return new events and (offset_ms, probability) per scored frame."""
        self._buf = np.concatenate([self._buf, self.resampler(samples, last=last)])
        n = len(self._buf) // self.frame
        events: list[Event] = []
        probs: list[tuple[int, float]] = []
        if n:
            frames = self._buf[: n * self.frame].reshape(n, self.frame)
            self._buf = self._buf[n * self.frame :]
            for p in self.stream.probabilities(frames):
                start_ms = self._frames_done * self.frame_ms
                self._frames_done += 1
                probs.append((int(start_ms), float(p)))
                ev = self._step(float(p), start_ms)
                if ev is not None:
                    events.append(ev)
        if last and self.speaking:
            self.speaking = False
            events.append(Event(False, self.processed_ms))
        return events, probs

    def _step(self, p: float, start_ms: float) -> Event | None:
        if not self.speaking:
            if p >= self.cfg.start_threshold:
                if self._run_ms == 0:
                    self._run_start_ms = start_ms
                self._run_ms += self.frame_ms
                if self._run_ms >= max(self.cfg.min_speech_ms, 1):
                    self.speaking, self._run_ms = True, 0.0
                    return Event(True, int(self._run_start_ms))
            else:
                self._run_ms = 0.0
            return None
        if p < self.cfg.stop_threshold:
            if self._run_ms == 0:
                self._run_start_ms = start_ms
            self._run_ms += self.frame_ms
            if self._run_ms >= max(self.cfg.min_silence_ms, 1):
                self.speaking, self._run_ms = False, 0.0
                return Event(False, int(self._run_start_ms))
        else:
            self._run_ms = 0.0
        return None
