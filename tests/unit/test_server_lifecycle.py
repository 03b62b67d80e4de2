"""The runtime kit's lifecycle: NOT_SERVING until warm-up ends, SIGTERM drains then stops, the gateway drains."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from services.kit.server import GrpcServer, ServiceSpec
from services.tools.registry import default_registry
from services.tools.server import SERVICE_NAME, ToolsServicer
from services.tools.settings import ToolsSettings
from stepaudio.stack import free_port, wait_healthy
from stepaudio.tools.v1 import tools_pb2_grpc

ROOT = Path(__file__).resolve().parents[2]


async def status(port: int, service: str = "") -> int:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as ch:
        resp = await health_pb2_grpc.HealthStub(ch).Check(health_pb2.HealthCheckRequest(service=service), timeout=2)
        return resp.status


async def test_not_serving_until_warmup_ends_and_during_drain() -> None:
    warm, checked = asyncio.Event(), asyncio.Event()
    seen: list[int] = []
    settings = ToolsSettings(port=free_port(), host="127.0.0.1", log_level="WARNING")

    async def warmup() -> None:
        seen.append(await status(settings.port))
        seen.append(await status(settings.port, SERVICE_NAME))
        checked.set()
        await warm.wait()

    async def on_drain() -> None:
        seen.append(await status(settings.port))

    servicer = ToolsServicer(default_registry())
    server = GrpcServer("tools", settings,
                        [ServiceSpec(SERVICE_NAME, tools_pb2_grpc.add_ToolsServiceServicer_to_server, servicer)],
                        warmup, on_drain)
    start = asyncio.create_task(server.start())
    await asyncio.wait_for(checked.wait(), 30)
    warm.set()
    await start
    assert await status(settings.port) == health_pb2.HealthCheckResponse.SERVING
    await server.stop(0.5)
    not_serving = health_pb2.HealthCheckResponse.NOT_SERVING
    assert seen == [not_serving, not_serving, not_serving]


def test_sigterm_drains_and_exits_cleanly() -> None:
    port = free_port()
    env = dict(os.environ, STEPAUDIO_TOOLS_PORT=str(port), STEPAUDIO_TOOLS_HOST="127.0.0.1",
               STEPAUDIO_TOOLS_DRAIN_GRACE_S="2", PYTHONPATH=str(ROOT))
    proc = subprocess.Popen([sys.executable, "-m", "services.tools"], cwd=ROOT, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    try:
        wait_healthy(f"127.0.0.1:{port}", 60, proc, "tools")
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, out
    assert '"draining"' in out and '"stopped"' in out
