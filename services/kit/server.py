"""``GrpcServer``: one grpc.aio server with health, reflection, interceptors, warm-up and SIGTERM drain.

Usage in a service's ``__main__``::

    server = GrpcServer("vad", settings, [ServiceSpec(VAD_DESCRIPTOR_NAME, add_fn, servicer)], warmup=backend.warmup)
    asyncio.run(server.serve_forever())

Health reports NOT_SERVING for "" and every service name until ``warmup`` returns, SERVING after, and
NOT_SERVING again as soon as a drain starts. Tests call ``await server.start()`` (returns the bound port) and
``await server.stop()``.
"""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import structlog
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from services.kit import telemetry
from services.kit.interceptors import ServerInterceptor
from services.kit.settings import ServiceSettings

log = structlog.get_logger("stepaudio.server")


@dataclass
class ServiceSpec:
    """A servicer and how to register it."""

    full_name: str
    add_to_server: Callable[[Any, grpc.aio.Server], None]
    servicer: Any


def server_options(max_message_bytes: int) -> list[tuple[str, Any]]:
    """Channel options shared by servers: message size limits and keepalive that tolerates idle streams."""
    return [
        ("grpc.max_receive_message_length", max_message_bytes),
        ("grpc.max_send_message_length", max_message_bytes),
        ("grpc.keepalive_time_ms", 20000),
        ("grpc.keepalive_timeout_ms", 10000),
        ("grpc.http2.min_ping_interval_without_data_ms", 5000),
        ("grpc.keepalive_permit_without_calls", 1),
    ]


class GrpcServer:
    """A service process's gRPC server."""

    def __init__(
        self,
        name: str,
        settings: ServiceSettings,
        specs: list[ServiceSpec],
        warmup: Callable[[], Awaitable[None]] | None = None,
        on_drain: Callable[[], Awaitable[None]] | None = None,
        dependencies_down: Callable[[], Awaitable[list[str]]] | None = None,
        dependency_check_s: float = 2.0,
        on_stopped: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        """``dependencies_down`` (optional) names the required dependencies that are down now; while it names
        any, health is NOT_SERVING (checked every ``dependency_check_s`` after warm-up). ``on_stopped`` runs once
        the server has stopped (the drain is over): close clients, flush logs."""
        self.name = name
        self.settings = settings
        self.specs = specs
        self._warmup = warmup
        self._on_drain = on_drain
        self.telemetry = telemetry.setup(f"stepaudio-{name}", settings)
        self.health = health.aio.HealthServicer()
        self.server: grpc.aio.Server | None = None
        self.port = 0
        self._stopped = asyncio.Event()
        self._on_stopped = on_stopped
        self._dependencies_down = dependencies_down
        self._dependency_check_s = dependency_check_s
        self._watch: asyncio.Task | None = None
        self._draining = False
        self.down: list[str] = []  # required dependencies down at the last check
        self._health_server: grpc.aio.Server | None = None
        self.health_port = 0

    async def _set_health(self, status: int, liveness: bool = False) -> None:
        """Readiness: the "" and per-service entries (NOT_SERVING until warm, while a dependency is down, while
        draining). ``liveness`` also sets the "liveness" entry, which stays SERVING from warm-up to exit so that a
        down dependency or a drain never gets the process restarted."""
        for svc in ["", *(s.full_name for s in self.specs), *(["liveness"] if liveness else [])]:
            await self.health.set(svc, status)

    async def start(self) -> int:
        """Bind, start serving (NOT_SERVING until warm-up ends), run warm-up, return the port."""
        self.server = grpc.aio.server(
            interceptors=[ServerInterceptor(self.name, self.settings.auth_token)],
            options=server_options(self.settings.max_message_bytes),
        )
        for spec in self.specs:
            spec.add_to_server(spec.servicer, self.server)
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self.server)
        reflection.enable_server_reflection(
            [s.full_name for s in self.specs] + [health.SERVICE_NAME, reflection.SERVICE_NAME], self.server
        )
        await self._set_health(health_pb2.HealthCheckResponse.NOT_SERVING, liveness=True)
        addr = f"{self.settings.host}:{self.settings.port}"
        if self.settings.tls_cert_file or self.settings.tls_key_file:
            if not (self.settings.tls_cert_file and self.settings.tls_key_file):
                raise ValueError("TLS needs both tls_cert_file and tls_key_file")
            key, cert = await asyncio.to_thread(
                lambda: (Path(self.settings.tls_key_file).read_bytes(), Path(self.settings.tls_cert_file).read_bytes()))
            creds = grpc.ssl_server_credentials([(key, cert)])
            self.port = self.server.add_secure_port(addr, creds)
        else:
            self.port = self.server.add_insecure_port(addr)
        if self.settings.health_port >= 0 and (self.settings.tls_cert_file or self.settings.health_port):
            # Health alone, in plaintext, for probes that cannot speak TLS (kubelet's native gRPC probes).
            self._health_server = grpc.aio.server()
            health_pb2_grpc.add_HealthServicer_to_server(self.health, self._health_server)
            health_addr = f"{self.settings.host}:{self.settings.health_port}"
            self.health_port = self._health_server.add_insecure_port(health_addr)
            await self._health_server.start()
        await self.server.start()
        log.info("listening", port=self.port, profile=self.settings.profile)
        if self._warmup is not None:
            await self._warmup()
        await self._set_health(health_pb2.HealthCheckResponse.SERVING, liveness=True)
        log.info("serving", port=self.port)
        if self._dependencies_down is not None:
            self._watch = asyncio.create_task(self._watch_dependencies(self._dependencies_down))
        return self.port

    async def _watch_dependencies(self, check: Callable[[], Awaitable[list[str]]]) -> None:
        while not self._draining:
            try:
                down = await check()
            except Exception as e:  # noqa: BLE001 - a failing check counts as "unknown", reported as down
                down = [f"health check failed: {e!r}"]
            if down != self.down and not self._draining:
                self.down = down
                if down:
                    log.warning("NOT_SERVING: required dependencies down", down=down)
                    await self._set_health(health_pb2.HealthCheckResponse.NOT_SERVING)
                else:
                    log.info("SERVING again: dependencies back")
                    await self._set_health(health_pb2.HealthCheckResponse.SERVING)
            await asyncio.sleep(self._dependency_check_s)

    async def stop(self, grace: float | None = None) -> None:
        """Drain: report NOT_SERVING, let live RPCs finish for ``grace`` seconds, then stop."""
        if self.server is None:
            return
        self._draining = True
        if self._watch is not None:
            self._watch.cancel()
        await self._set_health(health_pb2.HealthCheckResponse.NOT_SERVING)
        if self._on_drain is not None:
            await self._on_drain()
        await self.server.stop(self.settings.drain_grace_s if grace is None else grace)
        if self._health_server is not None:
            await self._health_server.stop(0)
        if self._on_stopped is not None:
            try:
                await self._on_stopped()
            except Exception:  # noqa: BLE001 - the process exits anyway; say what was not closed
                log.exception("shutdown hook failed")
        self.telemetry.shutdown()
        self._stopped.set()

    async def serve_forever(self) -> None:
        """Start, then wait for SIGTERM/SIGINT and drain."""
        loop = asyncio.get_running_loop()
        stop = asyncio.Event()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await self.start()
        await stop.wait()
        log.info("draining", grace_s=self.settings.drain_grace_s)
        await self.stop()
        log.info("stopped")


def run(server: GrpcServer) -> None:
    """Entry point helper for ``__main__`` modules."""
    asyncio.run(server.serve_forever())
