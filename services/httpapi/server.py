"""aiohttp transport of the OpenAI-style HTTP API (logic in api.py): routes, bodies, errors, streaming."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import structlog
from aiohttp import BodyPartReader, web
from aiohttp.http_exceptions import HttpProcessingError

from services.httpapi.api import SPEECH_FORMATS, Api, ApiError
from services.httpapi.openapi import document
from services.httpapi.settings import HttpApiSettings
from services.kit.wavio import wav_header

log = structlog.get_logger("stepaudio.httpapi")
FORM_FIELDS = ("model", "language", "prompt", "response_format", "temperature")
FIELD_LIMIT = 4096  # bytes of one form field other than the file
STATIC = Path(__file__).resolve().parent / "static"  # the browser page (microphone -> /v1/realtime)
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def _error(e: ApiError) -> web.Response:
    return web.json_response(e.body(), status=e.status)


@web.middleware
async def errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Every failure as an OpenAI-shaped error; nothing escapes as a bare 500 page."""
    try:
        return await handler(request)
    except ApiError as e:
        return _error(e)
    except web.HTTPRequestEntityTooLarge:
        return _error(ApiError(413, "the request body is too large", param="file"))
    except web.HTTPException as e:
        if e.status >= 400:
            response = _error(ApiError(e.status, e.reason or "request failed"))
            if "Allow" in e.headers:  # 405 says which methods the path takes (RFC 9110)
                response.headers["Allow"] = e.headers["Allow"]
            return response
        raise
    except Exception:  # noqa: BLE001 - logged; the client gets a clear 500
        log.exception("request failed", path=request.path)
        return _error(ApiError(500, "internal error; the request was not completed"))


def build_app(settings: HttpApiSettings, api: Api | None = None) -> web.Application:
    api = api or Api(settings)
    app = web.Application(middlewares=[errors], client_max_size=settings.max_upload_bytes + 1024 * 1024)

    def authed(handler: Handler) -> Handler:
        async def wrapped(request: web.Request) -> web.StreamResponse:
            api.check_key(request.headers.get("Authorization"))
            return await handler(request)
        return wrapped

    async def models(_: web.Request) -> web.Response:
        return web.json_response(api.models())

    async def model(request: web.Request) -> web.Response:
        return web.json_response(api.model(request.match_info["model"]))

    async def transcriptions(request: web.Request) -> web.Response:
        if not request.content_type.startswith("multipart/"):
            raise ApiError(400, "send multipart/form-data with 'file' and 'model'")
        fields: dict[str, Any] = {}
        file: bytes | None = None
        try:
            reader = await request.multipart()
            while (part := await reader.next()) is not None:
                if not isinstance(part, BodyPartReader) or not part.name:
                    continue
                if part.name == "file":
                    if file is not None:
                        raise ApiError(400, "send one 'file' part", param="file")
                    file = bytes(await part.read(decode=False))
                elif part.name in FORM_FIELDS and part.name not in fields:
                    raw = bytearray()
                    while chunk := await part.read_chunk(FIELD_LIMIT):
                        raw += chunk
                        if len(raw) > FIELD_LIMIT:
                            raise ApiError(400, f"form field {part.name!r} is longer than {FIELD_LIMIT} bytes",
                                           param=part.name)
                    fields[part.name] = raw.decode("utf-8", errors="replace")
                else:
                    await part.release()  # unknown (or repeated) parts are read past, never kept
        except (ValueError, AssertionError, HttpProcessingError) as e:
            raise ApiError(400, f"malformed multipart body: {e}") from None
        body, seconds = await api.transcribe(file, str(fields.get("model", "")), str(fields.get("language", "")),
                                             str(fields.get("response_format") or "json"))
        log.info("transcription", audio_s=round(seconds, 2))
        if isinstance(body, str):
            return web.Response(text=body, content_type="text/plain")
        return web.json_response(body)

    async def speech(request: web.Request) -> web.StreamResponse:
        try:
            body = await request.json()
        except (json.JSONDecodeError, UnicodeDecodeError):
            raise ApiError(400, "the body must be JSON") from None
        tts_request, fmt = api.speech_request(body)
        chunks = api.speech(tts_request)
        first = await anext(chunks, None)  # errors before any audio become a clean error response
        if first is None:
            raise ApiError(502, "speech: the TTS returned no audio for this text")
        response = web.StreamResponse(headers={"Content-Type": SPEECH_FORMATS[fmt]})
        await response.prepare(request)
        if fmt == "wav":
            await response.write(wav_header(first[1]))
        await response.write(first[0])
        try:
            async for pcm, _rate in chunks:
                await response.write(pcm)
        except ApiError as e:
            # The status line is gone: end the connection without the last chunk, so the client sees a cut stream
            # (never a second response inside the body).
            log.warning("speech failed mid-stream", error=e.message)
            if request.transport is not None:
                request.transport.close()
            return response
        await response.write_eof()
        return response

    async def realtime_ws(request: web.Request) -> web.StreamResponse:
        from services.httpapi.realtime import handle

        return await handle(request, settings)

    async def openapi(_: web.Request) -> web.Response:
        return web.json_response(document(settings.max_speech_chars))

    async def index(_: web.Request) -> web.FileResponse:
        return web.FileResponse(STATIC / "index.html")

    async def healthz(_: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    async def on_cleanup(_: web.Application) -> None:
        await api.close()

    app.router.add_get("/v1/models", authed(models))
    app.router.add_get("/v1/models/{model}", authed(model))
    app.router.add_post("/v1/audio/transcriptions", authed(transcriptions))
    app.router.add_post("/v1/audio/speech", authed(speech))
    app.router.add_get("/v1/realtime", authed(realtime_ws))
    app.router.add_get("/openapi.json", openapi)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/", index)
    app.router.add_static("/static/", STATIC, show_index=False, follow_symlinks=False)
    app.on_cleanup.append(on_cleanup)
    return app
