"""Small tritonclient helpers for the tests: one gRPC stream per request, token timestamps."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import tritonclient.grpc.aio as aio

from services.llm.contract import GenerationParams, build_inputs, scalar_of, text_of

MODEL = "embedded_llm"


def chatml(user: str) -> str:
    return f"<|im_start|>user\n{user}<|im_end|>\n<|im_start|>assistant\n"


@dataclass
class Run:
    pieces: list[str] = field(default_factory=list)
    times: list[float] = field(default_factory=list)
    last: Any = None
    errors: list[str] = field(default_factory=list)

    @property
    def text(self) -> str:
        return "".join(self.pieces)


def stream(client: aio.InferenceServerClient, prompt: str, params: GenerationParams, request_id: str = "") -> Any:
    async def requests() -> AsyncIterator[dict[str, Any]]:
        yield {"model_name": MODEL, "inputs": build_inputs(prompt, params), "request_id": request_id}

    return client.stream_infer(requests())


async def generate(
    client: aio.InferenceServerClient, prompt: str, params: GenerationParams, request_id: str = ""
) -> Run:
    run = Run()
    async for result, error in stream(client, prompt, params, request_id):
        if error is not None:
            run.errors.append(str(error))
            continue
        text = text_of(result)
        if text:
            run.pieces.append(text)
            run.times.append(time.monotonic())
        if scalar_of(result, "finish_reason"):
            run.last = result
    return run
