"""``python -m services.llm``: run the LLM service (talks to Triton at STEPAUDIO_LLM_TRITON_URLS)."""

from services.kit.server import GrpcServer, ServiceSpec, run
from services.llm.backends import create_backend
from services.llm.generator import Generator
from services.llm.server import SERVICE_NAME, LlmServicer
from services.llm.settings import LlmSettings
from stepaudio.llm.v1 import llm_pb2_grpc


def build(settings: LlmSettings | None = None) -> GrpcServer:
    """The LLM server, ready to start."""
    settings = settings or LlmSettings()
    backend = create_backend(settings)
    generator = Generator(backend, settings)

    async def warmup() -> None:
        await backend.warmup(generator.model, settings.warmup_wait_s)

    servicer = LlmServicer(generator)
    server = GrpcServer(
        "llm", settings, [ServiceSpec(SERVICE_NAME, llm_pb2_grpc.add_LlmServiceServicer_to_server, servicer)], warmup
    )
    server.backend = backend  # type: ignore[attr-defined]  # tests and bench close it
    return server


if __name__ == "__main__":
    run(build())
