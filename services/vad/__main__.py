"""``python -m services.vad``: run the VAD service."""

import asyncio

from services.kit.server import GrpcServer, ServiceSpec, run
from services.vad.backends import create_backend
from services.vad.server import SERVICE_NAME, VadServicer
from services.vad.settings import VadSettings
from stepaudio.vad.v1 import vad_pb2_grpc


def build(settings: VadSettings | None = None) -> GrpcServer:
    """The VAD server, ready to start."""
    settings = settings or VadSettings()
    backend = create_backend(settings)

    async def warmup() -> None:
        await asyncio.to_thread(backend.warmup)

    servicer = VadServicer(backend, settings)
    return GrpcServer(
        "vad", settings, [ServiceSpec(SERVICE_NAME, vad_pb2_grpc.add_VadServiceServicer_to_server, servicer)], warmup
    )


if __name__ == "__main__":
    run(build())
