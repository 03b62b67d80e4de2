"""The OpenAI-style HTTP API against the real stages of the ``stack`` fixture: the official ``openai`` client,
OpenAI-shaped errors, streamed speech, API keys, and schemathesis over the served OpenAPI document."""

from __future__ import annotations

import asyncio
import hashlib
import io
import os
import threading
import wave
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
import schemathesis
from hypothesis import settings
from speech_match import says

from services.httpapi.openapi import document
from services.httpapi.server import build_app
from services.httpapi.settings import HttpApiSettings
from services.kit.audio import read_wav, resample
from stepaudio.stack import Stack, free_port

DATA = Path(__file__).parents[1] / "data"
KEY = "sk-test-key"


class HttpServer:
    """The aiohttp app on a loop of its own (the clients under test are synchronous)."""

    def __init__(self, settings: HttpApiSettings) -> None:
        from aiohttp import web

        self.loop = asyncio.new_event_loop()
        self.runner = web.AppRunner(build_app(settings))
        self.url = f"http://127.0.0.1:{settings.port}"
        threading.Thread(target=self.loop.run_forever, daemon=True).start()

        async def start() -> None:
            await self.runner.setup()
            await web.TCPSite(self.runner, "127.0.0.1", settings.port).start()

        asyncio.run_coroutine_threadsafe(start(), self.loop).result(30)

    def stop(self) -> None:
        asyncio.run_coroutine_threadsafe(self.runner.cleanup(), self.loop).result(30)
        self.loop.call_soon_threadsafe(self.loop.stop)


def _server(stack: Stack, **extra: object) -> HttpServer:
    return HttpServer(HttpApiSettings(port=free_port(), tokenizer_addr=stack.addr("tokenizer"),
                                      tts_addr=stack.addr("tts"), log_json=False, **extra))


@pytest.fixture(scope="module")
def http(stack: Stack) -> Iterator[HttpServer]:
    server = _server(stack, api_key_sha256=hashlib.sha256(KEY.encode()).hexdigest())
    yield server
    server.stop()


@pytest.fixture(scope="module")
def client(http: HttpServer):  # noqa: ANN201
    from openai import OpenAI

    return OpenAI(base_url=http.url + "/v1", api_key=KEY, max_retries=0, timeout=120)


def test_openai_client_transcribes(client) -> None:  # noqa: ANN001
    with open(DATA / "question.wav", "rb") as f:
        result = client.audio.transcriptions.create(model="whisper-1", file=f)
    assert says(result.text, (DATA / "question.txt").read_text().strip()), result.text
    # 48 kHz stereo 24-bit WAV: any WAV a recorder writes
    audio, rate = read_wav(DATA / "question.wav")
    x = resample(audio, rate, 48000)
    v = (np.clip(x, -1, 1) * (2**23 - 1)).astype(np.int32)
    frames = np.stack([v, v], axis=1).reshape(-1)
    raw = np.stack([(frames >> s) & 0xFF for s in (0, 8, 16)], axis=1).astype(np.uint8).tobytes()
    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(2)
        w.setsampwidth(3)
        w.setframerate(48000)
        w.writeframes(raw)
    text = client.audio.transcriptions.create(model="whisper-1", file=("q.wav", buf.getvalue()),
                                              response_format="text")
    assert says(str(text), (DATA / "question.txt").read_text().strip()), text


def test_openai_client_speaks_streamed_wav_and_pcm(client) -> None:  # noqa: ANN001
    with client.audio.speech.with_streaming_response.create(model="tts-1", voice="alloy", input="Hello there.",
                                                            response_format="wav") as resp:
        data = resp.read()
    assert data[:4] == b"RIFF" and data[8:12] == b"WAVE"
    rate = int.from_bytes(data[24:28], "little")
    assert rate == 22050 and (len(data) - 44) / 2 / rate > 0.3
    pcm = client.audio.speech.create(model="tts-1", voice="alloy", input="Hello there.", response_format="pcm")
    assert abs(len(pcm.content) / 2 / 24000 - (len(data) - 44) / 2 / rate) < 0.1  # raw PCM16 at 24 kHz


def test_openai_client_lists_models(client) -> None:  # noqa: ANN001
    ids = {m.id for m in client.models.list()}
    assert {"whisper-1", "tts-1", "stepaudio-asr", "stepaudio-tts"} <= ids
    assert client.models.retrieve("tts-1").id == "tts-1"


