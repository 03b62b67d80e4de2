"""LlmService in-process (port 0) against a real tritonserver serving embedded_llm."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator

import grpc
import pytest
from llm_helpers import start_llm, stop_llm
from opentelemetry import trace
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from services.llm.backends import GenerationChunk, LlmBackend
from services.llm.contract import GenerationParams
from services.llm.generator import Generator
from services.llm.settings import LlmSettings
from stepaudio.llm.v1 import llm_pb2, llm_pb2_grpc
from stepaudio.tritonserver import TritonHandle, free_port, start_triton

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def user(text: str, max_tokens: int = 24, greedy: bool = True, **kw: object) -> llm_pb2.GenerateRequest:
    req = llm_pb2.GenerateRequest(
        messages=[llm_pb2.ChatMessage(role=llm_pb2.ROLE_USER, content=[llm_pb2.ContentPart(text=text)])],
        sampling=llm_pb2.SamplingParams(max_tokens=max_tokens, greedy=greedy),
        **kw,
    )
    return req


async def collect(stub: llm_pb2_grpc.LlmServiceStub, req: llm_pb2.GenerateRequest, **kw: object) -> list:
    return [r async for r in stub.Generate(req, **kw)]


async def test_generate_streams_text_then_finish(llm: llm_pb2_grpc.LlmServiceStub) -> None:
    events = await collect(llm, user("Name three colours."))
    kinds = [e.WhichOneof("event") for e in events]
    assert kinds[-1] == "finish" and kinds.count("finish") == 1
    deltas = [e.text_delta for e in events if e.HasField("text_delta")]
    assert len(deltas) >= 5 and "".join(deltas).strip()
    usage = events[-1].finish.usage
    assert usage.prompt_tokens > 10 and 0 < usage.completion_tokens <= 24
    assert 0 < usage.time_to_first_token_ms < usage.total_ms
    assert events[-1].finish.reason in (llm_pb2.FINISH_REASON_STOP, llm_pb2.FINISH_REASON_LENGTH)


async def test_length_finish_and_stop_words(llm: llm_pb2_grpc.LlmServiceStub) -> None:
    events = await collect(llm, user("Count from 1 to 20 separated by commas.", max_tokens=8))
    assert events[-1].finish.reason == llm_pb2.FINISH_REASON_LENGTH
    req = user("Count from 1 to 20 separated by commas.", max_tokens=40)
    req.sampling.stop.append("5")
    text = "".join(e.text_delta for e in await collect(llm, req))
    assert "4" in text and "5" not in text


async def test_invalid_argument(llm: llm_pb2_grpc.LlmServiceStub) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await collect(llm, user("hi", max_tokens=100000))
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "max_tokens" in info.value.details()
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await collect(llm, llm_pb2.GenerateRequest())
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT


async def test_unknown_model_is_not_found(llm: llm_pb2_grpc.LlmServiceStub) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await collect(llm, user("hi", model="no_such_model"))
    assert info.value.code() == grpc.StatusCode.NOT_FOUND, info.value.details()


async def test_client_cancel_cancels_triton_request(llm: llm_pb2_grpc.LlmServiceStub, triton: TritonHandle) -> None:
    call = llm.Generate(user("Write a very long story about a dragon.", max_tokens=1500, session_id="cancelme"))
    n = 0
    async for _ev in call:
        n += 1
        if n == 3:
            call.cancel()
            break
    for _ in range(100):
        if "request 'cancelme-" in triton.log_tail(400):
            break
        await asyncio.sleep(0.1)
    line = next(ln for ln in triton.log_tail(400).splitlines() if "request 'cancelme-" in ln)
    assert int(line.split("cancelled after ")[1].split()[0]) < 100, line


async def test_deadline(llm: llm_pb2_grpc.LlmServiceStub) -> None:
    t0 = time.monotonic()
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await collect(llm, user("Write a very long story.", max_tokens=1500), timeout=0.5)
    assert info.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    assert time.monotonic() - t0 < 2


async def test_concurrent_requests_interleave(llm: llm_pb2_grpc.LlmServiceStub) -> None:
    async def timed(text: str) -> list[float]:
        return [time.monotonic() async for e in llm.Generate(user(text, max_tokens=40)) if e.HasField("text_delta")]

    a, b = await asyncio.gather(timed("Tell me about the sea."), timed("Tell me about mountains."))
    assert len([t for t in b if a[0] < t < a[-1]]) >= 5


async def test_spans_have_model_tokens_and_ttft(llm: llm_pb2_grpc.LlmServiceStub) -> None:
    exporter = InMemorySpanExporter()
    trace.get_tracer_provider().add_span_processor(SimpleSpanProcessor(exporter))  # type: ignore[attr-defined]
    await collect(llm, user("Hello!", max_tokens=8))
    spans = [s for s in exporter.get_finished_spans() if s.name == "llm.generate"]
    assert spans, [s.name for s in exporter.get_finished_spans()]
    attrs = spans[-1].attributes
    assert attrs["gen_ai.request.model"] == "embedded_llm"
    assert attrs["gen_ai.usage.input_tokens"] > 0 and 0 < attrs["gen_ai.usage.output_tokens"] <= 8
    assert attrs["stepaudio.llm.time_to_first_token_ms"] > 0


class ScriptedBackend(LlmBackend):
    """Replays model text in small pieces (tool-call parsing through the real servicer, deterministically)."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.prompts: list[str] = []

    async def generate(
        self, prompt: str, params: GenerationParams, model: str, request_id: str, timeout_s: float
    ) -> AsyncIterator[GenerationChunk]:
        self.prompts.append(prompt)
        for i in range(0, len(self.text), 4):
            yield GenerationChunk(text=self.text[i : i + 4])
        yield GenerationChunk(done=True, prompt_tokens=10, completion_tokens=len(self.text) // 4, finish_reason="stop")


async def test_tool_call_events() -> None:
    backend = ScriptedBackend('Let me check. <tool_call>{"name": "get_time", "arguments": {"city": "Paris"}}')
    gen = Generator(backend, LlmSettings())
    req = user("What time is it in Paris?")
    req.tools.add(name="get_time", description="Current time", parameters_json_schema='{"properties": {"city": {}}}')
    events = [e async for e in gen.generate(req)]
    assert "".join(e.text_delta for e in events) == "Let me check. "
    calls = [e.tool_call for e in events if e.HasField("tool_call")]
    assert len(calls) == 1 and calls[0].name == "get_time" and json.loads(calls[0].arguments_json) == {"city": "Paris"}
    assert events[-1].finish.reason == llm_pb2.FINISH_REASON_TOOL_CALLS
    assert "<tool_call>" in backend.prompts[0] and "get_time" in backend.prompts[0]


async def test_real_model_with_tools_streams_valid_events(llm: llm_pb2_grpc.LlmServiceStub) -> None:
    """The 135M model may or may not call the tool; whatever it does, the stream is well formed."""
    req = user("What time is it in Paris? Use the tool.", max_tokens=60)
    req.tools.add(
        name="get_time",
        description="Current time in a city",
        parameters_json_schema='{"properties": {"city": {"type": "string"}}}',
    )
    events = await collect(llm, req)
    assert events[-1].HasField("finish")
    for e in events:
        if e.HasField("tool_call"):
            assert e.tool_call.name == "get_time" and isinstance(json.loads(e.tool_call.arguments_json), dict)
        if e.HasField("text_delta"):
            assert "<tool_call>" not in e.text_delta


async def test_triton_down_unavailable_then_recovers(tmp_path) -> None:
    ports = {"grpc_port": free_port(), "http_port": free_port(), "metrics_port": free_port()}
    url = f"127.0.0.1:{ports['grpc_port']}"
    server, channel, stub = await start_llm(url)
    try:
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await collect(stub, user("hi", max_tokens=4), timeout=10)
        assert info.value.code() == grpc.StatusCode.UNAVAILABLE
        assert "Triton" in info.value.details() and url in info.value.details()
        handle = await asyncio.to_thread(start_triton, models=["embedded_llm"], log_path=tmp_path / "t.log", **ports)
        try:
            events = await collect(stub, user("hi", max_tokens=4), timeout=30)
            assert events[-1].HasField("finish")
        finally:
            await asyncio.to_thread(handle.stop)
        t0 = time.monotonic()
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await collect(stub, user("hi", max_tokens=4), timeout=10)
        assert info.value.code() == grpc.StatusCode.UNAVAILABLE and time.monotonic() - t0 < 3
    finally:
        await stop_llm(server, channel)


async def test_failover_to_second_endpoint(triton: TritonHandle) -> None:
    dead = f"127.0.0.1:{free_port()}"
    server, channel, stub = await start_llm(f"{dead},{triton.grpc_url}")
    try:
        for _ in range(4):  # round robin starts on the dead one every other request: all must succeed
            events = await collect(stub, user("hi", max_tokens=3), timeout=30)
            assert events[-1].HasField("finish")
    finally:
        await stop_llm(server, channel)


async def test_one_slow_request_does_not_drop_the_others_on_the_endpoint(triton: TritonHandle) -> None:
    """A request that times out before its first token is that request's failure: the endpoint stays up and the
    streams already running on it finish (before, the backend closed the shared client and killed them all)."""
    from services.kit.errors import DeadlineExceeded
    from services.llm.backends.triton import TritonBackend
    from services.llm.contract import GenerationParams

    backend = TritonBackend([triton.grpc_url], first_token_timeout_s=30.0)
    prompt = "<|im_start|>user\nTell me a long story about the sea.<|im_end|>\n<|im_start|>assistant\n"
    try:
        running = backend.generate(prompt, GenerationParams(max_tokens=60, temperature=0.0), "embedded_llm",
                                   "long-1", 60)
        chunks = [await running.__anext__()]  # streaming now
        backend.first_token_timeout_s = 1e-4  # the next request cannot get its first token in time
        with pytest.raises(DeadlineExceeded):
            async for _ in backend.generate(prompt, GenerationParams(max_tokens=5), "embedded_llm", "slow-1", 60):
                pass
        assert backend.endpoints[0].is_up(time.monotonic())
        async for chunk in running:
            chunks.append(chunk)
        assert chunks[-1].done and len(chunks) > 5  # the long stream finished normally
    finally:
        await backend.close()
