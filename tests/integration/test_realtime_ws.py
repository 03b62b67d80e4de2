"""The realtime WebSocket (OpenAI Realtime shape) on the real gateway and stages of the ``stack`` fixture: a full
duplex spoken turn over one socket, a typed turn cancelled mid-reply, and bad events answered with errors."""

from __future__ import annotations

import asyncio
import base64
import json
import time
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import numpy as np
import pytest
from speech_match import says
from test_http_api import HttpServer

from services.httpapi.settings import HttpApiSettings
from services.kit.audio import float_to_pcm16, pcm16_to_float, read_wav, resample
from stepaudio.stack import Stack, free_port

DATA = Path(__file__).parents[1] / "data"


@pytest.fixture(scope="module")
def ws_url(stack: Stack) -> Iterator[str]:
    server = HttpServer(HttpApiSettings(port=free_port(), tokenizer_addr=stack.addr("tokenizer"),
                                        tts_addr=stack.addr("tts"), gateway_addr=stack.gateway_addr, log_json=False))
    yield server.url.replace("http://", "ws://") + "/v1/realtime"
    server.stop()


async def events_until(ws: aiohttp.ClientWebSocketResponse, kind: str, timeout: float = 90) -> list[dict]:
    out: list[dict] = []
    deadline = time.monotonic() + timeout
    while True:
        msg = await asyncio.wait_for(ws.receive(), max(0.1, deadline - time.monotonic()))
        assert msg.type == aiohttp.WSMsgType.TEXT, msg
        out.append(json.loads(msg.data))
        if out[-1]["type"] == kind:
            return out


async def test_a_spoken_turn_over_one_socket(ws_url: str) -> None:
    audio, rate = read_wav(DATA / "question.wav")
    pcm = float_to_pcm16(np.concatenate([resample(audio, rate, 24000), np.zeros(24000 * 2, np.float32)]))
    async with aiohttp.ClientSession() as http, http.ws_connect(ws_url) as ws:
        await ws.send_json({"type": "session.update", "session": {
            "voice": "alloy", "turn_detection": {"type": "server_vad", "silence_duration_ms": 400}}})
        step = 24000 * 2 // 10  # 100 ms
        for off in range(0, len(pcm), step):
            await ws.send_json({"type": "input_audio_buffer.append",
                                "audio": base64.b64encode(pcm[off:off + step]).decode()})
            await asyncio.sleep(0.05)  # twice real time
        events = await events_until(ws, "response.done")
    kinds = [e["type"] for e in events]
    assert kinds[0] == "session.updated" and "session.created" in kinds
    assert kinds.index("input_audio_buffer.speech_started") < kinds.index("input_audio_buffer.speech_stopped")
    heard = next(e["transcript"] for e in events
                 if e["type"] == "conversation.item.input_audio_transcription.completed")
    assert says(heard, (DATA / "question.txt").read_text().strip()), heard
    deltas = [base64.b64decode(e["delta"]) for e in events if e["type"] == "response.audio.delta"]
    reply = pcm16_to_float(b"".join(deltas))
    assert reply.size / 24000 > 0.5  # 24 kHz PCM16, as the socket promised
    done = events[-1]["response"]
    assert done["status"] == "completed" and done["output_transcript"].strip()
    assert "".join(e["delta"] for e in events if e["type"] == "response.audio_transcript.delta").strip()
    assert all("event_id" in e for e in events)


async def test_cancel_a_reply_and_bad_events(ws_url: str) -> None:
    async with aiohttp.ClientSession() as http, http.ws_connect(ws_url) as ws:
        await ws.send_str("not json")
        await ws.send_json({"type": "input_audio_buffer.append", "audio": "%%%"})
        await ws.send_json({"type": "no.such.event"})
        errors = [e for e in await events_until(ws, "error") + await events_until(ws, "error")
                  + await events_until(ws, "error") if e["type"] == "error"]
        assert [e["error"]["code"] for e in errors] == ["invalid_event", "invalid_audio", "unknown_event"]
        await ws.send_json({"type": "session.update", "session": {}})
        assert (await events_until(ws, "error"))[-1]["error"]["code"] == "session_started"  # too late: audio came
        await ws.send_json({"type": "conversation.item.create", "item": {"type": "message", "role": "user",
                            "content": [{"type": "input_text", "text": "Tell me a long story about the sea."}]}})
        await events_until(ws, "response.audio.delta")
        await ws.send_json({"type": "response.cancel"})
        done = (await events_until(ws, "response.done"))[-1]["response"]
    assert done["status"] == "cancelled"


async def test_a_foreign_web_page_cannot_open_a_session(ws_url: str) -> None:
    async with aiohttp.ClientSession() as http:
        with pytest.raises(aiohttp.WSServerHandshakeError) as err:
            await http.ws_connect(ws_url, headers={"Origin": "https://evil.example"})
        assert err.value.status == 403
        host = ws_url.split("//", 1)[1].split("/", 1)[0]
        async with http.ws_connect(ws_url, headers={"Origin": f"http://{host}"}) as ws:  # the page's own origin
            await ws.send_json({"type": "session.update", "session": {}})
            assert (await events_until(ws, "session.updated"))[-1]["type"] == "session.updated"
