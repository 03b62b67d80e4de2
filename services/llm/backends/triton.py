"""Triton backend: tritonclient.grpc.aio, one ModelStreamInfer stream per request (so cancelling one request
cancels only that request), round robin over endpoints with failover and automatic recovery.

* Before the first response, a connection failure (UNAVAILABLE, no first response in ``first_token_timeout_s``,
  model not ready there) marks the endpoint down for ``cooldown_s`` and the request moves to the next endpoint.
  Down endpoints are still tried, last, when every endpoint is down, so a Triton that comes back is used again
  at once. A failed endpoint's channel is recreated (no gRPC reconnect back-off).
* After the first response a failure ends the request with UNAVAILABLE (text already went to the caller).
* Closing the iterator (caller cancelled, deadline) cancels the gRPC stream, which cancels the Triton request.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import AsyncIterator
from typing import Any

import grpc
import structlog
import tritonclient.grpc.aio as triton_aio
from tritonclient.utils import InferenceServerException

from services.kit.errors import DeadlineExceeded, NotFound, StageError, Unavailable
from services.llm.backends.base import GenerationChunk, LlmBackend
from services.llm.contract import GenerationParams, build_inputs, scalar_of, text_of

log = structlog.get_logger("stepaudio.llm.triton")


# A private subchannel pool: a recreated channel must not inherit the reconnect back-off of the global pool's
# subchannel (else a Triton that came back stays "unavailable" for up to the back-off). Short back-off, keepalive.
CHANNEL_ARGS = [
    ("grpc.use_local_subchannel_pool", 1),
    ("grpc.initial_reconnect_backoff_ms", 100),
    ("grpc.min_reconnect_backoff_ms", 100),
    ("grpc.max_reconnect_backoff_ms", 2000),
    ("grpc.max_send_message_length", 64 * 1024 * 1024),
    ("grpc.max_receive_message_length", 64 * 1024 * 1024),
    ("grpc.keepalive_time_ms", 20000),
    ("grpc.keepalive_timeout_ms", 10000),
    ("grpc.keepalive_permit_without_calls", 1),
    ("grpc.http2.max_pings_without_data", 0),
]


class _EndpointDown(Exception):
    """This endpoint cannot serve the request right now; try another."""


class _SlowEndpoint(_EndpointDown):
    """This request got no first response in time: try another endpoint, but this one stays up and its other
    streams go on (one slow request must not take down every request in flight on the same connection)."""


class _Endpoint:
    def __init__(self, url: str) -> None:
        self.url = url
        self.down_until = 0.0
        self.last_error = ""
        self._client: triton_aio.InferenceServerClient | None = None

    @property
    def client(self) -> triton_aio.InferenceServerClient:
        if self._client is None:
            self._client = triton_aio.InferenceServerClient(self.url, channel_args=CHANNEL_ARGS)
        return self._client

    def is_up(self, now: float) -> bool:
        return now >= self.down_until

    async def mark_down(self, reason: str, cooldown_s: float) -> None:
        if self.is_up(time.monotonic()):
            log.warning("triton endpoint down", endpoint=self.url, reason=reason)
        self.down_until = time.monotonic() + cooldown_s
        self.last_error = reason
        await self.reset()

    def mark_up(self) -> None:
        if self.down_until:
            log.info("triton endpoint back", endpoint=self.url)
        self.down_until = 0.0
        self.last_error = ""

    async def reset(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            try:
                await client.close()
            except Exception:  # noqa: BLE001
                pass


def _grpc_code(e: BaseException) -> grpc.StatusCode | None:
    if isinstance(e, grpc.aio.AioRpcError):
        return e.code()
    if isinstance(e, InferenceServerException):
        status = str(e.status() or "")
        for code in grpc.StatusCode:
            if status == str(code):
                return code
    return None


class TritonBackend(LlmBackend):
    """Generation on one or more Triton servers."""

    def __init__(self, urls: list[str], cooldown_s: float = 2.0, first_token_timeout_s: float = 30.0) -> None:
        if not urls:
            raise ValueError("at least one Triton endpoint is needed (STEPAUDIO_LLM_TRITON_URLS)")
        self.endpoints = [_Endpoint(u) for u in urls]
        self.cooldown_s = cooldown_s
        self.first_token_timeout_s = first_token_timeout_s
        self._rr = itertools.count()

    def order(self) -> list[_Endpoint]:
        """Round robin over healthy endpoints, then the down ones (soonest back first) as a last resort."""
        n = len(self.endpoints)
        start = next(self._rr) % n
        rotated = self.endpoints[start:] + self.endpoints[:start]
        now = time.monotonic()
        up = [e for e in rotated if e.is_up(now)]
        down = sorted((e for e in rotated if not e.is_up(now)), key=lambda e: e.down_until)
        return up + down

    async def generate(
        self, prompt: str, params: GenerationParams, model: str, request_id: str, timeout_s: float
    ) -> AsyncIterator[GenerationChunk]:
        errors: list[str] = []
        slow = 0
        for ep in self.order():
            started = False
            try:
                async for chunk in self._generate_on(ep, prompt, params, model, request_id, timeout_s):
                    started = True
                    yield chunk
                return
            except _EndpointDown as e:
                if started:
                    raise Unavailable(f"Triton at {ep.url} failed during generation: {e}") from None
                if isinstance(e, _SlowEndpoint):
                    slow += 1
                else:
                    await ep.mark_down(str(e), self.cooldown_s)
                errors.append(f"{ep.url}: {e}")
        if slow == len(errors):
            raise DeadlineExceeded(f"no Triton endpoint answered model {model!r} within "
                                   f"{self.first_token_timeout_s:g} s ({'; '.join(errors)}); they are busy, retry")
        raise Unavailable(
            f"LLM backend unavailable: no Triton endpoint could serve model {model!r} ({'; '.join(errors)}). "
            "Start Triton (python -m stepaudio.tritonserver) or fix STEPAUDIO_LLM_TRITON_URLS; "
            "the service reconnects by itself."
        )

    async def _generate_on(
        self, ep: _Endpoint, prompt: str, params: GenerationParams, model: str, request_id: str, timeout_s: float
    ) -> AsyncIterator[GenerationChunk]:
        inputs = build_inputs(prompt, params)

        async def requests() -> AsyncIterator[dict[str, Any]]:
            yield {"model_name": model, "inputs": inputs, "request_id": request_id}

        call = ep.client.stream_infer(requests(), stream_timeout=timeout_s)
        n_pieces = 0
        last: Any = None
        first = True
        try:
            while True:
                try:
                    if first:
                        result, error = await asyncio.wait_for(call.__anext__(), self.first_token_timeout_s)
                    else:
                        result, error = await call.__anext__()
                except StopAsyncIteration:
                    break
                except TimeoutError:
                    raise _SlowEndpoint(f"no response within {self.first_token_timeout_s:g} s") from None
                except (grpc.aio.AioRpcError, InferenceServerException) as e:
                    self._raise_rpc(e, first)
                if first:
                    first = False
                    ep.mark_up()
                if error is not None:
                    self._raise_model_error(str(error), model)
                text = text_of(result)
                if scalar_of(result, "num_output_tokens") is not None or scalar_of(result, "finish_reason"):
                    last = result
                if text:
                    n_pieces += 1
                    yield GenerationChunk(text=text, endpoint=ep.url)
        finally:
            call.cancel()
        if first:
            raise _EndpointDown("stream closed without a response")
        n_out = scalar_of(last, "num_output_tokens") if last is not None else None
        n_in = scalar_of(last, "num_input_tokens") if last is not None else None
        reason = scalar_of(last, "finish_reason") if last is not None else None
        yield GenerationChunk(
            done=True,
            prompt_tokens=int(n_in or 0),
            completion_tokens=int(n_out if n_out is not None else n_pieces),
            finish_reason=str(reason or ""),
            endpoint=ep.url,
        )

    @staticmethod
    def _raise_rpc(e: BaseException, before_first: bool) -> None:
        code = _grpc_code(e)
        details = e.details() if isinstance(e, grpc.aio.AioRpcError) else str(e)
        if code in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.UNKNOWN) or (
            before_first and code == grpc.StatusCode.CANCELLED
        ):
            raise _EndpointDown(f"{code.name if code else 'error'}: {details}") from None
        if code == grpc.StatusCode.DEADLINE_EXCEEDED:
            raise DeadlineExceeded("the generation did not finish before the deadline") from None
        raise StageError(f"Triton stream failed: {code.name if code else ''} {details}") from None

    @staticmethod
    def _raise_model_error(msg: str, model: str) -> None:
        low = msg.lower()
        if "unknown model" in low or ("not found" in low and model in msg):
            raise NotFound(f"model {model!r} is not loaded on Triton ({msg})")
        if "not ready" in low or "unavailable" in low:
            raise _EndpointDown(msg)
        raise StageError(f"model {model!r} failed: {msg}")

    async def warmup(self, model: str, wait_s: float = 0.0) -> bool:
        deadline = time.monotonic() + wait_s
        while True:
            for ep in self.endpoints:
                try:
                    if await asyncio.wait_for(ep.client.is_model_ready(model), 2.0):
                        log.info("triton model ready", endpoint=ep.url, model=model)
                        return True
                except Exception as e:  # noqa: BLE001
                    await ep.reset()
                    ep.last_error = str(e)
            if time.monotonic() >= deadline:
                log.warning(
                    "triton model not ready yet; serving anyway", model=model, endpoints=[e.url for e in self.endpoints]
                )
                return False
            await asyncio.sleep(0.5)

    async def close(self) -> None:
        for ep in self.endpoints:
            await ep.reset()
