"""A realtime WebSocket in the shape of OpenAI's Realtime API, mapped onto the gateway's Converse stream: one
socket, full duplex voice (server VAD: the gateway's own turn detection, speculation and barge-in).

Client events: ``session.update`` (before audio; ``instructions``, ``voice``, ``turn_detection`` (server_vad only:
``silence_duration_ms``, ``prefix_padding_ms``, ``threshold``), ``input_audio_format``/``output_audio_format``
pcm16), ``input_audio_buffer.append`` (base64 PCM16 mono, 24 kHz), ``input_audio_buffer.commit`` (acknowledged;
server VAD decides the turn), ``conversation.item.create`` (a user ``input_text`` message), ``response.create``
(acknowledged: every turn is answered), ``response.cancel`` (stops the reply).

Server events: ``session.created``, ``session.updated``, ``input_audio_buffer.speech_started`` / ``speech_stopped``,
``input_audio_buffer.committed``, ``conversation.item.input_audio_transcription.completed``,
``response.audio_transcript.delta``, ``response.audio.delta`` (base64 PCM16, 24 kHz), ``response.done`` (status
completed | cancelled | failed), ``stepaudio.tool_call.started`` / ``.finished`` (tools run server side), ``error``.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import json
import uuid
from collections.abc import AsyncIterator
from typing import Any

import grpc
import structlog
from aiohttp import WSMsgType, web

from services.httpapi.settings import HttpApiSettings
from services.kit.clients import channel
from stepaudio.common.v1 import audio_pb2
from stepaudio.conversation.v1 import conversation_pb2 as pb
from stepaudio.conversation.v1 import conversation_pb2_grpc

log = structlog.get_logger("stepaudio.httpapi.realtime")
RATE = 24000  # OpenAI Realtime's pcm16
MAX_EVENT_BYTES = 1 << 20  # one append of at most ~20 s of audio
OUTCOMES = {pb.TURN_OUTCOME_COMPLETED: "completed", pb.TURN_OUTCOME_INTERRUPTED: "cancelled",
            pb.TURN_OUTCOME_FAILED: "failed"}


class ClientError(Exception):
    """A client event that cannot be taken: answered with an ``error`` event, the session goes on."""

    def __init__(self, code: str, message: str, param: str | None = None) -> None:
        super().__init__(message)
        self.code, self.message, self.param = code, message, param


def _id(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex[:20]}"


def session_config(session: dict[str, Any]) -> pb.SessionConfig:
    """The SessionConfig of a ``session.update`` body (checked)."""
    if not isinstance(session, dict):
        raise ClientError("invalid_value", "session must be an object", "session")
    for key in ("input_audio_format", "output_audio_format"):
        if session.get(key, "pcm16") != "pcm16":
            raise ClientError("invalid_value", f"{key} must be pcm16 (24 kHz mono)", f"session.{key}")
    cfg = pb.SessionConfig(input_format=audio_pb2.AudioFormat(sample_rate_hz=RATE),
                           output_format=audio_pb2.AudioFormat(sample_rate_hz=RATE))
    tools = session.get("tools", [])  # names of the platform's server-side tools the model may call; none by default
    if not isinstance(tools, list) or not all(isinstance(t, (str, dict)) for t in tools):
        raise ClientError("invalid_value", "tools must be a list of tool names (or {name: ...} objects)", "tools")
    cfg.allowed_tools.extend(t if isinstance(t, str) else str(t.get("name", "")) for t in tools)
    instructions, voice = session.get("instructions", ""), session.get("voice", "")
    if not isinstance(instructions, str) or not isinstance(voice, str):
        raise ClientError("invalid_value", "instructions and voice must be strings", "session")
    cfg.system_prompt = instructions
    from services.httpapi.api import OPENAI_VOICES

    cfg.voice = "" if voice in OPENAI_VOICES else voice
    td = session.get("turn_detection", {"type": "server_vad"})
    if td is None or not isinstance(td, dict) or td.get("type", "server_vad") != "server_vad":
        raise ClientError("unsupported", "only turn_detection type server_vad is supported (the gateway decides "
                          "turns, with speculation and barge-in)", "session.turn_detection")
    for src, dst in (("silence_duration_ms", "endpoint_ms"), ("prefix_padding_ms", "prefix_padding_ms")):
        v = td.get(src)
        if v is not None:
            if not isinstance(v, int) or isinstance(v, bool) or v < 0:
                raise ClientError("invalid_value", f"turn_detection.{src} must be a non-negative integer")
            setattr(cfg.turn_detection, dst, v)
    thr = td.get("threshold")
    if thr is not None:
        if not isinstance(thr, (int, float)) or isinstance(thr, bool) or not 0 < thr < 1:
            raise ClientError("invalid_value", "turn_detection.threshold must be in (0, 1)")
        cfg.turn_detection.start_threshold = float(thr)
    cfg.turn_detection.speculative = True
    return cfg


def server_event(ev: pb.ConverseResponse) -> dict[str, Any] | None:
    """The Realtime event for one Converse event (None: nothing to say)."""
    kind = ev.WhichOneof("event")
    if kind == "session_started":
        return {"type": "session.created", "session": {"id": ev.session_started.session_id, "object":
                "realtime.session", "input_audio_format": "pcm16", "output_audio_format": "pcm16",
                "turn_detection": {"type": "server_vad"}}}
    if kind == "speech_started":
        return {"type": "input_audio_buffer.speech_started", "audio_start_ms": ev.speech_started.audio_offset_ms}
    if kind == "speech_stopped":
        return {"type": "input_audio_buffer.speech_stopped", "audio_end_ms": ev.speech_stopped.audio_offset_ms}
    if kind == "transcript" and ev.transcript.is_final:
        return {"type": "conversation.item.input_audio_transcription.completed", "item_id": ev.transcript.turn_id,
                "transcript": ev.transcript.text}
    if kind == "reply_text_delta":
        return {"type": "response.audio_transcript.delta", "response_id": ev.reply_text_delta.turn_id,
                "delta": ev.reply_text_delta.delta}
    if kind == "audio_out":
        return {"type": "response.audio.delta", "response_id": ev.audio_out.turn_id,
                "delta": base64.b64encode(ev.audio_out.audio.data).decode()}
    if kind == "tool_call_started":
        t = ev.tool_call_started
        return {"type": "stepaudio.tool_call.started", "call_id": t.call_id, "name": t.name,
                "arguments": t.arguments_json}
    if kind == "tool_call_finished":
        t = ev.tool_call_finished
        return {"type": "stepaudio.tool_call.finished", "call_id": t.call_id, "name": t.name, "output": t.result_json}
    if kind == "turn_completed":
        t = ev.turn_completed
        return {"type": "response.done", "response": {
            "id": t.turn_id, "object": "realtime.response", "status": OUTCOMES.get(t.outcome, "failed"),
            "output_transcript": t.reply_text, "input_transcript": t.user_text,
            "timings_ms": {x.name: round(x.duration_ms, 1) for x in t.timings}}}
    if kind == "error":
        return {"type": "error", "error": {"type": "server_error", "code": ev.error.code.lower(),
                                           "message": ev.error.message}}
    return None


class RealtimeBridge:
    """One WebSocket <-> one Converse stream."""

    def __init__(self, settings: HttpApiSettings, ws: web.WebSocketResponse) -> None:
        self.s = settings
        self.ws = ws
        self.requests: asyncio.Queue[pb.ConverseRequest | None] = asyncio.Queue(maxsize=256)
        self.started = False
        self.closed = False  # the Converse stream ended: nothing more is queued

    async def send(self, event: dict[str, Any]) -> None:
        event.setdefault("event_id", _id("event"))
        if not self.ws.closed:
            await self.ws.send_str(json.dumps(event))

    async def error(self, e: ClientError) -> None:
        await self.send({"type": "error", "error": {"type": "invalid_request_error", "code": e.code,
                                                    "message": e.message, "param": e.param}})

    async def put(self, request: pb.ConverseRequest) -> None:
        if self.closed:
            raise ClientError("session_closed", "the conversation has ended; open a new socket")
        await self.requests.put(request)

    async def _requests(self) -> AsyncIterator[pb.ConverseRequest]:
        while (r := await self.requests.get()) is not None:
            yield r

    async def start(self, cfg: pb.SessionConfig) -> None:
        self.started = True
        await self.put(pb.ConverseRequest(config=cfg))

    async def on_client_event(self, event: Any) -> None:
        if not isinstance(event, dict) or not isinstance(event.get("type"), str):
            raise ClientError("invalid_event", "each message must be a JSON object with a string 'type'")
        kind = event["type"]
        if kind == "session.update":
            if self.started:
                raise ClientError("session_started", "session.update must come before any audio or item; "
                                  "open a new socket to change the session")
            await self.start(session_config(event.get("session", {})))
            await self.send({"type": "session.updated", "session": event.get("session", {})})
            return
        if not self.started:
            await self.start(session_config({}))
        if kind == "input_audio_buffer.append":
            try:
                data = base64.b64decode(event.get("audio", ""), validate=True)
            except (binascii.Error, TypeError, ValueError):
                raise ClientError("invalid_audio", "audio must be base64 PCM16 mono at 24 kHz", "audio") from None
            if not data or len(data) % 2:
                raise ClientError("invalid_audio", "audio must hold whole PCM16 samples (an even number of bytes)",
                                  "audio")
            await self.put(pb.ConverseRequest(audio=audio_pb2.AudioChunk(data=data)))
        elif kind == "input_audio_buffer.commit":
            await self.send({"type": "input_audio_buffer.committed"})  # server VAD decides the turn
        elif kind == "conversation.item.create":
            item = event.get("item", {})
            parts = item.get("content", []) if isinstance(item, dict) else []
            text = " ".join(p.get("text", "") for p in parts if isinstance(p, dict) and p.get("type") == "input_text")
            if not text.strip():
                raise ClientError("invalid_item", "only user messages with input_text content are taken", "item")
            await self.put(pb.ConverseRequest(text=pb.TextInput(text=text)))
        elif kind == "response.create":
            return  # every user turn is answered
        elif kind == "response.cancel":
            await self.put(pb.ConverseRequest(interrupt=pb.Interrupt()))
        else:
            raise ClientError("unknown_event", f"unknown event type {kind!r}")

    async def run(self) -> None:
        ch = channel(self.s.gateway_addr, token=self.s.gateway_token)
        stub = conversation_pb2_grpc.ConversationServiceStub(ch)
        reader: asyncio.Task[None] | None = None

        async def pump() -> None:
            call = stub.Converse(self._requests())
            try:
                async for ev in call:
                    if (out := server_event(ev)) is not None:
                        await self.send(out)
            except grpc.aio.AioRpcError as e:
                await self.send({"type": "error", "error": {"type": "server_error", "code": e.code().name.lower(),
                                                            "message": e.details() or e.code().name}})
            finally:
                self.closed = True
                call.cancel()
                while not self.requests.empty():  # a client blocked on a full queue goes on (and gets an error)
                    self.requests.get_nowait()
                await self.ws.close()

        try:
            async for msg in self.ws:
                if msg.type != WSMsgType.TEXT:
                    await self.error(ClientError("invalid_event", "send JSON text messages"))
                    continue
                try:
                    await self.on_client_event(json.loads(msg.data))
                except json.JSONDecodeError:
                    await self.error(ClientError("invalid_event", "the message is not JSON"))
                except ClientError as e:
                    await self.error(e)
                if self.started and reader is None:
                    reader = asyncio.create_task(pump())
        finally:
            with contextlib.suppress(asyncio.QueueFull):
                self.requests.put_nowait(None)  # half-close: the gateway finishes the turn, then the stream ends
            if reader is not None:
                try:
                    await asyncio.wait_for(reader, 30)
                except (TimeoutError, asyncio.CancelledError):
                    reader.cancel()
            await ch.close()


def origin_allowed(request: web.Request, settings: HttpApiSettings) -> bool:
    """Browsers send Origin: only the page's own origin, or one listed in allowed_origins, may open a session (a
    page elsewhere must not talk to a local stack through the user's browser). Non-browser clients send none."""
    origin = request.headers.get("Origin")
    if origin is None:
        return True
    allowed = {o.strip() for o in settings.allowed_origins.split(",") if o.strip()}
    return origin in allowed or origin.split("://", 1)[-1] == request.host


async def handle(request: web.Request, settings: HttpApiSettings) -> web.StreamResponse:
    if not origin_allowed(request, settings):
        raise web.HTTPForbidden(reason=f"origin {request.headers.get('Origin')} may not open a realtime session")
    ws = web.WebSocketResponse(max_msg_size=MAX_EVENT_BYTES, heartbeat=20)
    await ws.prepare(request)
    await RealtimeBridge(settings, ws).run()
    return ws
