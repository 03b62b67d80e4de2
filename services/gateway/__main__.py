"""``python -m services.gateway``: run the conversation gateway."""

from __future__ import annotations

import asyncio

import structlog

from services.gateway.quotas import create_quotas
from services.gateway.server import SERVICE_NAME, ConversationServicer
from services.gateway.settings import GatewaySettings
from services.gateway.stages import GrpcStages
from services.gateway.store import create_store
from services.kit.server import GrpcServer, ServiceSpec, run
from stepaudio.conversation.v1 import conversation_pb2_grpc

log = structlog.get_logger("stepaudio.gateway")


def build(settings: GatewaySettings | None = None) -> GrpcServer:
    """The gateway server, ready to start (warm-up waits for the stages it depends on)."""
    settings = settings or GatewaySettings()
    stages = GrpcStages(settings)
    store = create_store(settings.redis_url, settings.session_ttl_s)
    convlog = None
    if settings.conversation_log:
        from services.convlog import ConversationLogger

        convlog = ConversationLogger()
    quotas = create_quotas(settings.redis_url, settings.tenant_max_sessions, settings.tenant_requests_per_min,
                           settings.tenant_audio_s_per_min)
    servicer = ConversationServicer(stages, store, settings, convlog, quotas)

    async def warmup() -> None:
        if convlog is not None:
            convlog.start()
        await stages.refresh_catalogs(deadline_s=120)
        await servicer.prime_llm()

    async def on_drain() -> None:
        await servicer.drain()

    async def on_stopped() -> None:
        """After the drain: the live sessions' last events (session_ended) are in the log; flush and close it."""
        if convlog is not None:
            await asyncio.to_thread(convlog.close)
        await stages.close()
        await store.close()
        await quotas.close()

    spec = ServiceSpec(SERVICE_NAME, conversation_pb2_grpc.add_ConversationServiceServicer_to_server, servicer)
    async def not_ready() -> list[str]:
        """Stages that are down, and a full gateway (readiness off: the Service sends new sessions elsewhere)."""
        full = [f"full: {len(servicer.sessions)} live sessions (max_sessions={settings.max_sessions})"] if len(
            servicer.sessions) >= settings.max_sessions else []
        return [*await stages.down(), *full]

    return GrpcServer("gateway", settings, [spec], warmup, on_drain, dependencies_down=not_ready,
                      dependency_check_s=settings.dependency_check_s, on_stopped=on_stopped)


if __name__ == "__main__":
    run(build())
