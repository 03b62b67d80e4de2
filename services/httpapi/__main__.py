"""``python -m services.httpapi``: the OpenAI-style HTTP API (env prefix STEPAUDIO_HTTPAPI_)."""

from aiohttp import web

from services.httpapi.server import build_app
from services.httpapi.settings import HttpApiSettings
from services.kit.telemetry import setup_logging

if __name__ == "__main__":
    settings = HttpApiSettings()
    setup_logging("stepaudio-httpapi", settings.log_level, settings.log_json)
    # run_app handles SIGTERM/SIGINT: stops accepting, lets running requests finish (shutdown_timeout), cleans up.
    web.run_app(build_app(settings), host=settings.host, port=settings.port, shutdown_timeout=30, print=None)
