"""Helpers for the LLM service tests: start/stop the service in-process on a free port."""

from __future__ import annotations

import grpc

from services.llm.__main__ import build
from services.llm.settings import LlmSettings
from stepaudio.llm.v1 import llm_pb2_grpc


async def start_llm(
    triton_urls: str, **overrides: object
) -> tuple[object, grpc.aio.Channel, llm_pb2_grpc.LlmServiceStub]:
    settings = LlmSettings(host="127.0.0.1", port=0, triton_urls=triton_urls, log_json=False, **overrides)
    server = build(settings)
    port = await server.start()
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}")
    return server, channel, llm_pb2_grpc.LlmServiceStub(channel)


async def stop_llm(server: object, channel: grpc.aio.Channel) -> None:
    await channel.close()
    await server.stop(0)  # type: ignore[attr-defined]
    await server.backend.close()  # type: ignore[attr-defined]
