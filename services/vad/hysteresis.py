"""The VAD's hysteresis rule and its validation, in one place (torch-free).

A frame at or above ``start`` counts as speech; once speaking, a frame below ``stop`` counts as silence. An unset
``stop`` (0) defaults to ``start - 0.15`` (at least 0.01). The VAD service applies it to every stream; the gateway
uses it to validate a session's turn detection before any stream opens and to read frame probabilities.
"""

from __future__ import annotations

from dataclasses import dataclass

DEFAULT_START = 0.5
STOP_MARGIN = 0.15


@dataclass(frozen=True)
class Hysteresis:
    """Validated thresholds: ``0 < stop <= start <= 1``."""

    start: float
    stop: float

    @classmethod
    def resolve(cls, start: float = 0.0, stop: float = 0.0, default_start: float = DEFAULT_START) -> Hysteresis:
        """Thresholds from request values where 0 means unset; raises ValueError naming the field to fix."""
        start = start or default_start
        if not 0.0 < start <= 1.0:
            raise ValueError(f"start_threshold={start:g} must be in (0, 1]")
        stop = stop or max(start - STOP_MARGIN, 0.01)
        if not 0.0 < stop <= start:
            raise ValueError(f"stop_threshold={stop:g} must be in (0, start_threshold={start:g}]")
        return cls(start, stop)
