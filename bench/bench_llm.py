"""LLM latency/throughput: tritonclient straight to Triton vs through the LLM service.

Prints time to first token (TTFT) and decode tokens/s (median, p95) for both paths and the service/direct ratio.
Starts its own tritonserver (embedded_llm) and an in-process LLM service unless --triton-url / --llm-url are given.

    .venv/bin/python bench/bench_llm.py --runs 10 --max-tokens 64 [--concurrency 2]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import grpc  # noqa: E402
import tritonclient.grpc.aio as triton_aio  # noqa: E402

from services.llm.contract import GenerationParams, build_inputs, text_of  # noqa: E402
from services.llm.templates import SMOLLM2  # noqa: E402
from stepaudio.llm.v1 import llm_pb2, llm_pb2_grpc  # noqa: E402

PROMPTS = [
    "Tell me about the sea.",
    "Why is the sky blue?",
    "Describe a cat in a few sentences.",
    "What is a good breakfast?",
]


def pct(values: list[float], p: float) -> float:
    s = sorted(values)
    if not s:
        return float("nan")
    k = min(len(s) - 1, max(0, round(p / 100 * (len(s) - 1))))
    return s[k]


async def direct_once(client: triton_aio.InferenceServerClient, model: str, text: str, max_tokens: int) -> tuple:
    prompt = SMOLLM2.turn.format(role="user", content=text) + SMOLLM2.generation_prompt
    params = GenerationParams(max_tokens=max_tokens, temperature=0.7, stop_words=SMOLLM2.stop_words, seed=1)

    async def requests() -> AsyncIterator[dict[str, Any]]:
        yield {"model_name": model, "inputs": build_inputs(prompt, params)}

    t0 = time.perf_counter()
    first = last = 0.0
    n = 0
    async for result, error in client.stream_infer(requests()):
        if error is not None:
            raise RuntimeError(str(error))
        if text_of(result):
            last = time.perf_counter()
            first = first or last
            n += 1
    return first - t0, n, last - first


async def service_once(stub: llm_pb2_grpc.LlmServiceStub, text: str, max_tokens: int) -> tuple:
    req = llm_pb2.GenerateRequest(
        messages=[llm_pb2.ChatMessage(role=llm_pb2.ROLE_USER, content=[llm_pb2.ContentPart(text=text)])],
        sampling=llm_pb2.SamplingParams(max_tokens=max_tokens, temperature=0.7, seed=1),
    )
    # Default system prompt of the service is part of its prompt: the direct path uses none, so set an empty one.
    req.messages.insert(0, llm_pb2.ChatMessage(role=llm_pb2.ROLE_SYSTEM, content=[llm_pb2.ContentPart(text="")]))
    t0 = time.perf_counter()
    first = last = 0.0
    n = 0
    async for ev in stub.Generate(req):
        if ev.HasField("text_delta"):
            last = time.perf_counter()
            first = first or last
            n += 1
    return first - t0, n, last - first


async def run_paths(paths: dict[str, Any], runs: int, concurrency: int) -> dict[str, dict[str, list[float]]]:
    """Runs the paths alternately (same load on the machine for both); per path: TTFT ms and decode tokens/s."""
    out: dict[str, dict[str, list[float]]] = {name: {"ttft": [], "tps": []} for name in paths}
    for i in range(runs):
        for name, once in paths.items():
            # A unique tag first: no prompt-cache reuse between runs or paths.
            texts = [f"[{name} {i}.{j}] {PROMPTS[(i + j) % len(PROMPTS)]}" for j in range(concurrency)]
            batch = await asyncio.gather(*(once(t) for t in texts))
            for t, n, span in batch:
                out[name]["ttft"].append(t * 1000)
                if n > 1 and span > 0:
                    out[name]["tps"].append((n - 1) / span)
    return out


def row(name: str, r: dict[str, list[float]]) -> str:
    return (
        f"{name:<22} {statistics.median(r['ttft']):>10.1f} {pct(r['ttft'], 95):>10.1f} "
        f"{statistics.median(r['tps']):>11.1f} {pct(r['tps'], 5):>13.1f}"
    )


async def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", type=int, default=10)
    ap.add_argument("--max-tokens", type=int, default=64)
    ap.add_argument("--concurrency", type=int, default=1)
    ap.add_argument("--model", default="embedded_llm")
    ap.add_argument("--triton-url", default="", help="host:port of a running Triton (default: start one)")
    ap.add_argument("--llm-url", default="", help="host:port of a running LLM service (default: in-process)")
    a = ap.parse_args()

    handle = server = None
    if not a.triton_url:
        from stepaudio.tritonserver import start_triton

        handle = await asyncio.to_thread(start_triton, models=[a.model])
        a.triton_url = handle.grpc_url
    if not a.llm_url:
        from services.llm.__main__ import build
        from services.llm.settings import LlmSettings

        server = build(LlmSettings(host="127.0.0.1", port=0, triton_urls=a.triton_url, log_level="WARNING"))
        a.llm_url = f"127.0.0.1:{await server.start()}"
    client = triton_aio.InferenceServerClient(a.triton_url)
    channel = grpc.aio.insecure_channel(a.llm_url)
    stub = llm_pb2_grpc.LlmServiceStub(channel)
    try:
        await direct_once(client, a.model, "Hi", 4)  # warm both paths
        await service_once(stub, "Hi", 4)
        results = await run_paths(
            {
                "direct": lambda t: direct_once(client, a.model, t, a.max_tokens),
                "service": lambda t: service_once(stub, t, a.max_tokens),
            },
            a.runs,
            a.concurrency,
        )
        direct, service = results["direct"], results["service"]
    finally:
        await client.close()
        await channel.close()
        if server is not None:
            await server.stop(0)
        if handle is not None:
            await asyncio.to_thread(handle.stop)
    print(f"model={a.model} runs={a.runs} concurrency={a.concurrency} max_tokens={a.max_tokens} cores={os.cpu_count()}")
    print(f"{'path':<22} {'TTFT p50':>10} {'TTFT p95':>10} {'tok/s p50':>11} {'tok/s p5(low)':>13}")
    print(row("tritonclient->Triton", direct))
    print(row("LlmService->Triton", service))
    print(
        f"{'ratio service/direct':<22} {statistics.median(service['ttft']) / statistics.median(direct['ttft']):>10.2f} "
        f"{pct(service['ttft'], 95) / pct(direct['ttft'], 95):>10.2f} "
        f"{statistics.median(service['tps']) / statistics.median(direct['tps']):>11.2f}"
    )


if __name__ == "__main__":
    asyncio.run(main())
