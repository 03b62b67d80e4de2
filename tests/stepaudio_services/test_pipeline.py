"""tokenizer -> TTS -> vocoder through gRPC on tiny real-layout checkpoints (profile=stepaudio)."""

from __future__ import annotations

from pathlib import Path

import grpc
import numpy as np
import pytest

from services.kit.audio import float_to_pcm16, pcm16_to_float, read_wav
from stepaudio.common.v1 import audio_pb2
from stepaudio.tokenizer.v1 import tokenizer_pb2
from stepaudio.tts.v1 import tts_pb2
from stepaudio.vocoder.v1 import vocoder_pb2

DATA = Path(__file__).resolve().parents[1] / "data"
TOKENS_PER_S = 1000 / 24
MAX_NEW_TOKENS = 40


def mel_frames(n_tokens: int) -> int:
    return int(n_tokens / TOKENS_PER_S * 22050 / 256)


async def tokenize(stub: object, audio: np.ndarray, rate: int, chunk_ms: int = 100) -> list[int]:
    async def reqs():  # noqa: ANN202
        yield tokenizer_pb2.TokenizeRequest(config=tokenizer_pb2.TokenizeConfig(
            format=audio_pb2.AudioFormat(sample_rate_hz=rate, channels=1)))
        step = rate * chunk_ms // 1000
        for i in range(0, len(audio), step):
            yield tokenizer_pb2.TokenizeRequest(audio=audio_pb2.AudioChunk(data=float_to_pcm16(audio[i : i + step])))

    ids: list[int] = []
    streamed: list[int] = []
    final = 0
    async for r in stub.Tokenize(reqs()):  # type: ignore[attr-defined]
        if r.replaces_previous:  # the final pass over the whole utterance replaces the provisional tokens
            assert r.is_final
            streamed, ids = ids, list(r.tokens.ids)
        else:
            ids += list(r.tokens.ids)
        final += r.is_final
    assert final == 1
    assert 0 < len(streamed) <= len(ids)  # provisional tokens arrived while the audio streamed (not the tail)
    return ids


async def synthesize(stub: object, text: str, kind: int, voice: str = "joe", style: str = "") -> list:
    req = tts_pb2.SynthesizeRequest(text=text, config=tts_pb2.SynthesisConfig(voice=voice, style=style,
                                                                              output_kind=kind))
    return [r.chunk async for r in stub.Synthesize(req)]  # type: ignore[attr-defined]


async def vocode(stub: object, mel: np.ndarray, music: bool = False) -> tuple[np.ndarray, int]:
    async def reqs():  # noqa: ANN202
        yield vocoder_pb2.VocodeRequest(config=vocoder_pb2.VocodeConfig(num_bins=80, music=music))
        for i in range(0, len(mel), 32):
            yield vocoder_pb2.VocodeRequest(mel=vocoder_pb2.MelBlock(values=mel[i : i + 32].reshape(-1).tolist()))

    parts, rate = [], 0
    async for r in stub.Vocode(reqs()):  # type: ignore[attr-defined]
        parts.append(pcm16_to_float(r.audio.data))
        rate = r.sample_rate_hz
    return np.concatenate(parts), rate


async def test_tokenizer_tts_vocoder_path(sa_stack: dict) -> None:
    audio, rate = read_wav(DATA / "question.wav")
    ids = await tokenize(sa_stack["tokenizer"], audio, rate)
    assert len(ids) == pytest.approx(len(audio) / rate * TOKENS_PER_S, abs=10)
    arr = np.asarray(ids).reshape(-1, 5)  # whole [2 linguistic, 3 semantic] groups
    assert (arr[:, :2] < 1024).all() and (arr[:, 2:] >= 1024).all() and (arr < 5120).all()

    chunks = await synthesize(sa_stack["tts"], "What is the capital of France?", tts_pb2.OUTPUT_KIND_MEL)
    assert len(chunks) == 1 and chunks[0].WhichOneof("content") == "mel"
    m = chunks[0].mel
    assert m.num_bins == 80 and m.sample_rate_hz == 22050 and m.hop_length == 256
    mel = np.asarray(m.values, np.float32).reshape(-1, 80)
    assert 0 < len(mel) <= mel_frames(MAX_NEW_TOKENS) and np.isfinite(mel).all()

    wave, out_rate = await vocode(sa_stack["vocoder"], mel)
    assert out_rate == 22050
    assert wave.size == len(mel) * 256  # hop 256: one mel frame is 11.6 ms
    assert np.isfinite(wave).all() and np.abs(wave).max() > 0


