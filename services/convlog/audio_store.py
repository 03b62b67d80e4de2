"""Content-addressed WAV store for conversation audio (the audio never goes into Kafka).

``AudioStore`` is the interface (an object store: put a clip, get its reference, read it back by reference);
``LocalAudioStore(dir, base_uri)`` is the local-directory implementation: ``put(pcm, sample_rate) -> AudioRef``
writes a 16-bit mono WAV to ``dir/<sha[:2]>/<sha256>.wav`` (atomic: tmp file + rename; the same audio is stored
once) and returns an ``AudioRef`` with a URI, the sha256 of the file bytes, the sample rate and the duration.
The URI is ``file://`` unless ``base_uri`` says where the same directory is reachable from outside the pod (a
bucket it is synced to, an HTTP server that serves it: ``s3://bucket/audio``, ``https://audio.example/c``); the
key under it is always ``<sha[:2]>/<sha256>.wav``.
``pcm`` is 16-bit little-endian mono PCM bytes, or a numpy array (float in [-1, 1] or int16).

Consent: ``put_if_consented(consent, ...)`` stores nothing and returns None without consent; the logger also
replaces the user transcript with ``[REDACTED]`` then (see producer.py).
"""

from __future__ import annotations

import hashlib
import io
import os
import wave
from abc import ABC, abstractmethod
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


def wav_bytes(pcm: Any, sample_rate: int) -> bytes:
    """A 16-bit mono WAV file of ``pcm``."""
    if sample_rate <= 0:
        raise ValueError("sample_rate must be > 0")
    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(sample_rate)
        w.writeframes(_to_pcm16(pcm))
    return buf.getvalue()


def audio_key(sha256: str) -> str:
    """The object key of a clip: ``<sha[:2]>/<sha256>.wav``."""
    return f"{sha256[:2]}/{sha256}.wav"


class AudioStore(ABC):
    """Where conversation audio goes: content-addressed clips, referenced from the events by URI and sha256."""

    @abstractmethod
    def put(self, pcm: Any, sample_rate: int) -> logs_pb2.AudioRef:
        """Store the clip (once per content); return its reference."""

    @abstractmethod
    def get(self, ref: logs_pb2.AudioRef) -> bytes:
        """The WAV bytes of a reference (checked against its sha256)."""

    def put_if_consented(self, consent: bool, clip: AudioClip | None) -> logs_pb2.AudioRef | None:
        """Store ``clip`` only when the user consented; None otherwise (or when there is no clip)."""
        if not consent or clip is None:
            return None
        return self.put(clip.pcm, clip.sample_rate)


class LocalAudioStore(AudioStore):
    """Writes WAV files named by their sha256 under a root directory (see the module doc for URIs)."""

    def __init__(self, root: str | os.PathLike[str], *, fsync: bool = False, base_uri: str = "") -> None:
        self.root = Path(root).resolve()
        self.fsync = fsync
        self.base_uri = base_uri.rstrip("/")

    def get(self, ref: logs_pb2.AudioRef) -> bytes:
        data = (self.root / audio_key(ref.sha256)).read_bytes()
        if hashlib.sha256(data).hexdigest() != ref.sha256:
            raise ValueError(f"audio {ref.sha256} is corrupt in {self.root}")
        return data

    def put(self, pcm: Any, sample_rate: int) -> logs_pb2.AudioRef:
        """Store the clip; return its reference."""
        data = wav_bytes(pcm, sample_rate)
        raw_len = len(_to_pcm16(pcm))
        sha = hashlib.sha256(data).hexdigest()
        path = self.root / audio_key(sha)
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
            uri=f"{self.base_uri}/{audio_key(sha)}" if self.base_uri else path.as_uri(),
            sha256=sha,
            sample_rate_hz=sample_rate,
            duration_ms=int(raw_len // 2 * 1000 // sample_rate),
        )
