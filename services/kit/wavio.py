"""WAV files in and out of the HTTP and Riva-compatible APIs: WAV (PCM16/PCM24/PCM32/float, any rate, any
channels) in; WAV or raw PCM16 out."""

from __future__ import annotations

import io
import struct
import wave

import numpy as np

from services.kit.audio import SUPPORTED_RATES, resample
from services.kit.errors import InvalidArgument

FORMATS_HINT = "send a WAV file (PCM 16/24/32-bit or 32-bit float, any sample rate, mono or stereo)"


def decode_wav(data: bytes, max_seconds: float | None = None) -> tuple[np.ndarray, int]:
    """Mono float32 samples at a rate the platform takes (resampled to 16 kHz when the file's rate is another).
    ``max_seconds``: longer audio is refused from the header, before any sample is decoded."""
    if len(data) < 12 or data[:4] != b"RIFF" or data[8:12] != b"WAVE":
        kind = "MP3" if data[:3] == b"ID3" or data[:2] in (b"\xff\xfb", b"\xff\xf3") else (
            "FLAC" if data[:4] == b"fLaC" else "Ogg" if data[:4] == b"OggS" else "this")
        raise InvalidArgument(f"{kind} format is not supported: {FORMATS_HINT}")
    fmt_tag, channels, rate, bits, offset, size = _parse_wav(data)
    payload = data[offset:offset + size]  # a streamed file may claim more than it holds
    _check_layout(channels, rate, FORMATS_HINT)
    frame = channels * bits // 8
    if not frame:
        raise InvalidArgument(f"WAV header says {bits}-bit samples: {FORMATS_HINT}")
    payload = payload[: len(payload) // frame * frame]
    if max_seconds is not None and len(payload) / frame / rate > max_seconds:
        raise InvalidArgument(f"the audio is {len(payload) / frame / rate:.0f} s long; the limit is {max_seconds:g} s")
    if fmt_tag == 3 and bits == 32:
        x = np.frombuffer(payload, "<f4").astype(np.float32)
    elif fmt_tag == 1 and bits == 16:
        x = np.frombuffer(payload, "<i2").astype(np.float32) / 32768.0
    elif fmt_tag == 1 and bits == 24:
        b = np.frombuffer(payload, np.uint8).reshape(-1, 3).astype(np.int32)
        v = b[:, 0] | (b[:, 1] << 8) | (b[:, 2] << 16)
        x = (np.where(v >= 1 << 23, v - (1 << 24), v) / float(1 << 23)).astype(np.float32)
    elif fmt_tag == 1 and bits == 32:
        x = (np.frombuffer(payload, "<i4") / float(1 << 31)).astype(np.float32)
    else:
        raise InvalidArgument(f"WAV encoding (format {fmt_tag}, {bits}-bit) is not supported: {FORMATS_HINT}")
    x = x.reshape(-1, channels).mean(axis=1) if channels > 1 else x
    if rate not in SUPPORTED_RATES:
        x, rate = resample(x, rate, 16000), 16000
    return np.clip(x, -1.0, 1.0).astype(np.float32), rate


def wav_stream_head(first: bytes) -> tuple[int, int, int]:
    """(sample rate, channels, header length) of a PCM16 WAV file sent as a stream, from its first bytes (a file
    streamed whole, as Riva's clients send one: the header in the first chunk, samples after it)."""
    fmt_tag, channels, rate, bits, offset, _ = _parse_wav(first)
    if fmt_tag != 1 or bits != 16:
        raise InvalidArgument(f"the streamed WAV holds format {fmt_tag}, {bits}-bit samples: stream PCM16 "
                              "(LINEAR_PCM), or send the file whole to the offline call")
    _check_layout(channels, rate, "stream PCM16 mono or stereo")
    return rate, channels, offset


def _check_layout(channels: int, rate: int, hint: str) -> None:
    if channels < 1 or channels > 32 or rate < 4000 or rate > 192000:
        raise InvalidArgument(f"WAV header says {channels} channels at {rate} Hz: {hint}")


def _parse_wav(data: bytes) -> tuple[int, int, int, int, int, int]:
    """(format tag, channels, rate, bits, payload offset, payload size as the header claims it)."""
    if len(data) < 12 or data[:4] != b"RIFF" or data[8:12] != b"WAVE":
        raise InvalidArgument(f"not a WAV file (no RIFF/WAVE header): {FORMATS_HINT}")
    pos, fmt = 12, None
    while pos + 8 <= len(data):
        cid, size = data[pos:pos + 4], struct.unpack("<I", data[pos + 4:pos + 8])[0]
        body = data[pos + 8:pos + 8 + size]
        if cid == b"fmt " and len(body) >= 16:
            tag, channels, rate, _, _, bits = struct.unpack("<HHIIHH", body[:16])
            if tag == 0xFFFE and len(body) >= 26:  # WAVE_FORMAT_EXTENSIBLE: the sub-format's tag
                tag = struct.unpack("<H", body[24:26])[0]
            fmt = (tag, channels, rate, bits)
        elif cid == b"data":
            if fmt is None:
                break
            return (*fmt, pos + 8, size)
        pos += 8 + size + (size & 1)
    raise InvalidArgument(f"not a readable WAV file (no fmt/data chunk in its first {len(data)} bytes): "
                          f"{FORMATS_HINT}")


def wav_header(rate: int, n_bytes: int | None = None) -> bytes:
    """A PCM16 mono WAV header; ``n_bytes=None`` for a stream of unknown length (sizes 0xFFFFFFFF)."""
    size = 0xFFFFFFFF if n_bytes is None else n_bytes
    riff = 0xFFFFFFFF if n_bytes is None else 36 + n_bytes
    return (b"RIFF" + struct.pack("<I", riff) + b"WAVEfmt " + struct.pack("<IHHIIHH", 16, 1, 1, rate, rate * 2, 2, 16)
            + b"data" + struct.pack("<I", size))


def encode_wav(pcm16: bytes, rate: int) -> bytes:
    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(pcm16)
    return buf.getvalue()
