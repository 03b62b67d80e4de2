"""gRPC interceptors: tracing (W3C context both ways), structured logs, metrics, auth and error mapping.

Server side, every RPC (except health and reflection) gets a SERVER span whose parent is the caller's
``traceparent``; the span's own ``traceparent`` goes back in the initial metadata. :class:`StageError` raised by a
servicer becomes a gRPC status with its message. Client side, the current context is injected into metadata.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import grpc
import structlog
from opentelemetry import context as otel_context
from opentelemetry import propagate, trace
from opentelemetry.trace import SpanKind, Status, StatusCode

from services.kit import credentials
from services.kit.errors import StageError
from services.kit.telemetry import meter, tracer

log = structlog.get_logger("stepaudio.rpc")
_SKIP = ("/grpc.health.v1.", "/grpc.reflection.")

_duration = meter().create_histogram("stepaudio.rpc.duration", unit="s", description="Server RPC duration")
_errors = meter().create_counter("stepaudio.rpc.errors", description="Server RPCs that ended with a non-OK status")


def _metadata_dict(md: Any) -> dict[str, str]:
    out: dict[str, str] = {}
    for key, value in md or ():
        if isinstance(value, str):
            out[key.lower()] = value
    return out


class ServerInterceptor(grpc.aio.ServerInterceptor):
    """Wraps each handler with a span, a log line, metrics, auth and StageError -> status mapping."""

    def __init__(self, service: str, auth_token: str = "") -> None:
        self._service = service
        self._auth_token = auth_token

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(details)
        method: str = details.method
        if handler is None or method.startswith(_SKIP):
            return handler
        md = _metadata_dict(details.invocation_metadata)
        if handler.response_streaming:
            inner_s = handler.unary_stream or handler.stream_stream

            async def stream_behavior(request: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
                async with self._rpc(method, md, context) as span:
                    async for response in inner_s(request, context):
                        yield response
                    del span

            if handler.request_streaming:
                return grpc.stream_stream_rpc_method_handler(
                    stream_behavior, handler.request_deserializer, handler.response_serializer
                )
            return grpc.unary_stream_rpc_method_handler(
                stream_behavior, handler.request_deserializer, handler.response_serializer
            )

        inner_u = handler.unary_unary or handler.stream_unary

        async def unary_behavior(request: Any, context: grpc.aio.ServicerContext) -> Any:
            async with self._rpc(method, md, context):
                return await inner_u(request, context)

        if handler.request_streaming:
            return grpc.stream_unary_rpc_method_handler(
                unary_behavior, handler.request_deserializer, handler.response_serializer
            )
        return grpc.unary_unary_rpc_method_handler(
            unary_behavior, handler.request_deserializer, handler.response_serializer
        )

    def _rpc(self, method: str, md: dict[str, str], context: grpc.aio.ServicerContext) -> _RpcScope:
        return _RpcScope(self, method, md, context)


class _RpcScope:
    """One RPC's span, log context, metrics and error mapping."""

    def __init__(self, owner: ServerInterceptor, method: str, md: dict[str, str], context: Any) -> None:
        self.owner, self.method, self.md, self.context = owner, method, md, context

    async def __aenter__(self) -> trace.Span:
        secret = self.owner._auth_token
        header = self.md.get("authorization", "")
        if secret and not (header.startswith("Bearer ") and credentials.verify(secret, header[7:])):
            await self.context.abort(grpc.StatusCode.UNAUTHENTICATED, "missing, wrong or expired service credential "
                                     "('authorization: Bearer' signed with the shared secret)")
        self.t0 = time.perf_counter()
        parent = propagate.extract(self.md)
        self.span = tracer().start_span(self.method.lstrip("/"), context=parent, kind=SpanKind.SERVER,
                                        record_exception=False, set_status_on_exception=False)
        self.otel_token = otel_context.attach(trace.set_span_in_context(self.span))
        self.span.set_attribute("rpc.system", "grpc")
        self.span.set_attribute("rpc.method", self.method)
        self.span.set_attribute("stepaudio.service", self.owner._service)
        session_id = self.md.get("x-session-id", "")
        if session_id:
            self.span.set_attribute("stepaudio.session_id", session_id)
        self.tokens = structlog.contextvars.bind_contextvars(
            service=f"stepaudio-{self.owner._service}", method=self.method, session_id=session_id
        )
        carrier: dict[str, str] = {}
        propagate.inject(carrier)
        try:
            await self.context.send_initial_metadata(tuple(carrier.items()))
        except Exception:  # noqa: BLE001 - metadata already sent; nothing to add
            pass
        return self.span

    async def _finish(self, code: grpc.StatusCode, message: str = "") -> None:
        elapsed = time.perf_counter() - self.t0
        attrs = {"rpc.method": self.method, "rpc.grpc.status_code": code.name}
        _duration.record(elapsed, attrs)
        if code != grpc.StatusCode.OK:
            _errors.add(1, attrs)
            self.span.set_status(Status(StatusCode.ERROR, message or code.name))
        self.span.set_attribute("rpc.grpc.status_code", code.value[0])
        log.info("rpc", code=code.name, ms=round(elapsed * 1000, 1), error=message or None)

    async def __aexit__(self, exc_type: Any, exc: BaseException | None, tb: Any) -> bool:
        try:
            if exc is None:
                await self._finish(grpc.StatusCode.OK)
                return False
            if isinstance(exc, StageError):
                await self._finish(exc.code, exc.message)
                await self.context.abort(exc.code, exc.message, trailing_metadata=exc.trailing_metadata())
            if isinstance(exc, asyncio.CancelledError):
                await self._finish(grpc.StatusCode.CANCELLED, "cancelled by the client")
                return False
            if isinstance(exc, grpc.aio.AbortError):
                code = self.context.code() if hasattr(self.context, "code") else None
                await self._finish(code if isinstance(code, grpc.StatusCode) else grpc.StatusCode.UNKNOWN, str(exc))
                return False
            if isinstance(exc, GeneratorExit):
                return False
            log.exception("unhandled error in handler")
            self.span.record_exception(exc)
            await self._finish(grpc.StatusCode.INTERNAL, repr(exc))
            # The client gets no internals (they are in this service's log and span, under the trace id).
            trace_id = format(self.span.get_span_context().trace_id, "032x")
            await self.context.abort(grpc.StatusCode.INTERNAL, f"internal error (trace {trace_id}; see the "
                                     f"{self.owner._service} log)")
            return False
        finally:
            try:
                structlog.contextvars.reset_contextvars(**self.tokens)
                same_context = True
            except ValueError:
                # A stream the client abandoned is closed by the event loop's generator finaliser, in another
                # context: its context variables are not ours to reset there (they go with that context).
                same_context = False
            if same_context:
                otel_context.detach(self.otel_token)
            self.span.end()