def test_errors_have_the_openai_shape(http: HttpServer, client) -> None:  # noqa: ANN001
    import openai

    with pytest.raises(openai.BadRequestError) as err:
        client.audio.transcriptions.create(model="whisper-1", file=("a.mp3", b"ID3\x03\x00" + b"\x00" * 100))
    assert "MP3 format is not supported" in err.value.message and err.value.body["param"] == "file"
    with pytest.raises(openai.BadRequestError, match="response_format"):
        client.audio.speech.create(model="tts-1", voice="alloy", input="Hi.", response_format="mp3")
    with pytest.raises(openai.NotFoundError):
        client.audio.speech.create(model="tts-1", voice="no-such-voice", input="Hi.")
    with pytest.raises(openai.NotFoundError):
        client.models.retrieve("gpt-9")
    r = httpx.get(http.url + "/v1/models", headers={"Authorization": "Bearer wrong"})
    assert r.status_code == 401 and r.json()["error"]["code"] == "invalid_api_key"
    r = httpx.post(http.url + "/v1/audio/speech", content=b"{not json", headers={"Authorization": f"Bearer {KEY}"})
    assert r.status_code == 400 and r.json()["error"]["type"] == "invalid_request_error"


def test_speech_streams_before_the_whole_text_is_spoken(http: HttpServer) -> None:
    text = " ".join(["This sentence is one of several that the service speaks one after another."] * 6)
    with httpx.stream("POST", http.url + "/v1/audio/speech", timeout=120,
                      json={"model": "tts-1", "voice": "alloy", "input": text, "response_format": "pcm"},
                      headers={"Authorization": f"Bearer {KEY}"}) as r:
        assert r.status_code == 200
        sizes = [len(c) for c in r.iter_raw()]
    assert len(sizes) > 3 and sum(sizes) / 2 / 24000 > 10  # several pieces, as phrases are synthesized


@pytest.fixture(scope="module")
def open_http(stack: Stack) -> Iterator[HttpServer]:
    server = _server(stack, max_speech_chars=120)
    yield server
    server.stop()


SCHEMA = schemathesis.openapi.from_dict(document(max_speech_chars=120))


@SCHEMA.parametrize()
@settings(max_examples=int(os.environ.get("STEPAUDIO_SCHEMATHESIS_EXAMPLES", "15")), deadline=None, derandomize=True)
def test_api_conforms_to_its_openapi_document(case, open_http: HttpServer) -> None:  # noqa: ANN001
    # Every check, except that a transcription of schema-valid bytes must succeed: the document can say "binary"
    # but not "a decodable WAV file", and a PNG is rightly refused with 400 and a message saying what to send.
    skip = [schemathesis.checks.positive_data_acceptance] if case.operation.path == "/v1/audio/transcriptions" else []
    case.call_and_validate(base_url=open_http.url, excluded_checks=skip)


def test_the_served_document_is_the_checked_one(open_http: HttpServer) -> None:
    assert httpx.get(open_http.url + "/openapi.json").json() == document(max_speech_chars=120)


def test_the_local_stack_serves_the_http_api(stack: Stack) -> None:
    """`stepaudio up` starts it too (its own process, no key on loopback)."""
    assert "whisper-1" in {m["id"] for m in httpx.get(stack.http_url + "/v1/models").json()["data"]}
    with open(DATA / "question.wav", "rb") as f:
        r = httpx.post(stack.http_url + "/v1/audio/transcriptions", files={"file": ("q.wav", f)},
                       data={"model": "whisper-1"}, timeout=60)
    assert r.status_code == 200 and says(r.json()["text"], (DATA / "question.txt").read_text().strip())


def test_form_fields_are_bounded_and_unknown_parts_dropped(http: HttpServer) -> None:
    auth = {"Authorization": f"Bearer {KEY}"}
    with open(DATA / "question.wav", "rb") as f:
        wav = f.read()
    r = httpx.post(http.url + "/v1/audio/transcriptions", headers=auth, timeout=60,
                   files={"file": ("q.wav", wav)}, data={"model": "whisper-1", "prompt": "x" * 5000})
    assert r.status_code == 400 and r.json()["error"]["param"] == "prompt"
    r = httpx.post(http.url + "/v1/audio/transcriptions", headers=auth, timeout=60,
                   files={"file": ("q.wav", wav), "junk": ("j.bin", b"\0" * 3_000_000)}, data={"model": "whisper-1"})
    assert r.status_code == 200 and r.json()["text"]  # read past, never kept
