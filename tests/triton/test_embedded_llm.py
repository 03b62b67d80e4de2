"""embedded_llm on a real tritonserver: streaming, concurrency, cancellation, errors, server down."""

from __future__ import annotations

import asyncio
import time

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.grpc.aio as aio
from triton_helpers import MODEL, chatml, generate, stream
from tritonclient.utils import InferenceServerException

from services.llm.contract import GenerationParams, build_inputs, scalar_of
from stepaudio.tritonserver import TritonHandle, start_triton

pytestmark = [pytest.mark.integration, pytest.mark.slow]


async def test_streaming_generation(triton: TritonHandle) -> None:
    client = aio.InferenceServerClient(triton.grpc_url)
    try:
        run = await generate(client, chatml("Name three colours."), GenerationParams(max_tokens=24, temperature=0))
    finally:
        await client.close()
    assert not run.errors
    assert len(run.pieces) >= 5, "expected one response per token"
    assert run.text.strip()
    assert run.last is not None, "the last response carries the perf outputs"
    n_out = scalar_of(run.last, "num_output_tokens")
    assert len(run.pieces) <= n_out <= min(24, len(run.pieces) + 1)  # + the end-of-sequence token
    assert scalar_of(run.last, "num_input_tokens") > 5
    arrival, first = scalar_of(run.last, "arrival_time_ns"), scalar_of(run.last, "first_token_time_ns")
    assert 0 < arrival <= first
    assert scalar_of(run.last, "finish_reason") in ("stop", "length")


async def test_greedy_is_deterministic_and_non_streaming_matches(triton: TritonHandle) -> None:
    client = aio.InferenceServerClient(triton.grpc_url)
    try:
        p = GenerationParams(max_tokens=16, temperature=0)
        a = await generate(client, chatml("What is a cat?"), p)
        b = await generate(
            client, chatml("What is a cat?"), GenerationParams(max_tokens=16, temperature=0, stream=False)
        )
    finally:
        await client.close()
    assert len(b.pieces) == 1, "stream=false sends the whole completion in one response"
    assert a.text == b.text


async def test_stop_words(triton: TritonHandle) -> None:
    client = aio.InferenceServerClient(triton.grpc_url)
    try:
        free = await generate(client, chatml("Count from 1 to 10."), GenerationParams(max_tokens=40, temperature=0))
        assert "3" in free.text
        stopped = await generate(
            client, chatml("Count from 1 to 10."), GenerationParams(max_tokens=40, temperature=0, stop_words=["3"])
        )
    finally:
        await client.close()
    assert "3" not in stopped.text
    assert free.text.startswith(stopped.text)
    assert scalar_of(stopped.last, "finish_reason") == "stop"


async def test_two_concurrent_generations_overlap(triton: TritonHandle) -> None:
    client = aio.InferenceServerClient(triton.grpc_url)
    try:
        p = GenerationParams(max_tokens=40, temperature=0)
        a, b = await asyncio.gather(
            generate(client, chatml("Tell me about the sea."), p),
            generate(client, chatml("Tell me about mountains."), p),
        )
    finally:
        await client.close()
    assert len(a.times) >= 10 and len(b.times) >= 10
    # Interleaved, not one after the other: each starts before the other ends, and B has tokens while A streams.
    assert b.times[0] < a.times[-1] and a.times[0] < b.times[-1]
    inside = [t for t in b.times if a.times[0] < t < a.times[-1]]
    assert len(inside) >= 5, f"only {len(inside)} of B's tokens arrived while A was streaming"


async def test_cancelled_request_stops_generating(triton: TritonHandle) -> None:
    client = aio.InferenceServerClient(triton.grpc_url)
    rid = f"cancel-{time.time_ns()}"
    try:
        it = stream(client, chatml("Write a very long story about a dragon."), GenerationParams(max_tokens=1500), rid)
        received = 0
        async for _result, error in it:
            assert error is None
            received += 1
            if received == 3:
                it.cancel()
                break
        marker = f"request '{rid}' cancelled after"
        for _ in range(100):  # poll the server log for up to 10 s
            if marker in triton.log_tail(400):
                break
            await asyncio.sleep(0.1)
        line = next(ln for ln in triton.log_tail(400).splitlines() if marker in ln)
        generated = int(line.split(marker)[1].split()[0])
        assert generated < 100, f"generation went on after cancel: {line}"
        # The server is still healthy and serves the next request.
        run = await generate(client, chatml("Hello"), GenerationParams(max_tokens=4, temperature=0))
        assert run.pieces and not run.errors
    finally:
        await client.close()


async def test_invalid_request_gets_error_in_stream(triton: TritonHandle) -> None:
    client = aio.InferenceServerClient(triton.grpc_url)
    try:
        run = await generate(client, chatml("hi"), GenerationParams(max_tokens=100000))
        assert run.errors and "max_tokens" in run.errors[0]
        run = await generate(client, "", GenerationParams(max_tokens=4))
        assert run.errors and "text_input" in run.errors[0]
    finally:
        await client.close()


