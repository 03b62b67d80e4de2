"""Phrase seams: a sentence cut early for latency sounds whole (pure trimmer, then the real TTS service with Piper)."""

from __future__ import annotations

import numpy as np
import pytest

from services.tts.seams import SeamTrimmer, longest_inner_silence_ms, seam_kind

RATE = 1000  # 1 sample per ms keeps the arithmetic readable


def sound(ms: int) -> np.ndarray:
    return np.full(ms, 0.5, np.float32)


def quiet(ms: int) -> np.ndarray:
    return np.zeros(ms, np.float32)


def play(trim: SeamTrimmer, phrase: str, *pieces: np.ndarray) -> np.ndarray:
    trim.start(phrase)
    out = [trim.push(p) for p in pieces]
    return np.concatenate([*out, trim.end()])


def test_seam_kinds() -> None:
    assert [seam_kind(t) for t in ("Paris.", "Really?", "Well,", "The capital of France is", '"Yes."')] == [
        "sentence", "sentence", "clause", "cut", "sentence"]


def test_a_cut_sentence_keeps_word_gaps_only() -> None:
    trim = SeamTrimmer(RATE, word_gap_ms=30, comma_pause_ms=220)
    first = play(trim, "The capital of France is", quiet(40), sound(500), quiet(130))
    second = play(trim, "Paris.", quiet(40), sound(300), quiet(200))
    assert first.size == 40 + 500 + 30  # its own lead, the speech, a word gap
    assert second.size == 30 + 300 + 200  # lead cut to a word gap; a sentence end keeps its pause
    assert np.abs(first[-30:]).max() == 0 and np.abs(second[:30]).max() == 0


def test_clause_and_sentence_ends_and_pieces() -> None:
    trim = SeamTrimmer(RATE, word_gap_ms=30, comma_pause_ms=220)
    clause = play(trim, "Well,", sound(100), quiet(150), quiet(200))  # the tail split across pieces
    assert clause.size == 100 + 220 - 30  # the seam, this tail and the next lead, is at most the comma pause
    after = play(trim, "I think so.", quiet(40), sound(100))
    assert after.size == 30 + 100  # after a clause mark the next lead is cut to a word gap
    inner = play(trim, "One, two and three.", sound(100), quiet(250), sound(100), quiet(90))
    assert inner.size == 100 + 250 + 100 + 90  # silence inside a phrase is the TTS's own: untouched


def test_silence_only_phrase_after_a_cut() -> None:
    trim = SeamTrimmer(RATE, word_gap_ms=30, comma_pause_ms=220)
    play(trim, "and", sound(100), quiet(100))
    assert play(trim, "...", quiet(300)).size == 0


@pytest.mark.parametrize(("pieces", "limit_ms"), [
    (["The capital of France is", " Paris."], 90),  # the eager first phrase: no more than a word gap
    (["Well,", " I think so."], 240),  # cut at a comma: no more than seam_comma_pause_ms (220, + a frame)
])
async def test_the_tts_service_joins_cut_phrases_like_one_sentence(pieces: list[str], limit_ms: int) -> None:
    import grpc

    from services.kit.audio import pcm16_to_float
    from services.tts.__main__ import build
    from services.tts.settings import TtsSettings
    from stepaudio.tts.v1 import tts_pb2, tts_pb2_grpc

    server = build(TtsSettings(host="127.0.0.1", port=0, log_json=False, log_level="WARNING"))
    port = await server.start()

    async def requests():  # noqa: ANN202
        yield tts_pb2.SynthesizeStreamRequest(config=tts_pb2.SynthesisConfig(voice="joe"))
        for p in pieces:
            yield tts_pb2.SynthesizeStreamRequest(text=tts_pb2.TextPiece(text=p, flush=True))

    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as ch:
            stub = tts_pb2_grpc.TtsServiceStub(ch)
            chunks = [r.chunk async for r in stub.SynthesizeStream(requests(), timeout=60)]
    finally:
        await server.stop(0)
    audio = np.concatenate([pcm16_to_float(c.audio.data) for c in chunks])
    assert [c.text for c in chunks if c.text] == [p.strip() for p in pieces]
    assert longest_inner_silence_ms(audio, chunks[0].sample_rate_hz) <= limit_ms


def test_longest_inner_silence() -> None:
    a = np.concatenate([quiet(50), sound(100), quiet(120), sound(10), quiet(300)])
    assert longest_inner_silence_ms(a, RATE) == 120 and longest_inner_silence_ms(quiet(100), RATE) == 0
