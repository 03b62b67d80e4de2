"""Audio DSP in numpy only (no torch): what the CPU images need without the Step-Audio models' dependencies.

* :func:`resample` - soxr resampling between the supported input rates.
* :func:`peak_normalize` - the reference's peak normalisation with a floor.
* :func:`slaney_mel_filterbank` - librosa's default (Slaney) mel filters.
* :func:`whisper_log_mel` - Whisper's ``log_mel_spectrogram`` (n_fft 400, hop 160, periodic Hann, reflect pad):
  the Step-Audio tokenizer's front end (128 bins) and Smart Turn's (80 bins).
"""

from __future__ import annotations

import math

import numpy as np

SUPPORTED_RATES = (8000, 16000, 22050, 24000, 44100, 48000)


def resample(audio: np.ndarray, src_rate: int, dst_rate: int) -> np.ndarray:
    """Resample mono float audio with soxr (VHQ). Accepts the rates in SUPPORTED_RATES."""
    if src_rate not in SUPPORTED_RATES:
        raise ValueError(f"sample rate {src_rate} not supported; use one of {SUPPORTED_RATES}")
    x = np.asarray(audio, dtype=np.float32).reshape(-1)
    if src_rate == dst_rate:
        return x
    import soxr

    return np.asarray(soxr.resample(x, src_rate, dst_rate, quality="VHQ"), dtype=np.float32)


def peak_normalize(audio: np.ndarray, peak: float = 0.999, floor: float = 0.01) -> np.ndarray:
    """The reference's ``x / max(max|x|, floor) * peak``: loud audio peaks at ``peak``; audio quieter than
    ``floor`` is scaled by ``peak / floor`` only (near-silence is not blown up to full scale)."""
    x = np.asarray(audio, dtype=np.float32)
    m = float(np.max(np.abs(x))) if x.size else 0.0
    return (x * (peak / max(m, floor))).astype(np.float32)


def _hz_to_mel_slaney(f: np.ndarray | float) -> np.ndarray:
    f = np.asarray(f, dtype=np.float64)
    f_sp = 200.0 / 3
    mels = f / f_sp
    min_log_hz = 1000.0
    min_log_mel = min_log_hz / f_sp
    logstep = math.log(6.4) / 27.0
    return np.where(f >= min_log_hz, min_log_mel + np.log(np.maximum(f, 1e-10) / min_log_hz) / logstep, mels)


def _mel_to_hz_slaney(m: np.ndarray) -> np.ndarray:
    m = np.asarray(m, dtype=np.float64)
    f_sp = 200.0 / 3
    freqs = f_sp * m
    min_log_hz = 1000.0
    min_log_mel = min_log_hz / f_sp
    logstep = math.log(6.4) / 27.0
    return np.where(m >= min_log_mel, min_log_hz * np.exp(logstep * (m - min_log_mel)), freqs)


def slaney_mel_filterbank(sr: int, n_fft: int, n_mels: int, fmin: float = 0.0, fmax: float | None = None) -> np.ndarray:
    """Slaney-normalised triangular mel filters (n_mels, n_fft//2+1), the librosa default."""
    fmax = sr / 2 if fmax is None else fmax
    fftfreqs = np.linspace(0, sr / 2, n_fft // 2 + 1)
    mel_pts = _mel_to_hz_slaney(np.linspace(_hz_to_mel_slaney(fmin), _hz_to_mel_slaney(fmax), n_mels + 2))
    fdiff = np.diff(mel_pts)
    ramps = mel_pts[:, None] - fftfreqs[None, :]
    lower = -ramps[:-2] / fdiff[:-1, None]
    upper = ramps[2:] / fdiff[1:, None]
    weights = np.maximum(0, np.minimum(lower, upper))
    enorm = 2.0 / (mel_pts[2 : n_mels + 2] - mel_pts[:n_mels])
    return (weights * enorm[:, None]).astype(np.float32)


def whisper_log_mel(audio16k: np.ndarray, n_mels: int = 128) -> np.ndarray:
    """Whisper ``log_mel_spectrogram``: float32 (n_mels, frames) with frames = len // 160 (at least 201 samples)."""
    n_fft, hop = 400, 160
    x = np.asarray(audio16k, dtype=np.float32).reshape(-1)
    if x.size <= n_fft // 2:
        raise ValueError(f"{x.size} samples: a log-mel needs more than {n_fft // 2} (12.5 ms at 16 kHz)")
    padded = np.pad(x, n_fft // 2, mode="reflect")
    n_frames = 1 + (padded.size - n_fft) // hop
    frames = np.lib.stride_tricks.as_strided(
        padded, (n_frames, n_fft), (padded.strides[0] * hop, padded.strides[0]), writeable=False)
    window = (0.5 - 0.5 * np.cos(2 * np.pi * np.arange(n_fft) / n_fft)).astype(np.float32)  # periodic Hann
    power = np.abs(np.fft.rfft(frames * window, axis=1)).T[:, :-1] ** 2
    mel = slaney_mel_filterbank(16000, n_fft, n_mels) @ power.astype(np.float32)
    log_spec = np.log10(np.maximum(mel, 1e-10))
    log_spec = np.maximum(log_spec, log_spec.max() - 8.0)
    return ((log_spec + 4.0) / 4.0).astype(np.float32)
