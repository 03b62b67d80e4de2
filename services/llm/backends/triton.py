"""LLM backend on Triton: the shared contract's text stream (services.kit.triton holds the client, failover and
recovery; this module maps its responses onto text chunks and counts)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

from services.kit.triton import TritonPool
from services.llm.backends.base import GenerationChunk, LlmBackend
from services.llm.contract import GenerationParams, build_inputs, scalar_of, stop_inputs, text_of


class TritonBackend(TritonPool, LlmBackend):
    """Generation on one or more Triton servers."""

    def __init__(self, urls: list[str], cooldown_s: float = 2.0, first_token_timeout_s: float = 30.0) -> None:
        super().__init__(urls, cooldown_s, first_token_timeout_s, env_hint="STEPAUDIO_LLM_TRITON_URLS")

    async def generate(
        self, prompt: str, params: GenerationParams, model: str, request_id: str, timeout_s: float
    ) -> AsyncIterator[GenerationChunk]:
        n_pieces = 0
        last: Any = None
        url = ""
        stop = stop_inputs() if await self.takes_input(model, "stop") else None
        async for result, url in self.stream(model, build_inputs(prompt, params), request_id, timeout_s, stop):
            text = text_of(result)
            if scalar_of(result, "num_output_tokens") is not None or scalar_of(result, "finish_reason"):
                last = result
            if text:
                n_pieces += 1
                yield GenerationChunk(text=text, endpoint=url)
        n_out = scalar_of(last, "num_output_tokens") if last is not None else None
        n_in = scalar_of(last, "num_input_tokens") if last is not None else None
        reason = scalar_of(last, "finish_reason") if last is not None else None
        yield GenerationChunk(
            done=True,
            prompt_tokens=int(n_in or 0),
            completion_tokens=int(n_out if n_out is not None else n_pieces),
            finish_reason=str(reason or ""),
            endpoint=url,
        )
