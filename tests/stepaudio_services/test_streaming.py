"""Streaming within a phrase (profile=stepaudio): TTS-3B tokens feed the streaming flow/HiFT as they are sampled.

The session stack caps a phrase at 40 tokens (one piece per phrase, as test_pipeline expects); these tests raise
the cap and shrink the flow windows on the live backend for their own duration.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator

import numpy as np
import pytest

from services.kit.audio import pcm16_to_float
from services.tts.backends.base import Synthesis, TtsBackend, VoiceSpec
from services.tts.server import TtsServicer
from services.tts.settings import TtsSettings
from stepaudio.tts.v1 import tts_pb2

TEXT = "Streaming speech arrives early"
TOKENS, CHUNK, OVERLAP = 110, 20, 5


@pytest.fixture
def streaming(sa_stack: dict, monkeypatch: pytest.MonkeyPatch) -> object:
    backend = sa_stack["tts_backend"]
    opts = backend.opts.model_copy(update={
        "max_new_tokens": TOKENS, "stream_chunk_tokens": CHUNK, "stream_overlap_tokens": OVERLAP, "seed": 0,
    })
    monkeypatch.setattr(backend, "opts", opts)
    return backend


async def chunks_of(stub: object, text: str, kind: int) -> list[tts_pb2.SpeechChunk]:
    req = tts_pb2.SynthesizeRequest(text=text, config=tts_pb2.SynthesisConfig(voice="joe", output_kind=kind))
    return [r.chunk async for r in stub.Synthesize(req)]  # type: ignore[attr-defined]


async def test_audio_streams_within_a_phrase(sa_stack: dict, streaming: object) -> None:
    chunks = await chunks_of(sa_stack["tts"], TEXT, tts_pb2.OUTPUT_KIND_AUDIO)
    stats = streaming.last_stream  # type: ignore[attr-defined]
    assert stats.tokens == TOKENS and not stats.cancelled
    # push() finalises a window once chunk + overlap tokens past its start exist: pieces at 25, 45, ... tokens
    assert len(chunks) >= 4 and len(chunks) == len(stats.tokens_at_piece)
    assert stats.tokens_at_piece[0] == CHUNK + OVERLAP < TOKENS, "first audio long before generation ends"
    assert [c.text for c in chunks] == [TEXT] + [""] * (len(chunks) - 1)
    waves = [pcm16_to_float(c.audio.data) for c in chunks]
    assert all(w.size for w in waves) and all(c.sample_rate_hz == 22050 for c in chunks)
    ends = np.cumsum([0] + [w.size for w in waves])[:-1]
    assert [c.audio.offset_ms for c in chunks] == [int(1000 * n / 22050) for n in ends]
    offline = await asyncio.to_thread(streaming.synthesize, TEXT, "joe", "", 1.0, 1)  # type: ignore[attr-defined]
    streamed = np.concatenate(waves)
    assert streamed.size == offline.audio.size > 0 and np.isfinite(streamed).all()


async def test_mel_and_tokens_stream(sa_stack: dict, streaming: object) -> None:
    offline_tokens = (await asyncio.to_thread(streaming.synthesize, TEXT, "joe", "", 1.0, 2)).audio_tokens  # type: ignore[attr-defined]
    runs = await chunks_of(sa_stack["tts"], TEXT, tts_pb2.OUTPUT_KIND_AUDIO_TOKENS)
    assert [len(c.audio_tokens.ids) for c in runs] == [20, 20, 20, 20, 20, 10]
    assert sum((list(c.audio_tokens.ids) for c in runs), []) == offline_tokens

    mels = await chunks_of(sa_stack["tts"], TEXT, tts_pb2.OUTPUT_KIND_MEL)
    assert len(mels) >= 4 and mels[0].text == TEXT and all(c.mel.num_bins == 80 for c in mels)
    assert streaming.last_stream.tokens_at_piece[0] < TOKENS  # type: ignore[attr-defined]
    streamed = np.concatenate([np.asarray(c.mel.values, np.float32).reshape(-1, 80) for c in mels])
    offline = (await asyncio.to_thread(streaming.synthesize, TEXT, "joe", "", 1.0, 3)).mel  # type: ignore[attr-defined]
    assert streamed.shape == offline.shape and np.isfinite(streamed).all()


async def test_stream_request_text_on_first_piece(sa_stack: dict, streaming: object) -> None:
    async def reqs():  # noqa: ANN202
        yield tts_pb2.SynthesizeStreamRequest(config=tts_pb2.SynthesisConfig(voice="joe"))
        yield tts_pb2.SynthesizeStreamRequest(text=tts_pb2.TextPiece(text="One two three. "))
        yield tts_pb2.SynthesizeStreamRequest(text=tts_pb2.TextPiece(text="Four five six."))

    chunks = [r.chunk async for r in sa_stack["tts"].SynthesizeStream(reqs())]
    texts = [c.text for c in chunks if c.text]
    assert texts == ["One two three.", "Four five six."] and len(chunks) > 2
    offsets = [c.audio.offset_ms for c in chunks]
    assert offsets == sorted(offsets) and offsets[0] == 0


async def test_client_cancel_stops_generation(sa_stack: dict, streaming: object,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    backend = streaming
    monkeypatch.setattr(backend, "opts", backend.opts.model_copy(update={"max_new_tokens": 2000}))  # type: ignore[attr-defined]
    call = sa_stack["tts"].Synthesize(tts_pb2.SynthesizeRequest(
        text=TEXT, config=tts_pb2.SynthesisConfig(voice="joe", output_kind=tts_pb2.OUTPUT_KIND_AUDIO)))
    first = await call.read()
    assert first.chunk.audio.data
    call.cancel()
    for _ in range(200):
        if backend.last_stream.total_s is not None:  # type: ignore[attr-defined]
            break
        await asyncio.sleep(0.05)
    stats = backend.last_stream  # type: ignore[attr-defined]
    assert stats.total_s is not None and stats.tokens < 2000
    # the lock is free again: the next phrase is served
    monkeypatch.setattr(backend, "opts", backend.opts.model_copy(update={"max_new_tokens": 20}))  # type: ignore[attr-defined]
    assert len(await chunks_of(sa_stack["tts"], "Hi.", tts_pb2.OUTPUT_KIND_AUDIO)) == 1


def test_backend_cancel_flag_between_tokens(streaming: object) -> None:
    cancel = threading.Event()
    it = streaming.synthesize_stream(TEXT, "joe", "", 1.0, 2, cancel=cancel)  # type: ignore[attr-defined]
    assert len(next(it).audio_tokens) == CHUNK
    cancel.set()
    assert list(it) == []
    stats = streaming.last_stream  # type: ignore[attr-defined]
    assert stats.cancelled and stats.tokens == CHUNK and stats.total_s is not None


class _OnePiece(TtsBackend):
    """A backend without its own streaming: the default synthesize_stream yields synthesize() once."""

    def __init__(self) -> None:
        self.calls: list[str] = []

    def voices(self) -> list[VoiceSpec]:
        return [VoiceSpec("joe", ["en"], 16000)]

    def synthesize(self, text: str, voice: str, style: str, speed: float, output_kind: int) -> Synthesis:
        self.calls.append(text)
        return Synthesis(audio=np.full(1600, 0.1, np.float32), sample_rate_hz=16000)


def test_default_stream_is_one_piece() -> None:
    b = _OnePiece()
    out: Iterator[Synthesis] = b.synthesize_stream("Hi.", "joe", "", 1.0, 1)
    assert [s.audio.size for s in out] == [1600]  # type: ignore[union-attr]
    ev = threading.Event()
    ev.set()
    assert list(b.synthesize_stream("Hi.", "joe", "", 1.0, 1, cancel=ev)) == [] and b.calls == ["Hi."]


async def test_server_one_chunk_per_phrase_for_non_streaming_backend() -> None:
    servicer = TtsServicer(_OnePiece(), TtsSettings(default_voice="joe"))
    req = tts_pb2.SynthesizeRequest(text="Hello there. How are you today?")
    chunks = [r.chunk async for r in servicer.Synthesize(req, None)]  # type: ignore[arg-type]
    assert [c.text for c in chunks] == ["Hello there.", "How are you today?"]
    assert [c.audio.offset_ms for c in chunks] == [0, 100]
