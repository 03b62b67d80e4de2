"""Content-addressed WAV store for conversation audio (the audio never goes into Kafka).

``AudioStore(dir).put(pcm, sample_rate) -> AudioRef`` writes a 16-bit mono WAV to
``dir/<sha[:2]>/<sha256>.wav`` (atomic: tmp file + rename; the same audio is stored once) and returns an
``AudioRef`` with a ``file://`` URI, the sha256 of the file bytes, the sample rate and the duration.
``pcm`` is 16-bit little-endian mono PCM bytes, or a numpy array (float in [-1, 1] or int16).

Consent: ``put_if_consented(consent, ...)`` stores nothing and returns None without consent; the logger also
replaces the user transcript with ``[REDACTED]`` then (see producer.py).
"""

from __future__ import annotations

import hashlib
import io
import os
import wave
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from stepaudio.logs.v1 import logs_pb2


@dataclass(frozen=True)
class AudioClip:
    """Audio handed to the logger: 16-bit LE mono PCM bytes (or a numpy array) and its sample rate."""

    pcm: Any
    sample_rate: int


def _to_pcm16(pcm: Any) -> bytes:
    if isinstance(pcm, (bytes, bytearray, memoryview)):
        return bytes(pcm)
    dtype = getattr(pcm, "dtype", None)
    if dtype is None:
        raise TypeError("audio must be 16-bit PCM bytes or a numpy array")
    import numpy as np

    arr = np.asarray(pcm).reshape(-1)
    if arr.dtype.kind == "f":
        arr = (np.clip(arr, -1.0, 1.0) * 32767.0).astype("<i2")
    else:
        arr = arr.astype("<i2")
    return arr.tobytes()


class AudioStore:
    """Writes WAV files named by their sha256 under a root directory."""

    def __init__(self, root: str | os.PathLike[str], *, fsync: bool = False) -> None:
        self.root = Path(root).resolve()
        self.fsync = fsync

    def put(self, pcm: Any, sample_rate: int) -> logs_pb2.AudioRef:
        """Store the clip; return its reference."""
        if sample_rate <= 0:
            raise ValueError("sample_rate must be > 0")
        raw = _to_pcm16(pcm)
        buf = io.BytesIO()
        with wave.open(buf, "wb") as w:
            w.setnchannels(1)
            w.setsampwidth(2)
            w.setframerate(sample_rate)
            w.writeframes(raw)
        data = buf.getvalue()
        sha = hashlib.sha256(data).hexdigest()
        path = self.root / sha[:2] / f"{sha}.wav"
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_suffix(f".tmp{os.getpid()}")
            with open(tmp, "wb") as f:
                f.write(data)
                if self.fsync:
                    f.flush()
                    os.fsync(f.fileno())
            os.replace(tmp, path)
        return logs_pb2.AudioRef(
            uri=path.as_uri(),
            sha256=sha,
            sample_rate_hz=sample_rate,
            duration_ms=int(len(raw) // 2 * 1000 // sample_rate),
        )

    def put_if_consented(self, consent: bool, clip: AudioClip | None) -> logs_pb2.AudioRef | None:
        """Store ``clip`` only when the user consented; None otherwise (or when there is no clip)."""
        if not consent or clip is None:
            return None
        return self.put(clip.pcm, clip.sample_rate)
