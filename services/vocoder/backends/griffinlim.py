"""Embedded vocoder: Griffin-Lim phase reconstruction from log-mel (numpy only, no weights).

It inverts the same mel analysis the stepaudio profile uses (n_fft 1024, hop 256, 80 Slaney mel bins, 0-8 kHz,
natural-log magnitude), so the vocoder API and the data path are exercised for real on a laptop; quality is
that of Griffin-Lim, not of HiFT.
"""

from __future__ import annotations

import numpy as np

from services.vocoder.backends.base import VocoderBackend
from services.vocoder.settings import VocoderSettings


def _hz_to_mel(f: np.ndarray) -> np.ndarray:
    f = np.asarray(f, dtype=np.float64)
    lin = f / (200.0 / 3)
    log = 15.0 + np.log(np.maximum(f, 1e-10) / 1000.0) / (np.log(6.4) / 27.0)
    return np.where(f >= 1000.0, log, lin)


def _mel_to_hz(m: np.ndarray) -> np.ndarray:
    m = np.asarray(m, dtype=np.float64)
    lin = m * (200.0 / 3)
    log = 1000.0 * np.exp((np.log(6.4) / 27.0) * (m - 15.0))
    return np.where(m >= 15.0, log, lin)


def mel_basis(sr: int = 22050, n_fft: int = 1024, n_mels: int = 80, fmin: float = 0.0, fmax: float = 8000.0):
    """Slaney-normalised triangular mel filters [n_mels, n_fft//2+1] (the librosa default)."""
    freqs = np.linspace(0, sr / 2, n_fft // 2 + 1)
    mel_f = _mel_to_hz(np.linspace(_hz_to_mel(np.array(fmin)), _hz_to_mel(np.array(fmax)), n_mels + 2))
    fdiff = np.diff(mel_f)
    ramps = mel_f[:, None] - freqs[None, :]
    lower = -ramps[:-2] / fdiff[:-1, None]
    upper = ramps[2:] / fdiff[1:, None]
    weights = np.maximum(0, np.minimum(lower, upper))
    weights *= (2.0 / (mel_f[2 : n_mels + 2] - mel_f[:n_mels]))[:, None]
    return weights.astype(np.float32)


def stft(x: np.ndarray, n_fft: int = 1024, hop: int = 256) -> np.ndarray:
    win = np.hanning(n_fft + 1)[:-1].astype(np.float32)
    x = np.pad(x, n_fft // 2, mode="reflect")
    n = 1 + (len(x) - n_fft) // hop
    frames = np.lib.stride_tricks.as_strided(x, (n, n_fft), (x.strides[0] * hop, x.strides[0]))
    return np.fft.rfft(frames * win, axis=1)


def istft(spec: np.ndarray, n_fft: int = 1024, hop: int = 256) -> np.ndarray:
    win = np.hanning(n_fft + 1)[:-1].astype(np.float32)
    frames = np.fft.irfft(spec, n=n_fft, axis=1) * win
    n = len(frames)
    out = np.zeros(n_fft + hop * (n - 1), dtype=np.float32)
    norm = np.zeros_like(out)
    for i, f in enumerate(frames):
        out[i * hop : i * hop + n_fft] += f
        norm[i * hop : i * hop + n_fft] += win**2
    out /= np.maximum(norm, 1e-8)
    return out[n_fft // 2 : len(out) - n_fft // 2]


def log_mel(audio: np.ndarray, sr: int = 22050) -> np.ndarray:
    """The analysis Griffin-Lim inverts: natural-log magnitude mel [frames, 80]."""
    mag = np.abs(stft(audio.astype(np.float32)))
    return np.log(np.maximum(mag @ mel_basis(sr).T, 1e-5)).astype(np.float32)


class GriffinLimVocoder(VocoderBackend):
    """Mel -> linear magnitude (pseudo-inverse) -> Griffin-Lim."""

    def __init__(self, settings: VocoderSettings) -> None:
        self.iters = settings.griffin_lim_iters
        self.inv = np.linalg.pinv(mel_basis(self.sample_rate)).astype(np.float32)

    def vocode(self, mel: np.ndarray, music: bool = False) -> np.ndarray:
        mag = np.maximum(np.exp(mel.astype(np.float32)) @ self.inv.T, 0.0)
        rng = np.random.default_rng(0)
        angles = np.exp(2j * np.pi * rng.random(mag.shape))
        audio = istft(mag * angles)
        for _ in range(self.iters):
            angles = np.exp(1j * np.angle(stft(audio)[: len(mag)]))
            audio = istft(mag * angles)
        return np.clip(audio[: len(mel) * self.hop_length], -1.0, 1.0).astype(np.float32)
