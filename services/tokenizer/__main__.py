"""``python -m services.tokenizer``: run the tokenizer service."""

import asyncio

from services.kit.server import GrpcServer, ServiceSpec, run
from services.tokenizer.backends import create_asr, create_dual_tokenizer
from services.tokenizer.server import SERVICE_NAME, TokenizerServicer
from services.tokenizer.settings import TokenizerSettings
from stepaudio.tokenizer.v1 import tokenizer_pb2_grpc


def build(settings: TokenizerSettings | None = None) -> GrpcServer:
    """The tokenizer server, ready to start."""
    settings = settings or TokenizerSettings()
    asr = create_asr(settings)
    dual = create_dual_tokenizer(settings)

    async def warmup() -> None:
        await asyncio.to_thread(asr.warmup)
        if dual is not None:
            await asyncio.to_thread(dual.warmup)

    servicer = TokenizerServicer(asr, dual, settings)
    spec = ServiceSpec(SERVICE_NAME, tokenizer_pb2_grpc.add_TokenizerServiceServicer_to_server, servicer)
    return GrpcServer("tokenizer", settings, [spec], warmup)


if __name__ == "__main__":
    run(build())
