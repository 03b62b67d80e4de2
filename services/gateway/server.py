"""gRPC transport for the conversation gateway (controller logic in session.py, turn decisions in turns.py)."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator
from typing import Any

import grpc
import structlog

from services.gateway.auth import Authenticator
from services.gateway.config import opening_request, tool_definitions, validate_config
from services.gateway.history import History
from services.gateway.quotas import LEASE_S, MemoryQuotas, Quotas
from services.gateway.session import Session
from services.gateway.settings import GatewaySettings
from services.gateway.stages import Stages
from services.gateway.store import SessionStore, StoredSession
from services.kit.errors import NotFound, StageError, Unavailable
from services.kit.streams import config_first
from services.kit.telemetry import meter
from stepaudio.conversation.v1 import conversation_pb2 as pb
from stepaudio.conversation.v1 import conversation_pb2_grpc
from stepaudio.logs.v1 import logs_pb2

SERVICE_NAME = pb.DESCRIPTOR.services_by_name["ConversationService"].full_name
log = structlog.get_logger("stepaudio.gateway")


class ConversationServicer(conversation_pb2_grpc.ConversationServiceServicer):
    """Converse: one Session per stream; ListVoices from the TTS catalog."""

    def __init__(self, stages: Stages, store: SessionStore, settings: GatewaySettings, convlog: Any = None,
                 quotas: Quotas | None = None) -> None:
        self.stages = stages
        self.quotas = quotas or MemoryQuotas(settings.tenant_max_sessions, settings.tenant_requests_per_min,
                                             settings.tenant_audio_s_per_min)
        self.store = store
        self.settings = settings
        self.convlog = convlog
        self.sessions: dict[str, Session] = {}
        self.draining = False
        self.auth = Authenticator(settings)
        meter().create_observable_gauge(
            "stepaudio.gateway.active_sessions", callbacks=[self._observe_sessions], description="Live sessions"
        )

    def _observe_sessions(self, _options: Any) -> list[Any]:
        from opentelemetry.metrics import Observation

        return [Observation(len(self.sessions))]

    async def prime_llm(self) -> None:
        """Run the default system prompt (with and without the tool list) once, so the LLM's prompt cache holds it
        before the first user arrives (the first turn otherwise pays the whole prefill)."""
        tools = tool_definitions(pb.SessionConfig(allowed_tools=["*"]), self.stages.tool_specs)
        for defs in (tools, []):
            request = opening_request(self.settings.system_prompt, "Hello.", defs)
            try:
                await self.stages.warm_llm(request, timeout_s=120)
            except StageError as e:
                log.warning("LLM warm-up failed; the first turn will be slower", code=e.code.name)

    async def drain(self) -> None:
        """Stop taking new sessions; live ones finish within the server's grace period."""
        self.draining = True
        log.info("drain: refusing new sessions", live=len(self.sessions))

    async def Converse(  # noqa: N802
        self, request_iterator: AsyncIterator[pb.ConverseRequest], context: grpc.aio.ServicerContext
    ) -> AsyncIterator[pb.ConverseResponse]:
        if self.draining:
            raise Unavailable("gateway is draining for a restart: reconnect (with your session_id) to another one")
        if len(self.sessions) >= self.settings.max_sessions:
            raise StageError(f"gateway is at max_sessions={self.settings.max_sessions}; retry later",
                             grpc.StatusCode.RESOURCE_EXHAUSTED)
        identity = await self.auth.identify(context.invocation_metadata() if context is not None else None)
        config, rest = await config_first(request_iterator)
        if identity is not None:  # the tenant is the credential's, whatever the config says
            if config.tenant and config.tenant != identity.tenant:
                raise StageError(f"this credential belongs to tenant {identity.tenant!r}, not {config.tenant!r}: "
                                 "leave tenant empty", grpc.StatusCode.PERMISSION_DENIED)
            config.tenant = identity.tenant
        if not self.stages.voices or not self.stages.tool_specs:
            await self.stages.refresh_catalogs()
        params = validate_config(config, self.settings, self.stages.tool_specs, self.stages.voices)
        resumed = False
        if config.session_id:
            stored = await self.store.load(config.session_id)
            if stored is None or stored.tenant != config.tenant:  # another tenant's session does not exist for you
                raise NotFound("session_id is unknown or expired; leave session_id empty to start a new session")
            resumed = True
        else:
            stored = StoredSession(uuid.uuid4().hex, tenant=config.tenant)
        session = Session(stored.session_id, config, params, History(stored, self.settings.max_stored_messages),
                          self.stages, self.store, self.settings, self.convlog, self.quotas)
        await self.quotas.open_session(session.tenant, session.ref)
        structlog.contextvars.bind_contextvars(session=session.ref)
        self.sessions[session.id] = session
        pump = asyncio.create_task(self._pump(session, rest))
        lease = asyncio.create_task(self._renew(session)) if self.quotas.max_sessions else None
        reason = logs_pb2.SESSION_END_REASON_USER_HANGUP
        loop = asyncio.get_running_loop()
        ends_at = loop.time() + self.settings.max_session_s
        try:
            yield pb.ConverseResponse(session_started=pb.SessionStarted(
                session_id=session.id, resumed=resumed, output_sample_rate_hz=session.out_rate or 22050))
            while True:
                try:
                    async with asyncio.timeout_at(ends_at):
                        event = await session.out.get()
                except TimeoutError:
                    reason = logs_pb2.SESSION_END_REASON_IDLE_TIMEOUT
                    raise StageError(f"the session reached max_session_s={self.settings.max_session_s}; start a new "
                                     "one with this session_id to go on", grpc.StatusCode.DEADLINE_EXCEEDED) from None
                if event is None:
                    break
                yield event
            if session.overflowed:
                reason = logs_pb2.SESSION_END_REASON_ERROR
                raise StageError(f"{self.settings.max_pending_events} events wait for this client: read the "
                                 "response stream as fast as it comes", grpc.StatusCode.RESOURCE_EXHAUSTED)
            exc = pump.exception() if pump.done() else None
            if exc is not None:
                reason = logs_pb2.SESSION_END_REASON_ERROR
                raise exc
        finally:
            if self.draining:
                reason = logs_pb2.SESSION_END_REASON_SERVER_SHUTDOWN
            pump.cancel()
            if lease is not None:
                lease.cancel()
            with contextlib.suppress(BaseException):
                await pump
            await session.close(reason)
            self.sessions.pop(session.id, None)
            with contextlib.suppress(Exception):  # the lease expires on its own if Redis is away
                await self.quotas.close_session(session.tenant, session.ref)

    async def _renew(self, session: Session) -> None:
        """Keep the session's quota lease alive (a dead pod's leases expire after LEASE_S)."""
        while True:
            await asyncio.sleep(LEASE_S / 3)
            with contextlib.suppress(Exception):
                await self.quotas.renew_session(session.tenant, session.ref)

    async def _pump(self, session: Session, rest: AsyncIterator[tuple[str, Any]]) -> None:
        """Feed client messages to the session; at half-close, finish the turn and end the event stream."""
        try:
            async for kind, value in rest:
                if kind == "audio":
                    await session.on_audio(value)
                elif kind == "text":
                    await session.on_text(value.text)
                elif kind == "interrupt":
                    session.on_interrupt(value.played_ms)
                elif kind == "feedback":
                    await session.on_feedback(value)
                elif kind == "playback":
                    session.on_playback(value)
            await session.end_of_input()
        except StageError as e:
            session.error(e.code, e.message)
            raise
        finally:
            session.out.put_nowait(None)

    async def ListVoices(  # noqa: N802
        self, request: pb.ListVoicesRequest, context: grpc.aio.ServicerContext
    ) -> pb.ListVoicesResponse:
        await self.auth.identify(context.invocation_metadata() if context is not None else None)
        await self.stages.refresh_catalogs()
        return pb.ListVoicesResponse(voices=[
            pb.Voice(name=v.name, languages=v.languages, sample_rate_hz=v.sample_rate_hz)
            for v in self.stages.voices.values()
        ])
