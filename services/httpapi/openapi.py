"""The OpenAPI 3.1 document of the HTTP API (served at /openapi.json; checked with schemathesis)."""

from __future__ import annotations

from typing import Any

from services.httpapi.api import ASR_MODELS, SPEECH_FORMATS, TRANSCRIPT_FORMATS, TTS_MODELS

_ERROR = {"$ref": "#/components/schemas/Error"}


def _errors(*codes: int) -> dict[str, Any]:
    return {str(c): {"description": "An error (OpenAI's shape)", "content": {"application/json": {"schema": _ERROR}}}
            for c in codes}


def document(max_speech_chars: int = 4096) -> dict[str, Any]:
    return {
        "openapi": "3.1.0",
        "info": {"title": "Step-Audio platform: OpenAI-style audio API", "version": "1.0.0",
                 "description": "Speech to text and text to speech on the platform's stages, in the shape of "
                                "OpenAI's /v1/audio endpoints (the official `openai` client works)."},
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
            "schemas": {
                "Error": {"type": "object", "required": ["error"], "properties": {"error": {
                    "type": "object", "required": ["message", "type"], "properties": {
                        "message": {"type": "string"}, "type": {"type": "string"},
                        "param": {"type": ["string", "null"]}, "code": {"type": ["string", "null"]}}}}},
                "Model": {"type": "object", "required": ["id", "object", "created", "owned_by"], "properties": {
                    "id": {"type": "string"}, "object": {"const": "model"}, "created": {"type": "integer"},
                    "owned_by": {"type": "string"}}},
            },
        },
        "security": [{"bearer": []}, {}],
        "paths": {
            "/v1/models": {"get": {
                "operationId": "listModels", "summary": "The models this server answers to",
                "responses": {"200": {"description": "The models", "content": {"application/json": {"schema": {
                    "type": "object", "required": ["object", "data"], "properties": {
                        "object": {"const": "list"},
                        "data": {"type": "array", "items": {"$ref": "#/components/schemas/Model"}}}}}}},
                    **_errors(401)}}},
            "/v1/models/{model}": {"get": {
                "operationId": "retrieveModel", "summary": "One model",
                "parameters": [{"name": "model", "in": "path", "required": True, "schema": {"type": "string"}}],
                "responses": {"200": {"description": "The model", "content": {"application/json": {"schema": {
                    "$ref": "#/components/schemas/Model"}}}}, **_errors(401, 404)}}},
            "/v1/audio/transcriptions": {"post": {
                "operationId": "createTranscription", "summary": "Transcribe an audio file (WAV)",
                "requestBody": {"required": True, "content": {"multipart/form-data": {"schema": {
                    "type": "object", "required": ["file", "model"], "properties": {
                        "file": {"type": "string", "format": "binary",
                                 "description": "WAV: PCM 16/24/32-bit or float, any rate, mono or stereo"},
                        "model": {"type": "string", "enum": list(ASR_MODELS)},
                        "language": {"type": "string", "description": "ISO-639-1, e.g. en"},
                        "prompt": {"type": "string"},
                        "response_format": {"type": "string", "enum": list(TRANSCRIPT_FORMATS)},
                        "temperature": {"type": "number"}}}}}},
                "responses": {"200": {"description": "The transcript", "content": {
                    "application/json": {"schema": {"type": "object", "required": ["text"],
                                                    "properties": {"text": {"type": "string"}}}},
                    "text/plain": {"schema": {"type": "string"}}}},
                    **_errors(400, 401, 404, 413, 429, 500, 502, 503, 504)}}},
            "/v1/audio/speech": {"post": {
                "operationId": "createSpeech", "summary": "Speak text (streamed audio)",
                "requestBody": {"required": True, "content": {"application/json": {"schema": {
                    "type": "object", "required": ["model", "input", "voice"], "properties": {
                        "model": {"type": "string", "enum": list(TTS_MODELS)},
                        "input": {"type": "string", "minLength": 1, "maxLength": max_speech_chars},
                        "voice": {"type": "string", "minLength": 1},
                        "instructions": {"type": "string"},
                        "response_format": {"type": "string", "enum": list(SPEECH_FORMATS)},
                        "speed": {"type": "number", "minimum": 0.25, "maximum": 4.0}}}}}},
                "responses": {"200": {"description": "Audio as it is synthesized", "content": {
                    "audio/wav": {"schema": {"type": "string", "format": "binary"}},
                    "audio/pcm": {"schema": {"type": "string", "format": "binary"}}}},
                    **_errors(400, 401, 404, 429, 500, 502, 503, 504)}}},
        },
    }
