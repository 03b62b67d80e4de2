"""Audio helpers: format validation, PCM16 <-> float32, resampling and WAV files. Used by every stage."""

from __future__ import annotations

import io
import wave
from pathlib import Path

import numpy as np
import soxr

from services.kit.errors import InvalidArgument

SUPPORTED_RATES = (8000, 16000, 22050, 24000, 44100, 48000)
PCM16 = 1  # stepaudio.common.v1.AudioEncoding.AUDIO_ENCODING_LINEAR_PCM16


def check_format(sample_rate_hz: int, encoding: int = 0, channels: int = 0, what: str = "audio format") -> int:
    """Validate an AudioFormat; returns the sample rate. Raises InvalidArgument that says what to send instead."""
    if sample_rate_hz not in SUPPORTED_RATES:
        raise InvalidArgument(
            f"{what}: unsupported sample_rate_hz={sample_rate_hz}; use one of {', '.join(map(str, SUPPORTED_RATES))}"
        )
    if encoding not in (0, PCM16):
        raise InvalidArgument(f"{what}: unsupported encoding {encoding}; only AUDIO_ENCODING_LINEAR_PCM16 is accepted")
    if channels not in (0, 1):
        raise InvalidArgument(f"{what}: channels={channels}; send mono audio (channels=1)")
    return sample_rate_hz


def pcm16_to_float(data: bytes) -> np.ndarray:
    """PCM16 little-endian bytes -> float32 in [-1, 1]. Odd byte counts are INVALID_ARGUMENT."""
    if len(data) % 2:
        raise InvalidArgument(f"audio chunk has {len(data)} bytes; PCM16 needs an even number of bytes")
    return np.frombuffer(data, dtype="<i2").astype(np.float32) / 32768.0


def float_to_pcm16(samples: np.ndarray) -> bytes:
    """float32 in [-1, 1] -> PCM16 little-endian bytes (clipped)."""
    return (np.clip(samples, -1.0, 1.0) * 32767.0).astype("<i2").tobytes()


def resample(samples: np.ndarray, src_hz: int, dst_hz: int) -> np.ndarray:
    """High-quality resampling (soxr); returns float32."""
    if src_hz == dst_hz or samples.size == 0:
        return samples.astype(np.float32, copy=False)
    return soxr.resample(samples.astype(np.float32, copy=False), src_hz, dst_hz).astype(np.float32, copy=False)


class StreamResampler:
    """Chunk-by-chunk resampler that keeps filter state across chunks (no clicks at chunk seams)."""

    def __init__(self, src_hz: int, dst_hz: int) -> None:
        self.src_hz, self.dst_hz = src_hz, dst_hz
        self._rs = None if src_hz == dst_hz else soxr.ResampleStream(src_hz, dst_hz, 1, dtype="float32")

    def __call__(self, samples: np.ndarray, last: bool = False) -> np.ndarray:
        if self._rs is None:
            return samples.astype(np.float32, copy=False)
        return self._rs.resample_chunk(samples.astype(np.float32, copy=False), last=last)


def read_wav(path: str | Path) -> tuple[np.ndarray, int]:
    """Read a PCM16 WAV (mono, or the first channel) -> (float32 samples, sample rate)."""
    with wave.open(str(path), "rb") as w:
        if w.getsampwidth() != 2:
            raise InvalidArgument(f"{path}: only 16-bit PCM WAV is supported")
        raw = w.readframes(w.getnframes())
        rate, channels = w.getframerate(), w.getnchannels()
    samples = pcm16_to_float(raw)
    if channels > 1:
        samples = samples.reshape(-1, channels)[:, 0].copy()
    return samples, rate


def wav_bytes(samples: np.ndarray, rate: int) -> bytes:
    """Encode float32 mono samples as a PCM16 WAV file in memory."""
    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(float_to_pcm16(samples))
    return buf.getvalue()


def write_wav(path: str | Path, samples: np.ndarray, rate: int) -> None:
    """Write float32 mono samples as a PCM16 WAV file."""
    Path(path).write_bytes(wav_bytes(samples, rate))
