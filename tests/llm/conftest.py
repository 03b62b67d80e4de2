"""Fixtures: a real tritonserver (embedded_llm) and the LLM service in-process on a free port."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from llm_helpers import start_llm, stop_llm

from stepaudio.llm.v1 import llm_pb2_grpc
from stepaudio.tritonserver import TritonHandle


@pytest.fixture(scope="session")
async def llm(triton: TritonHandle) -> AsyncIterator[llm_pb2_grpc.LlmServiceStub]:
    server, channel, stub = await start_llm(triton.grpc_url)
    yield stub
    await stop_llm(server, channel)