class _ClientMetadata:
    """Adds the W3C trace context and, when configured, the service credential to an outgoing call."""

    def __init__(self, secret: str = "") -> None:
        self._secret = secret
        self._token, self._fresh_until = "", 0.0

    def _auth(self) -> list[tuple[str, str]]:
        if not self._secret:
            return []
        now = time.time()
        if now >= self._fresh_until:  # a new signed token every minute (each is valid for a few)
            self._token, self._fresh_until = credentials.sign(self._secret, now), now + 60
        return [("authorization", f"Bearer {self._token}")]

    def details(self, details: grpc.aio.ClientCallDetails) -> grpc.aio.ClientCallDetails:
        carrier: dict[str, str] = {}
        propagate.inject(carrier)
        metadata = list(details.metadata or ()) + list(carrier.items()) + self._auth()
        return grpc.aio.ClientCallDetails(
            details.method, details.timeout, grpc.aio.Metadata(*metadata), details.credentials, details.wait_for_ready
        )


class _UnaryUnaryTracing(_ClientMetadata, grpc.aio.UnaryUnaryClientInterceptor):
    async def intercept_unary_unary(self, continuation: Any, details: Any, request: Any) -> Any:
        return await continuation(self.details(details), request)


class _UnaryStreamTracing(_ClientMetadata, grpc.aio.UnaryStreamClientInterceptor):
    async def intercept_unary_stream(self, continuation: Any, details: Any, request: Any) -> Any:
        return await continuation(self.details(details), request)


class _StreamUnaryTracing(_ClientMetadata, grpc.aio.StreamUnaryClientInterceptor):
    async def intercept_stream_unary(self, continuation: Any, details: Any, request_iterator: Any) -> Any:
        return await continuation(self.details(details), request_iterator)


class _StreamStreamTracing(_ClientMetadata, grpc.aio.StreamStreamClientInterceptor):
    async def intercept_stream_stream(self, continuation: Any, details: Any, request_iterator: Any) -> Any:
        return await continuation(self.details(details), request_iterator)


def client_tracing_interceptors(token: str = "") -> list[grpc.aio.ClientInterceptor]:
    """Interceptors that inject the current W3C trace context (and a service credential signed with the shared
    secret ``token``, if set) into every outgoing call.

    One instance per call type: grpc.aio files an interceptor under the first call type it matches only.
    """
    return [_UnaryUnaryTracing(token), _UnaryStreamTracing(token), _StreamUnaryTracing(token),
            _StreamStreamTracing(token)]
