"""OpenAI-style HTTP API over the platform's stages: /v1/audio/transcriptions, /v1/audio/speech, /v1/models."""