async def test_audio_tokens_and_audio(sa_stack: dict) -> None:
    chunks = await synthesize(sa_stack["tts"], "Hello there. How are you today?", tts_pb2.OUTPUT_KIND_AUDIO_TOKENS)
    assert [c.text for c in chunks] == ["Hello there.", "How are you today?"]
    for c in chunks:
        ids = list(c.audio_tokens.ids)
        assert 0 < len(ids) <= MAX_NEW_TOKENS and all(0 <= i < 5120 for i in ids)
    audio = await synthesize(sa_stack["tts"], "(happy1)(fast1)Hi!", tts_pb2.OUTPUT_KIND_AUDIO)
    assert audio[0].sample_rate_hz == 22050
    n = len(audio[0].audio.data) // 2
    assert n % 256 == 0 and 0 < n <= mel_frames(MAX_NEW_TOKENS) * 256


async def test_music_tag_uses_music_voice(sa_stack: dict) -> None:
    chunks = await synthesize(sa_stack["tts"], "(RAP)yo yo", tts_pb2.OUTPUT_KIND_MEL)
    mel = np.asarray(chunks[0].mel.values, np.float32).reshape(-1, 80)
    wave, _ = await vocode(sa_stack["vocoder"], mel, music=True)
    assert wave.size == len(mel) * 256
    with pytest.raises(grpc.aio.AioRpcError) as e:
        await synthesize(sa_stack["tts"], "(哼唱)la la", tts_pb2.OUTPUT_KIND_MEL)
    assert e.value.code() == grpc.StatusCode.NOT_FOUND and "joe哼唱" in (e.value.details() or "")


async def test_list_voices(sa_stack: dict) -> None:
    r = await sa_stack["tts"].ListVoices(tts_pb2.ListVoicesRequest())
    assert [v.name for v in r.voices] == ["joe", "joeRAP"] and r.voices[0].sample_rate_hz == 22050


@pytest.mark.parametrize(
    ("text", "voice", "style", "code", "needle"),
    [
        ("hello", "nobody", "", grpc.StatusCode.NOT_FOUND, "nobody"),
        ("(开心)hello", "joe", "", grpc.StatusCode.INVALID_ARGUMENT, "开心"),
        ("hello", "joe", "(bogus)", grpc.StatusCode.INVALID_ARGUMENT, "bogus"),
        ("(高兴1)(悲伤1)hello", "joe", "", grpc.StatusCode.INVALID_ARGUMENT, "emotion"),
    ],
)
async def test_bad_requests(sa_stack: dict, text: str, voice: str, style: str, code: grpc.StatusCode,
                            needle: str) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as e:
        await synthesize(sa_stack["tts"], text, tts_pb2.OUTPUT_KIND_MEL, voice=voice, style=style)
    assert e.value.code() == code and needle in (e.value.details() or "")


async def test_vocoder_rejects_bad_mel(sa_stack: dict) -> None:
    async def reqs():  # noqa: ANN202
        yield vocoder_pb2.VocodeRequest(config=vocoder_pb2.VocodeConfig(num_bins=80))
        yield vocoder_pb2.VocodeRequest(mel=vocoder_pb2.MelBlock(values=[0.0] * 81))

    with pytest.raises(grpc.aio.AioRpcError) as e:
        async for _ in sa_stack["vocoder"].Vocode(reqs()):
            pass
    assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT
