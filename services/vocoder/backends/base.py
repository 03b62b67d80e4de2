"""The vocoder backend interface."""

from __future__ import annotations

from abc import ABC, abstractmethod

import numpy as np


class VocoderBackend(ABC):
    """Mel [frames, 80] (natural-log magnitude mel, 22,050 Hz, hop 256) to float32 waveform."""

    sample_rate: int = 22050
    hop_length: int = 256
    num_bins: int = 80

    @abstractmethod
    def vocode(self, mel: np.ndarray, music: bool = False) -> np.ndarray:
        """Waveform for the given frames (blocking; called from a worker thread)."""

    def warmup(self) -> None:
        self.vocode(np.full((8, self.num_bins), -5.0, dtype=np.float32))
