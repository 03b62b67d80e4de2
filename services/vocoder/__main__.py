"""``python -m services.vocoder``: run the vocoder service."""

import asyncio

from services.kit.server import GrpcServer, ServiceSpec, run
from services.vocoder.backends import create_backend
from services.vocoder.server import SERVICE_NAME, VocoderServicer
from services.vocoder.settings import VocoderSettings
from stepaudio.vocoder.v1 import vocoder_pb2_grpc


def build(settings: VocoderSettings | None = None) -> GrpcServer:
    """The vocoder server, ready to start."""
    settings = settings or VocoderSettings()
    backend = create_backend(settings)

    async def warmup() -> None:
        await asyncio.to_thread(backend.warmup)

    servicer = VocoderServicer(backend, settings)
    spec = ServiceSpec(SERVICE_NAME, vocoder_pb2_grpc.add_VocoderServiceServicer_to_server, servicer)
    return GrpcServer("vocoder", settings, [spec], warmup)


if __name__ == "__main__":
    run(build())
