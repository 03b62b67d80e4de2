"""gRPC transport for the LLM stage (logic in generator.py)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import grpc

from services.llm.generator import Generator
from stepaudio.llm.v1 import llm_pb2, llm_pb2_grpc

SERVICE_NAME = llm_pb2.DESCRIPTOR.services_by_name["LlmService"].full_name


class LlmServicer(llm_pb2_grpc.LlmServiceServicer):
    """Generate: text deltas and tool calls as they come, then one Finish."""

    def __init__(self, generator: Generator) -> None:
        self.generator = generator

    async def Generate(  # noqa: N802 - gRPC method name
        self, request: llm_pb2.GenerateRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[llm_pb2.GenerateResponse]:
        remaining = context.time_remaining()
        async for response in self.generator.generate(request, timeout_s=remaining):
            yield response