def test_sync_client_and_final_flag_exactly_once(triton: TritonHandle) -> None:
    import queue

    client = grpcclient.InferenceServerClient(triton.grpc_url)
    q: queue.Queue = queue.Queue()
    client.start_stream(callback=lambda result, error: q.put((result, error)))
    try:
        client.async_stream_infer(
            MODEL,
            build_inputs(chatml("Say hi."), GenerationParams(max_tokens=8, temperature=0)),
            request_id="sync-1",
            enable_empty_final_response=True,
        )
        finals = 0
        responses = 0
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                result, error = q.get(timeout=2)
            except queue.Empty:
                break
            assert error is None
            responses += 1
            finals += result.get_response().parameters["triton_final_response"].bool_param
        assert finals == 1 and responses >= 2
    finally:
        client.stop_stream()
        client.close()


def test_request_to_stopped_server_fails_fast(tmp_path) -> None:
    handle = start_triton(models=["embedded_llm"], log_path=tmp_path / "triton.log")
    url = handle.grpc_url
    client = grpcclient.InferenceServerClient(url)
    assert client.is_server_ready()
    handle.stop()
    inputs = build_inputs(chatml("hi"), GenerationParams(max_tokens=4, stream=False))
    t0 = time.monotonic()
    with pytest.raises(InferenceServerException) as info:
        client.infer(MODEL, inputs, client_timeout=10)
    assert time.monotonic() - t0 < 3.0
    assert "unavailable" in str(info.value).lower() or "connect" in str(info.value).lower()
    client.close()


def test_build_inputs_shapes() -> None:
    inputs = {i.name(): i for i in build_inputs("x", GenerationParams(stop_words=["a", "b"], seed=3))}
    assert inputs["text_input"].shape() == [1, 1]
    assert inputs["stop_words"].shape() == [1, 2]
    assert inputs["random_seed"].datatype() == "UINT64"
    assert np.dtype("bool") and inputs["stream"].datatype() == "BOOL"


def test_invalid_config_is_rejected_at_load(tmp_path) -> None:
    """initialize() validates config.pbtxt; the launcher surfaces the reason from the server log."""
    import shutil
    from pathlib import Path

    from stepaudio.tritonserver import TritonStartError

    src = Path(__file__).resolve().parents[2] / "models" / "triton" / "embedded_llm"
    dest = tmp_path / "repo" / "embedded_llm"
    shutil.copytree(src, dest, ignore=shutil.ignore_patterns("__pycache__"))
    cfg = dest / "config.pbtxt"
    cfg.write_text(
        cfg.read_text().replace(
            'key: "n_parallel"\n  value: { string_value: "2" }', 'key: "n_parallel"\n  value: { string_value: "two" }'
        )
    )
    with pytest.raises(TritonStartError, match="n_parallel must be an integer"):
        start_triton(tmp_path / "repo", ["embedded_llm"], log_path=tmp_path / "t.log", ready_timeout=60)


async def test_a_stop_request_stops_generating_without_a_grpc_cancel(triton: TritonHandle) -> None:
    """What the LLM service does when a reply is discarded: a request with ``stop`` and the same request id, the
    stopped stream read to its end (Triton 2.51 can crash on a gRPC cancellation racing a final response)."""
    from services.kit.triton import TritonPool
    from services.llm.contract import build_inputs, stop_inputs

    pool = TritonPool([triton.grpc_url])
    rid = f"stop-{time.time_ns()}"
    try:
        assert await pool.takes_input("embedded_llm", "stop")
        n = 0
        inputs = build_inputs(chatml("Write a very long story about a dragon."), GenerationParams(max_tokens=1500))
        async for _result, _url in pool.stream("embedded_llm", inputs, rid, 60, stop_inputs()):
            n += 1
            if n == 3:
                break
        marker = f"request '{rid}' cancelled after"
        for _ in range(100):
            if marker in triton.log_tail(400) and not pool._drains:
                break
            await asyncio.sleep(0.1)
        line = next(ln for ln in triton.log_tail(400).splitlines() if marker in ln)
        assert int(line.split(marker)[1].split()[0]) < 100, line
        assert not pool._drains  # the stopped stream ended by itself
        client = aio.InferenceServerClient(triton.grpc_url)
        try:  # the server still serves the next request
            run = await generate(client, chatml("Hello"), GenerationParams(max_tokens=4, temperature=0))
        finally:
            await client.close()
        assert run.pieces and not run.errors
    finally:
        await pool.close()


async def test_a_stop_that_overtakes_its_request_still_stops_it(triton: TritonHandle) -> None:
    """The stop travels on a stream of its own, so it can reach the model before the request it stops: the request
    then ends at once with CANCELLED instead of generating a whole discarded reply."""
    from services.llm.contract import stop_inputs

    client = aio.InferenceServerClient(triton.grpc_url)
    rid = f"early-stop-{time.time_ns()}"

    async def send(inputs: list) -> list:
        async def requests():  # noqa: ANN202
            yield {"model_name": MODEL, "inputs": inputs, "request_id": rid}

        return [error async for _result, error in client.stream_infer(requests(), stream_timeout=60)]

    try:
        assert not [e for e in await send(stop_inputs()) if e is not None]  # an empty final: nothing to stop yet
        errors = await asyncio.wait_for(send(build_inputs(chatml("Write a very long story about a dragon."),
                                                          GenerationParams(max_tokens=1500))), 30)
        run = await generate(client, chatml("Hello"), GenerationParams(max_tokens=4, temperature=0))
    finally:
        await client.close()
    assert [str(e) for e in errors if e is not None] and "cancelled" in str(errors[-1]), errors
    assert f"request '{rid}' cancelled after 0 tokens" in triton.log_tail(400)
    assert run.pieces and not run.errors  # a later request with another id is not affected
