"""Fixtures: a real tritonserver (embedded_llm) and the LLM service in-process on a free port."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import pytest
from llm_helpers import start_llm, stop_llm

from services.llm.tritonserver import TritonHandle, start_triton
from stepaudio.llm.v1 import llm_pb2_grpc


@pytest.fixture(scope="session")
def triton_llm() -> Iterator[TritonHandle]:
    try:
        handle = start_triton(models=["embedded_llm"], ready_timeout=240)
    except Exception as e:  # noqa: BLE001
        pytest.fail(f"tritonserver did not start: {e}")
    with handle:
        yield handle


@pytest.fixture(scope="session")
async def llm(triton_llm: TritonHandle) -> AsyncIterator[llm_pb2_grpc.LlmServiceStub]:
    server, channel, stub = await start_llm(triton_llm.grpc_url)
    yield stub
    await stop_llm(server, channel)
