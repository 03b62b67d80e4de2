"""The platform's one Triton client: tritonclient.grpc.aio, one ModelStreamInfer stream per request (so cancelling one
request cancels only that request), round robin over endpoints with failover and automatic recovery.

Used by every service that asks Triton for tokens (the LLM service for Step-Audio-Chat text, the TTS service for
TTS-3B audio ids): they build the inputs of the shared contract and read the outputs they need.

* Before the first response, a connection failure (UNAVAILABLE, no first response in ``first_token_timeout_s``,
  model not ready there) marks the endpoint down for ``cooldown_s`` and the request moves to the next endpoint.
  Down endpoints are still tried, last, when every endpoint is down, so a Triton that comes back is used again
  at once. A failed endpoint's channel is recreated (no gRPC reconnect back-off).
* After the first response a failure ends the request with UNAVAILABLE (output already went to the caller).
* Closing the iterator (caller cancelled, deadline) stops the Triton request: with an in-band stop request where
  the model takes one (see ``TritonPool.stream``), else by cancelling the gRPC stream.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import AsyncIterator
from typing import Any

import grpc
import numpy as np
import structlog
import tritonclient.grpc.aio as triton_aio
from tritonclient.utils import InferenceServerException

from services.kit.errors import DeadlineExceeded, NotFound, StageError, Unavailable

log = structlog.get_logger("stepaudio.triton")


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


def _input(name: str, value: np.ndarray, dtype: str) -> triton_aio.InferInput:
    arr = value[np.newaxis, ...]  # every model of the contract has max_batch_size > 0: a batch of one
    t = triton_aio.InferInput(name, list(arr.shape), dtype)
    t.set_data_from_numpy(arr)
    return t


def token_inputs(prompt_ids: list[int], max_tokens: int, temperature: float, top_p: float, top_k: int,
                 seed: int | None = None) -> list[triton_aio.InferInput]:
    """Inputs of an ids-in, ids-out request of the shared contract (``input_ids`` -> ``output_ids`` per step)."""
    inputs = [
        _input("input_ids", np.asarray(prompt_ids, dtype=np.int32), "INT32"),
        _input("max_tokens", np.array([max_tokens], dtype=np.int32), "INT32"),
        _input("stream", np.array([True]), "BOOL"),
        _input("temperature", np.array([temperature], dtype=np.float32), "FP32"),
        _input("top_p", np.array([top_p], dtype=np.float32), "FP32"),
        _input("top_k", np.array([top_k], dtype=np.int32), "INT32"),
    ]
    if seed is not None:
        inputs.append(_input("random_seed", np.array([seed], dtype=np.uint64), "UINT64"))
    return inputs


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


class TritonPool:
    """Streams on one or more Triton servers."""

    def __init__(self, urls: list[str], cooldown_s: float = 2.0, first_token_timeout_s: float = 30.0,
                 env_hint: str = "the service's TRITON_URLS setting") -> None:
        if not urls:
            raise ValueError(f"at least one Triton endpoint is needed ({env_hint})")
        self.endpoints = [_Endpoint(u) for u in urls]
        self.cooldown_s = cooldown_s
        self.first_token_timeout_s = first_token_timeout_s
        self.env_hint = env_hint
        self._rr = itertools.count()
        self._inputs: dict[str, frozenset[str]] = {}  # model -> the input names its config declares
        self._drains: set[asyncio.Task[None]] = set()  # streams read to their end after a stop

    def order(self) -> list[_Endpoint]:
        """Round robin over healthy endpoints, then the down ones (soonest back first) as a last resort."""
        n = len(self.endpoints)
        start = next(self._rr) % n
        rotated = self.endpoints[start:] + self.endpoints[:start]
        now = time.monotonic()
        up = [e for e in rotated if e.is_up(now)]
        down = sorted((e for e in rotated if not e.is_up(now)), key=lambda e: e.down_until)
        return up + down

    async def stream(
        self, model: str, inputs: list[Any], request_id: str, timeout_s: float, stop: list[Any] | None = None
    ) -> AsyncIterator[tuple[Any, str]]:
        """(InferResult, endpoint url) for each response of one request; failover before the first one.

        ``stop``: the inputs of a request that stops this one (the model takes a ``stop`` input, as TensorRT-LLM's
        does). Closing the iterator early then sends it with the same request id and reads this request's stream
        to its end in the background, instead of cancelling the gRPC call: Triton 2.51's gRPC frontend can crash
        (SIGSEGV) when a cancellation races the request's final response, which discarded speculations hit."""
        errors: list[str] = []
        slow = 0
        for ep in self.order():
            started = False
            try:
                async for result in self._stream_on(ep, model, inputs, request_id, timeout_s, stop):
                    started = True
                    yield result, ep.url
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
            f"Triton unavailable: no endpoint could serve model {model!r} ({'; '.join(errors)}). "
            f"Start Triton (python -m stepaudio.tritonserver) or fix {self.env_hint}; the service reconnects by itself."
        )

    async def takes_input(self, model: str, name: str) -> bool:
        """Whether ``model``'s config declares input ``name`` (asked once per model; False while no endpoint
        answers)."""
        if model not in self._inputs:
            for ep in self.order():
                try:
                    config = await asyncio.wait_for(ep.client.get_model_config(model, as_json=True), 5)
                except Exception:  # noqa: BLE001 - unknown for now: asked again next time
                    continue
                self._inputs[model] = frozenset(i.get("name", "") for i in config.get("config", {}).get("input", []))
                break
        return name in self._inputs.get(model, frozenset())

    async def _stream_on(
        self, ep: _Endpoint, model: str, inputs: list[Any], request_id: str, timeout_s: float,
        stop: list[Any] | None = None,
    ) -> AsyncIterator[Any]:
        async def requests() -> AsyncIterator[dict[str, Any]]:
            yield {"model_name": model, "inputs": inputs, "request_id": request_id}

        call = ep.client.stream_infer(requests(), stream_timeout=timeout_s)
        first = True
        finished = False
        try:
            while True:
                try:
                    if first:
                        async with asyncio.timeout(self.first_token_timeout_s):  # wait_for can lose a cancel (3.11)
                            result, error = await call.__anext__()
                    else:
                        result, error = await call.__anext__()
                except StopAsyncIteration:
                    finished = True
                    break
                except TimeoutError:
                    raise _SlowEndpoint(f"no response within {self.first_token_timeout_s:g} s") from None
                except (grpc.aio.AioRpcError, InferenceServerException) as e:
                    finished = True
                    self._raise_rpc(e, first)
                if first:
                    first = False
                    ep.mark_up()
                if error is not None:
                    self._raise_model_error(str(error), model)
                yield result
        finally:
            if stop is None or finished:
                call.cancel()  # a no-op on a stream that ended
            else:
                self._stop(ep, call, model, stop, request_id)
        if first:
            raise _EndpointDown("stream closed without a response")

    def _stop(self, ep: _Endpoint, call: Any, model: str, stop: list[Any], request_id: str,
              timeout_s: float = 10.0) -> None:
        """In the background: send the stop request for ``request_id`` on a stream of its own, and read the
        stopped request's stream to its end (the client half-closed it already, so it ends with the request's
        final response); cancel it only if it does not end within ``timeout_s``."""

        async def stop_requests() -> AsyncIterator[dict[str, Any]]:
            yield {"model_name": model, "inputs": stop, "request_id": request_id}

        async def read_to_end(stream: Any) -> None:
            try:
                async with asyncio.timeout(timeout_s):
                    while True:
                        await stream.__anext__()
            except StopAsyncIteration:
                return
            except Exception:  # noqa: BLE001 - the request is over either way
                stream.cancel()
            except asyncio.CancelledError:
                stream.cancel()
                raise

        async def run() -> None:
            await asyncio.gather(read_to_end(ep.client.stream_infer(stop_requests(), stream_timeout=timeout_s)),
                                 read_to_end(call))

        task = asyncio.get_running_loop().create_task(run())
        self._drains.add(task)
        task.add_done_callback(self._drains.discard)

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

    async def ready(self, model: str, reset_on_error: bool = True, timeout_s: float = 2.0) -> bool:
        """True when ``model`` is ready on at least one endpoint (one quiet pass; never raises). Periodic health
        checks pass ``reset_on_error=False``: a slow answer from a busy Triton must not close the channel that the
        streams in flight share."""
        for ep in self.endpoints:
            try:
                if await asyncio.wait_for(ep.client.is_model_ready(model), timeout_s):
                    return True
            except Exception as e:  # noqa: BLE001
                if reset_on_error:
                    await ep.reset()
                ep.last_error = str(e)
        return False

    async def warmup(self, model: str, wait_s: float = 0.0) -> bool:
        """Wait up to ``wait_s`` for ``model`` to be ready somewhere; True if it is. Never raises."""
        deadline = time.monotonic() + wait_s
        while True:
            if await self.ready(model):
                log.info("triton model ready", model=model, endpoints=[e.url for e in self.endpoints])
                return True
            if time.monotonic() >= deadline:
                log.warning(
                    "triton model not ready yet; serving anyway", model=model, endpoints=[e.url for e in self.endpoints]
                )
                return False
            await asyncio.sleep(0.5)

    async def close(self) -> None:
        for task in list(self._drains):
            task.cancel()
        for ep in self.endpoints:
            await ep.reset()
