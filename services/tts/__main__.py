"""``python -m services.tts``: run the TTS service."""

import asyncio

from services.kit.server import GrpcServer, ServiceSpec, run
from services.tts.backends import create_backend
from services.tts.server import SERVICE_NAME, TtsServicer
from services.tts.settings import TtsSettings
from stepaudio.tts.v1 import tts_pb2_grpc


def build(settings: TtsSettings | None = None) -> GrpcServer:
    """The TTS server, ready to start."""
    settings = settings or TtsSettings()
    backend = create_backend(settings)

    async def warmup() -> None:
        await asyncio.to_thread(backend.warmup)

    async def dependencies_down() -> list[str]:
        return await asyncio.to_thread(backend.dependencies_down)

    spec = ServiceSpec(SERVICE_NAME, tts_pb2_grpc.add_TtsServiceServicer_to_server, TtsServicer(backend, settings))
    return GrpcServer("tts", settings, [spec], warmup, dependencies_down=dependencies_down)


if __name__ == "__main__":
    run(build())
