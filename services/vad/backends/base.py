"""The VAD backend interface."""

from __future__ import annotations

from abc import ABC, abstractmethod

import numpy as np


class VadStream(ABC):
    """Per-stream model state."""

    @abstractmethod
    def probabilities(self, frames: np.ndarray) -> np.ndarray:
        """Speech probability of each row of ``frames`` (shape [n, frame_samples], float32 at ``sample_rate``)."""


class VadBackend(ABC):
    """A frame-level speech detector."""

    sample_rate: int = 16000
    frame_samples: int = 512

    @abstractmethod
    def new_stream(self) -> VadStream:
        """Fresh state for one audio stream."""

    def warmup(self) -> None:
        """Run once so the first real frame is fast."""
        self.new_stream().probabilities(np.zeros((2, self.frame_samples), dtype=np.float32))
